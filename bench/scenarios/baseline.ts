// baseline: the throughput consumers reading the same nodes directly (no relay), and the
// relay forced to decode and re-encode every event (--reencode).
import type { ScenarioRuns } from './sizes.js';
import { symmetric } from './symmetric.js';

export const baseline: ScenarioRuns = (input) => [
  symmetric('baseline', input, 'direct', 'direct', 0, false),
  symmetric('baseline', input, 'reencode', 'relay', 0, false, ['--reencode']),
];
