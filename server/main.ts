#!/usr/bin/env node
// The `kubearmor-relay` binary: the relay itself, or one of its tools as a subcommand.
import { parseRelayFlags } from './config.js';
import { HelpRequested, UsageError } from './flags.js';
import { createLogger } from './logger.js';
import { startApp } from './app.js';
import { StdoutExporter } from './stdout.js';

type Subcommand = (argv: string[]) => Promise<number>;

const SUBCOMMANDS: Record<string, () => Promise<Subcommand>> = {
  'fake-node': async () => (await import('./tools/fake-node.js')).runFakeNode,
  logs: async () => (await import('./tools/logs.js')).runLogs,
  certs: async () => (await import('../certs/cli.js')).runCerts as Subcommand,
  seccomp: async () => (await import('./tools/seccomp-check.js')).runSeccomp,
};

async function runRelay(argv: string[]): Promise<number> {
  const flags = parseRelayFlags(argv);
  const logger = createLogger(flags.logLevel, StdoutExporter.kindsFromEnv(process.env).length > 0);
  // Handlers go in before the relay starts: a SIGTERM that arrives while it is still starting
  // (it logs "serving" before startApp returns) must stop it cleanly, not kill it outright.
  let stopRequested: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => {
    stopRequested = signal;
  };
  const handler = (signal: NodeJS.Signals): void => onSignal(signal);
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
  const app = await startApp(flags, process.env, logger);
  return new Promise<number>((resolve) => {
    onSignal = (signal) => {
      logger.info({ signal }, 'shutting down');
      // Exit within 5 s whatever happens; close() itself cuts streams after 3 s.
      setTimeout(() => resolve(0), 4500).unref();
      app.close().then(
        () => resolve(0),
        (err: Error) => {
          logger.error({ err }, 'error during shutdown');
          resolve(0);
        },
      );
    };
    if (stopRequested) onSignal(stopRequested);
  });
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  const load = first !== undefined ? SUBCOMMANDS[first] : undefined;
  try {
    if (load) return await (await load())(rest);
    return await runRelay(argv);
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(`${err.text}\n`);
      return 0;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`kubearmor-relay: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`kubearmor-relay: ${(err as Error).message}\n`);
    return 1;
  }
}

// `kubearmor-relay logs | head` closes the pipe: an ordinary way to stop, not a crash.
const isEpipe = (err: NodeJS.ErrnoException) => err.code === 'EPIPE';
process.stdout.on('error', (err: NodeJS.ErrnoException) => process.exit(isEpipe(err) ? 0 : 1));

process.on('uncaughtException', (err: NodeJS.ErrnoException) => {
  if (isEpipe(err)) process.exit(0);
  process.stderr.write(`kubearmor-relay: unexpected error: ${err.stack ?? err.message}\n`);
  process.exit(1);
});

const code = await main(process.argv.slice(2));
// Let pino and stdout flush before leaving.
setImmediate(() => process.exit(code));
