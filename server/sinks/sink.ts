// One search-cluster sink: a consumer of the hub that indexes events through a bulk API.
//
// It never pushes back on the hub: its writer always accepts, and an event that does not
// fit in the sink's bounded queue is dropped and counted (`sink_full`). So a slow or down
// cluster costs the sink events, never the gRPC consumers their stream or the relay its
// memory. One bulk request is in flight at a time: it goes when the queue holds a full
// batch, or when its oldest event has waited `flushMs`. A failed request is retried with
// backoff for as long as it takes (the cluster being down is not the documents' fault);
// documents the cluster refuses one by one are retried when the refusal is transient
// (429, 5xx) up to a limit, and counted as failed otherwise. Document ids come from the
// event bytes, so whatever is sent twice is indexed once.
import { Backoff, type BackoffOptions } from '../backoff.js';
import type { Hub, Subscriber } from '../hub.js';
import { KIND_BY_NAME, type Kind } from '../kinds.js';
import type { Logger } from '../logger.js';
import type { RelayMetrics, Tally } from '../metrics.js';
import { jsonRenderer } from '../stdout.js';
import type { SinkConfig } from './config.js';
import { EVENT_MAPPING, documentId, indexAction } from './documents.js';
import { createSinkMetrics, type RequestOutcome, type SinkMetrics } from './metrics.js';
import { SinkQueue, type QueuedEvent } from './queue.js';

/** What a bulk request came back with, whatever the client library. */
export type BulkOutcome =
  | { kind: 'items'; items: readonly ItemResult[] }
  | { kind: 'status'; status: number; reason: string }
  | { kind: 'unreachable'; reason: string };

export interface ItemResult {
  status: number;
  /** the cluster's reason for a refused document */
  reason?: string;
}

/** A request that got no per-document answer. */
export type RequestFailure = Exclude<BulkOutcome, { kind: 'items' }>;

export type EnsureOutcome = { kind: 'exists' } | { kind: 'created' } | RequestFailure;

/** The few calls a sink makes, implemented with each official client (elasticsearch.ts, opensearch.ts). */
export interface BulkClient {
  bulk(ndjson: Buffer, signal: AbortSignal): Promise<BulkOutcome>;
  /** creates `index` with `mapping` unless an index or alias of that name exists */
  ensureIndex(index: string, mapping: object, signal: AbortSignal): Promise<EnsureOutcome>;
  close(): Promise<void>;
}

export interface SinkOptions {
  queue: { maxEvents: number; maxBytes: number };
  /** the longest an event waits for a batch to fill */
  flushMs: number;
  /** documents per bulk request */
  batchEvents: number;
  /** event bytes (protobuf) per bulk request; the JSON is two to three times larger */
  batchBytes: number;
  backoff: BackoffOptions;
  /** attempts for a document the cluster refuses with 429 or 5xx before it counts as failed */
  maxItemAttempts: number;
  /** a bulk request unanswered this long counts as failed and is sent again */
  requestTimeoutMs: number;
}

export { SINK_DEFAULTS } from './defaults.js';

interface Doc {
  kind: Kind;
  /**
   * both NDJSON lines, off the V8 heap: a batch of JSON strings kept for the length of a
   * request survives young-generation collections and, at thousands of events a second,
   * grows the old generation (measured: relay peak RSS 169 MiB with strings)
   */
  action: Buffer;
  event: QueuedEvent;
  attempts: number;
}

/** Events rendered between two turns of the event loop. */
const RENDER_SLICE = 16;

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** How often a sink's failures are summarised in the log at most. */
const LOG_EVERY_MS = 10_000;

export class Sink {
  readonly name: string;
  private readonly queue: SinkQueue;
  private readonly subs: Subscriber[] = [];
  private readonly metrics: SinkMetrics;
  private readonly sinkFull: Partial<Record<Kind, Tally>> = {};
  private readonly rejected: Partial<Record<Kind, Tally>> = {};
  private readonly render: Partial<Record<Kind, (bytes: Buffer) => string | undefined>> = {};
  private readonly ensured = new Set<string>();
  private readonly backoff: Backoff;
  private readonly abort = new AbortController();
  private wake: (() => void) | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private loop: Promise<void> | undefined;
  private lastSuccessMs = 0;
  /** the failure being reported, so the log says when it starts and ends, not every retry */
  private failing: string | undefined;
  private failingSince = 0;
  private lastRejectLog = 0;
  private lastDropLog = 0;
  private droppedSinceLog = 0;
  private cancelSleep: (() => void) | undefined;

  constructor(
    private readonly config: SinkConfig,
    private readonly client: BulkClient,
    private readonly opts: SinkOptions,
    relayMetrics: RelayMetrics,
    private readonly logger: Logger,
  ) {
    this.name = config.name;
    this.queue = new SinkQueue(opts.queue);
    this.backoff = new Backoff(opts.backoff);
    this.metrics = createSinkMetrics(relayMetrics, config.name, {
      queuedEvents: () => this.queue.events,
      queuedBytes: () => this.queue.bytes,
      lastSuccessSeconds: () => this.lastSuccessMs / 1000,
    });
    for (const kind of this.kinds()) {
      this.sinkFull[kind] = relayMetrics.dropped.tally({ kind, reason: 'sink_full' });
      this.rejected[kind] = relayMetrics.dropped.tally({ kind, reason: 'sink_rejected' });
      this.render[kind] = jsonRenderer(KIND_BY_NAME[kind], relayMetrics);
      // series at 0 from the start, so "nothing failed" is a value, not an absence
      this.metrics.indexed(kind);
      this.metrics.failed(kind);
    }
  }

  kinds(): Kind[] {
    return Object.keys(this.config.indices) as Kind[];
  }

  start(hub: Hub): void {
    for (const kind of this.kinds()) {
      this.subs.push(
        hub.channels[kind].subscribe(`${this.name} sink`, {
          write: (bytes) => {
            this.offer(kind, bytes);
            return true; // never holds the hub back
          },
          onDrain: () => {},
        }, { pacesReads: false }),
      );
    }
    this.loop = this.run();
  }

  private offer(kind: Kind, bytes: Buffer): void {
    if (!this.queue.push(kind, bytes, Date.now())) {
      this.sinkFull[kind]!.n++;
      this.reportDrop();
      return;
    }
    // the sender cares about the first event (arms the flush timer) and a full batch
    if (this.wake && (this.queue.length === 1 || this.queue.length >= this.opts.batchEvents || this.queue.queuedBytes >= this.opts.batchBytes)) this.wake();
  }

  /**
   * Stops taking events and indexes what is held until `deadline` (ms since the epoch);
   * what is still held then is logged as not indexed.
   */
  async close(deadline: number): Promise<void> {
    for (const sub of this.subs) sub.channel.unsubscribe(sub);
    this.closing = true;
    this.wake?.();
    this.cancelSleep?.();
    const timer = setTimeout(() => {
      this.abort.abort();
      this.cancelSleep?.();
    }, Math.max(0, deadline - Date.now()));
    await this.loop;
    clearTimeout(timer);
    clearTimeout(this.flushTimer);
    const left = this.queue.events;
    if (left > 0) this.logger.warn({ sink: this.name, events: left }, 'events not indexed before the shutdown deadline');
    await this.client.close().catch(() => {});
  }

  private async run(): Promise<void> {
    for (;;) {
      await this.batchReady();
      if (this.queue.length === 0 || this.abort.signal.aborted) return;
      const taken = this.queue.take(this.opts.batchEvents, this.opts.batchBytes, Date.now());
      try {
        await this.deliver(await this.toDocs(taken));
      } catch (err) {
        // a bug here must cost this batch, never the relay (an unhandled rejection would
        // end the process) nor the sink's next batches
        this.logger.error({ sink: this.name, err }, `${this.name} sink failed on a batch; its events are counted as failed`);
        this.abandon(taken);
        await this.sleep(this.backoff.next());
      }
    }
  }

  /** Counts as failed, and gives back the room of, taken events not settled yet. */
  private abandon(taken: readonly QueuedEvent[]): void {
    for (const event of taken) {
      if (event.settled) continue;
      this.metrics.failed(event.kind).n++;
      this.rejected[event.kind]!.n++;
      this.release(event);
    }
  }

  /** Gives back an event's room in the queue, once. */
  private release(event: QueuedEvent): void {
    if (event.settled) return;
    event.settled = true;
    this.queue.release(1, event.bytes.length);
  }

  /** Resolves when a full batch is queued, the oldest event waited flushMs, or on close. */
  private batchReady(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        clearTimeout(this.flushTimer);
        const q = this.queue;
        if (this.closing || q.length >= this.opts.batchEvents || q.queuedBytes >= this.opts.batchBytes) return done();
        if (q.length === 0) return; // offer() calls again
        const wait = q.oldestAt + this.opts.flushMs - Date.now();
        if (wait <= 0) return done();
        this.flushTimer = setTimeout(check, wait);
      };
      const done = () => {
        this.wake = undefined;
        resolve();
      };
      this.wake = check;
      check();
    });
  }

  /**
   * Renders a batch a slice at a time, yielding to the event loop between slices: a batch
   * rendered in one go would hold up every gRPC consumer's writes for tens of ms.
   */
  private async toDocs(taken: readonly QueuedEvent[]): Promise<Doc[]> {
    const docs: Doc[] = [];
    for (let i = 0; i < taken.length; i++) {
      if (i > 0 && i % RENDER_SLICE === 0) await yieldToEventLoop();
      const event = taken[i]!;
      const { kind, bytes } = event;
      const json = this.render[kind]!(bytes);
      if (json === undefined) {
        // counted as malformed by the renderer
        this.release(event);
        continue;
      }
      docs.push({ kind, action: Buffer.from(indexAction(this.config.indices[kind]!, documentId(kind, bytes), json)), event, attempts: 0 });
    }
    return docs;
  }

  private settle(doc: Doc): void {
    this.release(doc.event);
  }

  /** Sends docs until each is indexed, refused for good, or the shutdown deadline passes. */
  private async deliver(docs: Doc[]): Promise<void> {
    let pending = docs;
    while (pending.length > 0) {
      if (this.abort.signal.aborted) return; // close() reports what is still held
      const failure = await this.ensureIndices();
      const outcome: BulkOutcome = failure ?? (await this.client.bulk(Buffer.concat(pending.map((d) => d.action)), this.abort.signal));
      if (outcome.kind === 'items') pending = this.sortItems(pending, outcome.items);
      else if (outcome.kind === 'status' && !retryable(outcome.status)) {
        // the request itself was refused (400 on our body, 413...): sending it again would not help
        this.countRequest(outcome);
        this.reportFailure(`${this.name} refused the bulk request: HTTP ${outcome.status} ${outcome.reason}`);
        for (const d of pending) this.fail(d);
        pending = [];
      } else {
        this.countRequest(outcome);
        this.reportFailure(outcome.kind === 'status' ? `HTTP ${outcome.status} ${outcome.reason}` : `unreachable: ${outcome.reason}`);
      }
      if (pending.length === 0) break;
      this.metrics.retried.n += pending.length;
      await this.sleep(this.backoff.next());
    }
    this.backoff.reset();
  }

  /** Creates missing indices with the relay's mapping, once; a failure to reach the cluster is returned. */
  private async ensureIndices(): Promise<RequestFailure | undefined> {
    for (const index of new Set(Object.values(this.config.indices))) {
      if (this.ensured.has(index)) continue;
      const outcome = await this.client.ensureIndex(index, EVENT_MAPPING, this.abort.signal);
      if (outcome.kind === 'created' || outcome.kind === 'exists') {
        this.logger.info({ sink: this.name, index, mapping: outcome.kind === 'created' ? 'created by the relay' : 'kept (index exists)' }, `${this.name} index ready`);
      } else if (outcome.kind === 'unreachable' || retryable(outcome.status)) {
        return outcome;
      } else {
        // e.g. 403: the user may write documents but not create indices; the first bulk
        // request then creates the index with the cluster's dynamic mapping
        this.logger.warn({ sink: this.name, index, status: outcome.status, reason: outcome.reason }, `${this.name} index could not be checked or created; documents are sent anyway`);
      }
      this.ensured.add(index);
    }
    return undefined;
  }

  /** Counts each document's result; returns those to send again. */
  private sortItems(pending: Doc[], items: readonly ItemResult[]): Doc[] {
    if (items.length !== pending.length) {
      this.countRequest({ kind: 'status', status: 502, reason: '' });
      this.reportFailure(`bulk response has ${items.length} items for ${pending.length} documents; sending them again`);
      return pending;
    }
    this.lastSuccessMs = Date.now();
    const again: Doc[] = [];
    let refused: { status: number; reason: string } | undefined;
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      const doc = pending[i]!;
      if (item.status >= 200 && item.status < 300) {
        this.metrics.indexed(doc.kind).n++;
        this.settle(doc);
      } else if (retryable(item.status) && ++doc.attempts < this.opts.maxItemAttempts) {
        again.push(doc);
      } else {
        refused ??= { status: item.status, reason: item.reason ?? '' };
        this.fail(doc);
      }
    }
    this.metrics.request(again.length > 0 || refused ? 'partial' : 'ok').n++;
    if (this.failing) {
      this.logger.info({ sink: this.name, url: this.config.url.href, since: new Date(this.failingSince).toISOString() }, `${this.name} indexing again`);
      this.failing = undefined;
    }
    if (refused && Date.now() - this.lastRejectLog >= LOG_EVERY_MS) {
      this.lastRejectLog = Date.now();
      this.logger.warn({ sink: this.name, status: refused.status, reason: refused.reason }, `${this.name} refused documents; they are counted as failed`);
    }
    return again;
  }

  /** Drops are summarised in the log at most every LOG_EVERY_MS, like the hub's per consumer. */
  private reportDrop(): void {
    this.droppedSinceLog++;
    const now = Date.now();
    if (now - this.lastDropLog < LOG_EVERY_MS) return;
    this.logger.warn({ sink: this.name, dropped: this.droppedSinceLog, queuedEvents: this.queue.events, queuedBytes: this.queue.bytes }, `${this.name} sink queue full: events dropped for the sink`);
    this.lastDropLog = now;
    this.droppedSinceLog = 0;
  }

  private fail(doc: Doc): void {
    this.metrics.failed(doc.kind).n++;
    this.rejected[doc.kind]!.n++;
    this.settle(doc);
  }

  private countRequest(outcome: RequestFailure): void {
    let label: RequestOutcome = 'unreachable';
    if (outcome.kind === 'status') label = outcome.status === 429 ? 'status_429' : outcome.status >= 500 ? 'status_5xx' : 'status_4xx';
    this.metrics.request(label).n++;
  }

  /** Logs a failure when it starts or changes, then only its end: retries are in /metrics. */
  private reportFailure(what: string): void {
    if (this.failing === what) return;
    if (!this.failing) this.failingSince = Date.now();
    this.failing = what;
    this.logger.warn({ sink: this.name, url: this.config.url.href, failure: what }, `${this.name} bulk request failed; retrying with backoff, events beyond the sink queue are dropped and counted`);
  }

  private sleep(ms: number): Promise<void> {
    // while shutting down, try again soon: the deadline, not the backoff, bounds the wait
    const delay = this.closing ? Math.min(ms, 200) : ms;
    return new Promise((resolve) => {
      const timer = setTimeout(done, delay);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.cancelSleep = done;
    });
  }
}

/** 429 and 5xx are the cluster's "not now"; other statuses are about the request. */
function retryable(status: number): boolean {
  return status === 429 || status >= 500;
}
