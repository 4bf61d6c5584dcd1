// Node events into JetStream, in place of the local hub: one sink per node and kind. Every
// replica reading a node keeps what it reads; exactly one of them, the holder of the node's
// lease for that kind (lease.ts), publishes it to kubearmor.<kind>.<node>, unchanged, with a
// message id derived from the event. One writer over one connection stores the node's
// order; the others are standbys that drop what they see stored (the feeder reports stored
// ids) and, when the holder dies or lets go, take over from the first event they have not
// seen stored, so a failover loses nothing and reorders nothing (the ids make any event
// both published a duplicate that JetStream drops).
//
//   standby ──(lease free: first event, or an event not seen stored for a tick)──► settling
//   settling ──(first refresh at the same revision)──► holding: publishes
//   settling ──(a replica that began reading earlier took the lease over)──► standby
//   holding ──(refresh conflict, no refresh for half the lease, session lost, close)──► standby
//
// Publishes are pipelined: each carries a reply subject, acks come back on one subscription
// for the whole replica (AckRouter), so there is no request, promise or timer per event.
// A publish that fails or is not acknowledged stops new sends; once nothing is in flight
// everything not stored is sent again, in order (what had been stored comes back as a
// duplicate). What a sink keeps is bounded: past it the upstream pauses its reads (the
// node daemon buffers), as the hub does.
import { createHash } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import { createInbox, headers, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { Backoff } from '../backoff.js';
import type { Kind } from '../kinds.js';
import type { Logger } from '../logger.js';
import type { EventSink } from '../upstream.js';
import { HolderClock, isConflict, LeaseKey, leaseKey, type LeaseValue } from './lease.js';
import type { PublishTallies } from './metrics.js';
import { subjectFor } from './subjects.js';

export const HEADER_NODE = 'KubeArmor-Node';
export const HEADER_KIND = 'KubeArmor-Kind';
const HEADER_MSG_ID = 'Nats-Msg-Id';

/** A performance.now() reading as wall-clock milliseconds, to compare with other replicas'. */
function wallClock(at: number): number {
  return Date.now() - (performance.now() - at);
}

/** node + kind + a hash of the bytes: the replicas reading one node agree on it without talking. */
export function messageId(node: string, kind: Kind, bytes: Uint8Array): string {
  return `${node}/${kind}/${createHash('sha256').update(bytes).digest('base64url')}`;
}

interface Entry {
  bytes: Buffer;
  id: string;
  /** when it was read (performance.now()) */
  at: number;
  state: 'unsent' | 'sent' | 'stored';
  /** the publish number its ack will carry, while sent */
  n: number;
  sentAt: number;
  sink: JetStreamSink;
}

interface PubAckBody {
  seq?: number;
  duplicate?: boolean;
  error?: { code?: number; description?: string };
}

const decoder = new TextDecoder();

function ackBody(m: Msg): PubAckBody {
  // a "no responders" status (no stream for the subject) comes back as an empty message with headers
  if (m.data.length === 0) return { error: { description: `no JetStream answer (${m.headers?.code ?? '?'} ${m.headers?.description ?? ''})` } };
  try {
    return JSON.parse(decoder.decode(m.data)) as PubAckBody;
  } catch {
    return { error: { description: `unreadable publish ack (${m.data.length} bytes)` } };
  }
}

/** One reply subscription for every publish of the replica; acks find their entry by number. */
export class AckRouter {
  private readonly prefix = `${createInbox()}.`;
  private readonly waiting = new Map<number, Entry>();
  private next = 1;
  private readonly sub: Subscription;

  constructor(readonly nc: NatsConnection) {
    this.sub = nc.subscribe(`${this.prefix}*`, { callback: (err, m) => (err ? undefined : this.route(m)) });
  }

  send(subject: string, entry: Entry, hdrs: MsgHdrs): void {
    const n = this.next++;
    entry.n = n;
    this.waiting.set(n, entry);
    this.nc.publish(subject, entry.bytes, { headers: hdrs, reply: this.prefix + n });
  }

  /** forgets an ack still to come (the entry is re-sent under a new number) */
  forget(n: number): void {
    this.waiting.delete(n);
  }

  close(): void {
    this.sub.unsubscribe();
    this.waiting.clear();
  }

  private route(m: Msg): void {
    const n = Number(m.subject.slice(this.prefix.length));
    const entry = this.waiting.get(n);
    if (!entry) return;
    this.waiting.delete(n);
    entry.sink.acked(entry, ackBody(m));
  }
}

/** The events standbys keep, by id; the feeder reports the ones it sees stored. */
export class StoredIndex {
  private readonly byId = new Map<string, Entry>();
  /** `<node>/<kind>` (a message id up to its hash) -> the sink reading it */
  private readonly sinks = new Map<string, JetStreamSink>();
  private registered = 0;
  private waiting = 0;

  /** non-zero while any sink waits for the feeder's word (the feeder reads ids only then) */
  get size(): number {
    return this.byId.size + this.waiting;
  }

  /** open sinks that publish their node and kind themselves (hold its lease) */
  get holders(): number {
    return this.registered - this.waiting;
  }

  register(key: string, sink: JetStreamSink): void {
    this.sinks.set(key, sink);
    this.registered++;
    this.waiting++;
  }

  unregister(key: string, sink: JetStreamSink, holding: boolean): void {
    if (this.sinks.get(key) === sink) this.sinks.delete(key);
    this.registered--;
    if (!holding) this.waiting--;
  }

  /** a sink starts (true) or stops (false) publishing itself */
  holding(holding: boolean): void {
    this.waiting += holding ? -1 : 1;
  }

  add(entry: Entry): void {
    this.byId.set(entry.id, entry);
  }

  remove(entry: Entry): void {
    if (this.byId.get(entry.id) === entry) this.byId.delete(entry.id);
  }

  stored(id: string): void {
    const entry = this.byId.get(id);
    if (entry) return entry.sink.storedElsewhere(entry);
    // stored before this replica read it (its reads lag, or were paused): it will come
    this.sinks.get(id.slice(0, id.lastIndexOf('/')))?.storedAhead(id);
  }
}

export interface PublisherOptions {
  replica: string;
  router: () => AckRouter | undefined;
  leases: () => KV | undefined;
  index: StoredIndex;
  /** holders letting their lease go after a close: shutdown waits for them */
  closing: Set<Promise<void>>;
  tallies: (kind: Kind) => PublishTallies;
  logger: Logger;
  /** the lease's life: the KV bucket's max age */
  leaseTtlMs: number;
  /** how often a holder refreshes its lease and a standby looks at the holder's */
  tickMs: number;
  /** how long a new holder waits before publishing, so a replica that began reading earlier can take over */
  settleMs: number;
  /** events a sink may keep before it pauses the node's reads */
  maxPending: number;
  maxPendingBytes: number;
  ackTimeoutMs: number;
}

type Role = 'standby' | 'settling' | 'holding';

export class JetStreamSink implements EventSink {
  private readonly queue: Entry[] = [];
  private head = 0;
  private bytes = 0;
  private inFlight = 0;
  private role: Role = 'standby';
  private revision = 0;
  private readonly clock: HolderClock;
  private firstId: string | undefined;
  /** when this session's first event was read (wall clock: compared with other replicas') */
  private firstAt: number | undefined;
  /** took a lease over on the clock since a lease last settled: not again until one does, so a
   *  wrong call (clocks that disagree) and the exact rule correcting it cannot alternate for ever */
  private tookOverByClock = false;
  /** a settling holder whose first event this standby may have read later than earlier ones */
  private challenge: { first: string; since: number | undefined; revision: number; until: number } | undefined;
  /** the newest entry the feeder reported stored, and since when earlier ones have been waiting */
  private lastSeen: Entry | undefined;
  private behindSince: number | undefined;
  /** the other holder's lease revision at the last look, and when it last moved */
  private holderSeen: { revision: number; at: number } | undefined;
  private holderMoving = false;
  /** one of this session's events was seen stored */
  private seenAny = false;
  /** ids the feeder reported stored before this replica read them (at most maxPending) */
  private readonly ahead = new Set<string>();
  private readonly indexKey: string;
  /** letGo waits for what is in flight */
  private readonly drainWaiters = new Set<() => void>();
  /** a lease operation in flight (one at a time) */
  private busy = false;
  private failed = false;
  private pausedState = false;
  private closed = false;
  private tick: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<(paused: boolean) => void>();
  private readonly subject: string;
  private readonly hdrs: MsgHdrs;
  private readonly lease: LeaseKey | undefined;
  private readonly backoff = new Backoff({ initialMs: 200, maxMs: 5000 });
  private readonly tallies: PublishTallies;
  private readonly log: Logger;

  constructor(
    readonly node: string,
    readonly kind: Kind,
    private readonly opts: PublisherOptions,
  ) {
    this.subject = subjectFor(kind, node);
    this.hdrs = headers();
    this.hdrs.set(HEADER_NODE, node);
    this.hdrs.set(HEADER_KIND, kind);
    this.tallies = opts.tallies(kind);
    this.clock = new HolderClock(opts.leaseTtlMs);
    const kv = opts.leases();
    this.lease = kv ? new LeaseKey(kv, leaseKey(node, kind)) : undefined;
    this.log = opts.logger.child({ node, kind });
    this.indexKey = `${node}/${kind}`;
    opts.index.register(this.indexKey, this);
  }

  get paused(): boolean {
    return this.pausedState;
  }

  /** standby, settling (holds the lease, not yet publishing) or holding */
  get state(): Role {
    return this.role;
  }

  /** true while this replica publishes the node's events of this kind */
  get holding(): boolean {
    return this.role === 'holding';
  }

  /** events read from the node and not yet seen stored */
  get pending(): number {
    return this.queue.length - this.head;
  }

  onFlow(listener: (paused: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A new session with the node begins: its first event names this replica in the lease. */
  sessionStarted(): void {
    if (this.closed) return;
    this.firstId = undefined;
    this.firstAt = undefined;
    this.tookOverByClock = false;
    this.challenge = undefined;
    this.seenAny = false;
    if (!this.tick) {
      this.tick = setInterval(() => this.onTick(), this.opts.tickMs);
      this.tick.unref();
    }
  }

  /** The session ended: what this replica reads next follows a gap, so a holder lets a standby (which has it) take over. */
  sessionEnded(): void {
    if (this.role !== 'standby') void this.letGo('the node session ended');
  }

  publish(bytes: Buffer): void {
    if (this.closed) return;
    const entry: Entry = { bytes, id: messageId(this.node, this.kind, bytes), at: performance.now(), state: 'unsent', n: 0, sentAt: 0, sink: this };
    this.queue.push(entry);
    this.bytes += bytes.length;
    // only what a replica keeps without publishing it waits for the feeder's word
    const storedAlready = this.role !== 'holding' && this.ahead.delete(entry.id);
    if (this.role !== 'holding' && !storedAlready) this.opts.index.add(entry);
    if (this.firstId === undefined) {
      this.firstId = entry.id;
      this.firstAt = Date.now();
      if (this.role === 'standby') void this.acquire();
    } else if (this.challenge && entry.id === this.challenge.first) {
      void this.takeOver();
    }
    if (this.role === 'holding') {
      if (this.clock.expired()) this.fence();
      else if (!this.failed) this.send(entry);
    }
    if (storedAlready) return this.markStored(entry);
    this.reconsider();
  }

  /** The feeder saw one of this sink's events stored: by the holder (or, holding, by ourselves). */
  storedElsewhere(entry: Entry): void {
    // a holder learns what it stored from the acks
    if (this.role !== 'holding') this.markStored(entry);
  }

  /** The feeder saw one of this node's events stored that this replica has not read yet. */
  storedAhead(id: string): void {
    if (this.role === 'holding' || this.closed) return;
    this.ahead.add(id);
    // bounded: a replica that far behind the holder re-reads what it cannot match as unstored
    if (this.ahead.size > this.opts.maxPending) this.ahead.delete(this.ahead.values().next().value!);
  }

  private markStored(entry: Entry): void {
    this.settled(entry);
    this.lastSeen = entry;
    this.seenAny = true;
    // Earlier events not seen stored: the holder is re-sending them (a NATS server died with
    // them in flight), or it began reading after them. The next ticks tell which.
    if (entry !== this.queue[this.head] && this.behindSince === undefined) this.behindSince = performance.now();
    this.advance();
    this.reconsider();
  }

  /**
   * Events read before the last one seen stored that are still not stored: nobody will
   * store them (publishing them now would put them after later ones). Counted as dropped.
   */
  private sweepGap(): void {
    this.behindSince = undefined;
    const last = this.lastSeen;
    if (!last) return;
    let gap = 0;
    for (let j = this.head; j < this.queue.length && this.queue[j] !== last; j++) {
      const e = this.queue[j]!;
      if (e.state === 'stored') continue;
      this.settled(e);
      gap++;
    }
    if (gap > 0) {
      this.tallies.gap.n += gap;
      this.log.warn({ events: gap }, 'events this replica read were stored by no replica (the holder began reading after them); counted as dropped');
    }
    this.advance();
    this.reconsider();
  }

  /** Done with an entry without its ack (seen stored, swept or shed): out of flight, forgettable. */
  private settled(e: Entry): void {
    if (e.state === 'sent') {
      this.opts.router()?.forget(e.n);
      this.inFlight--;
      this.landed();
    }
    e.state = 'stored';
  }

  /** Called by the AckRouter. */
  acked(entry: Entry, body: PubAckBody): void {
    if (entry.state !== 'sent') return;
    this.inFlight--;
    this.landed();
    if (body.error) {
      entry.state = 'unsent';
      this.tallies.failures.n++;
      this.fail(new Error(body.error.description ?? `error ${body.error.code ?? '?'}`));
      return;
    }
    entry.state = 'stored';
    if (body.duplicate) this.tallies.duplicates.n++;
    else this.tallies.published.n++;
    this.advance();
    if (this.inFlight === 0 && this.failed) this.scheduleResend();
    if (!this.failed) this.backoff.reset();
    this.reconsider();
  }

  /**
   * The node is no longer this replica's (re-assigned, shutdown): a holder publishes what
   * it has read and gives the lease up so a standby continues at once; a standby just stops.
   */
  close(): void {
    if (this.closed) return;
    const held = this.role !== 'standby';
    this.closed = true;
    this.opts.index.unregister(this.indexKey, this, this.role === 'holding');
    this.ahead.clear();
    clearInterval(this.tick);
    this.listeners.clear();
    if (!held) return this.drop();
    const done = this.letGo('the node is no longer read here').finally(() => this.opts.closing.delete(done));
    this.opts.closing.add(done);
  }

  // ---- lease ----

  private value(settled: boolean): LeaseValue {
    if (this.firstId !== undefined) return { replica: this.opts.replica, first: this.firstId, since: this.firstAt, settled };
    // no event yet in this session: what it still holds from the last one
    const head = this.queue[this.head];
    return { replica: this.opts.replica, first: head?.id ?? '', since: head ? wallClock(head.at) : Date.now(), settled };
  }

  /** One lease operation at a time; errors (NATS unreachable) leave things as they are until the next tick. */
  private async leaseOp(what: string, op: (lease: LeaseKey) => Promise<void>): Promise<void> {
    if (this.busy || !this.lease) return;
    this.busy = true;
    try {
      await op(this.lease);
    } catch (err) {
      if (!this.closed) this.log.debug({ err: (err as Error).message }, `${what}: no answer from NATS`);
    } finally {
      this.busy = false;
    }
  }

  private acquire(): Promise<void> {
    return this.leaseOp('taking the lease', (lease) => this.acquireWith(lease));
  }

  /** Takes the lease if free; otherwise looks at its holder, and takes it over from one still settling that began reading later. */
  private async acquireWith(lease: LeaseKey): Promise<void> {
    if (this.role !== 'standby' || this.closed) return;
    const result = await lease.acquire(this.value(false));
    if (result.held && this.closed) return lease.release(result.revision);
    if (this.role !== 'standby' || this.closed) return;
    if (result.held) return this.settle(result.revision);
    const holder = result.holder;
    if (holder?.replica === this.opts.replica && result.revision === this.revision) {
      // still ours as this sink last wrote it (a fenced holder, a refresh whose answer was
      // lost): refresh it. Not after letting it go, nor a key left by an earlier process.
      return this.settle(result.revision);
    }
    this.observeHolder(result.revision);
    if (holder?.settled) this.tookOverByClock = false;
    this.challenge = holder && !holder.settled ? { first: holder.first, since: holder.since, revision: result.revision, until: performance.now() + this.opts.settleMs } : undefined;
    if (this.challenge && this.earlierThan(this.challenge) !== 'no') await this.takeOverWith(lease);
    this.reconsider();
  }

  /** The holder refreshes every quarter lease: two looks in a row at different revisions mean it is alive. */
  private observeHolder(revision: number): void {
    const now = performance.now();
    this.holderMoving = this.holderSeen !== undefined && this.holderSeen.revision !== revision && now - this.holderSeen.at <= this.opts.leaseTtlMs / 2;
    this.holderSeen = { revision, at: now };
  }

  /**
   * Whether this sink holds unstored events the node sent before a settling holder's first
   * one: 'read' when it holds that first event after them; 'clock' when its buffer is full
   * short of it and its session began earlier by the clock (it cannot read on to find out);
   * otherwise 'no' (it began later, or has not read that far and will see it come).
   */
  private earlierThan(c: { first: string; since: number | undefined }): 'read' | 'clock' | 'no' {
    let i = this.head;
    while (i < this.queue.length && this.queue[i]!.id !== c.first) i++;
    let unstored = false;
    for (let j = this.head; j < i && !unstored; j++) unstored = this.queue[j]!.state !== 'stored';
    if (!unstored) return 'no';
    if (i < this.queue.length) return 'read';
    // the oldest event it still holds, not its session's first: it may have shed or swept past that
    const clockSaysEarlier = c.since !== undefined && wallClock(this.queue[this.head]!.at) < c.since;
    return this.pausedState && clockSaysEarlier && !this.tookOverByClock ? 'clock' : 'no';
  }

  private takeOver(): Promise<void> {
    return this.leaseOp('taking over the lease', (lease) => this.takeOverWith(lease));
  }

  /** The settling holder began reading after this replica: take the lease at its revision (fails once it has refreshed). */
  private async takeOverWith(lease: LeaseKey): Promise<void> {
    const c = this.challenge;
    this.challenge = undefined;
    if (!c || performance.now() > c.until || this.role !== 'standby') return;
    const earlier = this.earlierThan(c);
    if (earlier === 'no') return;
    try {
      const revision = await lease.update(this.value(false), c.revision);
      if (earlier === 'clock') this.tookOverByClock = true;
      this.log.info({ by: earlier }, 'took the lease over from a replica that began reading this node later');
      this.settle(revision);
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
  }

  /** Holds the lease at `revision`; publishes once the first refresh shows nobody took it over. */
  private settle(revision: number): void {
    this.setRole('settling');
    this.revision = revision;
    this.clock.refreshed(performance.now());
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      void this.refresh();
    }, this.opts.settleMs);
    this.settleTimer.unref();
  }

  private refresh(): Promise<void> {
    return this.leaseOp('refreshing the lease', async (lease) => {
      if (this.role === 'standby' || this.closed) return;
      const sentAt = performance.now();
      let revision: number;
      try {
        revision = await lease.update(this.value(true), this.revision);
      } catch (err) {
        if (!isConflict(err)) throw err;
        const was = this.role;
        this.log.info({ was }, 'another replica holds the lease now');
        this.toStandby();
        this.settleDone();
        // let go (session ended, close) while the refresh was out: nothing to take back
        if ((was as Role) === 'standby') return;
        // The key expired while this replica's refreshes got no answer (a NATS server died)
        // and another took it: if that one began reading later, it is still settling now,
        // and this replica's earlier events are lost unless it takes over before the next tick.
        await this.acquireWith(lease);
        return;
      }
      if ((this.role as Role) === 'standby') {
        // let go (the node session ended, close) while this refresh was on its way
        await lease.release(revision).catch(() => undefined);
        return;
      }
      this.revision = revision;
      this.clock.refreshed(sentAt);
      if (this.role === 'settling') {
        // Everything not seen stored is published, also what lies before the last stored
        // event (a previous holder's publishes lost with a NATS server): late rather than lost.
        this.behindSince = undefined;
        this.setRole('holding');
        this.tookOverByClock = false;
        this.log.debug({ pending: this.pending }, 'holding the lease: publishing this node');
        this.sendAll();
      }
    });
  }

  private settleDone(): void {
    clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
  }

  private onTick(): void {
    if (this.closed) return;
    if (this.role === 'holding') {
      if (this.clock.expired()) this.fence();
      else void this.refresh();
      return;
    }
    if (this.role === 'settling') {
      // the settling refresh got no answer: try again, or start over once the lease may be gone
      if (this.settleTimer) return;
      if (this.clock.expired()) this.toStandby();
      else void this.refresh();
      return;
    }
    // Only while a holder keeps refreshing: it will re-send what it lost, or it began after
    // those events. Otherwise they are this replica's to publish if it takes over.
    if (this.behindSince !== undefined && this.holderMoving && performance.now() - this.behindSince >= this.opts.ackTimeoutMs + this.opts.leaseTtlMs / 2) this.sweepGap();
    // an event nobody stored for a tick: the holder is gone, or there is none
    const oldest = this.queue[this.head];
    if (oldest && performance.now() - oldest.at >= this.opts.leaseTtlMs / 4) void this.acquire();
  }

  /** No refresh for half the lease: stop publishing before anybody else may hold it. */
  private fence(): void {
    this.log.warn({ pending: this.pending }, 'cannot refresh the lease in time: publishing stops until it is ours again');
    this.toStandby();
  }

  private setRole(role: Role): void {
    // a closed sink is out of the index's count (unregistered)
    if (!this.closed && (role === 'holding') !== (this.role === 'holding')) this.opts.index.holding(role === 'holding');
    this.role = role;
  }

  /** A holder learns what got stored from its acks; from here on the feeder tells this sink. */
  private toStandby(): void {
    if (this.role === 'holding') for (let i = this.head; i < this.queue.length; i++) this.opts.index.add(this.queue[i]!);
    this.setRole('standby');
  }

  /** Publishes what was read, waits for the acks, then releases the lease. */
  private async letGo(why: string): Promise<void> {
    const revision = this.revision;
    // given up: a later session must not take the key back as its own before a standby can
    this.revision = 0;
    const wasHolding = this.role === 'holding';
    this.toStandby();
    this.settleDone();
    this.log.debug({ why }, 'letting the lease go');
    if (wasHolding && !this.failed) {
      for (let i = this.head; i < this.queue.length && !this.failed; i++) if (this.queue[i]!.state === 'unsent') this.send(this.queue[i]!);
      await this.drained(this.opts.ackTimeoutMs);
    }
    if (this.closed) this.drop(true);
    await this.lease?.release(revision).catch(() => undefined);
  }

  // ---- publishing ----

  /** Resolves once nothing is in flight, or after `ms`. */
  private drained(ms: number): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.drainWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.drainWaiters.add(done);
    });
  }

  /** After the in-flight count went down. */
  private landed(): void {
    if (this.inFlight === 0) for (const done of this.drainWaiters) done();
  }

  private sendAll(): void {
    for (let i = this.head; i < this.queue.length && !this.failed && this.role === 'holding'; i++) {
      if (this.queue[i]!.state === 'unsent') this.send(this.queue[i]!);
    }
  }

  private send(entry: Entry): void {
    const router = this.opts.router();
    if (!router) {
      this.fail(new Error('not connected to NATS'));
      return;
    }
    this.hdrs.set(HEADER_MSG_ID, entry.id);
    entry.state = 'sent';
    entry.sentAt = performance.now();
    this.inFlight++;
    try {
      router.send(this.subject, entry, this.hdrs);
    } catch (err) {
      entry.state = 'unsent';
      this.inFlight--;
      this.fail(err as Error);
      return;
    }
    this.armAckCheck();
  }

  /** One timer per sink, not per event: publishes unacknowledged for ackTimeoutMs are given up (and re-sent in order). */
  private armAckCheck(): void {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closed) return;
      const now = performance.now();
      let late = 0;
      let sent = 0;
      for (let i = this.head; i < this.queue.length; i++) {
        const e = this.queue[i]!;
        if (e.state !== 'sent') continue;
        if (now - e.sentAt < this.opts.ackTimeoutMs) {
          sent++;
          continue;
        }
        this.opts.router()?.forget(e.n);
        e.state = 'unsent';
        late++;
      }
      // the count follows the queue, whatever path an entry took out of flight
      this.inFlight = sent;
      this.landed();
      if (late > 0) {
        this.tallies.failures.n += late;
        this.fail(new Error(`no publish ack within ${this.opts.ackTimeoutMs} ms`));
      } else if (this.failed && sent === 0) this.scheduleResend();
      else if (sent > 0) this.armAckCheck();
    }, this.opts.ackTimeoutMs / 2);
    this.retryTimer.unref();
  }

  private fail(err: Error): void {
    if (!this.failed) this.log.warn({ err: err.message, pending: this.pending }, 'publish to JetStream failed; re-sending in order');
    this.failed = true;
    if (this.inFlight === 0) this.scheduleResend();
    else this.armAckCheck();
  }

  private scheduleResend(): void {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.failed = false;
      if (this.role === 'holding') this.sendAll();
    }, this.backoff.next());
    this.retryTimer.unref();
  }

  /** Forgets the stored events at the head of the queue. */
  private advance(): void {
    while (this.head < this.queue.length && this.queue[this.head]!.state === 'stored') this.advanceOne();
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  private advanceOne(): void {
    const e = this.queue[this.head]!;
    // nothing before it is left: no gap to look for
    if (e === this.lastSeen) {
      this.lastSeen = undefined;
      this.behindSince = undefined;
    }
    this.bytes -= e.bytes.length;
    this.opts.index.remove(e);
    this.head++;
  }

  /** Forgets everything; what a holder leaves unstored is counted (a standby may still have it, or not). */
  private drop(counted = false): void {
    let unstored = 0;
    for (let i = this.head; i < this.queue.length; i++) {
      const e = this.queue[i]!;
      this.opts.index.remove(e);
      if (e.state === 'sent') this.opts.router()?.forget(e.n);
      if (e.state !== 'stored') unstored++;
    }
    if (counted && unstored > 0) {
      this.tallies.gap.n += unstored;
      this.log.warn({ events: unstored }, 'closing with events this replica read and could not store; counted as dropped (a standby may have them)');
    }
    this.queue.length = 0;
    this.head = 0;
    this.bytes = 0;
    clearTimeout(this.retryTimer);
  }

  /**
   * Past the bounds the node's reads pause: a holder keeps what it must publish, a standby its
   * cover for a failover. A full standby that has never seen one of its events stored while the
   * holder keeps refreshing drops its oldest instead, counted (it read them before the holder
   * began; pausing would hold the node back for a buffer that never drains).
   */
  private reconsider(): void {
    const { maxPending, maxPendingBytes } = this.opts;
    const full = this.pending >= maxPending || this.bytes >= maxPendingBytes;
    if (full && this.role === 'standby') {
      if (!this.seenAny && this.holderMoving && performance.now() - this.holderSeen!.at <= this.opts.leaseTtlMs / 2) {
        let shed = 0;
        while (this.pending * 2 > maxPending || this.bytes * 2 > maxPendingBytes) {
          const e = this.queue[this.head]!;
          this.settled(e);
          this.advanceOne();
          shed++;
        }
        this.tallies.shed.n += shed;
        this.log.warn({ events: shed }, 'standby buffer full and none of its events stored while the holder publishes: dropped its oldest');
      }
    }
    const n = this.pending;
    const paused = this.pausedState ? n * 2 > maxPending || this.bytes * 2 > maxPendingBytes : n >= maxPending || this.bytes >= maxPendingBytes;
    if (paused === this.pausedState) return;
    this.pausedState = paused;
    for (const listener of this.listeners) listener(paused);
  }
}
