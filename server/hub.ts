// The hub fans events out: one channel per stream kind, one bounded queue per consumer.
//
// Events are the node daemon's own encoded bytes; nothing here decodes them. Each
// consumer gets the event written at once when its stream can take it, or queued when
// the stream is busy, or dropped (and counted) when its queue is full. A consumer that
// lags never slows the others.
//
// Flow control toward the node daemons: while EVERY consumer of a kind is full, the
// channel asks upstream reads of that kind to pause, so the relay reads only what it can
// deliver and the nodes' own buffering absorbs the burst. A consumer that stays full for
// longer than `stallMs` is marked stalled and no longer holds reads back: from then on
// events are read and dropped (counted) for that consumer alone.
import type { Kind } from './kinds.js';
import type { Logger } from './logger.js';
import type { HubProbe, RelayMetrics, Tally } from './metrics.js';

/** Where a consumer's events go: a gRPC server stream, or the stdout exporter. */
export interface EventWriter {
  /** hand one event on; false means "stop until the drain callback runs" */
  write(bytes: Buffer): boolean;
  onDrain(callback: () => void): void;
}

/** Who a consumer is, for /status: its peer address, request filter and TLS identity. */
export interface ConsumerInfo {
  peer: string;
  filter: string;
  /** the subject of its client certificate, when the relay serves mutual TLS */
  subject?: string;
}

export interface QueueLimits {
  /** events a consumer may have waiting */
  maxEvents: number;
  /** bytes a consumer may have waiting */
  maxBytes: number;
}

export interface HubOptions {
  queue: QueueLimits;
  /** how long every consumer may be full before the full ones count as stalled */
  stallMs: number;
  /** how often dropped events are summarised in the log */
  dropReportMs: number;
  logger: Logger;
  metrics: RelayMetrics;
}

export const HUB_DEFAULTS = {
  queue: { maxEvents: 1024, maxBytes: 1024 * 1024 },
  /**
   * KubeArmor events are a few KiB; a node sending one above this is refused it (counted).
   * With it, what one consumer can hold is bounded: its queue (maxBytes) plus, in flight,
   * one batch in its HTTP/2 stream and one event gathering (batch-writer.ts). Larger
   * events also leave more garbage between V8's collections: with 256 KiB events flooding
   * stalled consumers, Node 24 peaked above the 128 MiB pod limit, with 64 KiB at ~122 MiB.
   */
  maxEventBytes: 64 * 1024,
  stallMs: 2000,
  dropReportMs: 10_000,
} as const;

/** One consumer's queue, a ring of event buffers bounded in count and bytes. */
export class Subscriber {
  private readonly ring: (Buffer | undefined)[];
  private head = 0;
  private count = 0;
  private bytes = 0;
  private writable = true;
  private closed = false;
  /**
   * Past the high-water mark (3/4 of either bound) and not yet drained back to half. The
   * gap between the mark and the hard bound absorbs what is already in flight from the
   * nodes when reads pause, so a consumer that keeps reading loses nothing.
   */
  full = false;
  stalled = false;
  dropped = 0;
  /** when the consumer last took events (a drain); a stalled consumer is one that stopped */
  progressAt = Date.now();
  readonly since = new Date();

  constructor(
    readonly id: number,
    readonly label: string,
    readonly channel: Channel,
    private readonly writer: EventWriter,
    private readonly limits: QueueLimits,
    readonly info: ConsumerInfo = { peer: label, filter: '' },
    /** false for a consumer whose fullness must not pause node reads (see Channel.subscribe) */
    readonly pacesReads = true,
  ) {
    this.ring = new Array(limits.maxEvents);
    writer.onDrain(() => this.onDrain());
  }

  get queuedBytes(): number {
    return this.bytes;
  }

  get queuedEvents(): number {
    return this.count;
  }

  /** Takes one event; returns false when it had to be dropped. */
  offer(bytes: Buffer): boolean {
    if (this.closed) return true;
    if (this.writable && this.count === 0) {
      this.writable = this.writer.write(bytes);
      this.channel.sentTally.n++;
      return true;
    }
    if (this.count >= this.limits.maxEvents || this.bytes + bytes.length > this.limits.maxBytes) {
      this.dropped++;
      if (!this.full) this.setFull(true);
      return false;
    }
    this.ring[(this.head + this.count) % this.ring.length] = bytes;
    this.count++;
    this.bytes += bytes.length;
    if (!this.full && (this.count * 4 >= this.limits.maxEvents * 3 || this.bytes * 4 >= this.limits.maxBytes * 3)) this.setFull(true);
    return true;
  }

  close(): void {
    this.closed = true;
    this.ring.fill(undefined);
    this.count = 0;
    this.bytes = 0;
  }

  private onDrain(): void {
    if (this.closed) return;
    this.writable = true;
    this.progressAt = Date.now();
    while (this.writable && this.count > 0) {
      const bytes = this.ring[this.head]!;
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.ring.length;
      this.count--;
      this.bytes -= bytes.length;
      this.writable = this.writer.write(bytes);
      this.channel.sentTally.n++;
    }
    if (this.full && this.count * 2 <= this.limits.maxEvents && this.bytes * 2 <= this.limits.maxBytes) this.setFull(false);
  }

  private setFull(full: boolean): void {
    this.full = full;
    if (!full) this.stalled = false;
    this.channel.reconsider();
  }
}

export type FlowListener = (paused: boolean) => void;

/** All consumers of one stream kind. */
export class Channel {
  readonly subscribers = new Set<Subscriber>();
  readonly sentTally: Tally;
  private readonly noConsumerTally: Tally;
  private readonly queueFullTally: Tally;
  private readonly flowListeners = new Set<FlowListener>();
  private pausedState = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private nextId = 1;

  constructor(
    readonly kind: Kind,
    private readonly opts: HubOptions,
  ) {
    this.sentTally = opts.metrics.sent.tally({ kind });
    this.noConsumerTally = opts.metrics.dropped.tally({ kind, reason: 'no_consumer' });
    this.queueFullTally = opts.metrics.dropped.tally({ kind, reason: 'queue_full' });
  }

  get paused(): boolean {
    return this.pausedState;
  }

  publish(bytes: Buffer): void {
    if (this.subscribers.size === 0) {
      this.noConsumerTally.n++;
      return;
    }
    for (const sub of this.subscribers) {
      if (!sub.offer(bytes)) this.queueFullTally.n++;
    }
  }

  /**
   * `info` describes the consumer for /status. `pacesReads: false` is for a consumer that
   * never pushes back and drops with its own count (a search-cluster sink): it is left out of
   * the pause decision, so a gRPC consumer that falls behind still pauses node reads instead
   * of losing events, as without it.
   */
  subscribe(label: string, writer: EventWriter, opts: { info?: ConsumerInfo; pacesReads?: boolean } = {}): Subscriber {
    const sub = new Subscriber(this.nextId++, label, this, writer, this.opts.queue, opts.info ?? { peer: label, filter: '' }, opts.pacesReads ?? true);
    this.subscribers.add(sub);
    this.reconsider();
    return sub;
  }

  unsubscribe(sub: Subscriber): void {
    if (!this.subscribers.delete(sub)) return;
    sub.close();
    this.reconsider();
  }

  /** Listeners learn whether upstream reads of this kind should pause. */
  onFlow(listener: FlowListener): () => void {
    this.flowListeners.add(listener);
    return () => this.flowListeners.delete(listener);
  }

  queuedBytes(): number {
    let total = 0;
    for (const sub of this.subscribers) total += sub.queuedBytes;
    return total;
  }

  /** Called whenever a consumer joins, leaves, fills up or drains. */
  reconsider(): void {
    let active = 0;
    let full = 0;
    for (const sub of this.subscribers) {
      if (sub.stalled || !sub.pacesReads) continue;
      active++;
      if (sub.full) full++;
    }
    this.setPaused(active > 0 && full === active);
  }

  close(): void {
    clearTimeout(this.stallTimer);
    for (const sub of this.subscribers) sub.close();
    this.subscribers.clear();
    this.flowListeners.clear();
  }

  private setPaused(paused: boolean): void {
    if (paused === this.pausedState) return;
    this.pausedState = paused;
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    if (paused) this.armStallTimer();
    for (const listener of this.flowListeners) listener(paused);
  }

  /**
   * Every consumer has been full for stallMs: the ones that took nothing in that time are
   * stalled. One that is slow but moving keeps holding reads back, so it loses nothing.
   */
  private markStalled(): void {
    this.stallTimer = undefined;
    const before = Date.now() - this.opts.stallMs;
    for (const sub of this.subscribers) {
      if (sub.full && !sub.stalled && sub.progressAt <= before) {
        sub.stalled = true;
        this.opts.logger.warn(
          { kind: this.kind, client: sub.label, queuedEvents: sub.queuedEvents, queuedBytes: sub.queuedBytes },
          'consumer stalled: events for it are dropped until it reads again',
        );
      }
    }
    this.reconsider();
    if (this.pausedState) this.armStallTimer();
  }

  private armStallTimer(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => this.markStalled(), this.opts.stallMs);
    this.stallTimer.unref();
  }
}

export class Hub implements HubProbe {
  readonly channels: Readonly<Record<Kind, Channel>>;
  private readonly reportTimer: NodeJS.Timeout;
  private readonly lastReported = new Map<Subscriber, number>();

  constructor(private readonly opts: HubOptions) {
    this.channels = {
      alert: new Channel('alert', opts),
      log: new Channel('log', opts),
      message: new Channel('message', opts),
    };
    opts.metrics.observe(this);
    // A summary of drops per consumer, not one line per drop.
    this.reportTimer = setInterval(() => this.reportDrops(), opts.dropReportMs);
    this.reportTimer.unref();
  }

  clients(kind: Kind): number {
    return this.channels[kind].subscribers.size;
  }

  queuedBytes(kind: Kind): number {
    return this.channels[kind].queuedBytes();
  }

  paused(kind: Kind): boolean {
    return this.channels[kind].paused;
  }

  /** Logs drops since the last report; also called for a consumer that leaves. */
  reportDrops(only?: Subscriber): void {
    const subs = only ? [only] : Object.values(this.channels).flatMap((c) => [...c.subscribers]);
    for (const sub of subs) {
      const since = sub.dropped - (this.lastReported.get(sub) ?? 0);
      if (since > 0) {
        this.opts.logger.warn(
          { kind: sub.channel.kind, client: sub.label, dropped: since, droppedTotal: sub.dropped },
          'events dropped for a consumer that is behind',
        );
        this.lastReported.set(sub, sub.dropped);
      }
    }
    if (only) this.lastReported.delete(only);
  }

  close(): void {
    clearInterval(this.reportTimer);
    for (const channel of Object.values(this.channels)) channel.close();
  }
}
