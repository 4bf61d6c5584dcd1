// `npm run bench -- --quick`: every scenario runs end to end (nodes, relay and consumers as
// processes on mutual TLS) and reports sane fields. No timing or rate thresholds here:
// the numbers depend on the machine; only their presence and the no-loss rule are checked.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../bench/report.js';

const BENCH = fileURLToPath(new URL('../dist/bench/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [BENCH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`bench did not finish within ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`));
    }, timeoutMs);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('npm run bench --quick', () => {
  it('runs every scenario and reports sane numbers', { timeout: 150_000 }, async () => {
    const json = join(dir, 'bench.json');
    const { code, stdout, stderr } = await run(['--quick', '--json', json], 140_000);
    expect(code, stderr.slice(-2000)).toBe(0);
    expect(stdout).toContain('relay/direct');
    const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;

    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.machine.node).toBe(process.version);
    const variants = report.runs.map((r) => `${r.scenario}/${r.via}`);
    for (const v of ['throughput/relay', 'baseline/direct', 'baseline/relay', 'latency/relay', 'latency/direct', 'fanout/relay', 'slow/relay', 'scale/relay', 'scaleout/relay', 'sink/relay']) {
      expect(variants).toContain(v);
    }
    // with the Elasticsearch sink on, every alert the nodes sent was indexed, none dropped
    const sink = report.runs.find((r) => r.scenario === 'sink' && r.sink)!.sink!;
    expect(sink.indexed).toBe(report.runs.find((r) => r.scenario === 'sink' && r.sink)!.nodeSent.alert);
    expect(sink.dropped).toBe(0);
    expect(report.runs.filter((r) => r.scenario === 'fanout').map((r) => r.consumers)).toEqual([1, 4]);

    for (const r of report.runs) {
      const what = `${r.scenario}/${r.variant}`;
      expect(r.load.eventsPerSec, what).toBeGreaterThan(0);
      expect(r.load.seconds, what).toBeGreaterThan(0);
      expect(r.nodeSent.alert + r.nodeSent.log + r.nodeSent.message, what).toBeGreaterThan(0);
      // nobody lost anything, stalled consumer aside (it is left out of `lost`)
      expect(r.lost, what).toBe(0);
      expect(r.errors, what).toEqual([]);
      if (r.via === 'relay') {
        expect(r.relayPeakRssMiB, what).toBeGreaterThan(0);
        expect(r.load.relayCpuPct, what).toBeGreaterThanOrEqual(0);
        expect(r.relayReceived, what).toBe(r.nodeSent.alert + r.nodeSent.log + r.nodeSent.message);
      } else {
        expect(r.relayPeakRssMiB, what).toBeNull();
      }
      if (r.scenario !== 'slow' && r.via === 'relay') {
        expect(r.droppedQueueFull, what).toBe(0);
        // every event reached every consumer that subscribed to its kind
        expect(r.relaySent, what).toBeGreaterThanOrEqual(r.relayReceived!);
      }
      if (r.scenario === 'latency' || r.scenario === 'slow') {
        expect(r.load.latencyMs?.n, what).toBeGreaterThan(0);
        expect(r.load.latencyMs!.p50, what).toBeLessThanOrEqual(r.load.latencyMs!.p99);
        expect(r.load.latencyMs!.p99, what).toBeLessThanOrEqual(r.load.latencyMs!.max);
      }
    }

    const slow = report.runs.find((r) => r.scenario === 'slow')!;
    expect(slow.droppedQueueFull).toBeGreaterThan(0); // the stalled consumer was really behind
    const scale = report.runs.find((r) => r.scenario === 'scale')!;
    expect(scale.rest?.eventsPerSec).toBe(0);
    expect(scale.rest?.relayRssMaxMiB).toBeGreaterThan(0);

    expect(report.summary.relayOverDirect).toBeGreaterThan(0);
    expect(report.summary.relayOverNaive).toBeGreaterThan(0);
    expect(report.summary.lossless).toBe(true);
  });
});
