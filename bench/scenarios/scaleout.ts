// scaleout: the throughput topology (nodes flooding, consumers on all three streams)
// through one relay without NATS, then through 1, 2 and 3 relays over NATS JetStream
// (one nats-server; consumers spread over the relays; each node dialled by two relays).
import type { RunSpec } from '../topology.js';
import type { ScenarioRuns } from './sizes.js';
import { symmetric } from './symmetric.js';

export const scaleout: ScenarioRuns = (input) => [
  symmetric('scaleout', input, 'single relay, no NATS', 'relay', 0, false),
  ...input.sizes.scaleOutRelays.map(
    (n): RunSpec => ({ ...symmetric('scaleout', input, `${n} relay${n > 1 ? 's' : ''} over JetStream`, 'relay', 0, false), scaleOutRelays: n }),
  ),
];
