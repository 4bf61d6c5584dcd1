// A list-then-watch loop over one Kubernetes collection, resilient where client-node's
// own ListWatch/makeInformer is not: it resumes from the last resourceVersion, relists on
// 410 Gone, and retries every other failure with backoff (see discovery.ts for why).
import {
  CoreV1Api,
  KubeConfig,
  ServerConfiguration,
  Watch,
  createConfiguration,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Backoff } from './backoff.js';

export interface Meta {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
}

export interface Page<T> {
  items: T[];
  metadata?: { resourceVersion?: string; _continue?: string };
}

export interface Source<T, V> {
  /** for log lines, e.g. "kubearmor pods" */
  what: string;
  /** collection path for the watch, e.g. /api/v1/pods */
  path: string;
  labelSelector?: string;
  list(api: CoreV1Api, page: { labelSelector?: string; limit: number; _continue?: string }): Promise<Page<T>>;
  /** what to keep of an object; undefined = not interesting (treated as absent) */
  project(obj: T): V | undefined;
  /** everything there is, after a (re)list */
  replaced(entries: Map<string, V>): void;
  /** one object changed; value undefined = gone */
  changed(key: string, value: V | undefined): void;
}

export interface LoopSettings {
  /** a watch that lasted this long counts as healthy even when it delivered nothing */
  healthyWatchMs: number;
  kc: KubeConfig;
  watch: Watch;
  logger: Logger;
  backoffInitialMs: number;
  backoffMaxMs: number;
  watchTimeoutSeconds: number;
  listTimeoutMs: number;
  listPageSize: number;
}

type WatchPhase = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export function metaOf(obj: unknown): Meta {
  const m = (obj as { metadata?: Meta } | null)?.metadata;
  return m ?? {};
}

function keyOf(meta: Meta): string {
  return `${meta.namespace ?? ''}/${meta.name ?? ''}`;
}

/** HTTP status of an error from a list call (ApiException.code) or a watch (statusCode). */
function statusOf(err: unknown): number | undefined {
  const e = err as { statusCode?: unknown; code?: unknown } | null;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return undefined;
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const status = statusOf(err);
    // ApiException messages embed the whole response body and headers: keep the first two lines.
    const head = err.message.split('\n').slice(0, 2).join(' ');
    return status === undefined ? head : `${head} (HTTP ${status})`;
  }
  return String(err);
}

export class ListWatchLoop<T, V> {
  private resourceVersion = '';
  private readonly backoff: Backoff;
  /** bumped for every attempt and on stop(): callbacks of older attempts are ignored */
  private run = 0;
  private stopped = false;
  private cancel: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private entries = new Map<string, V>();
  /** the signal of the list in flight, read by the api client's middleware */
  private listSignal: AbortSignal | undefined;
  private readonly api: CoreV1Api;

  constructor(
    private readonly source: Source<T, V>,
    private readonly s: LoopSettings,
  ) {
    this.api = this.makeApi();
    this.backoff = new Backoff({ initialMs: s.backoffInitialMs, maxMs: s.backoffMaxMs });
  }

  start(): void {
    this.attempt();
  }

  stop(): void {
    this.stopped = true;
    this.run++;
    clearTimeout(this.timer);
    this.cancel?.();
    this.cancel = undefined;
  }

  /**
   * One client per loop, built as KubeConfig.makeApiClient does, plus a middleware that
   * attaches the abort signal of the list in flight (so stop() and the list timeout can
   * end it; the generated API offers no other way to pass one).
   */
  private makeApi(): CoreV1Api {
    const cluster = this.s.kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    const config = createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: this.s.kc },
      promiseMiddleware: [
        {
          pre: async (ctx: RequestContext) => {
            if (this.listSignal) ctx.setSignal(this.listSignal);
            return ctx;
          },
          post: async (ctx: ResponseContext) => ctx,
        },
      ],
    });
    return new CoreV1Api(config);
  }

  private current(run: number): boolean {
    return !this.stopped && run === this.run;
  }

  private attempt(): void {
    const run = ++this.run;
    if (this.resourceVersion) void this.watch(run);
    else void this.listThenWatch(run);
  }

  private async listThenWatch(run: number): Promise<void> {
    const controller = new AbortController();
    this.cancel = () => controller.abort();
    const timeout = setTimeout(() => controller.abort(new Error(`list timed out after ${this.s.listTimeoutMs} ms`)), this.s.listTimeoutMs);
    timeout.unref();
    this.listSignal = controller.signal;
    let listed: { entries: Map<string, V>; resourceVersion: string };
    try {
      listed = await this.listAll();
    } catch (err) {
      if (this.current(run)) this.retry(run, { failed: true, why: `list of ${this.source.what} failed: ${describe(controller.signal.reason ?? err)}` });
      return;
    } finally {
      clearTimeout(timeout);
      this.listSignal = undefined;
    }
    if (!this.current(run)) return;
    this.entries = listed.entries;
    this.resourceVersion = listed.resourceVersion;
    this.s.logger.debug({ what: this.source.what, count: listed.entries.size, resourceVersion: listed.resourceVersion }, 'listed');
    this.deliver(() => this.source.replaced(new Map(this.entries)));
    await this.watch(run);
  }

  /** Pages through the collection, projecting each page at once so full objects do not pile up. */
  private async listAll(): Promise<{ entries: Map<string, V>; resourceVersion: string }> {
    const entries = new Map<string, V>();
    let resourceVersion = '';
    let cont: string | undefined;
    do {
      const page = await this.source.list(this.api, { labelSelector: this.source.labelSelector, limit: this.s.listPageSize, _continue: cont });
      for (const item of page.items ?? []) {
        const value = this.source.project(item);
        if (value !== undefined) entries.set(keyOf(metaOf(item)), value);
      }
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      cont = page.metadata?._continue || undefined;
    } while (cont);
    return { entries, resourceVersion };
  }

  private async watch(run: number): Promise<void> {
    // Healthy = delivered something, or stayed open a while (a quiet cluster's watch that
    // the server ends at its timeout). Anything else ended suspiciously fast and backs off.
    let productive = false;
    const startedAt = Date.now();
    let ended = false;
    let request: AbortController | undefined;
    // A watch that stays silent longer than the server's own timeout (plus slack) is
    // presumed dead (a half-open connection) and replaced.
    const idle = setTimeout(() => end({ failed: true, why: 'watch went silent' }), (this.s.watchTimeoutSeconds + 60) * 1000);
    idle.unref();

    const end = (how: { failed: boolean; gone?: boolean; why: string }): void => {
      if (ended) return;
      ended = true;
      clearTimeout(idle);
      request?.abort();
      if (!this.current(run)) return;
      if (how.gone) this.resourceVersion = '';
      const healthy = productive || Date.now() - startedAt >= this.s.healthyWatchMs;
      if (healthy) this.backoff.reset();
      this.retry(run, { failed: how.failed || !healthy, why: how.why, level: how.failed ? 'warn' : how.gone ? 'info' : 'debug' });
    };

    const onEvent = (phase: string, obj: unknown): void => {
      if (ended || !this.current(run)) return;
      idle.refresh();
      switch (phase as WatchPhase) {
        case 'ERROR': {
          const status = obj as { code?: number; reason?: string; message?: string } | null;
          const gone = status?.code === 410 || status?.reason === 'Expired' || status?.reason === 'Gone';
          end({ failed: !gone, gone, why: `watch of ${this.source.what} reported ${status?.code ?? '?'} ${status?.reason ?? ''}: ${status?.message ?? ''}` });
          return;
        }
        case 'ADDED':
        case 'MODIFIED':
        case 'DELETED':
          this.apply(phase as 'ADDED' | 'MODIFIED' | 'DELETED', obj as T);
          break;
        case 'BOOKMARK':
          break;
        default:
          return;
      }
      productive = true;
      const rv = metaOf(obj).resourceVersion;
      if (rv) this.resourceVersion = rv;
    };

    const onDone = (err: unknown): void => {
      if (!err) {
        end({ failed: false, why: `watch of ${this.source.what} ended` });
        return;
      }
      const gone = statusOf(err) === 410;
      end({ failed: !gone, gone, why: `watch of ${this.source.what} failed: ${describe(err)}` });
    };

    const query: Record<string, string | number | boolean | undefined> = {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds: this.s.watchTimeoutSeconds,
      labelSelector: this.source.labelSelector,
    };
    try {
      request = await this.s.watch.watch(this.source.path, query, onEvent, onDone);
    } catch (err) {
      onDone(err ?? new Error('watch request failed'));
    }
    // The request may have ended (or the loop stopped) before its controller was known.
    if (ended || !this.current(run)) {
      request?.abort();
      if (!ended) {
        ended = true;
        clearTimeout(idle);
      }
      return;
    }
    this.cancel = () => end({ failed: false, why: 'stopped' });
  }

  private apply(phase: 'ADDED' | 'MODIFIED' | 'DELETED', obj: T): void {
    const key = keyOf(metaOf(obj));
    const value = phase === 'DELETED' ? undefined : this.source.project(obj);
    if (value === undefined && !this.entries.has(key)) return;
    if (value === undefined) this.entries.delete(key);
    else this.entries.set(key, value);
    this.deliver(() => this.source.changed(key, value));
  }

  /** A throwing consumer must not take the loop down with it. */
  private deliver(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.s.logger.error({ err, what: this.source.what }, 'discovery consumer threw');
    }
  }

  /**
   * Schedules the next attempt: at once after a watch that delivered events and ended
   * normally (the server's timeout, a 410 to relist from), with a growing delay after
   * failures and after watches that ended without delivering anything (a server that
   * closes every watch at once must not become a hot loop).
   */
  private retry(run: number, how: { failed: boolean; why: string; level?: 'warn' | 'info' | 'debug' }): void {
    this.cancel = undefined;
    const delay = how.failed ? this.backoff.next() : 0;
    const relist = this.resourceVersion === '';
    this.s.logger[how.level ?? 'warn']({ what: this.source.what, delayMs: delay, relist }, how.why);
    this.timer = setTimeout(() => {
      if (this.current(run)) this.attempt();
    }, delay);
  }
}

// ---------------------------------------------------------------------------------------
// What discovery keeps of pods and services.
