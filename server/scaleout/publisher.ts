// Node events into JetStream, in place of the local hub: one sink per node and kind,
// publishing the node's bytes unchanged to kubearmor.<kind>.<node> with a message id
// derived from the event itself, so the replicas that read the same node store it once.
//
// Order: a sink keeps its events in arrival order until JetStream acknowledges them, and
// publishes in that order over one connection. When every replica reading a node publishes
// every event from some point on, stored order is the node's order: the first stored copy
// of event k comes from a replica that had already published k-1. A replica that starts
// reading a node (assignment, redial) therefore joins in step: it holds what it reads
// until it sees one of those events stored by a replica already reading (the feeder
// reports stored message ids), then publishes (what it held before that event as well:
// duplicates, unless the other replica began reading later than this one). When
// nothing it holds shows up within the hold time from its first event (nobody else reads
// the node: first start, or the other replica died), it publishes what it holds. Of two replicas that start
// reading a node one after the other, the first one's hold ends first: it publishes, and
// the second sees that and joins in step. (Two that start at the same moment read the same
// events from the first on, and are in step from the start.)
//
// A failed publish (timeout, leader change) stops new sends; once nothing is in flight,
// every unacknowledged event is published again, in order, after a backoff (the ones that
// had been stored come back as duplicates). The pending queue is bounded: past it the
// sink asks the upstream to pause reading (the node daemon buffers), as the hub does.
import { createHash } from 'node:crypto';
import { headers, type MsgHdrs } from '@nats-io/transport-node';
import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import { Backoff } from '../backoff.js';
import type { Kind } from '../kinds.js';
import type { Logger } from '../logger.js';
import type { EventSink } from '../upstream.js';
import type { ScaleOutMetrics } from './metrics.js';
import { subjectFor } from './subjects.js';

export const HEADER_NODE = 'KubeArmor-Node';
export const HEADER_KIND = 'KubeArmor-Kind';

/** Message ids held by joining sinks; the feeder reports the ones it sees stored. */
export class JoinIndex {
  private readonly held = new Map<string, JetStreamSink>();

  get size(): number {
    return this.held.size;
  }

  hold(id: string, sink: JetStreamSink): void {
    this.held.set(id, sink);
  }

  release(id: string): void {
    this.held.delete(id);
  }

  stored(id: string): void {
    this.held.get(id)?.storedByAnother(id);
  }
}

export interface PublisherOptions {
  js: () => JetStreamClient | undefined;
  joins: JoinIndex;
  /** how long a joining sink waits to see its events stored by another replica */
  joinHoldMs: number;
  metrics: ScaleOutMetrics;
  logger: Logger;
  /** events a sink may hold unacknowledged before it pauses the node's reads */
  maxPending: number;
  maxPendingBytes: number;
  ackTimeoutMs: number;
}

/** node + kind + a hash of the bytes: the replicas reading one node agree on it without talking. */
export function messageId(node: string, kind: Kind, bytes: Uint8Array): string {
  return `${node}/${kind}/${createHash('sha256').update(bytes).digest('base64url')}`;
}

interface Pending {
  bytes: Buffer;
  id: string;
  /** held: joining, not sent; queued: not sent yet (or to be re-sent); sent: awaiting its ack; acked: stored */
  state: 'held' | 'queued' | 'sent' | 'acked';
}

export class JetStreamSink implements EventSink {
  private readonly queue: Pending[] = [];
  private head = 0;
  private bytes = 0;
  private inFlight = 0;
  private failed = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private joining = false;
  private joinTimer: NodeJS.Timeout | undefined;
  private pausedState = false;
  private closed = false;
  private readonly listeners = new Set<(paused: boolean) => void>();
  private readonly subject: string;
  private readonly hdrs: MsgHdrs;
  private readonly backoff = new Backoff({ initialMs: 200, maxMs: 5000 });
  private readonly tallies;

  constructor(
    readonly node: string,
    readonly kind: Kind,
    private readonly opts: PublisherOptions,
  ) {
    this.subject = subjectFor(kind, node);
    this.hdrs = headers();
    this.hdrs.set(HEADER_NODE, node);
    this.hdrs.set(HEADER_KIND, kind);
    this.tallies = opts.metrics.publishTallies(kind);
  }

  /** A new session with the node begins: join in step with the replicas already reading it. */
  sessionStarted(): void {
    if (this.closed || this.joining) return;
    this.joining = true;
  }

  /**
   * The hold runs from the first event read, not from the dial: of two replicas, the one
   * whose first event came later (the one that is behind) waits longer.
   */
  private armJoinTimer(): void {
    this.joinTimer = setTimeout(() => {
      this.opts.logger.debug({ node: this.node, kind: this.kind, held: this.pending }, 'no other replica is publishing this node: publishing what was held');
      this.joined(this.head);
    }, this.opts.joinHoldMs);
    this.joinTimer.unref();
  }

  /**
   * The feeder saw a held event stored: another replica is publishing this node; publish
   * from here on. What was held before that event is published too: usually the other
   * replica had stored it before this one registered it (a duplicate then, dropped by
   * JetStream), and otherwise (the other replica began reading later) it would be lost.
   */
  storedByAnother(id: string): void {
    if (!this.joining) return;
    let i = this.head;
    while (i < this.queue.length && this.queue[i]!.id !== id) i++;
    if (i === this.queue.length) return;
    const entry = this.queue[i]!;
    this.opts.joins.release(entry.id);
    entry.state = 'acked';
    this.opts.logger.debug({ node: this.node, kind: this.kind, before: i - this.head }, 'in step with the replica already publishing this node');
    this.joined(this.head);
    this.advance();
    this.compact();
  }

  get paused(): boolean {
    return this.pausedState;
  }

  /** events read from the node and not yet stored in JetStream */
  get pending(): number {
    return this.queue.length - this.head;
  }

  onFlow(listener: (paused: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  publish(bytes: Buffer): void {
    if (this.closed) return;
    const entry: Pending = { bytes, id: messageId(this.node, this.kind, bytes), state: this.joining ? 'held' : 'queued' };
    this.queue.push(entry);
    this.bytes += bytes.length;
    if (this.joining) {
      this.opts.joins.hold(entry.id, this);
      if (!this.joinTimer) this.armJoinTimer();
    } else if (!this.failed) this.send(entry);
    this.reconsider();
  }

  /**
   * The node is no longer this replica's (re-assigned, or NATS lost for a TTL): what it still
   * holds is published once, without waiting for acks, in case no other replica has it.
   */
  close(): void {
    if (this.closed) return;
    const js = this.opts.js();
    for (let i = this.head; i < this.queue.length; i++) {
      const entry = this.queue[i]!;
      if (entry.state === 'held') this.opts.joins.release(entry.id);
      if (js && (entry.state === 'held' || entry.state === 'queued')) {
        this.jsPublish(js, entry).catch(() => undefined);
      }
    }
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.joinTimer);
    this.listeners.clear();
    this.queue.length = 0;
    this.head = 0;
    this.bytes = 0;
  }

  /** Ends the join: what is still held (from `from` on) is published, in order. */
  private joined(from: number): void {
    clearTimeout(this.joinTimer);
    this.joinTimer = undefined;
    this.joining = false;
    for (let i = from; i < this.queue.length; i++) {
      const entry = this.queue[i]!;
      if (entry.state !== 'held') continue;
      this.opts.joins.release(entry.id);
      entry.state = 'queued';
      if (!this.failed) this.send(entry);
    }
    this.compact();
    this.reconsider();
  }

  /** Forgets the stored events at the head of the queue. */
  private advance(): void {
    while (this.head < this.queue.length && this.queue[this.head]!.state === 'acked') {
      this.bytes -= this.queue[this.head]!.bytes.length;
      this.head++;
    }
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  private jsPublish(js: JetStreamClient, entry: Pending): Promise<PubAck> {
    return js.publish(this.subject, entry.bytes, { msgID: entry.id, headers: this.hdrs, timeout: this.opts.ackTimeoutMs });
  }

  private send(entry: Pending): void {
    const js = this.opts.js();
    if (!js) {
      this.fail(new Error('not connected to NATS'));
      return;
    }
    entry.state = 'sent';
    this.inFlight++;
    this.jsPublish(js, entry).then(
      (ack: PubAck) => this.acked(entry, ack),
      (err: Error) => {
        this.inFlight--;
        if (this.closed) return;
        entry.state = 'queued';
        this.tallies.failures.n++;
        this.fail(err);
      },
    );
  }

  private acked(entry: Pending, ack: PubAck): void {
    this.inFlight--;
    if (this.closed) return;
    entry.state = 'acked';
    if (ack.duplicate) this.tallies.duplicates.n++;
    else this.tallies.published.n++;
    this.advance();
    this.compact();
    if (this.inFlight === 0 && this.failed) this.scheduleResend();
    if (!this.failed) this.backoff.reset();
    this.reconsider();
  }

  private fail(err: Error): void {
    if (!this.failed) this.opts.logger.warn({ node: this.node, kind: this.kind, err: err.message, pending: this.pending }, 'publish to JetStream failed; re-sending in order');
    this.failed = true;
    if (this.inFlight === 0) this.scheduleResend();
  }

  private scheduleResend(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.failed = false;
      for (let i = this.head; i < this.queue.length && !this.failed; i++) {
        const entry = this.queue[i]!;
        if (entry.state === 'queued') this.send(entry);
      }
    }, this.backoff.next());
    this.retryTimer.unref();
  }

  private reconsider(): void {
    const { maxPending, maxPendingBytes } = this.opts;
    const n = this.pending;
    const paused = this.pausedState ? n * 2 > maxPending || this.bytes * 2 > maxPendingBytes : n >= maxPending || this.bytes >= maxPendingBytes;
    if (paused === this.pausedState) return;
    this.pausedState = paused;
    for (const listener of this.listeners) listener(paused);
  }
}
