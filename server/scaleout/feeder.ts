// JetStream into this replica's hub: every node's events, whichever replica dialled the
// node, reach this replica's consumers through the same bounded queues and counted drops
// as in single-relay mode.
//
// One ordered consumer per kind (ephemeral, in memory, no acks), starting after the
// stream's last message when this replica starts: a consumer of the relay gets what
// happens from the moment it subscribes, as in single-relay mode. It is read with
// consume(), which keeps the next pull in flight while the current one is read (a fetch
// loop waits a round trip per batch). The client's ordered consumer recovers by itself
// from a lost or deleted server-side consumer; whenever the consume ends anyway (the
// connection closed, the client gave up, heartbeats stay missing), a new one starts
// right after the last stream sequence delivered to the hub, so nothing is skipped.
//
// Pausing: nats.js (3.x, nats.js#67) queues each follow-up pull behind the messages that
// prompted it and sends it only once the reader has taken them, so a reader that stops
// taking messages stops the pulls. While the hub asks reads of this kind to pause, the
// feeder holds the message in hand and takes no more: at most `batch` messages wait in
// the client. That bound lasts until nats.js misses heartbeats (none come while nothing
// is pulled) and queues one more batch's pull per re-check, all sent when reading
// resumes; so a pause longer than `pauseHoldMs` (one heartbeat interval, before the
// first re-check) stops the consume instead, drops what it held (not delivered, the
// cursor not advanced) and starts a new consumer after the cursor when the hub resumes.
// Short pauses, the common case of a consumer that is slow but moving, cost no churn.
import { DeliverPolicy, type Consumer, type ConsumerMessages, type JetStreamClient } from '@nats-io/jetstream';
import { Backoff } from '../backoff.js';
import type { Channel } from '../hub.js';
import type { Kind } from '../kinds.js';
import type { Logger } from '../logger.js';
import type { Tally } from '../metrics.js';
import { kindFilter } from './subjects.js';

/** Message ids standby sinks keep (publisher.ts); the feeder reports each one it sees stored. */
export interface StoredIds {
  readonly size: number;
  stored(id: string): void;
}

export interface FeederOptions {
  js: JetStreamClient;
  stream: string;
  /** the stream's last sequence when this replica started */
  startAfter: number;
  kind: Kind;
  channel: Channel;
  delivered: Tally;
  logger: Logger;
  /**
   * The most messages read from JetStream and not yet in the hub (max_messages of the
   * consume): while the hub pauses, the client holds at most this many, so at most
   * batch × the largest event the relays publish (--maxEventBytes, 64 KiB by default).
   */
  batch: number;
  stored: StoredIds;
  /**
   * The server sends a heartbeat on an idle pull this often (default 3000 ms, at least 500);
   * nats.js re-checks its consumer after two are missed. Pulls expire after two of them.
   */
  idleHeartbeatMs?: number;
  /**
   * How long a paused feeder keeps its consumer (default: one heartbeat interval). Longer,
   * each missed-heartbeat re-check of nats.js queues one more batch's pull, all sent when
   * reading resumes: what may arrive unread then grows with the pause.
   */
  pauseHoldMs?: number;
}

const IDLE_HEARTBEAT_MS = 3000;
// nats.js keeps re-checking after that; this many missed in a row and the feeder starts over
const MAX_MISSED_HEARTBEATS = 4;
const MSG_ID_HEADER = 'Nats-Msg-Id';

export class Feeder {
  /** messages in the stream after the last one read (consumer lag) */
  pending = 0;
  /** server-side consumers this feeder started: one at first, one after each failure or long pause */
  consumersStarted = 0;
  /** the last stream sequence delivered to the hub: a new consumer starts right after it */
  private cursor: number;
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly closing: Promise<undefined>;
  private signalClosing!: () => void;
  private wake: (() => void) | undefined;
  private messages: ConsumerMessages | undefined;
  private holding = false;
  private readonly unlisten: () => void;
  private readonly backoff = new Backoff({ initialMs: 200, maxMs: 5000 });

  constructor(private readonly opts: FeederOptions) {
    this.cursor = opts.startAfter;
    this.closing = new Promise((resolve) => (this.signalClosing = () => resolve(undefined)));
    this.unlisten = opts.channel.onFlow((paused) => {
      if (!paused) this.wake?.();
    });
    this.done = this.run();
  }

  get kind(): Kind {
    return this.opts.kind;
  }

  /** messages read from JetStream that the hub has not had yet (at most `batch`) */
  get unread(): number {
    const m = this.messages;
    return (m ? m.getReceived() - m.getProcessed() : 0) + (this.holding ? 1 : 0);
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.unlisten();
    this.signalClosing();
    this.messages?.stop();
    this.wake?.();
    await this.done;
  }

  private async run(): Promise<void> {
    const { kind, channel, logger } = this.opts;
    while (!this.stopped) {
      if (channel.paused) {
        await this.sleep();
        continue;
      }
      try {
        await this.consume();
      } catch (err) {
        if (this.stopped) break;
        const delay = this.backoff.next();
        logger.warn({ kind, err: (err as Error).message, after: this.cursor, retryInMs: delay }, 'reading events from JetStream failed; resuming after the last one read');
        const until = Date.now() + delay;
        while (!this.stopped && Date.now() < until) await this.sleep(until - Date.now());
      }
    }
  }

  /** One consumer, read until it fails (throws) or the feeder stops it (returns). */
  private async consume(): Promise<void> {
    const { js, stream, kind, channel, delivered, stored, logger } = this.opts;
    const creating = js.consumers.get(stream, { filter_subjects: kindFilter(kind), deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.cursor + 1 });
    const consumer = await Promise.race([creating, this.closing]);
    if (!consumer) {
      void creating.then(discard, () => undefined);
      return;
    }
    this.consumersStarted++;
    const heartbeat = this.opts.idleHeartbeatMs ?? IDLE_HEARTBEAT_MS;
    const messages = await consumer.consume({ max_messages: this.opts.batch, expires: 2 * heartbeat, idle_heartbeat: heartbeat });
    this.messages = messages;
    void giveUpOnSilence(messages);
    if (this.stopped) messages.stop();
    let endedHere = false;
    try {
      for await (const m of messages) {
        if (channel.paused && !(await this.holdWhilePaused())) {
          if (!this.stopped) logger.debug({ kind, after: this.cursor }, 'the hub paused longer than the hold; consumer stopped until it resumes');
          endedHere = true;
          break;
        }
        if (this.stopped) break;
        // a copy: the client's buffer is a view into a larger socket read
        channel.publish(Buffer.from(m.data));
        delivered.n++;
        this.cursor = m.seq;
        this.pending = m.info.pending;
        this.backoff.reset();
        if (stored.size > 0) {
          const id = m.headers?.get(MSG_ID_HEADER);
          if (id) stored.stored(id);
        }
      }
    } finally {
      this.messages = undefined;
      void discard(consumer);
    }
    if (!endedHere && !this.stopped) throw new Error('the consume ended');
  }

  /** True once the hub resumes; false when the pause outlasts the hold or the feeder closes. */
  private async holdWhilePaused(): Promise<boolean> {
    const until = Date.now() + (this.opts.pauseHoldMs ?? this.opts.idleHeartbeatMs ?? IDLE_HEARTBEAT_MS);
    this.holding = true;
    try {
      while (this.opts.channel.paused && !this.stopped && Date.now() < until) await this.sleep(until - Date.now());
    } finally {
      this.holding = false;
    }
    return !this.opts.channel.paused && !this.stopped;
  }

  /** Until the hub resumes, the feeder closes, or `ms` pass (no limit without one). */
  private sleep(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(() => this.wake?.(), ms).unref();
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}

/** Ends a consume whose heartbeats nats.js keeps missing however it re-checks. */
async function giveUpOnSilence(messages: ConsumerMessages): Promise<void> {
  try {
    for await (const s of messages.status()) {
      if (s.type === 'heartbeats_missed' && s.count >= MAX_MISSED_HEARTBEATS) messages.stop(new Error(`${s.count} heartbeats missed in a row`));
    }
  } catch {
    // the consume's own error surfaces where it is read
  }
}

/** The server would drop an idle ephemeral consumer after minutes; a stopped one goes now. */
async function discard(consumer: Consumer): Promise<void> {
  await consumer.delete().catch(() => undefined);
}
