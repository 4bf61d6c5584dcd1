// The engine link's metrics, on the relay's own registry (created only in scale-out mode).
import { Gauge } from 'prom-client';
import { KINDS, type Kind } from '../kinds.js';
import { TalliedCounter, type RelayMetrics, type Tally } from '../metrics.js';

export interface PublishTallies {
  published: Tally;
  duplicates: Tally;
  failures: Tally;
  /** events this replica read that no replica stored (a holder that began reading after them) */
  gap: Tally;
  /** events a standby dropped from its failover cover because it was full while the holder published */
  shed: Tally;
}

export interface ScaleOutProbe {
  connected(): boolean;
  consumerPending(kind: Kind): number;
  assignedNodes(): number;
  liveReplicas(): number;
  /** node-and-kind streams this replica publishes (holds the lease of) */
  holding(): number;
}

export interface ScaleOutMetrics {
  publishTallies(kind: Kind): PublishTallies;
  delivered(kind: Kind): Tally;
}

export function createScaleOutMetrics(relay: RelayMetrics, probe: ScaleOutProbe): ScaleOutMetrics {
  const registers = [relay.registry];
  const counter = (name: string, help: string) => new TalliedCounter<'kind'>(relay.registry, name, help, ['kind']);
  const published = counter('kubearmor_relay_nats_published_total', 'Events this replica stored in JetStream (first copy)');
  const duplicates = counter('kubearmor_relay_nats_deduplicated_total', 'Events this replica published that JetStream already had (another replica reading the same node, or a re-send)');
  const failures = counter('kubearmor_relay_nats_publish_failures_total', 'Publishes that failed or timed out (each is re-sent in order)');
  const shed = counter('kubearmor_relay_nats_standby_shed_total', 'Events a standby replica dropped from its failover cover (full while the holder was publishing); lost only if the holder had not stored them and died');
  const delivered = counter('kubearmor_relay_nats_delivered_total', 'Events read from JetStream into this replica\'s hub');
  new Gauge({
    name: 'kubearmor_relay_nats_connected',
    help: '1 while this replica is connected to NATS',
    registers,
    collect() {
      this.set(probe.connected() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'kubearmor_relay_nats_consumer_pending',
    help: 'Events in the stream this replica has not read yet, per kind (consumer lag)',
    labelNames: ['kind'],
    registers,
    collect() {
      for (const { kind } of KINDS) this.set({ kind }, probe.consumerPending(kind));
    },
  });
  new Gauge({
    name: 'kubearmor_relay_scaleout_assigned_nodes',
    help: 'Node daemons this replica is assigned to dial',
    registers,
    collect() {
      this.set(probe.assignedNodes());
    },
  });
  new Gauge({
    name: 'kubearmor_relay_scaleout_publishing',
    help: 'Node daemons\' streams (node and kind) this replica publishes to JetStream: it holds their lease',
    registers,
    collect() {
      this.set(probe.holding());
    },
  });
  new Gauge({
    name: 'kubearmor_relay_scaleout_replicas',
    help: 'Live relay replicas this replica sees in the membership bucket',
    registers,
    collect() {
      this.set(probe.liveReplicas());
    },
  });
  return {
    publishTallies: (kind) => ({
      published: published.tally({ kind }),
      duplicates: duplicates.tally({ kind }),
      failures: failures.tally({ kind }),
      gap: relay.dropped.tally({ kind, reason: 'not_published' }),
      shed: shed.tally({ kind }),
    }),
    delivered: (kind) => delivered.tally({ kind }),
  };
}
