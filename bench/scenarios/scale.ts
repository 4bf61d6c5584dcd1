// scale: 200 nodes at a low rate, 500 idle consumers (+2 active ones): at rest, under load.
import type { ScenarioRuns } from './sizes.js';

export const scale: ScenarioRuns = ({ sizes, timing }) => [
  {
    scenario: 'scale',
    variant: `${sizes.scaleNodeProcs * sizes.scaleNodesPerProc} nodes, ${sizes.scaleIdleProcs * sizes.scaleIdlePerProc} idle`,
    via: 'relay',
    nodeProcs: sizes.scaleNodeProcs,
    nodesPerProc: sizes.scaleNodesPerProc,
    ratePerNode: sizes.scaleRatePerNode,
    // messages stay quiet: the idle consumers hold WatchMessages streams open
    kinds: ['alert', 'log'],
    pool: 8,
    groups: [
      { procs: sizes.scaleIdleProcs, perProc: sizes.scaleIdlePerProc, kinds: ['message'], latency: false, idle: true },
      { procs: 1, perProc: 2, kinds: ['alert', 'log'], latency: true },
    ],
    // Every consumer connects at once from 127.0.0.1: a flash crowd from one address that the
    // default caps on pending handshakes (256 in all, 128 per source) would refuse at accept.
    relayArgs: ['--tlsMaxPendingHandshakes=1024', '--tlsMaxPendingPerSource=1024'],
    restMs: timing.measureMs,
    ...timing,
  },
];
