// The OpenSearch side of a sink, with the official client (@opensearch-project/opensearch).
// Loaded only when ENABLE_OPENSEARCH_DASHBOARD=true.
import { Client } from '@opensearch-project/opensearch';
import type { SinkConfig } from './config.js';
import { ensureIndexWith, itemsOf, outcomeOfError } from './client-errors.js';
import type { BulkClient } from './sink.js';

/** The client's requests are promises with abort(); an AbortSignal drives it. */
async function abortable<T>(request: Promise<T> & { abort?: () => void }, signal: AbortSignal): Promise<T> {
  const abort = () => request.abort?.();
  signal.addEventListener('abort', abort, { once: true });
  try {
    return await request;
  } finally {
    signal.removeEventListener('abort', abort);
  }
}

export function opensearchClient(config: SinkConfig, requestTimeoutMs: number): BulkClient {
  const client = new Client({
    node: config.url.href,
    auth: config.auth,
    ssl: { ca: config.ca, rejectUnauthorized: !config.insecure },
    // the sink retries with its own backoff and counts each retry
    maxRetries: 0,
    requestTimeout: requestTimeoutMs,
  });
  return {
    async bulk(ndjson, signal) {
      try {
        // prepared NDJSON goes out as it is
        const res = await abortable(client.bulk({ body: ndjson as unknown as [] }), signal);
        return itemsOf(res.body);
      } catch (err) {
        return outcomeOfError(err);
      }
    },
    ensureIndex(index, mapping, signal) {
      return ensureIndexWith(
        async () => (await abortable(client.indices.exists({ index }), signal)).body === true,
        () => abortable(client.indices.create({ index, body: { mappings: mapping } }), signal),
      );
    },
    close: () => client.close(),
  };
}
