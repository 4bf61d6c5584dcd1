// Every relay metric is declared here, on a registry the relay owns (no prom-client
// globals), so tests can run several relays in one process and read each one's numbers.
//
// Hot-path counts are plain integers ("tallies") bumped per event; they reach the
// prom-client counters only when /metrics is scraped. That keeps label hashing off the
// per-event path, which runs hundreds of thousands of times a second under load.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Kind } from './kinds.js';

export type DropReason = 'queue_full' | 'no_consumer' | 'malformed' | 'oversize' | 'sink_full' | 'sink_rejected';

/** A per-event count that is folded into its counter at scrape time. */
export interface Tally {
  n: number;
}

export class TalliedCounter<L extends string> {
  private readonly tallies = new Map<string, { labels: Partial<Record<L, string>>; tally: Tally; flushed: number }>();
  readonly counter: Counter<L>;

  constructor(registry: Registry, name: string, help: string, labelNames: readonly L[]) {
    const tallies = this.tallies;
    this.counter = new Counter<L>({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        for (const entry of tallies.values()) {
          const delta = entry.tally.n - entry.flushed;
          if (delta > 0) {
            this.inc(entry.labels, delta);
            entry.flushed = entry.tally.n;
          }
        }
      },
    });
  }

  /** Forgets a label set (its series disappears from /metrics). */
  remove(labels: Record<L, string>): void {
    if (this.tallies.delete(JSON.stringify(labels))) this.counter.remove(labels);
  }

  /** The tally for one label set; the same object for the same labels, so callers cache it. */
  tally(labels: Record<L, string>): Tally {
    const key = JSON.stringify(labels);
    let entry = this.tallies.get(key);
    if (!entry) {
      entry = { labels, tally: { n: 0 }, flushed: 0 };
      this.tallies.set(key, entry);
      this.counter.inc(labels, 0); // show the series at 0 before the first event
    }
    return entry.tally;
  }
}

/** What the gauges read at scrape time. */
export interface HubProbe {
  clients(kind: Kind): number;
  queuedBytes(kind: Kind): number;
  paused(kind: Kind): boolean;
}

export interface RelayMetrics {
  registry: Registry;
  received: TalliedCounter<'kind' | 'node'>;
  sent: TalliedCounter<'kind'>;
  dropped: TalliedCounter<'kind' | 'reason'>;
  upstreamConnected: Gauge<'node'>;
  /** 1 while the relay serves (what /readyz answers) */
  ready: Gauge;
  /** the hub whose state the gauges report; set once the hub exists */
  observe(probe: HubProbe): void;
}

const KIND_NAMES: readonly Kind[] = ['alert', 'log', 'message'];

export function createMetrics(registry: Registry = new Registry()): RelayMetrics {
  collectDefaultMetrics({ register: registry });
  let probe: HubProbe | undefined;
  const kindGauge = (name: string, help: string, read: (p: HubProbe, kind: Kind) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['kind'],
      registers: [registry],
      collect() {
        for (const kind of KIND_NAMES) this.set({ kind }, probe ? read(probe, kind) : 0);
      },
    });
  kindGauge('kubearmor_relay_clients', 'Consumers currently subscribed, per stream kind', (p, k) => p.clients(k));
  kindGauge(
    'kubearmor_relay_queued_bytes',
    'Event bytes waiting in consumer queues, per stream kind (each consumer bounded by --clientQueueBytes)',
    (p, k) => p.queuedBytes(k),
  );
  kindGauge(
    'kubearmor_relay_upstream_paused',
    '1 while reads of this kind from node daemons are paused because every consumer is behind',
    (p, k) => (p.paused(k) ? 1 : 0),
  );
  return {
    registry,
    received: new TalliedCounter(registry, 'kubearmor_relay_events_received_total', 'Events received from node daemons', ['kind', 'node']),
    sent: new TalliedCounter(registry, 'kubearmor_relay_events_sent_total', 'Events handed to a consumer stream (one per event per consumer)', ['kind']),
    dropped: new TalliedCounter(
      registry,
      'kubearmor_relay_events_dropped_total',
      'Events not delivered. queue_full: one consumer was behind and its queue was full (one per event per consumer); no_consumer: nobody was subscribed to the kind; malformed: node bytes stdout export could not decode',
      ['kind', 'reason'],
    ),
    upstreamConnected: new Gauge({
      name: 'kubearmor_relay_upstream_connected',
      help: '1 while the relay is connected to the node daemon, 0 while it is redialling',
      labelNames: ['node'],
      registers: [registry],
    }),
    ready: new Gauge({
      name: 'kubearmor_relay_ready',
      help: '1 while the relay serves feeder.LogService (what /readyz answers), 0 while starting or shutting down',
      registers: [registry],
    }),
    observe(p) {
      probe = p;
    },
  };
}
