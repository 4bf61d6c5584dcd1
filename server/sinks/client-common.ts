// What the two official clients have in common (the OpenSearch one is a fork of the
// Elasticsearch one): the same options for a sink, a refused request reported as an error
// carrying `meta.statusCode` and `meta.body`, a request that got no answer as an error
// without a status, and bulk response bodies of the same shape. Each client module only
// says how its API is called.
import type { SinkConfig } from './config.js';
import type { BulkClient, BulkOutcome, EnsureOutcome, RequestFailure } from './sink.js';

/** Client options both libraries take under the same names. */
export function commonOptions(config: SinkConfig, requestTimeoutMs: number) {
  return {
    node: config.url.href,
    auth: config.auth,
    // the sink retries with its own backoff and counts each retry
    maxRetries: 0,
    requestTimeout: requestTimeoutMs,
  };
}

/** The calls of one client library a sink makes; errors thrown are those of the library. */
export interface ClientCalls {
  /** sends prepared NDJSON as it is; resolves with the parsed response body */
  bulk(ndjson: Buffer, signal: AbortSignal): Promise<unknown>;
  exists(index: string, signal: AbortSignal): Promise<boolean>;
  create(index: string, mapping: object, signal: AbortSignal): Promise<unknown>;
  close(): Promise<void>;
}

export function bulkClientOf(calls: ClientCalls): BulkClient {
  return {
    async bulk(ndjson, signal) {
      try {
        return itemsOf(await calls.bulk(ndjson, signal));
      } catch (err) {
        return outcomeOfError(err);
      }
    },
    ensureIndex: (index, mapping, signal) =>
      ensureIndexWith(
        () => calls.exists(index, signal),
        () => calls.create(index, mapping, signal),
      ),
    close: () => calls.close(),
  };
}

interface ClientError {
  name?: string;
  message?: string;
  meta?: { statusCode?: number | null; body?: unknown };
}

export function outcomeOfError(err: unknown): RequestFailure {
  const e = (err ?? {}) as ClientError;
  const status = e.meta?.statusCode;
  if (typeof status === 'number' && status > 0) return { kind: 'status', status, reason: errorReason(e.meta?.body) ?? e.message ?? '' };
  return { kind: 'unreachable', reason: `${e.name ?? 'Error'}: ${e.message ?? String(err)}` };
}

/** `error.type: error.reason` of an Elasticsearch/OpenSearch error body, or its text. */
export function errorReason(body: unknown): string | undefined {
  if (typeof body === 'string') return body.slice(0, 300);
  const error = (body as { error?: unknown } | null)?.error;
  if (typeof error === 'string') return error.slice(0, 300);
  if (error && typeof error === 'object') {
    const { type, reason } = error as { type?: unknown; reason?: unknown };
    return [type, reason].filter((x) => typeof x === 'string').join(': ').slice(0, 300) || undefined;
  }
  return undefined;
}

interface BulkBody {
  items?: Record<string, { status?: number; error?: unknown }>[];
}

/** Per-document results of a bulk response body, in request order. */
export function itemsOf(body: unknown): BulkOutcome {
  const items = (body as BulkBody | null)?.items;
  if (!Array.isArray(items)) return { kind: 'status', status: 502, reason: 'bulk response without items' };
  return {
    kind: 'items',
    items: items.map((entry) => {
      const result = entry && typeof entry === 'object' ? Object.values(entry)[0] : undefined;
      const status = typeof result?.status === 'number' ? result.status : 500;
      return { status, reason: errorReason({ error: result?.error }) };
    }),
  };
}

/**
 * Index existence and creation with the same rules for both clients: an existing index is
 * kept, one created meanwhile by another relay replica (resource_already_exists) as well.
 */
export async function ensureIndexWith(
  exists: () => Promise<boolean>,
  create: () => Promise<unknown>,
): Promise<EnsureOutcome> {
  try {
    if (await exists()) return { kind: 'exists' };
    await create();
    return { kind: 'created' };
  } catch (err) {
    const outcome = outcomeOfError(err);
    if (outcome.kind === 'status' && outcome.status === 400 && outcome.reason.includes('already_exists')) return { kind: 'exists' };
    return outcome;
  }
}
