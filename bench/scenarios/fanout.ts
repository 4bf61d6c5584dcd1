// fanout: 1 node -> relay -> 1, 16, 64 consumers (at most 4 consumer processes).
import { ALL_KINDS, type RunSpec } from '../topology.js';
import type { ScenarioRuns } from './sizes.js';

export const fanout: ScenarioRuns = ({ sizes, timing }) =>
  sizes.fanout.map((n) => {
    const procs = Math.min(n, 4);
    return {
      scenario: 'fanout',
      variant: `${n} consumers`,
      via: 'relay',
      nodeProcs: 1,
      nodesPerProc: 1,
      ratePerNode: 0,
      kinds: ALL_KINDS,
      pool: sizes.pool,
      groups: [{ procs, perProc: Math.ceil(n / procs), kinds: ALL_KINDS, latency: false }],
      ...timing,
    } satisfies RunSpec;
  });
