// Node-daemon discovery from the Kubernetes API: list, then watch, the pods labelled
// `kubearmor-app=kubearmor` and hand the relay's upstream manager the full sorted list of
// `<podIP>:32767` targets whenever it changes. Optionally keeps an IP → pod/service name
// map for remote-host enrichment (server/enrich.ts), from all pods and services.
//
// Why not client-node's ListWatch/makeInformer: it resumes from the last resourceVersion
// and relists on 410, but after any other error it just emits 'error' and stops (no
// retry, no backoff), it restarts a watch that the server closes at once without any
// delay (a hot loop), it can start a new watch after stop() if stop() lands during a
// list, and it reports the abort of its own request on stop() as an error. The loop below
// is small and owns those cases; it still uses client-node for config, auth, TLS, the
// list calls and the streaming watch request.
import {
  CoreV1Api,
  KubeConfig,
  ServerConfiguration,
  Watch,
  createConfiguration,
  type RequestContext,
  type ResponseContext,
  type V1Pod,
  type V1Service,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Backoff } from './backoff.js';

/** Every default of discovery, in one place. */
export const DISCOVERY_DEFAULTS = {
  labelSelector: 'kubearmor-app=kubearmor',
  port: 32767,
  /** first retry delay after a failure; doubles per consecutive failure */
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
  /** the API server ends each watch after this long; it is resumed from resourceVersion */
  watchTimeoutSeconds: 300,
  /** a list request that takes longer than this is abandoned and retried */
  listTimeoutMs: 60_000,
  /** page size of list calls, so that listing every pod of a big cluster stays small */
  listPageSize: 500,
  /** a watch that lasted this long counts as healthy even when it delivered nothing */
  healthyWatchMs: 10_000,
} as const;

export interface DiscoveryOptions {
  /** kubeconfig file; else in-cluster config when KUBERNETES_SERVICE_HOST is set, else the default kubeconfig */
  kubeconfig?: string;
  /** namespace of the node daemons; all namespaces when unset */
  namespace?: string;
  labelSelector?: string;
  /** gRPC port of the node daemons */
  port?: number;
  logger: Logger;
  /** the full sorted target list; called after the first list and whenever the set changes */
  onTargets: (addresses: string[]) => void;
  /** when given, kept up to date with the IPs of all pods and services */
  ipNames?: IpNameMap;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  watchTimeoutSeconds?: number;
  listTimeoutMs?: number;
  listPageSize?: number;
}

export interface Discovery {
  /** the current targets, sorted */
  targets(): string[];
  /** ends every request and timer; no callback fires afterwards */
  stop(): void;
}

/**
 * IP → `pod/<ns>/<name>` or `svc/<ns>/<name>`. An IP briefly claimed by two objects (a
 * new pod reusing a departing pod's IP) belongs to the latest claimant: `delete` with a
 * name removes the entry only while it still names that object.
 */
export class IpNameMap {
  private readonly names = new Map<string, string>();

  get(ip: string): string | undefined {
    return this.names.get(ip);
  }

  set(ip: string, name: string): void {
    this.names.set(ip, name);
  }

  delete(ip: string, name?: string): boolean {
    if (name !== undefined && this.names.get(ip) !== name) return false;
    return this.names.delete(ip);
  }

  get size(): number {
    return this.names.size;
  }

  /** bound lookup, to pass to enrichLog */
  readonly lookup = (ip: string): string | undefined => this.names.get(ip);
}

export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

/** `ip:port`, with brackets around an IPv6 address. */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

// ---------------------------------------------------------------------------------------
// The generic list+watch loop. It keeps no objects, only what `project` makes of them,
// and reports full replacements (after a list) and single changes (from the watch).

interface Meta {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
}

interface Page<T> {
  items: T[];
  metadata?: { resourceVersion?: string; _continue?: string };
}

interface Source<T, V> {
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

interface LoopSettings {
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

function metaOf(obj: unknown): Meta {
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

class ListWatchLoop<T, V> {
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
      const healthy = productive || Date.now() - startedAt >= DISCOVERY_DEFAULTS.healthyWatchMs;
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

function nodeTarget(pod: V1Pod, port: number): string | undefined {
  const ip = pod.status?.podIP;
  return pod.status?.phase === 'Running' && ip ? hostPort(ip, port) : undefined;
}

interface Named {
  name: string;
  ips: string[];
}

function podName(pod: V1Pod): Named | undefined {
  // A host-network pod's IP is its node's, shared by every such pod there: naming the
  // node IP after one of them would mislabel traffic. Finished pods give their IP back.
  if (pod.spec?.hostNetwork) return undefined;
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return undefined;
  const ips = new Set<string>();
  if (pod.status?.podIP) ips.add(pod.status.podIP);
  for (const p of pod.status?.podIPs ?? []) if (p.ip) ips.add(p.ip);
  if (ips.size === 0) return undefined;
  const m = metaOf(pod);
  return { name: `pod/${m.namespace ?? ''}/${m.name ?? ''}`, ips: [...ips] };
}

function serviceName(svc: V1Service): Named | undefined {
  const all = svc.spec?.clusterIPs?.length ? svc.spec.clusterIPs : [svc.spec?.clusterIP];
  const ips = all.filter((ip): ip is string => !!ip && ip !== 'None');
  if (ips.length === 0) return undefined;
  const m = metaOf(svc);
  return { name: `svc/${m.namespace ?? ''}/${m.name ?? ''}`, ips };
}

/** Mirrors one kind's named objects into the shared IpNameMap. */
function ipNameSink(map: IpNameMap): Pick<Source<unknown, Named>, 'replaced' | 'changed'> {
  let entries = new Map<string, Named>();
  const drop = (n: Named) => n.ips.forEach((ip) => map.delete(ip, n.name));
  const add = (n: Named) => n.ips.forEach((ip) => map.set(ip, n.name));
  return {
    replaced(next) {
      entries.forEach(drop);
      next.forEach(add);
      entries = next;
    },
    changed(key, value) {
      const old = entries.get(key);
      if (old) drop(old);
      if (value) {
        add(value);
        entries.set(key, value);
      } else entries.delete(key);
    },
  };
}

/** Starts discovery; configuration errors (an unreadable kubeconfig) throw here. */
export function startDiscovery(options: DiscoveryOptions): Discovery {
  const d = DISCOVERY_DEFAULTS;
  const port = options.port ?? d.port;
  const labelSelector = options.labelSelector ?? d.labelSelector;
  const namespace = options.namespace || undefined;
  const logger = options.logger;
  const kc = loadKubeConfig(options.kubeconfig);
  const settings: LoopSettings = {
    kc,
    watch: new Watch(kc),
    logger,
    backoffInitialMs: options.backoffInitialMs ?? d.backoffInitialMs,
    backoffMaxMs: options.backoffMaxMs ?? d.backoffMaxMs,
    watchTimeoutSeconds: options.watchTimeoutSeconds ?? d.watchTimeoutSeconds,
    listTimeoutMs: options.listTimeoutMs ?? d.listTimeoutMs,
    listPageSize: options.listPageSize ?? d.listPageSize,
  };

  // Targets by pod; the emitted list is the sorted set of distinct addresses.
  let targets = new Map<string, string>();
  let emitted: string | undefined;
  const current = (): string[] => [...new Set(targets.values())].sort();
  const emit = (): void => {
    const list = current();
    const fingerprint = list.join(',');
    if (fingerprint === emitted) return;
    emitted = fingerprint;
    logger.info({ targets: list }, 'kubearmor node targets changed');
    options.onTargets(list);
  };

  const loops: { start(): void; stop(): void }[] = [];
  const add = <T, V>(source: Source<T, V>): void => {
    loops.push(new ListWatchLoop(source, settings));
  };

  add<V1Pod, string>({
    what: 'kubearmor pods',
    path: namespace ? `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods` : '/api/v1/pods',
    labelSelector,
    list: (api, page) => (namespace ? api.listNamespacedPod({ namespace, ...page }) : api.listPodForAllNamespaces(page)),
    project: (pod) => nodeTarget(pod, port),
    replaced(entries) {
      // The first list always reports (emitted is still undefined), even when empty.
      targets = entries;
      emit();
    },
    changed(key, value) {
      if (value === undefined) targets.delete(key);
      else targets.set(key, value);
      emit();
    },
  });

  if (options.ipNames) {
    const map = options.ipNames;
    add<V1Pod, Named>({
      what: 'pods',
      path: '/api/v1/pods',
      list: (api, page) => api.listPodForAllNamespaces(page),
      project: podName,
      ...ipNameSink(map),
    });
    add<V1Service, Named>({
      what: 'services',
      path: '/api/v1/services',
      list: (api, page) => api.listServiceForAllNamespaces(page),
      project: serviceName,
      ...ipNameSink(map),
    });
  }

  for (const loop of loops) loop.start();
  logger.info({ namespace: namespace ?? '(all)', labelSelector, port, ipNames: !!options.ipNames }, 'kubernetes discovery started');

  return {
    targets: current,
    stop() {
      for (const loop of loops) loop.stop();
    },
  };
}
