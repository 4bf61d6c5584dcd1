// One benchmark run: node processes, the relay (or none: consumers dial the nodes
// directly), consumer processes; a window of load (and, for scale, one at rest); then the
// nodes stop and every event they sent is accounted for.
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Kind } from '../server/kinds.js';
import { eventually } from '../harness/eventually.js';
import { startNats, type NatsCluster } from '../harness/nats-server.js';
import { startSearchCluster, type Flavour, type SearchCluster } from '../harness/search-cluster.js';
import { metricSum } from '../harness/prom-text.js';
import { Child, cpuSeconds, Histogram, memory } from './ipc.js';
import type { ConsumerSetup, ConsumerStats } from './consumer.js';
import type { NodeSetup, NodeStats } from './node.js';
import { RelayProcess, rssSampler } from './relay-process.js';
import { round, type Latency, type PhaseResult, type RunResult } from './report.js';
import type { Scenario } from './scenarios/index.js';

const NODE_JS = fileURLToPath(new URL('./node.js', import.meta.url));
const CONSUMER_JS = fileURLToPath(new URL('./consumer.js', import.meta.url));
export const ALL_KINDS: Kind[] = ['alert', 'log', 'message'];
const MiB = 1024 * 1024;

export interface ConsumerGroup {
  procs: number;
  perProc: number;
  kinds: Kind[];
  latency: boolean;
  /** stalls (slow scenario): left out of rates and loss checks */
  stall?: boolean;
  /** reads a stream nodes do not produce (scale): left out of rates */
  idle?: boolean;
}

export interface RunSpec {
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
  /** scale-out: this many relays over one JetStream server, consumers spread over them */
  scaleOutRelays?: number;
  /** sink: the relay also indexes into this (a local stand-in for the cluster, in this process) */
  sink?: Flavour;
}

function sinkKinds(flavour: Flavour): Kind[] {
  return flavour === 'elasticsearch' ? ['alert'] : ['alert', 'log'];
}

/** The relay's environment that switches a sink on, as the KubeArmor operator sets it. */
function sinkEnv(flavour: Flavour, url: string): Record<string, string> {
  return flavour === 'elasticsearch' ? { ENABLE_DASHBOARDS: 'true', ES_URL: url } : { ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_URL: url, OS_ALERTS_INDEX: 'kubearmor' };
}

export interface Ctx {
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
  /** per relay process, then nats-server (scale-out) */
  processCpu: number[];
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

export async function runTopology(spec: RunSpec, ctx: Ctx): Promise<RunResult> {
  const nodeProcs: Child[] = [];
  const groupProcs: Child[][] = spec.groups.map(() => []);
  const relays: RelayProcess[] = [];
  let nats: NatsCluster | undefined;
  let cluster: SearchCluster | undefined;
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

    // the relay, or the relays and NATS of scale-out
    const relayMetricSum = async (name: string, labels: Record<string, string> = {}) => (await Promise.all(relays.map(async (r) => metricSum(await r.metrics(), name, labels)))).reduce((a, b) => a + b, 0);
    if (spec.via === 'relay') {
      const n = spec.scaleOutRelays ?? 0;
      if (n > 0) nats = await startNats(1);
      if (spec.sink) cluster = await startSearchCluster({ flavour: spec.sink, keepSources: false });
      const env = cluster ? { ...ctx.relayEnv, ...sinkEnv(cluster.flavour, cluster.url) } : ctx.relayEnv;
      for (let i = 0; i < Math.max(1, n); i++) {
        const scaleOutArgs = nats ? [`--natsUrl=${nats.urls}`, `--replicaId=bench-relay-${i}`, '--natsTls=false'] : [];
        relays.push(await RelayProcess.start(ctx.relayMain, ctx.certDir, targets, [...(spec.relayArgs ?? []), ...scaleOutArgs], ctx.cpuProf, ctx.relayNodeArgs, env));
      }
      if (nats) await eventually(async () => (await relayMetricSum('kubearmor_relay_scaleout_replicas')) === n * n, 30_000, `${n} relays to see each other`);
      // scale-out: each node is dialled by --upstreamReplicas (default 2) relays
      const dials = targets.length * Math.min(n > 0 ? 2 : 1, Math.max(1, n));
      await eventually(async () => (await relayMetricSum('kubearmor_relay_upstream_connected')) === dials, 60_000, `the relays to connect to ${targets.length} nodes`);
      for (const kind of spec.kinds) await eventually(async () => (await watchersOf(kind)) >= targets.length, 30_000, `the relay's ${kind} streams`);
    }
    const relay = relays[0];
    let nextRelay = 0;
    const relayTarget = () => relays[nextRelay++ % relays.length]!.target;

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
              consumers: Array.from({ length: g.perProc }, () => ({ targets: relay ? [relayTarget()] : targets })),
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
        // a sink is one more consumer of the kinds it indexes
        const want = expected[kind] + (spec.sink && sinkKinds(spec.sink).includes(kind) ? relays.length : 0);
        await eventually(async () => (await relayMetricSum('kubearmor_relay_clients', { kind })) === want, 30_000, `${want} ${kind} consumers at the relay`);
      } else if (spec.kinds.includes(kind)) {
        await eventually(async () => (await watchersOf(kind)) === targets.length * expected[kind], 30_000, `${expected[kind]} ${kind} consumers at every node`);
      }
    }

    const allConsumers = groupProcs.flat();
    const pids = nats ? [...relays.map((r) => r.pid), nats.servers[0]!.proc.pid ?? 0] : [];
    const snapshot = async (): Promise<Snapshot> => {
      const [ns, stats] = await Promise.all([nodeStats(), Promise.all(groupProcs.map((g) => Promise.all(g.map((c) => c.call<ConsumerStats>('stats')))))]);
      return {
        at: performance.now(),
        relayCpu: relays.reduce((n, r) => n + cpuSeconds(r.pid), 0),
        processCpu: pids.map((pid) => cpuSeconds(pid)),
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
    const processRss = pids.map((pid) => rssSampler(pid));
    await Promise.all(nodeProcs.map((c) => c.call('go')));
    const stalling = groupProcs.filter((_, gi) => spec.groups[gi]!.stall).flat();
    await Promise.all(stalling.map((c) => c.call('stall')));
    if (nats) {
      // the first events of a node are held for a moment while its two relays fall in step
      await eventually(async () => (await snapshot()).received.flat().some((n) => n > 0), 30_000, 'events through JetStream');
    }
    if (spec.waitForDrops && relay) {
      const r = relay;
      await eventually(async () => metricSum(await r.metrics(), 'kubearmor_relay_events_dropped_total', { reason: 'queue_full' }) > 0, 30_000, 'the relay to drop for the stalled consumer');
    }
    await sleep(spec.warmupMs);
    await Promise.all(allConsumers.map((c) => c.call('measure', { on: true })));
    const a = await snapshot();
    await sleep(spec.measureMs);
    await Promise.all(allConsumers.map((c) => c.call('measure', { on: false })));
    const b = await snapshot();
    const load = phase(a, b, rss.stop());
    const seconds = (b.at - a.at) / 1000;
    const processes = pids.map((_, i) => ({
      name: i < relays.length ? `relay ${i + 1}` : 'nats-server',
      cpuPct: round(((b.processCpu[i]! - a.processCpu[i]!) / seconds) * 100, 1),
      rssMaxMiB: round(processRss[i]!.stop() ?? 0, 1),
    }));
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
    if (cluster && relays.length > 0) {
      await eventually(async () => (await relayMetricSum('kubearmor_relay_sink_queued_events')) === 0, 30_000, 'the sink to index what it holds').catch((err: Error) => errors.push(err.message));
    }
    const metricsText = (await Promise.all(relays.map((r) => r.metrics()))).join('\n');
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
      // scale-out: two relays read each node; what entered the relay tier is what JetStream stored
      relayReceived: relay ? metricSum(metricsText, nats ? 'kubearmor_relay_nats_published_total' : 'kubearmor_relay_events_received_total') : null,
      relaySent: relay ? metricSum(metricsText, 'kubearmor_relay_events_sent_total') : null,
      droppedQueueFull: relay ? metricSum(metricsText, 'kubearmor_relay_events_dropped_total', { reason: 'queue_full' }) : null,
      droppedNoConsumer: relay ? metricSum(metricsText, 'kubearmor_relay_events_dropped_total', { reason: 'no_consumer' }) : null,
      lost: settled.lost,
      ...(cluster
        ? {
            sink: {
              name: cluster.flavour,
              indexed: metricSum(metricsText, 'kubearmor_relay_sink_indexed_total'),
              dropped: metricSum(metricsText, 'kubearmor_relay_events_dropped_total', { reason: 'sink_full' }) + metricSum(metricsText, 'kubearmor_relay_events_dropped_total', { reason: 'sink_rejected' }),
              bulkRequests: cluster.stats.bulkRequests,
            },
          }
        : {}),
      ...(stalledReceived !== undefined ? { stalledReceived } : {}),
      ...(processes.length > 0 ? { processes } : {}),
      errors: [...new Set(errors)].slice(0, 5),
    };
  } finally {
    await Promise.all(groupProcs.flat().map((c) => c.stop()));
    await Promise.all(relays.map((r) => r.stop()));
    await nats?.close();
    await cluster?.close();
    await Promise.all(nodeProcs.map((c) => c.stop()));
  }
}
