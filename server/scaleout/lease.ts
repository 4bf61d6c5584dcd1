// Who publishes one node's events of one kind: a lease in a JetStream KV bucket whose max
// age is the lease's life. One writer per node and kind keeps the stored order the node's
// order (two writers of the same events race, and the loser's earlier event can land after
// the winner's later one). The engine gives the atomicity: `create` succeeds only for a
// missing key, `update` only at the revision the caller last wrote, so two replicas never
// both think they hold it. A holder that cannot refresh in time stops publishing before
// the key can expire (see HolderClock), so a successor never overlaps it.
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';

/** What a lease key holds. */
export interface LeaseValue {
  replica: string;
  /** message id of the first event the holder read in its session: a replica that read
   *  earlier events than that (it began reading first) may take the lease over while the
   *  holder is still settling, so those events are not lost */
  first: string;
  /** when (ms since the epoch) the holder read that first event: decides between two
   *  replicas when the earlier one's bounded buffer stops short of the other's first event */
  since?: number;
  /** false until the holder's first refresh: only then does it publish */
  settled: boolean;
}

export type AcquireResult = { held: true; revision: number } | { held: false; holder: LeaseValue | undefined; revision: number };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function encode(v: LeaseValue): Uint8Array {
  return encoder.encode(JSON.stringify(v));
}

function decode(bytes: Uint8Array): LeaseValue | undefined {
  try {
    const v = JSON.parse(decoder.decode(bytes)) as Partial<LeaseValue>;
    if (typeof v.replica !== 'string' || typeof v.first !== 'string') return undefined;
    return { replica: v.replica, first: v.first, settled: v.settled === true, ...(typeof v.since === 'number' ? { since: v.since } : {}) };
  } catch {
    return undefined;
  }
}

/** A KV error that means "someone else wrote the key" rather than "NATS did not answer". */
export function isConflict(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
}

/** One lease key; the operations a sink needs, each one round trip (two for a lost create). */
export class LeaseKey {
  constructor(
    private readonly kv: KV,
    readonly key: string,
  ) {}

  /** Takes the lease if nobody holds it; otherwise says who does (and at which revision). */
  async acquire(value: LeaseValue): Promise<AcquireResult> {
    try {
      return { held: true, revision: await this.kv.create(this.key, encode(value)) };
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
    const entry = await this.kv.get(this.key);
    if (!entry || entry.operation !== 'PUT') return { held: false, holder: undefined, revision: entry?.revision ?? 0 };
    return { held: false, holder: decode(entry.value), revision: entry.revision };
  }

  /** Writes at `revision` (a refresh, or a take-over of a settling holder); rejects on conflict. */
  update(value: LeaseValue, revision: number): Promise<number> {
    return this.kv.update(this.key, encode(value), revision);
  }

  /** Gives the lease up at once (only if still ours), so a standby takes over without waiting for it to expire. */
  async release(revision: number): Promise<void> {
    await this.kv.delete(this.key, { previousSeq: revision });
  }
}

/**
 * When a holder must stop publishing. The key expires `ttlMs` after the server stored the
 * last refresh, which is after that refresh was sent; a holder that stops publishing
 * `ttlMs / 2` after it sent its last successful refresh leaves half the lease for its last
 * publishes to land before anybody else can hold the key.
 */
export class HolderClock {
  private refreshedAt = 0;

  constructor(private readonly ttlMs: number) {}

  /** `sentAt`: when the write that succeeded was sent */
  refreshed(sentAt: number): void {
    this.refreshedAt = Math.max(this.refreshedAt, sentAt);
  }

  expired(now = performance.now()): boolean {
    return now - this.refreshedAt >= this.ttlMs / 2;
  }
}

/** KV keys allow [-/_=.A-Za-z0-9]: the node address in base64url, so no two addresses share a key */
export function leaseKey(node: string, kind: string): string {
  return `${kind}.${Buffer.from(node).toString('base64url')}`;
}
