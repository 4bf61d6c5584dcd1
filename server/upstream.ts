// One node daemon: HealthCheck, then the three watch streams, their bytes into the hub,
// and a redial with backoff whenever the node goes away or ends a stream.
//
// Each session gets a fresh grpc Client (with its own subchannel pool) so that every
// dial uses the transport's current credentials and our backoff, not grpc-js's hidden
// channel-level reconnect timer (which grows to 120 s).
import { getDefaultHighWaterMark, setDefaultHighWaterMark } from 'node:stream';
import { randomInt } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { Backoff, type BackoffOptions } from './backoff.js';
import type { Hub } from './hub.js';
import { KIND_BY_NAME, KINDS, methodPath, type Kind, type KindSpec } from './kinds.js';
import type { Logger } from './logger.js';
import type { RelayMetrics, Tally } from './metrics.js';
import { decodeReply, encodeNonce, encodeRequest } from './proto.js';
import { parseHostPort } from './flags.js';
import type { Transport } from './transport.js';

/** Rewrites an event on its way through (remote-host enrichment of logs); identity by default. */
export type EventTransform = (kind: Kind, bytes: Buffer) => Buffer;

/**
 * Where one node's events of one kind go, and whether reads of them should pause. The hub's
 * Channel is one (single-relay mode); scale-out mode publishes to JetStream instead.
 */
export interface EventSink {
  publish(bytes: Buffer): void;
  readonly paused: boolean;
  /** the listener learns when reads should pause or resume; returns the unsubscribe */
  onFlow(listener: (paused: boolean) => void): () => void;
  /** a new session with the node begins (its watch streams are about to open) */
  sessionStarted?(): void;
  /** the session ended: what comes next follows a gap */
  sessionEnded?(): void;
}

/** The sink of one node and kind; called once per upstream and kind. */
export type SinkFor = (node: string, kind: Kind) => EventSink & { close?(): void };

export interface UpstreamOptions {
  transport: Transport;
  hub: Hub;
  metrics: RelayMetrics;
  logger: Logger;
  backoff: BackoffOptions;
  healthTimeoutMs: number;
  /** a session that lasted this long resets the backoff */
  stableAfterMs: number;
  transform?: EventTransform;
  /** grpc-js refuses a larger message before buffering it, so this bounds memory per stream */
  maxEventBytes: number;
  /** where events go instead of the hub's channels (scale-out publishes to JetStream) */
  sinkFor?: SinkFor;
}

const identity = (b: Buffer): Buffer => b;

/** What /status reports of one node daemon (server/status.ts adds rates and its source). */
export interface UpstreamState {
  address: string;
  /** HostName of the node's events, read from the first event of each session */
  name: string | undefined;
  connected: boolean;
  /** when it connected or was lost (when it was added, for a node never connected) */
  since: Date;
  /** why the last session or dial failed, e.g. a refused TLS handshake */
  lastError: string | undefined;
  lastErrorAt: Date | undefined;
  /** events received per kind since the relay started (the metric's tallies) */
  received: Record<Kind, number>;
}

// grpc-go node daemons send GOAWAY too_many_pings to clients pinging more often than every
// 5 minutes, so our own pings stay just above that; a node whose host vanished is noticed
// sooner through stream errors and, over TLS, TCP keepalive on the dialed socket.
const NODE_KEEPALIVE_MS = 6 * 60 * 1000;

/**
 * What a paused upstream stream may read ahead, in bytes of maximum-size events. grpc-js's
 * client stream is an object-mode Readable with Node's default high-water mark (16
 * messages), which a paused stream fills: 16 maximum-size events per kind and node. The
 * read-ahead keeps 16 messages for ordinary limits (throughput depends on it) and shrinks
 * for large --maxEventBytes, never below 2.
 */
const READ_AHEAD_BYTES = 4 * 1024 * 1024;

const RESUBSCRIBE_BACKOFF = { initialMs: 100, maxMs: 10_000 };

export function readAheadMessages(maxEventBytes: number): number {
  return Math.max(2, Math.min(16, Math.floor(READ_AHEAD_BYTES / maxEventBytes)));
}

/** Creates a stream with a given object-mode high-water mark (grpc-js takes Node's default). */
function withReadAhead<T>(messages: number, create: () => T): T {
  const previous = getDefaultHighWaterMark(true);
  setDefaultHighWaterMark(true, messages);
  try {
    return create();
  } finally {
    setDefaultHighWaterMark(true, previous);
  }
}

/**
 * grpc-js wraps a failed dial as "No connection established. Last error: Error: <reason>.
 * Resolution note: "; logs and /status need the reason.
 */
export function tidyDetails(details: string): string {
  return details.replace(/^No connection established\. Last error: (?:Error: )?/, 'cannot connect: ').replace(/\.?\s*Resolution note:\s*$/, '');
}

export class Upstream {
  private readonly backoff: Backoff;
  private readonly log: Logger;
  private readonly host: string;
  private readonly received: Record<Kind, Tally>;
  private client: grpc.Client | undefined;
  private streams = new Map<Kind, grpc.ClientReadableStream<Buffer>>();
  private retryTimer: NodeJS.Timeout | undefined;
  private connectedAt = 0;
  private since = new Date();
  private name: string | undefined;
  private lastError: { reason: string; at: Date } | undefined;
  private closed = false;
  private session = 0;
  private readonly unlistenFlow: (() => void)[] = [];
  /** per kind: how soon a stream ended by an oversize event is opened again */
  private readonly resubscribe = new Map<Kind, Backoff>();
  private readonly rewatchTimers = new Set<NodeJS.Timeout>();
  private readonly sinks: Record<Kind, EventSink & { close?(): void }>;

  constructor(
    readonly address: string,
    private readonly opts: UpstreamOptions,
  ) {
    const hp = parseHostPort(address);
    if (!hp) throw new Error(`invalid node address ${JSON.stringify(address)}: expected HOST:PORT`);
    this.host = hp.host;
    this.backoff = new Backoff(opts.backoff);
    this.log = opts.logger.child({ node: address });
    this.received = Object.fromEntries(KINDS.map((k) => [k.kind, opts.metrics.received.tally({ kind: k.kind, node: address })])) as Record<Kind, Tally>;
    const sinkFor = opts.sinkFor;
    this.sinks = Object.fromEntries(KINDS.map((k) => [k.kind, sinkFor ? sinkFor(address, k.kind) : opts.hub.channels[k.kind]])) as Record<Kind, EventSink>;
    for (const spec of KINDS) {
      this.unlistenFlow.push(this.sinks[spec.kind].onFlow((paused) => this.setPaused(spec.kind, paused)));
    }
    opts.metrics.upstreamConnected.set({ node: address }, 0);
  }

  start(): void {
    void this.connect();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    for (const off of this.unlistenFlow) off();
    this.teardown();
    for (const spec of KINDS) this.sinks[spec.kind].close?.();
    // a node that left (pod deleted, IP changed) leaves no series behind
    this.opts.metrics.upstreamConnected.remove({ node: this.address });
    for (const spec of KINDS) this.opts.metrics.received.remove({ kind: spec.kind, node: this.address });
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const session = ++this.session;
    const { transport } = this.opts;
    const client = new grpc.Client(this.address, transport.channelCredentials(this.host), {
      ...transport.channelOptions?.(this.host),
      'grpc.use_local_subchannel_pool': 1,
      'grpc.keepalive_time_ms': NODE_KEEPALIVE_MS,
      'grpc.keepalive_permit_without_calls': 0,
      'grpc.max_receive_message_length': this.opts.maxEventBytes,
      'grpc.enable_retries': 0,
    });
    this.client = client;
    try {
      await this.healthCheck(client);
    } catch (err) {
      this.lost(session, `health check failed: ${(err as Error).message}`);
      return;
    }
    if (session !== this.session || this.closed) return;
    this.connectedAt = Date.now();
    this.since = new Date(this.connectedAt);
    this.opts.metrics.upstreamConnected.set({ node: this.address }, 1);
    this.log.info({ transport: transport.name }, 'node connected');
    for (const spec of KINDS) {
      this.sinks[spec.kind].sessionStarted?.();
      this.watch(session, client, spec);
    }
  }

  private healthCheck(client: grpc.Client): Promise<void> {
    const nonce = randomInt(0, 2 ** 31 - 1);
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        '/feeder.LogService/HealthCheck',
        identity,
        identity,
        encodeNonce(nonce),
        new grpc.Metadata(),
        { deadline: Date.now() + this.opts.healthTimeoutMs },
        (err, reply) => {
          if (err) return reject(new Error(tidyDetails(err.details || err.message)));
          // A malformed reply must fail this node's session, not the relay (this runs
          // outside any try, from grpc-js's callback).
          let retval: number;
          try {
            retval = decodeReply(reply!);
          } catch (e) {
            return reject(new Error(`HealthCheck reply is not a ReplyMessage: ${(e as Error).message}`));
          }
          if (retval !== nonce) return reject(new Error(`HealthCheck answered ${retval}, expected nonce ${nonce}`));
          resolve();
        },
      );
    });
  }

  private watch(session: number, client: grpc.Client, spec: KindSpec): void {
    const stream = withReadAhead(readAheadMessages(this.opts.maxEventBytes), () =>
      client.makeServerStreamRequest(methodPath(spec), identity, identity, encodeRequest(spec.upstreamFilter), new grpc.Metadata(), {}),
    );
    this.streams.set(spec.kind, stream);
    const channel = this.sinks[spec.kind];
    const tally = this.received[spec.kind];
    const transform = this.opts.transform;
    let first = true;
    stream.on('data', (bytes: Buffer) => {
      tally.n++;
      if (first) {
        // once per stream, never per event: the node's name for /status, and a stream that
        // delivers again ends the oversize back-off
        first = false;
        this.resubscribe.get(spec.kind)?.reset();
        this.learnName(spec.kind, bytes);
      }
      channel.publish(transform ? transform(spec.kind, bytes) : bytes);
    });
    if (channel.paused) stream.pause();
    // 'error' carries the non-OK status; 'status' always comes last, OK or not.
    stream.on('error', () => {});
    stream.on('status', (status: grpc.StatusObject) => {
      if (status.code === grpc.status.RESOURCE_EXHAUSTED && this.streams.get(spec.kind) === stream) {
        this.oversize(session, client, spec, status.details);
        return;
      }
      const why = status.code === grpc.status.OK ? `${spec.method} stream ended by the node` : `${spec.method} stream failed: ${grpc.status[status.code]} ${status.details}`;
      this.lost(session, why);
    });
  }

  /**
   * grpc-js ends a call whose next message is above the receive limit, before buffering it.
   * That event is lost (and counted); only that stream is opened again, after a delay that
   * grows while the node keeps sending such events, so the node's other streams go on and a
   * hostile node cannot make the relay spin.
   */
  private oversize(session: number, client: grpc.Client, spec: KindSpec, details: string): void {
    this.opts.metrics.dropped.tally({ kind: spec.kind, reason: 'oversize' }).n++;
    let backoff = this.resubscribe.get(spec.kind);
    if (!backoff) this.resubscribe.set(spec.kind, (backoff = new Backoff(RESUBSCRIBE_BACKOFF)));
    const delay = backoff.next();
    this.log.warn({ kind: spec.kind, limit: this.opts.maxEventBytes, details, retryInMs: delay }, 'node sent an event larger than --maxEventBytes; dropped it and opening that stream again');
    this.streams.delete(spec.kind);
    const timer = setTimeout(() => {
      this.rewatchTimers.delete(timer);
      if (session === this.session && !this.closed) this.watch(session, client, spec);
    }, delay);
    timer.unref();
    this.rewatchTimers.add(timer);
  }

  state(): UpstreamState {
    const received = Object.fromEntries(KINDS.map((k) => [k.kind, this.received[k.kind].n])) as Record<Kind, number>;
    return {
      address: this.address,
      name: this.name,
      connected: this.connectedAt > 0,
      since: this.since,
      lastError: this.lastError?.reason,
      lastErrorAt: this.lastError?.at,
      received,
    };
  }

  private learnName(kind: Kind, bytes: Buffer): void {
    try {
      const host = (KIND_BY_NAME[kind].type.decode(bytes) as unknown as { HostName?: string }).HostName;
      if (host) this.name = host;
    } catch {
      // an event that does not decode names nobody; the relay forwards it as it came
    }
  }

  private setPaused(kind: Kind, paused: boolean): void {
    const stream = this.streams.get(kind);
    if (paused) stream?.pause();
    else stream?.resume();
  }

  /** The session ended (node gone, stream ended, health check failed): redial later. */
  private lost(session: number, reason: string): void {
    if (session !== this.session || this.closed) return;
    this.session++; // later callbacks of this session are stale
    const wasConnected = this.connectedAt > 0;
    if (wasConnected && Date.now() - this.connectedAt >= this.opts.stableAfterMs) this.backoff.reset();
    this.connectedAt = 0;
    const now = new Date();
    if (wasConnected) this.since = now; // a failed redial changes nothing: disconnected since the loss
    this.lastError = { reason, at: now };
    this.teardown();
    if (wasConnected) for (const spec of KINDS) this.sinks[spec.kind].sessionEnded?.();
    this.opts.metrics.upstreamConnected.set({ node: this.address }, 0);
    const delay = this.backoff.next();
    if (wasConnected) this.log.warn({ reason, retryInMs: delay }, 'node lost');
    else this.log.warn({ reason, retryInMs: delay }, 'node unreachable');
    this.retryTimer = setTimeout(() => void this.connect(), delay);
    this.retryTimer.unref();
  }

  private teardown(): void {
    for (const timer of this.rewatchTimers) clearTimeout(timer);
    this.rewatchTimers.clear();
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) s.cancel();
    this.client?.close();
    this.client = undefined;
  }
}
