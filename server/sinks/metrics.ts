// Per-sink metrics, registered on the relay's registry only when a sink is on. Counts are
// tallies folded in at scrape time, as everywhere in the relay.
import { Gauge } from 'prom-client';
import type { Kind } from '../kinds.js';
import { TalliedCounter, type RelayMetrics, type Tally } from '../metrics.js';

/** How one bulk request ended, the `outcome` label. */
export type RequestOutcome = 'ok' | 'partial' | 'status_429' | 'status_5xx' | 'status_4xx' | 'unreachable';

export interface SinkProbe {
  queuedEvents(): number;
  queuedBytes(): number;
  lastSuccessSeconds(): number;
}

export interface SinkMetrics {
  indexed(kind: Kind): Tally;
  failed(kind: Kind): Tally;
  retried: Tally;
  request(outcome: RequestOutcome): Tally;
}

const perRegistry = new WeakMap<object, ReturnType<typeof declare>>();

/** The metric families exist once per registry; each sink adds its label values. */
function declare(relay: RelayMetrics, probes: Map<string, SinkProbe>) {
  const { registry } = relay;
  const gauge = (name: string, help: string, read: (p: SinkProbe) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['sink'],
      registers: [registry],
      collect() {
        for (const [sink, probe] of probes) this.set({ sink }, read(probe));
      },
    });
  gauge('kubearmor_relay_sink_queued_events', 'Events a search-cluster sink holds (queued and in flight), bounded by --sinkQueueSize', (p) => p.queuedEvents());
  gauge('kubearmor_relay_sink_queued_bytes', 'Event bytes a search-cluster sink holds (queued and in flight), bounded by --sinkQueueBytes', (p) => p.queuedBytes());
  gauge('kubearmor_relay_sink_last_success_timestamp_seconds', 'When the sink last had a bulk request accepted (0: never)', (p) => p.lastSuccessSeconds());
  return {
    probes,
    indexed: new TalliedCounter(registry, 'kubearmor_relay_sink_indexed_total', 'Documents the search cluster acknowledged', ['sink', 'kind']),
    failed: new TalliedCounter(registry, 'kubearmor_relay_sink_failed_total', 'Documents the search cluster refused or that were given up after retries (also in kubearmor_relay_events_dropped_total{reason="sink_rejected"})', ['sink', 'kind']),
    retried: new TalliedCounter(registry, 'kubearmor_relay_sink_retried_total', 'Documents sent again after a retryable failure (429, 5xx, connection error)', ['sink']),
    requests: new TalliedCounter(registry, 'kubearmor_relay_sink_bulk_requests_total', 'Bulk requests by outcome: ok, partial (some documents failed), status_429, status_5xx, status_4xx, unreachable', ['sink', 'outcome']),
  };
}

export function createSinkMetrics(relay: RelayMetrics, sink: string, probe: SinkProbe): SinkMetrics {
  let c = perRegistry.get(relay.registry);
  if (!c) perRegistry.set(relay.registry, (c = declare(relay, new Map())));
  c.probes.set(sink, probe);
  const memo = <K extends string>(make: (k: K) => Tally) => {
    const cache = new Map<K, Tally>();
    return (k: K) => cache.get(k) ?? (cache.set(k, make(k)), cache.get(k)!);
  };
  return {
    indexed: memo((kind: Kind) => c.indexed.tally({ sink, kind })),
    failed: memo((kind: Kind) => c.failed.tally({ sink, kind })),
    retried: c.retried.tally({ sink }),
    request: memo((outcome: RequestOutcome) => c.requests.tally({ sink, outcome })),
  };
}
