// `npm run bench`: the relay under load, every party a separate process on loopback, all
// on mutual TLS (a throwaway CA from `certs init`).
//
//   bench/node.ts          simulated node daemons (many per process, pooled real events)
//   dist/server/main.js    the relay, one fresh process per run
//   bench/consumer.ts      consumers (many per process, one connection each)
//
// Scenarios (each bounded in time; --scenarios picks some):
//   throughput  4 nodes -> relay -> 4 consumers on all three streams, nodes flooding
//   baseline    the same consumers reading the same nodes directly (no relay), and the relay
//               forced to decode and re-encode every event (--reencode)
//   latency     the same topology at a steady 5 000 events/s: node-to-consumer time through
//               the relay and directly
//   fanout      1 node -> relay -> 1, 16, 64 consumers
//   slow        4 nodes -> relay -> 3 consumers that keep up + 1 that stops reading its socket
//   scale       200 nodes at a low rate, 500 idle consumers (+2 active ones): at rest, under load
//
// Measured: events delivered per second to consumers (a window after a warm-up), relay CPU
// (utime+stime from /proc) and peak RSS (VmHWM), latency percentiles, drops and losses
// (nodes' sent counts against every consumer's received counts once the nodes stop, and
// the relay's /metrics).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCerts } from '../certs/cli.js';
import { HelpRequested, parseFlags, UsageError, type FlagTable } from '../server/flags.js';
import type { Kind } from '../server/kinds.js';
import { eventually } from '../harness/eventually.js';
import { freePort } from '../harness/free-port.js';
import { metricSum } from '../harness/prom-text.js';
import { Child, cpuSeconds, Histogram, memory } from './ipc.js';
import type { ConsumerSetup, ConsumerStats } from './consumer.js';
import type { NodeSetup, NodeStats } from './node.js';

const NODE_JS = fileURLToPath(new URL('./node.js', import.meta.url));
const CONSUMER_JS = fileURLToPath(new URL('./consumer.js', import.meta.url));
const RELAY_MAIN = fileURLToPath(new URL('../server/main.js', import.meta.url));
const ALL_KINDS: Kind[] = ['alert', 'log', 'message'];
const MiB = 1024 * 1024;

export const SCENARIOS = ['throughput', 'baseline', 'latency', 'fanout', 'slow', 'scale'] as const;
export type Scenario = (typeof SCENARIOS)[number];

const FLAGS = {
  duration: { type: 'duration', default: '5s', help: 'measurement window of each run (seconds, or 1500ms, 5s...)' },
  warmup: { type: 'duration', default: '1s', help: 'time each run flows before its window opens' },
  scenarios: { type: 'list', default: [...SCENARIOS], form: SCENARIOS.join(','), help: 'scenarios to run', check: (v: unknown) => ((v as string[]).every((s) => (SCENARIOS as readonly string[]).includes(s)) ? undefined : `known scenarios: ${SCENARIOS.join(', ')}`) },
  json: { type: 'string', default: '', form: 'PATH', help: 'also write the results as JSON to PATH' },
  quick: { type: 'bool', default: false, help: 'about 1 s per run and small sizes (the smoke test)' },
  latencyRate: { type: 'int', default: 5000, help: 'events/s into the relay (all nodes, all kinds) in the latency and slow scenarios' },
  relay: { type: 'string', default: '', form: 'PATH', help: 'relay entry point to benchmark (default: this build\'s dist/server/main.js)' },
  cpuProf: { type: 'string', default: '', form: 'DIR', help: 'run the relay with --cpu-prof, writing its profiles into DIR' },
  relayNodeArgs: { type: 'list', default: ['--max-semi-space-size=2'], form: 'ARG[,ARG...]', help: 'node options for the relay process (default: those of the container image)' },
  relayEnv: { type: 'list', default: [], form: 'K=V[,K=V...]', help: 'extra environment of the relay process, e.g. MALLOC_ARENA_MAX=2' },
} satisfies FlagTable;

// ---- results -------------------------------------------------------------------------

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
  /** the stalled consumer's counts (slow scenario) */
  stalledReceived?: number;
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

// ---- processes -----------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined | false> | T | undefined | false): Promise<T> {
  return eventually(check, timeoutMs, what);
}



class RelayProcess {
  private readonly output: string[] = [];
  private exited = false;
  readonly exit: Promise<void>;

  private constructor(
    readonly proc: ChildProcess,
    readonly target: string,
    readonly httpPort: number,
  ) {
    const keep = (chunk: Buffer) => {
      this.output.push(chunk.toString('utf8'));
      if (this.output.length > 40) this.output.shift();
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    this.exit = new Promise((resolve) => proc.on('exit', () => ((this.exited = true), resolve())));
  }

  static async start(main: string, certDir: string, nodes: string[], extraArgs: string[], cpuProf: string, nodeArgs: string[] = [], extraEnv: Record<string, string> = {}): Promise<RelayProcess> {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    const args = [
      ...(cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : []),
      ...nodeArgs,
      main,
      '--listenAddress=127.0.0.1',
      `--gRPCPort=${grpcPort}`,
      `--httpPort=${httpPort}`,
      '--tlsEnabled',
      `--tlsCertPath=${certDir}`,
      `--nodes=${nodes.join(',')}`,
      '--logLevel=warn',
      ...extraArgs,
    ];
    const proc = spawn(process.execPath, args, {
      env: { ...process.env, KUBEARMOR_SERVICE: '', ENABLE_STDOUT_ALERTS: '', ENABLE_STDOUT_LOGS: '', ENABLE_STDOUT_MSGS: '', ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const relay = new RelayProcess(proc, `127.0.0.1:${grpcPort}`, httpPort);
    await waitFor('the relay to serve', 20_000, async () => {
      if (relay.exited) throw new Error(`relay exited: ${relay.outputTail()}`);
      const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined);
      return res?.status === 200;
    }).catch((err: Error) => {
      proc.kill('SIGKILL');
      throw new Error(`${err.message}; relay output: ${relay.outputTail()}`);
    });
    return relay;
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  outputTail(): string {
    return this.output.join('').slice(-2000);
  }

  async metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`);
    return res.text();
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 8000);
    await this.exit;
    clearTimeout(timer);
  }
}

/** Highest VmRSS of a process, sampled every 100 ms until stopped. */
function rssSampler(pid: number | undefined): { stop(): number | null } {
  if (!pid) return { stop: () => null };
  let max = memory(pid).rss;
  const timer = setInterval(() => {
    max = Math.max(max, memory(pid).rss);
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      max = Math.max(max, memory(pid).rss);
      return max / MiB;
    },
  };
}

// ---- one run -------------------------------------------------------------------------

interface ConsumerGroup {
  procs: number;
  perProc: number;
  kinds: Kind[];
  latency: boolean;
  /** stalls (slow scenario): left out of rates and loss checks */
  stall?: boolean;
  /** reads a stream nodes do not produce (scale): left out of rates */
  idle?: boolean;
}

interface RunSpec {
  scenario: Scenario;
  variant: string;
  via: 'relay' | 'direct';
  relayArgs?: string[];
  nodeProcs: number;
  nodesPerProc: number;
  /** events/s per node, all kinds; 0 = flood */
  ratePerNode: number;
  kinds: Kind[];
  pool: number;
  groups: ConsumerGroup[];
  warmupMs: number;
  measureMs: number;
  restMs?: number;
  /** slow: the window opens once the relay drops for the stalled consumer */
  waitForDrops?: boolean;
}

interface Ctx {
  certDir: string;
  relayMain: string;
  cpuProf: string;
  relayNodeArgs: string[];
  relayEnv: Record<string, string>;
  log(line: string): void;
}

interface Snapshot {
  at: number;
  relayCpu: number;
  nodesCpu: number;
  consumersCpu: number;
  nodeSent: number;
  /** per group, per consumer: total events received */
  received: number[][];
  stats: ConsumerStats[][];
}

function sumKinds(r: Record<Kind, number>): number {
  return r.alert + r.log + r.message;
}

function latencyOf(parts: ConsumerStats[]): Latency | null {
  const h = Histogram.merge(parts.map((p) => p.latency));
  if (h.n === 0) return null;
  return { n: h.n, p50: h.quantile(0.5), p99: h.quantile(0.99), max: h.max };
}

async function runTopology(spec: RunSpec, ctx: Ctx): Promise<RunResult> {
  const nodeProcs: Child[] = [];
  const groupProcs: Child[][] = spec.groups.map(() => []);
  let relay: RelayProcess | undefined;
  const errors: string[] = [];
  const loadAvg = loadavg().map((v) => Math.round(v * 100) / 100);
  try {
    // node daemons
    for (let i = 0; i < spec.nodeProcs; i++) nodeProcs.push(new Child(`nodes-${i}`, NODE_JS));
    const started = await Promise.all(
      nodeProcs.map((c, i) =>
        c.call<{ targets: string[] }>('start', {
          nodes: spec.nodesPerProc,
          namePrefix: `bench-node-${i}-`,
          certDir: ctx.certDir,
          rate: spec.ratePerNode,
          kinds: spec.kinds,
          pool: spec.pool,
          seed: 1 + i * 1000,
        } satisfies NodeSetup, 180_000),
      ),
    );
    const targets = started.flatMap((s) => s.targets);
    const nodeStats = () => Promise.all(nodeProcs.map((c) => c.call<NodeStats>('stats')));
    const watchersOf = async (kind: Kind) => (await nodeStats()).reduce((n, s) => n + s.watchers[kind], 0);

    // the relay
    if (spec.via === 'relay') {
      relay = await RelayProcess.start(ctx.relayMain, ctx.certDir, targets, spec.relayArgs ?? [], ctx.cpuProf, ctx.relayNodeArgs, ctx.relayEnv);
      const r = relay;
      await waitFor(`the relay to connect to ${targets.length} nodes`, 60_000, async () => metricSum(await r.metrics(), 'kubearmor_relay_upstream_connected') === targets.length);
      for (const kind of spec.kinds) await waitFor(`the relay's ${kind} streams`, 30_000, async () => (await watchersOf(kind)) >= targets.length);
    }

    // consumers
    const expected: Record<Kind, number> = { alert: 0, log: 0, message: 0 };
    await Promise.all(
      spec.groups.map(async (g, gi) => {
        for (let p = 0; p < g.procs; p++) groupProcs[gi]!.push(new Child(`consumers-${gi}-${p}`, CONSUMER_JS));
        for (const k of g.kinds) expected[k] += g.procs * g.perProc;
        await Promise.all(
          groupProcs[gi]!.map((c) =>
            c.call('start', {
              certDir: ctx.certDir,
              consumers: Array.from({ length: g.perProc }, () => ({ targets: relay ? [relay.target] : targets })),
              kinds: g.kinds,
              latency: g.latency,
              stallable: g.stall ?? false,
            } satisfies ConsumerSetup, 120_000),
          ),
        );
      }),
    );
    for (const kind of ALL_KINDS) {
      if (expected[kind] === 0) continue;
      if (relay) {
        const r = relay;
        await waitFor(`${expected[kind]} ${kind} consumers at the relay`, 30_000, async () => metricSum(await r.metrics(), 'kubearmor_relay_clients', { kind }) === expected[kind]);
      } else if (spec.kinds.includes(kind)) {
        await waitFor(`${expected[kind]} ${kind} consumers at every node`, 30_000, async () => (await watchersOf(kind)) === targets.length * expected[kind]);
      }
    }

    const allConsumers = groupProcs.flat();
    const snapshot = async (): Promise<Snapshot> => {
      const [ns, stats] = await Promise.all([nodeStats(), Promise.all(groupProcs.map((g) => Promise.all(g.map((c) => c.call<ConsumerStats>('stats')))))]);
      return {
        at: performance.now(),
        relayCpu: relay ? cpuSeconds(relay.pid) : 0,
        nodesCpu: ns.reduce((n, s) => n + s.cpuSeconds, 0),
        consumersCpu: stats.flat().reduce((n, s) => n + s.cpuSeconds, 0),
        nodeSent: ns.reduce((n, s) => n + sumKinds(s.sent), 0),
        received: stats.map((g) => g.flatMap((s) => s.received.map(sumKinds))),
        stats,
      };
    };
    const phase = (a: Snapshot, b: Snapshot, rssMax: number | null): PhaseResult => {
      const seconds = (b.at - a.at) / 1000;
      let delivered = 0;
      spec.groups.forEach((g, gi) => {
        if (g.stall || g.idle) return;
        b.received[gi]!.forEach((n, ci) => (delivered += n - a.received[gi]![ci]!));
      });
      const latencyParts = spec.groups.flatMap((g, gi) => (g.latency && !g.stall ? b.stats[gi]! : []));
      return {
        seconds: round(seconds, 3),
        eventsPerSec: Math.round(delivered / seconds),
        nodeEventsPerSec: Math.round((b.nodeSent - a.nodeSent) / seconds),
        relayCpuPct: relay ? round(((b.relayCpu - a.relayCpu) / seconds) * 100, 1) : null,
        relayRssMaxMiB: rssMax === null ? null : round(rssMax, 1),
        nodesCpuPct: round(((b.nodesCpu - a.nodesCpu) / seconds) * 100, 1),
        consumersCpuPct: round(((b.consumersCpu - a.consumersCpu) / seconds) * 100, 1),
        latencyMs: latencyParts.length > 0 ? latencyOf(latencyParts) : null,
      };
    };

    // at rest (scale): everything connected, nodes quiet
    let rest: PhaseResult | undefined;
    if (spec.restMs) {
      await sleep(Math.min(1000, spec.restMs));
      const rss = rssSampler(relay?.pid);
      const a = await snapshot();
      await sleep(spec.restMs);
      const b = await snapshot();
      rest = phase(a, b, rss.stop());
    }

    // under load
    const rss = rssSampler(relay?.pid);
    await Promise.all(nodeProcs.map((c) => c.call('go')));
    const stalling = groupProcs.filter((_, gi) => spec.groups[gi]!.stall).flat();
    await Promise.all(stalling.map((c) => c.call('stall')));
    if (spec.waitForDrops && relay) {
      const r = relay;
      await waitFor('the relay to drop for the stalled consumer', 30_000, async () => metricSum(await r.metrics(), 'kubearmor_relay_events_dropped_total', { reason: 'queue_full' }) > 0);
    }
    await sleep(spec.warmupMs);
    await Promise.all(allConsumers.map((c) => c.call('measure', { on: true })));
    const a = await snapshot();
    await sleep(spec.measureMs);
    await Promise.all(allConsumers.map((c) => c.call('measure', { on: false })));
    const b = await snapshot();
    const load = phase(a, b, rss.stop());
    const heapText = relay ? await relay.metrics() : '';
    const mib = (name: string) => round(metricSum(heapText, name) / MiB, 1);
    const relayHeapMiB = relay ? { used: mib('nodejs_heap_size_used_bytes'), total: mib('nodejs_heap_size_total_bytes'), external: mib('nodejs_external_memory_bytes') } : null;

    // stop the nodes and let everything in flight arrive
    await Promise.all(nodeProcs.map((c) => c.call('stop')));
    const countLost = async (): Promise<{ lost: number; final: NodeStats[]; stats: ConsumerStats[][] }> => {
      const final = await nodeStats();
      const sent: Record<Kind, number> = { alert: 0, log: 0, message: 0 };
      for (const s of final) for (const k of ALL_KINDS) sent[k] += s.sent[k];
      const stats = await Promise.all(groupProcs.map((g) => Promise.all(g.map((c) => c.call<ConsumerStats>('stats')))));
      let lost = 0;
      spec.groups.forEach((g, gi) => {
        if (g.stall) return;
        for (const s of stats[gi]!) for (const r of s.received) for (const k of g.kinds) lost += Math.max(0, sent[k] - r[k]);
      });
      return { lost, final, stats };
    };
    let settled = await countLost();
    let lastChange = Date.now();
    let lastTotal = -1;
    const drainDeadline = Date.now() + 20_000;
    while (settled.lost > 0 && Date.now() < drainDeadline && Date.now() - lastChange < 2000) {
      await sleep(150);
      settled = await countLost();
      const total = settled.stats.flat().reduce((n, s) => n + s.received.reduce((m, r) => m + sumKinds(r), 0), 0);
      if (total !== lastTotal) {
        lastTotal = total;
        lastChange = Date.now();
      }
    }
    for (const s of settled.stats.flat()) errors.push(...s.errors);

    const nodeSent: Record<Kind, number> = { alert: 0, log: 0, message: 0 };
    for (const s of settled.final) for (const k of ALL_KINDS) nodeSent[k] += s.sent[k];
    const metricsText = relay ? await relay.metrics() : '';
    const stalledReceived = spec.groups.some((g) => g.stall)
      ? settled.stats.flatMap((g, gi) => (spec.groups[gi]!.stall ? g : [])).reduce((n, s) => n + s.received.reduce((m, r) => m + sumKinds(r), 0), 0)
      : undefined;
    return {
      scenario: spec.scenario,
      variant: spec.variant,
      via: spec.via,
      nodes: targets.length,
      consumers: spec.groups.reduce((n, g) => n + g.procs * g.perProc, 0),
      rate: spec.ratePerNode * targets.length,
      loadAvg,
      load,
      ...(rest ? { rest } : {}),
      relayPeakRssMiB: relay ? round(memory(relay.pid).hwm / MiB, 1) : null,
      relayHeapMiB,
      nodeSent,
      relayReceived: relay ? metricSum(metricsText, 'kubearmor_relay_events_received_total') : null,
      relaySent: relay ? metricSum(metricsText, 'kubearmor_relay_events_sent_total') : null,
      droppedQueueFull: relay ? metricSum(metricsText, 'kubearmor_relay_events_dropped_total', { reason: 'queue_full' }) : null,
      droppedNoConsumer: relay ? metricSum(metricsText, 'kubearmor_relay_events_dropped_total', { reason: 'no_consumer' }) : null,
      lost: settled.lost,
      ...(stalledReceived !== undefined ? { stalledReceived } : {}),
      errors: [...new Set(errors)].slice(0, 5),
    };
  } finally {
    await Promise.all(groupProcs.flat().map((c) => c.stop()));
    await relay?.stop();
    await Promise.all(nodeProcs.map((c) => c.stop()));
  }
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

// ---- scenarios -----------------------------------------------------------------------

interface Sizes {
  /** nodes and consumers of the throughput, baseline, latency and slow runs */
  width: number;
  fanout: number[];
  /** relay flags of the slow run (a smaller queue fills sooner) */
  slowRelayArgs: string[];
  scaleNodeProcs: number;
  scaleNodesPerProc: number;
  scaleIdleProcs: number;
  scaleIdlePerProc: number;
  scaleRatePerNode: number;
  pool: number;
}

const FULL: Sizes = { width: 4, fanout: [1, 16, 64], slowRelayArgs: [], scaleNodeProcs: 4, scaleNodesPerProc: 50, scaleIdleProcs: 4, scaleIdlePerProc: 125, scaleRatePerNode: 10, pool: 48 };
const QUICK: Sizes = { width: 2, fanout: [1, 4], slowRelayArgs: ['--clientQueueSize=256'], scaleNodeProcs: 1, scaleNodesPerProc: 10, scaleIdleProcs: 1, scaleIdlePerProc: 20, scaleRatePerNode: 10, pool: 16 };

function specsFor(scenario: Scenario, sizes: Sizes, t: { warmupMs: number; measureMs: number }, latencyRate: number): RunSpec[] {
  const w = sizes.width;
  const four = (variant: string, via: 'relay' | 'direct', ratePerNode: number, latency: boolean, relayArgs?: string[]): RunSpec => ({
    scenario,
    variant,
    via,
    relayArgs,
    nodeProcs: w,
    nodesPerProc: 1,
    ratePerNode,
    kinds: ALL_KINDS,
    pool: sizes.pool,
    groups: [{ procs: w, perProc: 1, kinds: ALL_KINDS, latency }],
    ...t,
  });
  switch (scenario) {
    case 'throughput':
      return [four('relay', 'relay', 0, false)];
    case 'baseline':
      return [four('direct', 'direct', 0, false), four('reencode', 'relay', 0, false, ['--reencode'])];
    case 'latency':
      return [four('relay', 'relay', latencyRate / w, true), four('direct', 'direct', latencyRate / w, true)];
    case 'fanout':
      return sizes.fanout.map((n) => {
        const procs = Math.min(n, 4);
        return {
          scenario,
          variant: `${n} consumers`,
          via: 'relay',
          nodeProcs: 1,
          nodesPerProc: 1,
          ratePerNode: 0,
          kinds: ALL_KINDS,
          pool: sizes.pool,
          groups: [{ procs, perProc: Math.ceil(n / procs), kinds: ALL_KINDS, latency: false }],
          ...t,
        } satisfies RunSpec;
      });
    case 'slow':
      return [
        {
          ...four(`1 stalled of ${w}`, 'relay', latencyRate / w, true, sizes.slowRelayArgs),
          groups: [
            { procs: w - 1, perProc: 1, kinds: ALL_KINDS, latency: true },
            { procs: 1, perProc: 1, kinds: ALL_KINDS, latency: false, stall: true },
          ],
          waitForDrops: true,
        },
      ];
    case 'scale':
      return [
        {
          scenario,
          variant: `${sizes.scaleNodeProcs * sizes.scaleNodesPerProc} nodes, ${sizes.scaleIdleProcs * sizes.scaleIdlePerProc} idle`,
          via: 'relay',
          nodeProcs: sizes.scaleNodeProcs,
          nodesPerProc: sizes.scaleNodesPerProc,
          ratePerNode: sizes.scaleRatePerNode,
          // messages stay quiet: the idle consumers hold WatchMessages streams open
          kinds: ['alert', 'log'],
          pool: 8,
          groups: [
            { procs: sizes.scaleIdleProcs, perProc: sizes.scaleIdlePerProc, kinds: ['message'], latency: false, idle: true },
            { procs: 1, perProc: 2, kinds: ['alert', 'log'], latency: true },
          ],
          restMs: t.measureMs,
          ...t,
        },
      ];
  }
}

// ---- report --------------------------------------------------------------------------

function machine(): BenchReport['machine'] {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpu;
  } catch {
    // not Linux
  }
  return { cpu, cores: cpus().length, node: process.version, memGiB: round(totalmem() / 1024 ** 3, 1), loadAvgAtStart: loadavg().map((v) => round(v, 2)) };
}

function summarize(runs: RunResult[]): BenchReport['summary'] {
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

function table(report: BenchReport): string {
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
  const slow = report.runs.find((r) => r.scenario === 'slow');
  if (slow) out.push(`   slow consumer: ${slow.droppedQueueFull} events dropped for it (queue_full), it received ${slow.stalledReceived}; the ${slow.consumers - 1} others ${slow.load.eventsPerSec} events/s, lost ${slow.lost}`);
  return out.join('\n');
}

// ---- entry ---------------------------------------------------------------------------

export interface BenchOptions {
  durationMs: number;
  warmupMs: number;
  scenarios: Scenario[];
  quick: boolean;
  latencyRate: number;
  relayMain?: string;
  cpuProf?: string;
  /** extra node options and environment of the relay process (memory experiments) */
  relayNodeArgs?: string[];
  relayEnv?: Record<string, string>;
  log?: (line: string) => void;
}

export async function runBench(opts: BenchOptions): Promise<BenchReport> {
  const log = opts.log ?? (() => undefined);
  const sizes = opts.quick ? QUICK : FULL;
  const certDir = mkdtempSync(join(tmpdir(), 'kubearmor-bench-'));
  const m = machine();
  try {
    const quiet = { out: () => undefined, err: (t: string) => log(t.trim()) };
    if ((await runCerts(['init', `--out=${certDir}`, '--force'], quiet)) !== 0) throw new Error('certs init failed');
    const ctx: Ctx = { certDir, relayMain: opts.relayMain || RELAY_MAIN, cpuProf: opts.cpuProf ?? '', relayNodeArgs: opts.relayNodeArgs ?? [], relayEnv: opts.relayEnv ?? {}, log };
    const runs: RunResult[] = [];
    for (const scenario of SCENARIOS.filter((s) => opts.scenarios.includes(s))) {
      for (const spec of specsFor(scenario, sizes, { warmupMs: opts.warmupMs, measureMs: opts.durationMs }, opts.latencyRate)) {
        const t0 = Date.now();
        log(`${spec.scenario} / ${spec.variant} ...`);
        const r = await runTopology(spec, ctx);
        runs.push(r);
        const lat = r.load.latencyMs ? `, p50 ${r.load.latencyMs.p50.toFixed(2)} p99 ${r.load.latencyMs.p99.toFixed(2)} ms` : '';
        log(`  ${r.load.eventsPerSec} events/s, relay CPU ${r.load.relayCpuPct ?? '-'}%, peak RSS ${r.relayPeakRssMiB ?? '-'} MiB${lat}, lost ${r.lost} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
        if (r.errors.length > 0) log(`  errors: ${r.errors.join('; ')}`);
      }
    }
    return {
      machine: m,
      options: { durationS: opts.durationMs / 1000, warmupS: opts.warmupMs / 1000, quick: opts.quick, scenarios: opts.scenarios, latencyRate: opts.latencyRate },
      runs,
      summary: summarize(runs),
    };
  } finally {
    rmSync(certDir, { recursive: true, force: true });
  }
}

export async function main(argv: string[]): Promise<number> {
  let flags;
  try {
    flags = parseFlags(argv, FLAGS, { command: 'bench', summary: 'Benchmarks the relay: throughput, baselines, latency, fan-out, a slow consumer, scale. Every party a process on loopback, mutual TLS.' });
    if (flags._.length > 0) throw new UsageError(`unexpected argument: ${flags._[0]}`);
  } catch (e) {
    if (e instanceof HelpRequested) {
      process.stdout.write(`${e.text}\n`);
      return 0;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const quick = flags.quick;
  const report = await runBench({
    durationMs: flags._set.has('duration') || !quick ? flags.duration : 1000,
    warmupMs: flags._set.has('warmup') || !quick ? flags.warmup : 300,
    scenarios: flags.scenarios as Scenario[],
    quick,
    latencyRate: flags.latencyRate,
    relayMain: flags.relay || undefined,
    cpuProf: flags.cpuProf || undefined,
    relayNodeArgs: flags.relayNodeArgs,
    relayEnv: Object.fromEntries(flags.relayEnv.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${table(report)}\n`);
  if (flags.json) {
    writeFileSync(flags.json, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`results written to ${flags.json}\n`);
  }
  return 0;
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
