// slow: 4 nodes -> relay -> 3 consumers that keep up + 1 that stops reading its socket; the
// window opens once the relay drops for the stalled one.
import { ALL_KINDS } from '../topology.js';
import type { ScenarioRuns } from './sizes.js';
import { symmetric } from './symmetric.js';

export const slow: ScenarioRuns = (input) => {
  const w = input.sizes.width;
  return [
    {
      ...symmetric('slow', input, `1 stalled of ${w}`, 'relay', input.latencyRate / w, true, input.sizes.slowRelayArgs),
      groups: [
        { procs: w - 1, perProc: 1, kinds: ALL_KINDS, latency: true },
        { procs: 1, perProc: 1, kinds: ALL_KINDS, latency: false, stall: true },
      ],
      waitForDrops: true,
    },
  ];
};
