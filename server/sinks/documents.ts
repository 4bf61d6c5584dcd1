// What a sink writes: bulk `index` actions whose document is the stdout export's JSON and
// whose id comes from the event itself, and the mapping of an index the relay creates.
import { createHash } from 'node:crypto';
import type { Kind } from '../kinds.js';

/**
 * The document id: sha256 of the kind and the event's bytes, as the node daemon encoded
 * them (HostName, NodeID, timestamps to the microsecond and the event's content are all
 * in there). The same event always gets the same id, so a retry, or a bulk request whose
 * answer was lost and is sent again, overwrites the document instead of adding a copy.
 */
export function documentId(kind: Kind, bytes: Buffer): string {
  return createHash('sha256').update(kind).update('\0').update(bytes).digest('base64url');
}

/** The two NDJSON lines of one bulk `index` action for a rendered document. */
export function indexAction(index: string, id: string, json: string): string {
  return `{"index":{"_index":${JSON.stringify(index)},"_id":"${id}"}}\n${json}\n`;
}

const keyword = { type: 'keyword', fields: { keyword: { type: 'keyword', ignore_above: 256 } } } as const;

/**
 * Mapping of an index the relay creates (never applied to an index that exists: a user's
 * own mapping is kept). `Timestamp` (epoch seconds) and `UpdatedTime` become dates, so
 * either can be a dashboard's time field; the fields dashboards group by are keywords.
 * Each keyword also has a `.keyword` sub-field, the name Elasticsearch's dynamic mapping
 * gives it, so visualisations built on an index the reference relay filled keep working.
 * Every other field is mapped dynamically, as before.
 */
export const EVENT_MAPPING = {
  properties: {
    Timestamp: { type: 'date', format: 'epoch_second' },
    UpdatedTime: { type: 'date' },
    ClusterName: keyword,
    HostName: keyword,
    NamespaceName: keyword,
    PodName: keyword,
    ContainerName: keyword,
    Operation: keyword,
    Action: keyword,
    PolicyName: keyword,
    Severity: keyword,
    Type: keyword,
    Result: keyword,
  },
} as const;
