// The relay's flags: names, defaults and checks in one table. `--help` is generated from it.
import { checks, parseFlags, type FlagTable, type ParsedFlags } from './flags.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const RELAY_FLAGS = {
  gRPCPort: { type: 'port', default: 32767, help: 'gRPC port serving feeder.LogService and grpc.health.v1 to consumers' },
  listenAddress: { type: 'string', default: '0.0.0.0', form: 'IP', help: 'address the gRPC and HTTP listeners bind to' },
  httpPort: { type: 'port', default: 8080, help: 'HTTP port for /metrics, /healthz and /readyz (0 disables)' },
  nodes: {
    type: 'list',
    default: [],
    env: 'KUBEARMOR_SERVICE',
    form: 'HOST:PORT[,HOST:PORT...]',
    help: 'node daemons to dial (static list)',
    check: checks.hostPortList,
  },
  clientQueueSize: {
    type: 'int',
    default: 4096,
    help: 'events a consumer may have waiting before the relay drops for that consumer',
    check: checks.atLeast(1),
  },
  clientQueueBytes: {
    type: 'int',
    default: 8 * 1024 * 1024,
    help: 'bytes a consumer may have waiting before the relay drops for that consumer',
    check: checks.atLeast(65536),
  },
  stallTimeout: {
    type: 'duration',
    default: '2s',
    help: 'how long every consumer of a kind may be full (reads from nodes paused) before the full ones are treated as stalled and dropped for',
  },
  logLevel: {
    type: 'string',
    default: 'info',
    form: LOG_LEVELS.join('|'),
    help: 'log level',
    check: checks.oneOf(LOG_LEVELS),
  },
} satisfies FlagTable;

export type RelayFlags = ParsedFlags<typeof RELAY_FLAGS>;

export function parseRelayFlags(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): RelayFlags {
  return parseFlags(argv, RELAY_FLAGS, {
    command: 'kubearmor-relay',
    summary: [
      'Relays KubeArmor alerts, logs and messages from every node daemon to any number of consumers.',
      '',
      'Subcommands: kubearmor-relay fake-node|logs|certs --help',
      'Environment: ENABLE_STDOUT_ALERTS, ENABLE_STDOUT_LOGS, ENABLE_STDOUT_MSGS=true print events as JSON lines on stdout.',
    ].join('\n'),
  }, env);
}
