// A small Kubernetes API server on 127.0.0.1 for discovery tests: pods and services, list
// with labelSelector, and watches (`watch=true&resourceVersion=N`) that stream
// newline-delimited events from an event history. The test drives it: add, change and
// delete objects, break open watches, forget history so that old resourceVersions get
// 410 Gone (as an HTTP status or as an ERROR event), and wait for requests to arrive.
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Kind = 'pods' | 'services';

export interface KubeObject {
  metadata: { name: string; namespace: string; labels?: Record<string, string>; resourceVersion?: string };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

interface Stored {
  kind: Kind;
  object: KubeObject;
}

interface HistoryEvent {
  rv: number;
  kind: Kind;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
  /** the object before this event, to tell whether it left or entered a selector */
  previous?: KubeObject;
}

export interface RecordedRequest {
  kind: Kind;
  namespace?: string;
  watch: boolean;
  resourceVersion?: string;
  labelSelector?: string;
  limit?: number;
  continue?: string;
}

interface OpenWatch {
  kind: Kind;
  namespace?: string;
  selector?: string;
  res: ServerResponse;
}

/** Equality-based selectors only (`a=b,c==d,e!=f`), which is all discovery sends. */
export function matchesSelector(labels: Record<string, string> | undefined, selector: string | undefined): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const neg = /^([^!=]+)!=(.*)$/.exec(term);
    if (neg) return labels?.[neg[1]!.trim()] !== neg[2]!.trim();
    const eq = /^([^!=]+)==?(.*)$/.exec(term);
    if (!eq) return false;
    return labels?.[eq[1]!.trim()] === eq[2]!.trim();
  });
}

export class FakeKubeApi {
  readonly requests: RecordedRequest[] = [];
  /** how an expired resourceVersion is answered */
  goneAs: 'http' | 'event' = 'http';
  /** end every watch right after its headers, as a misbehaving proxy might */
  endWatchesAtOnce = false;
  private readonly server: Server;
  private readonly store = new Map<string, Stored>();
  private readonly history: HistoryEvent[] = [];
  private readonly watches = new Set<OpenWatch>();
  private readonly events = new EventEmitter();
  private rv = 100;
  /** list requests still to be failed with HTTP 500 */
  private listFailures = 0;
  /** watches from a resourceVersion below this are answered with 410 */
  private compactedAt = 0;

  constructor() {
    this.server = createServer((req, res) => this.handle(req, res));
  }

  async start(): Promise<string> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  async close(): Promise<void> {
    for (const w of this.watches) w.res.destroy();
    this.watches.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  get openWatches(): number {
    return this.watches.size;
  }

  // --- objects -------------------------------------------------------------------------

  put(kind: Kind, object: KubeObject): void {
    const key = `${kind}/${object.metadata.namespace}/${object.metadata.name}`;
    const previous = this.store.get(key)?.object;
    const stored = structuredClone(object);
    stored.metadata.resourceVersion = String(++this.rv);
    this.store.set(key, { kind, object: stored });
    this.record({ rv: this.rv, kind, type: previous ? 'MODIFIED' : 'ADDED', object: stored, previous });
  }

  remove(kind: Kind, namespace: string, name: string): void {
    const key = `${kind}/${namespace}/${name}`;
    const previous = this.store.get(key);
    if (!previous) return;
    this.store.delete(key);
    const object = structuredClone(previous.object);
    object.metadata.resourceVersion = String(++this.rv);
    this.record({ rv: this.rv, kind, type: 'DELETED', object, previous: previous.object });
  }

  /** Forgets the event history, as etcd compaction does: older resourceVersions become 410 Gone. */
  forgetHistory(): void {
    this.compactedAt = this.rv;
    this.history.length = 0;
  }

  /** Ends every open watch: cleanly (the server's timeout) or by cutting the connection. */
  breakWatches(how: 'end' | 'destroy' = 'destroy'): void {
    for (const w of this.watches) {
      if (how === 'end') w.res.end();
      else w.res.destroy();
    }
    this.watches.clear();
  }

  /** Sends an ERROR event with the given code on every open watch, then ends them. */
  sendWatchError(code: number, reason: string): void {
    const status = { kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason, message: `fake ${reason}` };
    for (const w of this.watches) w.res.end(JSON.stringify({ type: 'ERROR', object: status }) + '\n');
    this.watches.clear();
  }

  /** Answers the next `count` list requests with HTTP 500. */
  failLists(count: number): void {
    this.listFailures = count;
  }

  /** Resolves with the next request (after this call) that satisfies the predicate. */
  nextRequest(predicate: (r: RecordedRequest) => boolean): Promise<RecordedRequest> {
    return new Promise((resolve) => {
      const listener = (r: RecordedRequest) => {
        if (!predicate(r)) return;
        this.events.off('request', listener);
        resolve(r);
      };
      this.events.on('request', listener);
    });
  }

  /** Resolves once a watch matching the predicate is open and streaming. */
  nextWatch(predicate: (r: RecordedRequest) => boolean = () => true): Promise<RecordedRequest> {
    return new Promise((resolve) => {
      const listener = (r: RecordedRequest) => {
        if (!predicate(r)) return;
        this.events.off('watching', listener);
        resolve(r);
      };
      this.events.on('watching', listener);
    });
  }

  // --- HTTP ----------------------------------------------------------------------------

  private record(event: HistoryEvent): void {
    this.history.push(event);
    for (const w of this.watches) this.send(w, event);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const m = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?(pods|services)$/.exec(url.pathname);
    if (req.method !== 'GET' || !m) {
      this.status(res, 404, 'NotFound', `no route for ${req.method} ${url.pathname}`);
      return;
    }
    const q = url.searchParams;
    const request: RecordedRequest = {
      kind: m[2] as Kind,
      namespace: m[1] ? decodeURIComponent(m[1]) : undefined,
      watch: q.get('watch') === 'true' || q.get('watch') === '1',
      resourceVersion: q.get('resourceVersion') ?? undefined,
      labelSelector: q.get('labelSelector') ?? undefined,
      limit: q.has('limit') ? Number(q.get('limit')) : undefined,
      continue: q.get('continue') ?? undefined,
    };
    this.requests.push(request);
    this.events.emit('request', request);
    if (request.watch) this.watch(request, res);
    else if (this.listFailures > 0) {
      this.listFailures--;
      this.status(res, 500, 'InternalError', 'fake failure');
    } else this.list(request, res);
  }

  private selected(namespace: string | undefined, selector: string | undefined, o: KubeObject | undefined): boolean {
    return !!o && (!namespace || o.metadata.namespace === namespace) && matchesSelector(o.metadata.labels, selector);
  }

  private list(r: RecordedRequest, res: ServerResponse): void {
    const all = [...this.store.values()]
      .filter((s) => s.kind === r.kind && this.selected(r.namespace, r.labelSelector, s.object))
      .map((s) => s.object);
    // Paging: the continue token is simply the offset of the next item.
    const from = r.continue ? Number(r.continue) : 0;
    const to = r.limit ? from + r.limit : all.length;
    const metadata: Record<string, string> = { resourceVersion: this.resourceVersion };
    if (to < all.length) metadata.continue = String(to);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: r.kind === 'pods' ? 'PodList' : 'ServiceList', apiVersion: 'v1', metadata, items: all.slice(from, to) }));
  }

  private watch(r: RecordedRequest, res: ServerResponse): void {
    const from = Number(r.resourceVersion ?? '0');
    if (r.resourceVersion && from < this.compactedAt) {
      if (this.goneAs === 'http') {
        this.status(res, 410, 'Expired', `too old resource version: ${from} (${this.compactedAt})`);
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 410, reason: 'Expired', message: `too old resource version: ${from}` } }) + '\n');
      }
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    if (this.endWatchesAtOnce) {
      res.end();
      this.events.emit('watching', r);
      return;
    }
    const w: OpenWatch = { kind: r.kind, namespace: r.namespace, selector: r.labelSelector, res };
    for (const e of this.history) if (e.rv > from) this.send(w, e);
    this.watches.add(w);
    res.on('close', () => this.watches.delete(w));
    // Flush the headers so the client's fetch resolves before any event arrives.
    res.flushHeaders();
    this.events.emit('watching', r);
  }

  /** Translates an event for one watch's selector: leaving it is a DELETED, entering it an ADDED. */
  private send(w: OpenWatch, e: HistoryEvent): void {
    if (e.kind !== w.kind) return;
    const now = e.type !== 'DELETED' && this.selected(w.namespace, w.selector, e.object);
    const before = this.selected(w.namespace, w.selector, e.previous);
    let type: HistoryEvent['type'];
    if (e.type === 'DELETED') {
      if (!before) return;
      type = 'DELETED';
    } else if (now) type = before ? 'MODIFIED' : 'ADDED';
    else if (before) type = 'DELETED';
    else return;
    w.res.write(JSON.stringify({ type, object: e.object }) + '\n');
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
  }
}

/** A kubeconfig that points client-node at the fake server over plain HTTP. */
export function kubeconfigFor(server: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: fake',
    '  cluster:',
    `    server: ${server}`,
    '    insecure-skip-tls-verify: true',
    'users:',
    '- name: tester',
    '  user:',
    '    token: fake-token',
    'contexts:',
    '- name: fake',
    '  context:',
    '    cluster: fake',
    '    user: tester',
    'current-context: fake',
    '',
  ].join('\n');
}

export function pod(namespace: string, name: string, opts: { labels?: Record<string, string>; phase?: string; ip?: string; ips?: string[]; hostNetwork?: boolean } = {}): KubeObject {
  const status: Record<string, unknown> = { phase: opts.phase ?? 'Running' };
  if (opts.ip) status.podIP = opts.ip;
  if (opts.ips) status.podIPs = opts.ips.map((ip) => ({ ip }));
  else if (opts.ip) status.podIPs = [{ ip: opts.ip }];
  return {
    metadata: { name, namespace, labels: opts.labels ?? {} },
    spec: { hostNetwork: opts.hostNetwork ?? false, containers: [{ name: 'c', image: 'x' }] },
    status,
  };
}

export function service(namespace: string, name: string, clusterIP: string | string[]): KubeObject {
  const ips = Array.isArray(clusterIP) ? clusterIP : [clusterIP];
  return { metadata: { name, namespace }, spec: { clusterIP: ips[0], clusterIPs: ips } };
}
