// Which relay replicas are alive, from the engine rather than a protocol of our own: a
// JetStream KV bucket (max age = the TTL) where each replica re-puts its key every
// heartbeat and watches everybody's. A key not refreshed for a TTL (measured on this
// replica's clock, from when the update arrived: no clock agreement needed) is a dead
// replica; one that leaves cleanly deletes its key and is gone at once.
//
// A replica counts itself in even while its refreshes fail: the others then take over its
// nodes, and it keeps reading them too (more connections, never fewer) until NATS answers
// again, so nothing it has read is dropped on the way. Likewise a watch that goes quiet
// ages the others out and the replica dials more nodes, not fewer, until the watch is back.
import type { KV } from '@nats-io/kv';
import type { Logger } from '../logger.js';

export interface MembershipOptions {
  kv: KV;
  key: string;
  ttlMs: number;
  heartbeatMs: number;
  logger: Logger;
  /** the sorted live replicas, whenever they change */
  onChange(replicas: readonly string[]): void;
}

export class Membership {
  private timer: NodeJS.Timeout | undefined;
  private current: readonly string[] = [];
  /** key -> when its last refresh arrived here */
  private readonly seen = new Map<string, number>();
  private lastOk = 0;
  private lastUpdate = 0;
  private failing = false;
  private stopped = false;
  private beating: Promise<void> | undefined;
  private watching: Promise<void> | undefined;
  private stopWatch: (() => void) | undefined;

  constructor(private readonly opts: MembershipOptions) {}

  get replicas(): readonly string[] {
    return this.current;
  }

  start(): void {
    this.lastOk = Date.now();
    this.lastUpdate = Date.now();
    this.watching = this.watch();
    const tick = () => {
      this.beating = this.beat().finally(() => {
        this.evaluate();
        if (!this.stopped) this.timer = setTimeout(tick, this.opts.heartbeatMs);
      });
    };
    tick();
  }

  /** Stops refreshing and deletes this replica's key, so the others take over at once. */
  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stopWatch?.();
    await this.beating;
    await this.watching;
    await this.opts.kv.delete(this.opts.key).catch(() => undefined);
  }

  private async beat(): Promise<void> {
    const { kv, key, logger } = this.opts;
    try {
      await kv.put(key, new Date().toISOString());
      this.lastOk = Date.now();
      this.seen.set(key, this.lastOk);
      if (this.failing) logger.info('membership refreshed again');
      this.failing = false;
    } catch (err) {
      if (this.stopped) return;
      if (!this.failing) logger.warn({ err: (err as Error).message }, 'cannot refresh membership in NATS');
      this.failing = true;
    }
  }

  /** Follows every replica's refreshes; a watcher that ends (server trouble) is started again. */
  private async watch(): Promise<void> {
    while (!this.stopped) {
      try {
        const updates = await this.opts.kv.watch({ headers_only: true });
        this.stopWatch = () => updates.stop();
        if (this.stopped) updates.stop();
        for await (const e of updates) {
          this.lastUpdate = Date.now();
          if (e.operation === 'PUT') this.seen.set(e.key, Date.now());
          else this.seen.delete(e.key);
          if (e.operation !== 'PUT' || !this.current.includes(e.key)) this.evaluate();
        }
      } catch (err) {
        if (!this.stopped) this.opts.logger.warn({ err: (err as Error).message }, 'membership watch failed; watching again');
      }
      if (!this.stopped) await new Promise((resolve) => setTimeout(resolve, this.opts.heartbeatMs).unref());
    }
  }

  private evaluate(): void {
    if (this.stopped) return;
    const now = Date.now();
    // our own refresh comes back through the watch every heartbeat: a quiet watch is stuck
    if (now - this.lastOk < this.opts.heartbeatMs * 2 && now - this.lastUpdate > this.opts.heartbeatMs * 3) {
      this.lastUpdate = now;
      this.stopWatch?.();
    }
    const live = [this.opts.key];
    for (const [key, at] of this.seen) if (key !== this.opts.key && now - at < this.opts.ttlMs) live.push(key);
    live.sort();
    if (live.length === this.current.length && live.every((r, i) => r === this.current[i])) return;
    this.current = live;
    this.opts.onChange(live);
  }
}
