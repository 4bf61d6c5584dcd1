// throughput: 4 nodes -> relay -> 4 consumers on all three streams, nodes flooding.
import type { ScenarioRuns } from './sizes.js';
import { symmetric } from './symmetric.js';

export const throughput: ScenarioRuns = (input) => [symmetric('throughput', input, 'relay', 'relay', 0, false)];
