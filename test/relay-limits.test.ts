// What a hostile or broken node daemon can make the relay hold: an event above
// --maxEventBytes is refused before it is buffered (and counted), and events at the limit
// sent to consumers that stopped reading keep the relay inside its Deployment's memory limit.
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeNode } from '../server/tools/fake-node.js';
import { type RawWatch, rawWatch } from './helpers/raw-client.js';
import { type RelayProcess, eventually, freePort, metricValue, startRelayProcess } from './helpers/relay-process.js';

/** The relay Deployment's memory limit (deploy/). */
const POD_LIMIT_BYTES = 128 * 1024 * 1024;
const MIB = 1024 * 1024;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** The V8 flags the Deployment gives the relay (deploy/deployment.yaml), so memory is measured as deployed. */
function deployedNodeOptions(): string {
  const manifest = readFileSync(new URL('../deploy/deployment.yaml', import.meta.url), 'utf8');
  const value = /name: NODE_OPTIONS\s*\n\s*value: (.+)/.exec(manifest)?.[1];
  if (!value) throw new Error('deploy/deployment.yaml sets no NODE_OPTIONS');
  return value.trim();
}

async function relay(args: string[]): Promise<RelayProcess> {
  const r = await startRelayProcess({ args, env: { NODE_OPTIONS: deployedNodeOptions() } });
  cleanups.push(() => r.stop());
  return r;
}

/** Peak resident memory of a process (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const kib = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kib) * 1024;
}

describe('events a node daemon sends', () => {
  it('drops an event above --maxEventBytes before buffering it, counts it as oversize and keeps relaying that node', async () => {
    const port = await freePort();
    const r = await relay([`--nodes=127.0.0.1:${port}`, '--maxEventBytes=65536']);
    const watch = rawWatch(r.target, 'alert', 'policy');
    cleanups.push(() => watch.close());
    await eventually(async () => metricValue(await r.metrics(), 'kubearmor_relay_clients', { kind: 'alert' }) === 1, 10_000, 'the consumer');
    const node = await startFakeNode({ port, rate: 50, count: 3, kinds: ['alert'], eventBytes: 100_000 });
    cleanups.push(() => node.close());
    await eventually(async () => (metricValue(await r.metrics(), 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'oversize' }) ?? 0) >= 1, 20_000, 'an oversize drop');
    await r.waitForLog((l) => l.msg === 'node sent an event larger than --maxEventBytes; dropped it and reconnecting');
    expect(watch.events.every((e) => e.length <= 65536)).toBe(true);
    // the node is redialed: the relay did not give up on it
    await r.waitForLog((l) => l.msg === 'node connected' && l.node === `127.0.0.1:${port}`);
  });

  it('stays under the pod memory limit while a node sends maximum-size events to twelve consumers that stopped reading', async () => {
    const port = await freePort();
    const r = await relay([`--nodes=127.0.0.1:${port}`, `--maxEventBytes=${MIB}`, `--clientQueueBytes=${MIB}`, '--stallTimeout=500ms']);
    const stalled: RawWatch[] = [];
    for (const [kind, filter] of [['alert', 'policy'], ['log', 'system'], ['message', 'all']] as const) {
      for (let i = 0; i < 4; i++) {
        const w = rawWatch(r.target, kind, filter, undefined, { 'grpc.http2.lookahead_bytes': 65536 });
        w.pause();
        stalled.push(w);
        cleanups.push(() => w.close());
      }
    }
    await eventually(async () => stalled.length === 12 && metricValue(await r.metrics(), 'kubearmor_relay_clients', { kind: 'message' }) === 4, 10_000, 'twelve consumers');
    const PER_KIND = 120;
    const node = await startFakeNode({ port, rate: 0, count: PER_KIND, eventBytes: MIB - 1024 });
    cleanups.push(() => node.close());
    await eventually(async () => {
      const text = await r.metrics();
      return ['alert', 'log', 'message'].every((kind) => (metricValue(text, 'kubearmor_relay_events_received_total', { kind, node: `127.0.0.1:${port}` }) ?? 0) >= PER_KIND);
    }, 120_000, 'every event to reach the relay');
    const peak = peakRss(r.proc.pid!);
    expect(peak, `relay peak RSS ${(peak / MIB).toFixed(1)} MiB`).toBeLessThan(POD_LIMIT_BYTES);
    const dropped = metricValue(await r.metrics(), 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'queue_full' }) ?? 0;
    expect(dropped).toBeGreaterThan(0);
  });
});
