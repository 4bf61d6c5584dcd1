// The Elasticsearch side of a sink, with the official client (@elastic/elasticsearch 8.x).
// Loaded only when ENABLE_DASHBOARDS=true.
//
// Requests carry plain `application/json` / `application/x-ndjson` media types instead of
// the client's default `compatible-with=8` ones: Elasticsearch 8 and 9 accept both, and
// servers that predate the versioned media types (7.x) accept only the plain ones, which
// is what the reference relay's Go client sends.
import { Client } from '@elastic/elasticsearch';
import type { SinkConfig } from './config.js';
import { bulkClientOf, commonOptions } from './client-common.js';
import type { BulkClient } from './sink.js';

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json' };
const NDJSON_HEADERS = { 'content-type': 'application/x-ndjson', accept: 'application/json' };

export function elasticsearchClient(config: SinkConfig, requestTimeoutMs: number): BulkClient {
  const client = new Client({
    ...commonOptions(config, requestTimeoutMs),
    tls: { ca: config.ca, rejectUnauthorized: !config.insecure },
    name: 'kubearmor-relay',
  });
  return bulkClientOf({
    bulk: async (ndjson, signal) => (await client.bulk({ operations: ndjson as unknown as [] }, { signal, headers: NDJSON_HEADERS, meta: true })).body,
    exists: (index, signal) => client.indices.exists({ index }, { signal, headers: JSON_HEADERS }),
    create: (index, mapping, signal) => client.indices.create({ index, mappings: mapping }, { signal, headers: JSON_HEADERS }),
    close: () => client.close(),
  });
}
