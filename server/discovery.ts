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
import { KubeConfig, Watch, type V1Pod, type V1Service } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { formatHostPort } from './transport.js';
import { ListWatchLoop, metaOf, type LoopSettings, type Source } from './listwatch.js';

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


function nodeTarget(pod: V1Pod, port: number): string | undefined {
  const ip = pod.status?.podIP;
  return pod.status?.phase === 'Running' && ip ? formatHostPort(ip, port) : undefined;
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
    healthyWatchMs: d.healthyWatchMs,
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
