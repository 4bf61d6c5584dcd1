// sink: alerts at a steady rate (5 000/s by default, --latencyRate) from `width` nodes to
// the relay and one gRPC consumer, without and with Elasticsearch export (ENABLE_DASHBOARDS)
// into a local stand-in for the cluster: the relay's CPU and memory cost of the sink, and
// whether it indexes every alert.
import type { RunSpec } from '../topology.js';
import type { ScenarioRuns } from './sizes.js';

export const sink: ScenarioRuns = ({ sizes, timing, latencyRate }) => {
  const run = (variant: string, flavour?: 'elasticsearch'): RunSpec => ({
    scenario: 'sink',
    variant,
    via: 'relay',
    nodeProcs: sizes.width,
    nodesPerProc: 1,
    ratePerNode: latencyRate / sizes.width,
    kinds: ['alert'],
    pool: sizes.pool,
    groups: [{ procs: 1, perProc: 1, kinds: ['alert'], latency: true }],
    ...(flavour ? { sink: flavour } : {}),
    ...timing,
  });
  return [run('no sink'), run('elasticsearch sink', 'elasticsearch')];
};
