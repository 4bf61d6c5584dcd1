// A stand-in for an Elasticsearch or OpenSearch cluster, for tests and the benchmark:
// neither server can be installed here, so this implements what the relay's sinks use
// of their REST API, after Elasticsearch 8.x/9.x and OpenSearch 2.x/3.x:
//
//   GET /                     cluster info (the version the flavour claims)
//   HEAD /{index}             200 when the index exists, 404 otherwise
//   PUT /{index}              create with {mappings, settings}; 400 resource_already_exists_exception
//   GET /{index}/_mapping     the mapping given at creation (dynamic: {})
//   POST|PUT /_bulk, /{index}/_bulk
//                             NDJSON: action lines (index, create, update, delete) and
//                             sources; the body must end with a newline; per-item results
//                             in request order (201 created / 200 updated with _version,
//                             409 on create of an existing id, 400 mapper_parsing_exception
//                             for a source that is not a JSON object), `errors` when any failed
//
// Elasticsearch answers carry `X-elastic-product: Elasticsearch` (the official client
// refuses a 2xx answer without it). Content types accepted: application/json,
// application/x-ndjson and the versioned `application/vnd.elasticsearch+…;
// compatible-with=N` for N = the major version or the one before (Elasticsearch); other
// types get 406 as from the real servers. Basic auth, when configured, is checked on
// every request (401 with WWW-Authenticate). HTTPS with a given certificate.
//
// Faults on command: whole-request statuses for the next bulk requests, per-document
// statuses, answers lost after the documents were written, slow answers, and going down
// (listener closed, connections cut) and up again on the same port.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';

export type Flavour = 'elasticsearch' | 'opensearch';

export interface SearchClusterOptions {
  flavour: Flavour;
  /** HTTPS with this certificate (and chain) and key */
  tls?: { certPem: string; keyPem: string };
  basicAuth?: { username: string; password: string };
  /** 0 picks a free port */
  port?: number;
  /** keep documents' sources (false: count them only, for the benchmark) */
  keepSources?: boolean;
}

export interface StoredDoc {
  source: string;
  version: number;
}

export interface IndexState {
  mappings: unknown;
  docs: Map<string, StoredDoc>;
}

/** What the next bulk request gets instead of being processed. */
export type RequestFault = { status: 429 | 500 | 502 | 503 | 504 } | { ackLost: true };

export interface SearchCluster {
  readonly flavour: Flavour;
  readonly url: string;
  readonly port: number;
  readonly indices: Map<string, IndexState>;
  /** bulk requests received (answered or not), and document actions in them */
  readonly stats: { bulkRequests: number; actions: number; authFailures: number; faultsServed: number };
  /** the next bulk requests answer these, in order, one each */
  queueFaults(...faults: RequestFault[]): void;
  /** decides a per-document status (undefined = process normally); sees the action's id */
  itemFault: ((id: string, attempt: number) => number | undefined) | undefined;
  /** delay before each answer */
  delayMs: number;
  docs(index: string): Map<string, StoredDoc>;
  /** closes the listener and cuts every connection: clients get refused */
  down(): Promise<void>;
  /** listens again on the same port */
  up(): Promise<void>;
  close(): Promise<void>;
}

const VERSIONS: Record<Flavour, { number: string; distribution?: string; lucene: string }> = {
  elasticsearch: { number: '8.15.0', lucene: '9.11.1' },
  opensearch: { number: '2.17.0', distribution: 'opensearch', lucene: '9.11.1' },
};

const ERROR_TYPES: Record<number, string> = {
  429: 'es_rejected_execution_exception',
  500: 'internal_server_error',
  502: 'bad_gateway',
  503: 'unavailable_shards_exception',
  504: 'timeout_exception',
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    reason: string,
  ) {
    super(reason);
  }
}

export async function startSearchCluster(opts: SearchClusterOptions): Promise<SearchCluster> {
  const indices = new Map<string, IndexState>();
  const stats = { bulkRequests: 0, actions: 0, authFailures: 0, faultsServed: 0 };
  const faults: RequestFault[] = [];
  const attempts = new Map<string, number>();
  const sockets = new Set<Socket>();
  const version = VERSIONS[opts.flavour];
  const major = Number(version.number.split('.')[0]);
  let seq = 0;

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const respond = () => {
        try {
          handle(req, Buffer.concat(chunks).toString('utf8'), res);
        } catch (err) {
          const e = err instanceof HttpError ? err : new HttpError(500, 'exception', (err as Error).message);
          sendError(res, e.status, e.type, e.message);
        }
      };
      if (cluster.delayMs > 0) setTimeout(respond, cluster.delayMs);
      else respond();
    });
  };

  const headers = (): Record<string, string> => (opts.flavour === 'elasticsearch' ? { 'x-elastic-product': 'Elasticsearch' } : {});

  function send(res: ServerResponse, status: number, body: unknown): void {
    if (res.destroyed) return;
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { ...headers(), 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  function sendError(res: ServerResponse, status: number, type: string, reason: string, extra: Record<string, string> = {}): void {
    for (const [k, v] of Object.entries(extra)) res.setHeader(k, v);
    send(res, status, { error: { root_cause: [{ type, reason }], type, reason }, status });
  }

  function checkContentType(req: IncomingMessage, body: string): void {
    const type = req.headers['content-type'];
    if (!type || body.length === 0) return;
    const m = /^application\/(?:(json|x-ndjson)|vnd\.elasticsearch\+(json|x-ndjson)\s*;\s*compatible-with=(\d+))\s*(;.*)?$/i.exec(type.trim());
    const ok = m && (m[1] || (opts.flavour === 'elasticsearch' && (Number(m[3]) === major || Number(m[3]) === major - 1)));
    if (!ok) throw new HttpError(406, 'media_type_header_exception', `Content-Type header [${type}] is not supported`);
  }

  function authorized(req: IncomingMessage): boolean {
    if (!opts.basicAuth) return true;
    const expected = `Basic ${Buffer.from(`${opts.basicAuth.username}:${opts.basicAuth.password}`).toString('base64')}`;
    return req.headers.authorization === expected;
  }

  function handle(req: IncomingMessage, body: string, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? 'GET';
    if (!authorized(req)) {
      stats.authFailures++;
      if (parts.at(-1) === '_bulk') stats.bulkRequests++;
      return sendError(res, 401, 'security_exception', `unable to authenticate user for REST request [${url.pathname}]`, { 'www-authenticate': 'Basic realm="security" charset="UTF-8"' });
    }
    checkContentType(req, body);
    if (parts.length === 0 && (method === 'GET' || method === 'HEAD')) {
      return send(res, 200, { name: 'test-node', cluster_name: 'test-cluster', version: { ...version, build_flavor: 'default' }, tagline: opts.flavour === 'elasticsearch' ? 'You Know, for Search' : 'The OpenSearch Project: https://opensearch.org/' });
    }
    if (parts.at(-1) === '_bulk' && (method === 'POST' || method === 'PUT') && parts.length <= 2) return bulk(parts.length === 2 ? parts[0] : undefined, body, res);
    if (parts.length === 2 && parts[1] === '_mapping' && method === 'GET') {
      const idx = indices.get(parts[0]!);
      if (!idx) throw noIndex(parts[0]!);
      return send(res, 200, { [parts[0]!]: { mappings: idx.mappings } });
    }
    if (parts.length === 1 && !parts[0]!.startsWith('_')) {
      const name = parts[0]!;
      if (method === 'HEAD') {
        res.writeHead(indices.has(name) ? 200 : 404, { ...headers(), 'content-length': 0 });
        return void res.end();
      }
      if (method === 'PUT') {
        if (indices.has(name)) throw new HttpError(400, 'resource_already_exists_exception', `index [${name}/uuid] already exists`);
        const parsed = body ? (JSON.parse(body) as { mappings?: unknown }) : {};
        indices.set(name, { mappings: parsed.mappings ?? {}, docs: new Map() });
        return send(res, 200, { acknowledged: true, shards_acknowledged: true, index: name });
      }
    }
    throw new HttpError(400, 'illegal_argument_exception', `no handler found for uri [${url.pathname}] and method [${method}]`);
  }

  function noIndex(name: string): HttpError {
    return new HttpError(404, 'index_not_found_exception', `no such index [${name}]`);
  }

  function bulk(pathIndex: string | undefined, body: string, res: ServerResponse): void {
    stats.bulkRequests++;
    const started = Date.now();
    const fault = faults.shift();
    if (fault && 'status' in fault) {
      stats.faultsServed++;
      return sendError(res, fault.status, ERROR_TYPES[fault.status]!, `injected ${fault.status}`);
    }
    if (body.length === 0) throw new HttpError(400, 'action_request_validation_exception', 'Validation Failed: 1: no requests added;');
    if (!body.endsWith('\n')) throw new HttpError(400, 'illegal_argument_exception', 'The bulk request must be terminated by a newline [\\n]');
    const lines = body.split('\n');
    lines.pop();
    const items: Record<string, unknown>[] = [];
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] === '') continue;
      let action: Record<string, Record<string, unknown>>;
      try {
        action = JSON.parse(lines[i]!) as typeof action;
      } catch {
        throw new HttpError(400, 'x_content_parse_exception', `[1:1] Malformed action/metadata line [${i + 1}], expected START_OBJECT but found [VALUE_STRING]`);
      }
      const op = Object.keys(action)[0];
      const keys = Object.keys(action);
      if (keys.length !== 1 || !op || !['index', 'create', 'update', 'delete'].includes(op)) {
        throw new HttpError(400, 'illegal_argument_exception', `Malformed action/metadata line [${i + 1}], expected field [create], [delete], [index] or [update] but found [${op}]`);
      }
      const meta = action[op]!;
      let source: string | undefined;
      if (op !== 'delete') {
        i++;
        if (i >= lines.length) throw new HttpError(400, 'illegal_argument_exception', `Validation Failed: 1: source is missing;`);
        source = lines[i]!;
      }
      stats.actions++;
      const index = (meta._index as string | undefined) ?? pathIndex;
      const id = (meta._id as string | undefined) ?? `auto-${++seq}`;
      items.push({ [op]: applyAction(op, index, id, source) });
    }
    if (fault && 'ackLost' in fault) {
      // written, but the answer never arrives: the client must send again
      stats.faultsServed++;
      res.socket?.destroy();
      return;
    }
    send(res, 200, { errors: items.some((it) => (Object.values(it)[0] as { status: number }).status >= 300), took: Date.now() - started, items });
  }

  function applyAction(op: string, index: string | undefined, id: string, source: string | undefined): Record<string, unknown> {
    const itemError = (status: number, type: string, reason: string) => ({ _index: index, _id: id, status, error: { type, reason, index } });
    if (!index) return itemError(400, 'action_request_validation_exception', 'Validation Failed: 1: index is missing;');
    if (index !== index.toLowerCase() || /^[-_+]/.test(index)) return itemError(400, 'invalid_index_name_exception', `Invalid index name [${index}]`);
    const n = (attempts.get(id) ?? 0) + 1;
    attempts.set(id, n);
    const injected = cluster.itemFault?.(id, n);
    if (injected !== undefined) return itemError(injected, ERROR_TYPES[injected] ?? 'exception', `injected ${injected}`);
    if (op === 'index' || op === 'create') {
      try {
        const parsed: unknown = JSON.parse(source!);
        if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      } catch {
        return itemError(400, 'document_parsing_exception', `[1:1] failed to parse: source is not a JSON object`);
      }
    }
    let idx = indices.get(index);
    if (!idx) {
      if (op === 'delete' || op === 'update') return itemError(404, 'index_not_found_exception', `no such index [${index}]`);
      idx = { mappings: {}, docs: new Map() };
      indices.set(index, idx);
    }
    const existing = idx.docs.get(id);
    if (op === 'create' && existing) return itemError(409, 'version_conflict_engine_exception', `[${id}]: version conflict, document already exists (current version [${existing.version}])`);
    if (op === 'delete') {
      if (!existing) return { _index: index, _id: id, _version: 1, result: 'not_found', status: 404 };
      idx.docs.delete(id);
      return { _index: index, _id: id, _version: existing.version + 1, result: 'deleted', status: 200 };
    }
    if (op === 'update') {
      if (!existing) return itemError(404, 'document_missing_exception', `[${id}]: document missing`);
      const doc = (JSON.parse(source!) as { doc?: object }).doc ?? {};
      existing.source = JSON.stringify({ ...(JSON.parse(existing.source) as object), ...doc });
      existing.version++;
      return { _index: index, _id: id, _version: existing.version, result: 'updated', status: 200 };
    }
    const version = (existing?.version ?? 0) + 1;
    idx.docs.set(id, { source: opts.keepSources === false ? '' : source!, version });
    return {
      _index: index,
      _id: id,
      _version: version,
      result: existing ? 'updated' : 'created',
      _shards: { total: 2, successful: 1, failed: 0 },
      _seq_no: seq++,
      _primary_term: 1,
      status: existing ? 200 : 201,
    };
  }

  const make = (): Server => {
    const s = opts.tls ? createHttpsServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, handler) : createHttpServer(handler);
    s.on('connection', (sock: Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    s.on('secureConnection', (sock: Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    return s;
  };
  let server: Server | undefined;
  const listen = async (port: number): Promise<number> => {
    server = make();
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(port, '127.0.0.1', () => resolve());
    });
    return (server.address() as { port: number }).port;
  };
  const stop = async (): Promise<void> => {
    const s = server;
    server = undefined;
    if (!s) return;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    for (const sock of sockets) sock.destroy();
    await closed;
  };

  const port = await listen(opts.port ?? 0);
  const cluster: SearchCluster = {
    flavour: opts.flavour,
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    indices,
    stats,
    queueFaults: (...f) => void faults.push(...f),
    itemFault: undefined,
    delayMs: 0,
    docs: (index) => indices.get(index)?.docs ?? new Map(),
    down: stop,
    up: async () => {
      if (!server) await listen(port);
    },
    close: stop,
  };
  return cluster;
}
