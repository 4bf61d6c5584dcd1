// JetStream into this replica's hub: every node's events, whichever replica dialled the
// node, reach this replica's consumers through the same bounded queues and counted drops
// as in single-relay mode.
//
// One ordered consumer per kind (ephemeral, in memory, no acks; recreated after the last
// stream sequence read whenever it fails or its server goes away, so nothing is skipped),
// starting after the stream's last message when this replica starts: a consumer of the
// relay gets what happens from the moment it subscribes, as in single-relay mode.
// Messages are pulled in bounded batches, and no further batch is pulled while the hub
// asks reads of that kind to pause, so memory stays bounded when every consumer is behind.
import { DeliverPolicy, type Consumer, type JetStreamClient } from '@nats-io/jetstream';
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
  batch: number;
  /** standby sinks wait for the ids this feeder sees stored */
  stored: StoredIds;
}

const FETCH_EXPIRES_MS = 2000;
const MSG_ID_HEADER = 'Nats-Msg-Id';

export class Feeder {
  /** messages in the stream after the last one read (consumer lag) */
  pending = 0;
  private stopped = false;
  private readonly done: Promise<void>;
  private wake: (() => void) | undefined;
  private readonly unlisten: () => void;

  constructor(private readonly opts: FeederOptions) {
    this.unlisten = opts.channel.onFlow((paused) => {
      if (!paused) this.wake?.();
    });
    this.done = this.run();
  }

  get kind(): Kind {
    return this.opts.kind;
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.unlisten();
    this.wake?.();
    await this.done;
  }

  private async run(): Promise<void> {
    const { js, stream, kind, channel, delivered, logger, stored } = this.opts;
    // short: a failed creation most often landed on a dead server, and the next one will not (see index.ts)
    const backoff = new Backoff({ initialMs: 100, maxMs: 1000 });
    // the last stream sequence read: a new consumer starts right after it
    let cursor = this.opts.startAfter;
    let consumer: Consumer | undefined;
    while (!this.stopped) {
      if (channel.paused) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      let watchdog: NodeJS.Timeout | undefined;
      try {
        consumer ??= await js.consumers.get(stream, { filter_subjects: kindFilter(kind), deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: cursor + 1 });
        const fetched = await consumer.fetch({ max_messages: this.opts.batch, expires: FETCH_EXPIRES_MS });
        // A pull whose server died can go quiet without an error: give up on it, and on
        // its consumer, once it overstays its expiry.
        let stale = false;
        const arm = () => {
          clearTimeout(watchdog);
          watchdog = setTimeout(() => ((stale = true), fetched.stop()), FETCH_EXPIRES_MS * 3);
        };
        arm();
        for await (const m of fetched) {
          arm();
          // a copy: the client's buffer is a view into a larger socket read
          channel.publish(Buffer.from(m.data));
          delivered.n++;
          cursor = m.seq;
          this.pending = m.info.pending;
          if (stored.size > 0) {
            const id = m.headers?.get(MSG_ID_HEADER);
            if (id) stored.stored(id);
          }
        }
        if (stale) throw new Error(`no answer to a pull for ${FETCH_EXPIRES_MS * 3} ms`);
        backoff.reset();
      } catch (err) {
        if (this.stopped) break;
        consumer = undefined;
        const delay = backoff.next();
        logger.warn({ kind, err: (err as Error).message, after: cursor, retryInMs: delay }, 'reading events from JetStream failed; resuming after the last one read');
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      } finally {
        clearTimeout(watchdog);
      }
    }
  }
}
