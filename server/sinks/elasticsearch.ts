// The Elasticsearch side of a sink, with the official client (@elastic/elasticsearch 8.x).
// Loaded only when ENABLE_DASHBOARDS=true.
//
// Requests carry plain `application/json` / `application/x-ndjson` media types instead of
// the client's default `compatible-with=8` ones: Elasticsearch 8 and 9 accept both, and
// servers that predate the versioned media types (7.x) accept only the plain ones, which
// is what the reference relay's Go client sends.
import { Client } from '@elastic/elasticsearch';
import type { SinkConfig } from './config.js';
import { ensureIndexWith, itemsOf, outcomeOfError } from './client-errors.js';
import type { BulkClient } from './sink.js';

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json' };
const NDJSON_HEADERS = { 'content-type': 'application/x-ndjson', accept: 'application/json' };

export function elasticsearchClient(config: SinkConfig, requestTimeoutMs: number): BulkClient {
  const client = new Client({
    node: config.url.href,
    auth: config.auth,
    tls: { ca: config.ca, rejectUnauthorized: !config.insecure },
    // the sink retries with its own backoff and counts each retry
    maxRetries: 0,
    requestTimeout: requestTimeoutMs,
    name: 'kubearmor-relay',
  });
  return {
    async bulk(ndjson, signal) {
      try {
        // prepared NDJSON goes out as it is
        const res = await client.bulk({ operations: ndjson as unknown as [] }, { signal, headers: NDJSON_HEADERS, meta: true });
        return itemsOf(res.body);
      } catch (err) {
        return outcomeOfError(err);
      }
    },
    ensureIndex(index, mapping, signal) {
      return ensureIndexWith(
        () => client.indices.exists({ index }, { signal, headers: JSON_HEADERS }),
        () => client.indices.create({ index, mappings: mapping }, { signal, headers: JSON_HEADERS }),
      );
    },
    close: () => client.close(),
  };
}
