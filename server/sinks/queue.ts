// A sink's queue: events waiting to be indexed, bounded in count and in bytes. Events taken
// for a bulk request keep their room reserved until the request is settled, so the bounds
// cover everything the sink holds, in flight included.
import type { Kind } from '../kinds.js';

export interface QueuedEvent {
  kind: Kind;
  bytes: Buffer;
  /** set once its room is given back (indexed, refused or given up) */
  settled?: boolean;
}

export interface SinkQueueLimits {
  maxEvents: number;
  maxBytes: number;
}

export class SinkQueue {
  private readonly ring: (QueuedEvent | undefined)[];
  private head = 0;
  private count = 0;
  /** events and bytes held: queued plus taken and not yet released */
  private heldEvents = 0;
  private heldBytes = 0;
  private waitingBytes = 0;
  /** when the oldest queued event arrived (ms), for the flush interval */
  oldestAt = 0;

  constructor(private readonly limits: SinkQueueLimits) {
    this.ring = new Array(limits.maxEvents);
  }

  /** events waiting to be taken */
  get length(): number {
    return this.count;
  }

  get events(): number {
    return this.heldEvents;
  }

  get bytes(): number {
    return this.heldBytes;
  }

  /** bytes waiting to be taken */
  get queuedBytes(): number {
    return this.waitingBytes;
  }

  /** false when the event does not fit: the caller counts the drop */
  push(kind: Kind, bytes: Buffer, now: number): boolean {
    if (this.heldEvents >= this.limits.maxEvents || this.heldBytes + bytes.length > this.limits.maxBytes) return false;
    if (this.count === 0) this.oldestAt = now;
    this.ring[(this.head + this.count) % this.ring.length] = { kind, bytes };
    this.count++;
    this.heldEvents++;
    this.heldBytes += bytes.length;
    this.waitingBytes += bytes.length;
    return true;
  }

  /** Takes up to maxEvents / about maxBytes (at least one event) from the front. */
  take(maxEvents: number, maxBytes: number, now: number): QueuedEvent[] {
    const out: QueuedEvent[] = [];
    let bytes = 0;
    while (this.count > 0 && out.length < maxEvents && (out.length === 0 || bytes + this.ring[this.head]!.bytes.length <= maxBytes)) {
      const event = this.ring[this.head]!;
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.ring.length;
      this.count--;
      bytes += event.bytes.length;
      this.waitingBytes -= event.bytes.length;
      out.push(event);
    }
    // what is left arrived after what was taken; its exact age is not tracked, so the
    // flush interval restarts now: a delay of at most one interval more, never a stall
    if (this.count > 0) this.oldestAt = now;
    return out;
  }

  /** Gives back the room of taken events once they are indexed, refused or given up. */
  release(events: number, bytes: number): void {
    this.heldEvents -= events;
    this.heldBytes -= bytes;
  }
}
