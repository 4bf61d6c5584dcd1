// latency: the throughput topology at a steady rate (5 000 events/s by default):
// node-to-consumer time through the relay and directly.
import type { ScenarioRuns } from './sizes.js';
import { symmetric } from './symmetric.js';

export const latency: ScenarioRuns = (input) => {
  const ratePerNode = input.latencyRate / input.sizes.width;
  return [symmetric('latency', input, 'relay', 'relay', ratePerNode, true), symmetric('latency', input, 'direct', 'direct', ratePerNode, true)];
};
