// `npm run test:unit`: the tests that run inside the test process only: no build (dist/),
// no child process, no program that is not ours, so they need nothing beyond `npm ci`.
// A test file belongs here when that holds for all of it.
import { defineConfig } from 'vitest/config';
import { common } from './vitest.config.js';

export const UNIT_TESTS = [
  'test/backoff.test.ts',
  'test/discovery.test.ts',
  'test/enrich.test.ts',
  'test/hub.test.ts',
  'test/manifests.test.ts',
  'test/status-view.test.ts',
  'test/status.test.ts',
  'test/scaleout-assignment.test.ts',
  'test/sink-config.test.ts',
  'test/sink-queue.test.ts',
  'test/tls-rotation.test.ts',
];

export default defineConfig({ test: { ...common, include: UNIT_TESTS } });
