// Every scenario of `npm run bench`, in the order they run.
import { baseline } from './baseline.js';
import { fanout } from './fanout.js';
import { latency } from './latency.js';
import { scale } from './scale.js';
import { scaleout } from './scaleout.js';
import { sink } from './sink.js';
import type { ScenarioRuns } from './sizes.js';
import { slow } from './slow.js';
import { throughput } from './throughput.js';

export const SCENARIOS = ['throughput', 'baseline', 'latency', 'fanout', 'slow', 'scale', 'scaleout', 'sink'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export const SCENARIO_RUNS: Record<Scenario, ScenarioRuns> = { throughput, baseline, latency, fanout, slow, scale, scaleout, sink };

export { FULL, QUICK, type Sizes } from './sizes.js';
