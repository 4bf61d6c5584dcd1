// The OpenSearch side of a sink, with the official client (@opensearch-project/opensearch).
// Loaded only when ENABLE_OPENSEARCH_DASHBOARD=true.
import { Client } from '@opensearch-project/opensearch';
import type { SinkConfig } from './config.js';
import { bulkClientOf, commonOptions } from './client-common.js';
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
    ...commonOptions(config, requestTimeoutMs),
    ssl: { ca: config.ca, rejectUnauthorized: !config.insecure },
  });
  return bulkClientOf({
    bulk: async (ndjson, signal) => (await abortable(client.bulk({ body: ndjson as unknown as [] }), signal)).body,
    exists: async (index, signal) => (await abortable(client.indices.exists({ index }), signal)).body === true,
    create: (index, mapping, signal) => abortable(client.indices.create({ index, body: { mappings: mapping } }), signal),
    close: () => client.close(),
  });
}
