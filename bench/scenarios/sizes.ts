// How big each scenario is: the full benchmark, or the --quick smoke run.
import type { RunSpec } from '../topology.js';

export interface Sizes {
  /** nodes and consumers of the throughput, baseline, latency and slow runs */
  width: number;
  fanout: number[];
  /** relay flags of the slow run (a smaller queue fills sooner) */
  slowRelayArgs: string[];
  scaleNodeProcs: number;
  scaleNodesPerProc: number;
  scaleIdleProcs: number;
  scaleIdlePerProc: number;
  scaleRatePerNode: number;
  pool: number;
  /** relay counts of the scale-out runs */
  scaleOutRelays: number[];
  /** consumers, and events/s per node (two nodes), of the scale-out fan-out runs */
  scaleOutFanout: number;
  scaleOutFanoutRate: number;
}

export const FULL: Sizes = { width: 4, fanout: [1, 16, 64], slowRelayArgs: [], scaleNodeProcs: 4, scaleNodesPerProc: 50, scaleIdleProcs: 4, scaleIdlePerProc: 125, scaleRatePerNode: 10, pool: 48, scaleOutRelays: [1, 2, 3], scaleOutFanout: 48, scaleOutFanoutRate: 1000 };
export const QUICK: Sizes = { width: 2, fanout: [1, 4], slowRelayArgs: ['--clientQueueSize=256'], scaleNodeProcs: 1, scaleNodesPerProc: 10, scaleIdleProcs: 1, scaleIdlePerProc: 20, scaleRatePerNode: 10, pool: 16, scaleOutRelays: [2], scaleOutFanout: 8, scaleOutFanoutRate: 200 };

/** What every scenario is built from. */
export interface ScenarioInput {
  sizes: Sizes;
  timing: { warmupMs: number; measureMs: number };
  /** events/s into the relay (all nodes, all kinds) of the latency and slow runs */
  latencyRate: number;
}

/** The runs one scenario is made of. */
export type ScenarioRuns = (input: ScenarioInput) => RunSpec[];
