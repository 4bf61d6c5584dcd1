// What `npm run bench` measures and how it is shown: the result types (also the --json
// format), the machine description, the summary against the targets, and the text table.
import { readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import type { Kind } from '../server/kinds.js';
import type { Scenario } from './scenarios/index.js';

export interface Latency {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

export interface PhaseResult {
  seconds: number;
  /** events per second handed to the consumers that read (not the stalled or idle ones) */
  eventsPerSec: number;
  /** events per second the nodes sent */
  nodeEventsPerSec: number;
  relayCpuPct: number | null;
  /** highest VmRSS sampled during the phase */
  relayRssMaxMiB: number | null;
  nodesCpuPct: number;
  consumersCpuPct: number;
  latencyMs: Latency | null;
}

export interface RunResult {
  scenario: Scenario;
  variant: string;
  via: 'relay' | 'direct';
  nodes: number;
  consumers: number;
  /** target events/s from all nodes; 0 = as fast as possible */
  rate: number;
  loadAvg: number[];
  load: PhaseResult;
  /** scale only: everything connected, nodes quiet */
  rest?: PhaseResult;
  /** VmHWM of the relay process at the end of the run */
  relayPeakRssMiB: number | null;
  /** the relay's V8 heap and off-heap (Buffer) memory at the end of the window, from /metrics */
  relayHeapMiB: { used: number; total: number; external: number } | null;
  /** node events per kind, over the whole run */
  nodeSent: Record<Kind, number>;
  /** relay /metrics at the end */
  relayReceived: number | null;
  relaySent: number | null;
  droppedQueueFull: number | null;
  droppedNoConsumer: number | null;
  /** events that consumers which kept reading did not get (must be 0) */
  lost: number;
  /** sink scenario: what the sink indexed and dropped (every alert the nodes sent must be indexed) */
  sink?: { name: string; indexed: number; dropped: number; bulkRequests: number };
  /** the stalled consumer's counts (slow scenario) */
  stalledReceived?: number;
  /** scale-out: CPU and highest RSS of each relay and of nats-server during the window */
  processes?: { name: string; cpuPct: number; rssMaxMiB: number }[];
  errors: string[];
}

export interface BenchReport {
  machine: { cpu: string; cores: number; node: string; memGiB: number; loadAvgAtStart: number[] };
  options: { durationS: number; warmupS: number; quick: boolean; scenarios: string[]; latencyRate: number };
  runs: RunResult[];
  summary: {
    relayOverDirect: number | null;
    relayOverNaive: number | null;
    addedLatencyP50Ms: number | null;
    addedLatencyP99Ms: number | null;
    maxRelayPeakRssMiB: number | null;
    lossless: boolean;
    targets: { name: string; target: string; value: string; met: boolean | null }[];
  };
}

export function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

export function machine(): BenchReport['machine'] {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpu;
  } catch {
    // not Linux
  }
  return { cpu, cores: cpus().length, node: process.version, memGiB: round(totalmem() / 1024 ** 3, 1), loadAvgAtStart: loadavg().map((v) => round(v, 2)) };
}

export function summarize(runs: RunResult[]): BenchReport['summary'] {
  const find = (s: Scenario, v: string) => runs.find((r) => r.scenario === s && r.variant === v);
  const relay = find('throughput', 'relay');
  const direct = find('baseline', 'direct');
  const naive = find('baseline', 'reencode');
  const latRelay = find('latency', 'relay')?.load.latencyMs;
  const latDirect = find('latency', 'direct')?.load.latencyMs;
  const ratio = (a?: RunResult, b?: RunResult) => (a && b && b.load.eventsPerSec > 0 ? round(a.load.eventsPerSec / b.load.eventsPerSec, 2) : null);
  const relayOverDirect = ratio(relay, direct);
  const relayOverNaive = ratio(relay, naive);
  const addedP50 = latRelay && latDirect ? round(latRelay.p50 - latDirect.p50, 3) : null;
  const addedP99 = latRelay && latDirect ? round(latRelay.p99 - latDirect.p99, 3) : null;
  const rss = runs.map((r) => r.relayPeakRssMiB).filter((v): v is number => v !== null);
  const maxRss = rss.length > 0 ? Math.max(...rss) : null;
  const lossless = runs.every((r) => r.lost === 0);
  const fmt = (v: number | null, unit = '') => (v === null ? 'n/a' : `${v}${unit}`);
  return {
    relayOverDirect,
    relayOverNaive,
    addedLatencyP50Ms: addedP50,
    addedLatencyP99Ms: addedP99,
    maxRelayPeakRssMiB: maxRss,
    lossless,
    targets: [
      { name: 'relay/direct', target: '>= 0.8', value: fmt(relayOverDirect), met: relayOverDirect === null ? null : relayOverDirect >= 0.8 },
      { name: 'relay/naive', target: '>= 1.5', value: fmt(relayOverNaive), met: relayOverNaive === null ? null : relayOverNaive >= 1.5 },
      { name: 'added p99 latency', target: '< 2 ms', value: fmt(addedP99, ' ms'), met: addedP99 === null ? null : addedP99 < 2 },
      { name: 'relay peak RSS', target: '< 128 MiB', value: fmt(maxRss, ' MiB'), met: maxRss === null ? null : maxRss < 128 },
      { name: 'events lost (no stall)', target: '0', value: String(runs.reduce((n, r) => n + r.lost, 0)), met: lossless },
    ],
  };
}

export function table(report: BenchReport): string {
  const rows: string[][] = [['scenario', 'variant', 'nodes', 'cons.', 'events/s', 'relay CPU%', 'relay RSS MiB (max/peak)', 'p50 ms', 'p99 ms', 'max ms', 'drops', 'lost', 'nodes/cons. CPU%']];
  const ms = (v: number | undefined) => (v === undefined ? '' : v.toFixed(2));
  const row = (r: RunResult, label: string, p: PhaseResult, peak: number | null) =>
    rows.push([
      r.scenario,
      label,
      String(r.nodes),
      String(r.consumers),
      String(p.eventsPerSec),
      p.relayCpuPct === null ? '-' : p.relayCpuPct.toFixed(0),
      p.relayRssMaxMiB === null ? '-' : `${p.relayRssMaxMiB.toFixed(0)}${peak === null ? '' : ` / ${peak.toFixed(0)}`}`,
      ms(p.latencyMs?.p50),
      ms(p.latencyMs?.p99),
      ms(p.latencyMs?.max),
      r.droppedQueueFull === null ? '-' : String(r.droppedQueueFull),
      String(r.lost),
      `${p.nodesCpuPct.toFixed(0)}/${p.consumersCpuPct.toFixed(0)}`,
    ]);
  for (const r of report.runs) {
    if (r.rest) row(r, `${r.variant} (rest)`, r.rest, null);
    row(r, r.rest ? `${r.variant} (load)` : r.variant, r.load, r.relayPeakRssMiB);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const m = report.machine;
  const s = report.summary;
  const out = [
    `machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, Node ${m.node}; load average at start ${m.loadAvgAtStart.join(' ')}`,
    `window ${report.options.durationS} s per run after ${report.options.warmupS} s warm-up; mutual TLS on every hop; events/s = delivered to consumers that read`,
    '',
    line(rows[0]!),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.slice(1).map(line),
    '',
    ...s.targets.map((t) => `${t.met === null ? '  ' : t.met ? 'ok' : '!!'} ${t.name.padEnd(24)} ${t.value.padStart(10)}   (target ${t.target})`),
  ];
  if (s.addedLatencyP50Ms !== null) out.push(`   added p50 latency        ${`${s.addedLatencyP50Ms} ms`.padStart(10)}`);
  for (const r of report.runs.filter((x) => x.processes)) {
    out.push(`   ${r.scenario} / ${r.variant}: ${r.processes!.map((p) => `${p.name} ${p.cpuPct.toFixed(0)}% CPU ${p.rssMaxMiB.toFixed(0)} MiB`).join(', ')}`);
  }
  const slow = report.runs.find((r) => r.scenario === 'slow');
  for (const r of report.runs.filter((x) => x.sink)) {
    out.push(`   ${r.variant}: ${r.sink!.indexed} of ${r.nodeSent.alert} alerts indexed in ${r.sink!.bulkRequests} bulk requests, ${r.sink!.dropped} dropped`);
  }
  if (slow) out.push(`   slow consumer: ${slow.droppedQueueFull} events dropped for it (queue_full), it received ${slow.stalledReceived}; the ${slow.consumers - 1} others ${slow.load.eventsPerSec} events/s, lost ${slow.lost}`);
  return out.join('\n');
}
