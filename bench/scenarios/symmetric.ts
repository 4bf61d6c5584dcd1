// The topology most scenarios share: `width` nodes, one per process, and `width` consumers
// reading all three kinds, through the relay or directly from the nodes.
import { ALL_KINDS, type RunSpec } from '../topology.js';
import type { Scenario } from './index.js';
import type { ScenarioInput } from './sizes.js';

export function symmetric(
  scenario: Scenario,
  { sizes, timing }: ScenarioInput,
  variant: string,
  via: 'relay' | 'direct',
  ratePerNode: number,
  latency: boolean,
  relayArgs?: string[],
): RunSpec {
  const w = sizes.width;
  return {
    scenario,
    variant,
    via,
    relayArgs,
    nodeProcs: w,
    nodesPerProc: 1,
    ratePerNode,
    kinds: ALL_KINDS,
    pool: sizes.pool,
    groups: [{ procs: w, perProc: 1, kinds: ALL_KINDS, latency }],
    ...timing,
  };
}
