// scaleout, two questions:
// - throughput: the throughput topology (nodes flooding, consumers on all three streams)
//   through one relay without NATS, then through 1, 2 and 3 relays over NATS JetStream (one
//   nats-server; consumers spread over the relays; each node dialled by two relays);
// - fan-out at a fixed rate: many consumers of two nodes sending a steady rate, through one
//   relay and through three relays over JetStream, to compare the busiest relay's CPU for the
//   same delivered load (what caps a relay is its own core, whatever the machine has).
import { ALL_KINDS, type RunSpec } from '../topology.js';
import type { ScenarioRuns } from './sizes.js';
import { symmetric } from './symmetric.js';

export const scaleout: ScenarioRuns = (input) => {
  const { sizes, timing } = input;
  const fanout = (relays: number): RunSpec => ({
    scenario: 'scaleout',
    variant: relays === 0 ? `fan-out ${sizes.scaleOutFanout}, single relay` : `fan-out ${sizes.scaleOutFanout}, ${relays} relays over JetStream`,
    via: 'relay',
    nodeProcs: 2,
    nodesPerProc: 1,
    ratePerNode: sizes.scaleOutFanoutRate,
    kinds: ALL_KINDS,
    pool: sizes.pool,
    groups: [{ procs: 4, perProc: Math.ceil(sizes.scaleOutFanout / 4), kinds: ALL_KINDS, latency: false }],
    ...(relays > 0 ? { scaleOutRelays: relays } : {}),
    ...timing,
  });
  return [
    symmetric('scaleout', input, 'single relay, no NATS', 'relay', 0, false),
    ...sizes.scaleOutRelays.map(
      (n): RunSpec => ({ ...symmetric('scaleout', input, `${n} relay${n > 1 ? 's' : ''} over JetStream`, 'relay', 0, false), scaleOutRelays: n }),
    ),
    fanout(0),
    fanout(Math.max(...sizes.scaleOutRelays)),
  ];
};
