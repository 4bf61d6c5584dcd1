// Which relay replicas are alive, from the engine rather than a protocol of our own: a
// JetStream KV bucket whose entries expire after `ttlMs` (the bucket's max age). Each
// replica re-puts its key every heartbeat and lists the keys; a replica that dies stops
// refreshing and its key ages out, one that leaves cleanly deletes it at once.
//
// A replica that cannot refresh for a whole TTL has aged out in everybody else's view, so
// it reports an empty membership itself and gives up its nodes.
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
  private lastOk = Date.now();
  private failing = false;
  private stopped = false;
  private beating: Promise<void> | undefined;

  constructor(private readonly opts: MembershipOptions) {}

  get replicas(): readonly string[] {
    return this.current;
  }

  start(): void {
    const tick = () => {
      this.beating = this.beat().finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.opts.heartbeatMs);
      });
    };
    tick();
  }

  /** Stops refreshing and deletes this replica's key, so the others take over at once. */
  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.beating;
    await this.opts.kv.delete(this.opts.key).catch(() => undefined);
  }

  private async beat(): Promise<void> {
    const { kv, key, logger } = this.opts;
    try {
      await kv.put(key, JSON.stringify({ at: new Date().toISOString() }));
      // a key refreshed during the listing can come twice
      const keys = new Set<string>([key]);
      for await (const k of await kv.keys()) keys.add(k);
      if (this.stopped) return;
      this.lastOk = Date.now();
      if (this.failing) logger.info('membership refreshed again');
      this.failing = false;
      this.update([...keys].sort());
    } catch (err) {
      if (this.stopped) return;
      if (!this.failing) logger.warn({ err: (err as Error).message }, 'cannot refresh membership in NATS');
      this.failing = true;
      if (Date.now() - this.lastOk >= this.opts.ttlMs) this.update([]);
    }
  }

  private update(replicas: readonly string[]): void {
    if (replicas.length === this.current.length && replicas.every((r, i) => r === this.current[i])) return;
    this.current = replicas;
    this.opts.onChange(replicas);
  }
}
