// Scale-out mode (--natsUrl): several relay replicas share the node daemons through NATS
// JetStream. Loaded with a dynamic import only when --natsUrl is set.
//
//   node sources (--nodes, discovery) ──► assignment over live replicas (membership.ts)
//        └─► this replica's share ──► upstreams (as in single mode) ──► publisher.ts ──► JetStream
//   JetStream (every node) ──► feeder.ts ──► hub ──► consumers (as in single mode)
//
// Until NATS is reached the replica serves consumers (nothing to deliver), dials no node
// and answers /readyz with 503; it keeps trying.
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { Hub } from '../hub.js';
import { KINDS, type Kind } from '../kinds.js';
import type { Logger } from '../logger.js';
import type { RelayMetrics } from '../metrics.js';
import type { SinkFor } from '../upstream.js';
import { nodesOf } from './assignment.js';
import { connectEngine, type Engine, type EngineOptions } from './engine.js';
import { Feeder } from './feeder.js';
import { Membership } from './membership.js';
import { createScaleOutMetrics, type ScaleOutMetrics } from './metrics.js';
import { AckRouter, JetStreamSink, StoredIndex } from './publisher.js';
import { memberKey } from './subjects.js';

export interface ScaleOutOptions extends Omit<EngineOptions, 'name' | 'logger'> {
  replicaId: string;
  /** how many replicas dial each node daemon */
  upstreamReplicas: number;
  logger: Logger;
  metrics: RelayMetrics;
}

/** What scale-out needs of the relay once it runs. */
export interface RelayParts {
  hub: Hub;
  upstreams: { setTargets(source: string, addresses: readonly string[]): void };
  addReadinessCheck(check: () => boolean): void;
}

const SINK_LIMITS = { maxPending: 1024, maxPendingBytes: 2 * 1024 * 1024, ackTimeoutMs: 3000 };
// at most this many events reach the hub after it asks to pause: within its queues' headroom
const FEED_BATCH = 128;
// For the feeders' consumer creation. After a server of a cluster dies, nats-server 2.9 keeps
// placing about half of the new consumers on it for tens of seconds (measured: creations that
// never answer); with 2 s per attempt instead of the client's 5 s default, a feeder retries
// soon enough to land on a live server within seconds.
const FEED_REQUEST_TIMEOUT_MS = 2000;

export class ScaleOut {
  readonly sinkFor: SinkFor;
  private readonly log: Logger;
  private readonly metrics: ScaleOutMetrics;
  private readonly key: string;
  private readonly candidates = new Map<string, ReadonlySet<string>>();
  private engine: Engine | undefined;
  private js: JetStreamClient | undefined;
  private membership: Membership | undefined;
  private feeders: Feeder[] = [];
  private relay: RelayParts | undefined;
  private connected = false;
  private assigned: readonly string[] = [];
  private readonly stored = new StoredIndex();
  private readonly closing = new Set<Promise<void>>();
  private router: AckRouter | undefined;
  private closed = false;
  private starting: Promise<void> | undefined;

  constructor(private readonly opts: ScaleOutOptions) {
    this.log = opts.logger.child({ component: 'scaleout' });
    this.key = memberKey(opts.replicaId);
    this.metrics = createScaleOutMetrics(opts.metrics, {
      connected: () => this.connected,
      consumerPending: (kind: Kind) => this.feeders.find((f) => f.kind === kind)?.pending ?? 0,
      assignedNodes: () => this.assigned.length,
      liveReplicas: () => this.membership?.replicas.length ?? 0,
      holding: () => this.stored.holders,
    });
    // a holder refreshes, and a standby looks for a dead or missing holder, every quarter lease
    const tickMs = Math.max(100, Math.floor(opts.membershipTtlMs / 4));
    const sinkOpts = {
      replica: this.key,
      router: () => this.router,
      leases: () => this.engine?.leases,
      index: this.stored,
      closing: this.closing,
      tallies: (kind: Kind) => this.metrics.publishTallies(kind),
      logger: this.log,
      leaseTtlMs: opts.membershipTtlMs,
      tickMs,
      // every standby ticks at least once while a new holder settles: one that has been
      // waiting for a dead holder's lease to expire, with events the newcomer never read,
      // takes the lease over instead of losing them
      settleMs: tickMs + 300,
      ...SINK_LIMITS,
    };
    this.sinkFor = (node, kind) => new JetStreamSink(node, kind, sinkOpts);
  }

  /** Replaces the node daemons one source (static list, discovery) knows. */
  setCandidates(source: string, nodes: readonly string[]): void {
    this.candidates.set(source, new Set(nodes));
    this.reassign();
  }

  /** Connects in the background; the relay is ready once NATS is reached and stays so while connected. */
  start(relay: RelayParts): void {
    this.relay = relay;
    relay.addReadinessCheck(() => this.connected);
    this.starting = this.connect();
  }

  async close(): Promise<void> {
    this.closed = true;
    // a replica that never reached NATS does not wait for it to shut down
    await Promise.race([this.starting, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    await this.membership?.close();
    this.relay?.upstreams.setTargets('assigned', []);
    // holders publish what they read and release their leases, so standbys continue at once
    await Promise.all([...this.closing]);
    await Promise.all(this.feeders.map((f) => f.close()));
    this.router?.close();
    await this.engine?.close();
    this.connected = false;
  }

  private async connect(): Promise<void> {
    const { opts } = this;
    this.log.info({ servers: opts.servers, replica: this.key, stream: opts.stream }, 'connecting to NATS');
    for (let attempt = 1; !this.closed; attempt++) {
      try {
        this.engine = await connectEngine({ ...opts, name: `kubearmor-relay ${this.key}`, logger: this.log });
        break;
      } catch (err) {
        this.log.warn({ err: (err as Error).message, attempt }, 'cannot set up the JetStream stream and membership bucket; retrying');
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * attempt)).unref());
      }
    }
    const engine = this.engine;
    if (!engine) return;
    if (this.closed) {
      await engine.close();
      return;
    }
    this.js = jetstream(engine.nc, { timeout: FEED_REQUEST_TIMEOUT_MS });
    this.router = new AckRouter(engine.nc);
    void this.watchStatus(engine);
    const startAfter = (await engine.jsm.streams.info(opts.stream)).state.last_seq;
    const hub = this.relay!.hub;
    this.feeders = KINDS.map(
      ({ kind }) =>
        new Feeder({ js: this.js!, stream: opts.stream, startAfter, kind, channel: hub.channels[kind], delivered: this.metrics.delivered(kind), logger: this.log, batch: FEED_BATCH, stored: this.stored }),
    );
    this.membership = new Membership({
      kv: engine.kv,
      key: this.key,
      ttlMs: opts.membershipTtlMs,
      heartbeatMs: Math.max(200, Math.min(1000, Math.floor(opts.membershipTtlMs / 4))),
      logger: this.log,
      onChange: (replicas) => {
        this.log.info({ replicas }, 'relay replicas changed');
        this.reassign();
      },
    });
    this.membership.start();
    this.connected = !engine.nc.isClosed();
    this.log.info({ stream: opts.stream, startAfter }, 'connected to NATS JetStream');
  }

  private async watchStatus(engine: Engine): Promise<void> {
    for await (const s of engine.nc.status()) {
      if (s.type === 'disconnect') {
        this.connected = false;
        this.log.warn({ server: s.server }, 'disconnected from NATS');
      } else if (s.type === 'reconnect') {
        this.connected = true;
        this.log.info({ server: s.server }, 'reconnected to NATS');
      }
    }
  }

  /** Dials this replica's share of the node daemons, given the live replicas. */
  private reassign(): void {
    if (!this.relay || this.closed) return;
    const nodes = new Set<string>();
    for (const set of this.candidates.values()) for (const n of set) nodes.add(n);
    const replicas = this.membership?.replicas ?? [];
    const mine = replicas.length > 0 ? nodesOf(this.key, nodes, replicas, this.opts.upstreamReplicas) : [];
    if (mine.length === this.assigned.length && mine.every((n, i) => n === this.assigned[i])) return;
    this.assigned = mine;
    this.log.info({ assigned: mine, replicas: replicas.length, nodes: nodes.size }, 'nodes assigned to this replica');
    this.relay.upstreams.setTargets('assigned', mine);
  }
}
