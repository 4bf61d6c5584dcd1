import { defineConfig, type ViteUserConfig } from 'vitest/config';

/** What every run shares, the whole suite and `npm run test:unit`. */
export const common: NonNullable<ViteUserConfig['test']> = {
  testTimeout: 60_000,
  hookTimeout: 60_000,
  // Tests start real processes and sockets; two workers fit a 2-core machine.
  pool: 'forks',
  poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  reporters: ['default'],
};

export default defineConfig({
  test: {
    ...common,
    include: ['test/**/*.test.ts'],
    // The suite needs programs that are not ours (Python gRPC, openssl, python3-seccomp, Go,
    // strace): without one it stops here with one line each, never in a test's timeout.
    // `npm test` installs them first (scripts/test-prerequisites.mjs).
    globalSetup: ['scripts/test-prerequisites.mjs'],
  },
});
