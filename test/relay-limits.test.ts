// What a hostile or broken node daemon can make the relay hold: an event above
// --maxEventBytes is refused before it is buffered (and counted), and events at the limit
// sent to consumers that stopped reading keep the relay inside its Deployment's memory limit.
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { HUB_DEFAULTS } from '../server/hub.js';
import { startFakeNode } from '../server/tools/fake-node.js';
import { rawWatch } from './helpers/raw-client.js';
import { type RelayProcess, eventually, freePort, metricValue, startRelayProcess } from './helpers/relay-process.js';

const MIB = 1024 * 1024;
const DEPLOYMENT = readFileSync(new URL('../deploy/deployment.yaml', import.meta.url), 'utf8');
/** The relay Deployment's memory limit. */
const POD_LIMIT_BYTES = Number(/limits:[\s\S]*?memory: (\d+)Mi/.exec(DEPLOYMENT)?.[1]) * MIB;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/**
 * The environment the Deployment gives the relay (deploy/deployment.yaml: V8 flags, malloc
 * settings), so memory is measured as deployed.
 */
function deployedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of DEPLOYMENT.matchAll(/- name: (NODE_OPTIONS|MALLOC_\w+)\s*\n\s*value: "?([^"\n]+)"?/g)) env[m[1]!] = m[2]!.trim();
  if (!env.NODE_OPTIONS) throw new Error('deploy/deployment.yaml sets no NODE_OPTIONS');
  return env;
}

async function relay(args: string[]): Promise<RelayProcess> {
  const r = await startRelayProcess({ args, env: deployedEnv() });
  cleanups.push(() => r.stop());
  return r;
}

/** Peak resident memory of a process (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const kib = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kib) * 1024;
}

describe('events a node daemon sends', () => {
  it('drops an event above --maxEventBytes before buffering it, counts it as oversize, and opens only that stream again', async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    const r = await relay([`--nodes=127.0.0.1:${portA},127.0.0.1:${portB}`, '--maxEventBytes=65536']);
    const alerts = rawWatch(r.target, 'alert', 'policy');
    const logs = rawWatch(r.target, 'log', 'system');
    cleanups.push(() => alerts.close(), () => logs.close());
    await eventually(async () => metricValue(await r.metrics(), 'kubearmor_relay_clients', { kind: 'log' }) === 1, 10_000, 'the consumers');
    // node A: every alert too large; its logs ordinary. Node B: ordinary alerts.
    const oversized = await startFakeNode({ port: portA, nodeName: 'big-alerts', rate: 20, count: 5, kinds: ['alert'], eventBytes: 100_000 });
    const ordinaryLogs = await startFakeNode({ port: portB, nodeName: 'ordinary', rate: 50, count: 40, kinds: ['alert', 'log'] });
    cleanups.push(() => oversized.close(), () => ordinaryLogs.close());
    await eventually(async () => (metricValue(await r.metrics(), 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'oversize' }) ?? 0) >= 2, 30_000, 'two oversize drops');
    await r.waitForLog((l) => l.msg === 'node sent an event larger than --maxEventBytes; dropped it and opening that stream again' && l.node === `127.0.0.1:${portA}`);
    await alerts.waitFor(40, 30_000);
    await logs.waitFor(40, 30_000);
    expect(alerts.events.every((e) => e.length <= 65536)).toBe(true);
    // the node was never dropped as a whole: its session stayed up
    expect(r.logs.filter((l) => l.msg === 'node lost')).toEqual([]);
  });

  it('stays under the Deployment memory limit, as deployed, while one node sends maximum-size events and another 8 MiB ones to twelve consumers that stopped reading', async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    const r = await relay([`--nodes=127.0.0.1:${portA},127.0.0.1:${portB}`, '--stallTimeout=500ms']);
    for (const [kind, filter] of [['alert', 'policy'], ['log', 'system'], ['message', 'all']] as const) {
      for (let i = 0; i < 4; i++) {
        const w = rawWatch(r.target, kind, filter, undefined, { 'grpc.http2.lookahead_bytes': 65536 });
        w.pause();
        cleanups.push(() => w.close());
      }
    }
    await eventually(async () => metricValue(await r.metrics(), 'kubearmor_relay_clients', { kind: 'message' }) === 4, 10_000, 'twelve consumers');
    const PER_KIND = 1500;
    const maxSize = await startFakeNode({ port: portA, nodeName: 'max-size', rate: 0, count: PER_KIND, eventBytes: HUB_DEFAULTS.maxEventBytes - 1024 });
    const hostile = await startFakeNode({ port: portB, nodeName: 'hostile', rate: 20, count: 20, kinds: ['alert'], eventBytes: 8 * MIB });
    cleanups.push(() => maxSize.close(), () => hostile.close());
    await eventually(async () => {
      const text = await r.metrics();
      const received = (kind: string) => metricValue(text, 'kubearmor_relay_events_received_total', { kind, node: `127.0.0.1:${portA}` }) ?? 0;
      return ['alert', 'log', 'message'].every((kind) => received(kind) >= PER_KIND) && (metricValue(text, 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'oversize' }) ?? 0) >= 3;
    }, 120_000, 'every maximum-size event to reach the relay and three 8 MiB ones to be refused');
    const peak = peakRss(r.proc.pid!);
    expect(peak, `relay peak RSS ${(peak / MIB).toFixed(1)} MiB`).toBeLessThan(POD_LIMIT_BYTES);
    expect(metricValue(await r.metrics(), 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'queue_full' })).toBeGreaterThan(0);
  });
});
