// The relay's flags: names, defaults and checks in one table. `--help` is generated from it.
import { HANDSHAKE_DEFAULTS } from './handshake-gate.js';
import { HUB_DEFAULTS } from './hub.js';
import { UsageError, checks, parseFlags, type FlagTable, type ParsedFlags } from './flags.js';
import { SINK_DEFAULTS } from './sinks/defaults.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const RELAY_FLAGS = {
  gRPCPort: { type: 'port', default: 32767, help: 'gRPC port serving feeder.LogService and grpc.health.v1 to consumers' },
  listenAddress: { type: 'string', default: '0.0.0.0', form: 'IP', help: 'address the gRPC and HTTP listeners bind to' },
  httpPort: { type: 'port', default: 8080, help: 'HTTP port for /metrics, /healthz, /readyz and /status (0 disables)' },
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
    default: HUB_DEFAULTS.queue.maxEvents,
    help: 'events a consumer may have waiting before the relay drops for that consumer',
    check: checks.atLeast(1),
  },
  clientQueueBytes: {
    type: 'int',
    default: HUB_DEFAULTS.queue.maxBytes,
    help: 'bytes a consumer may have waiting before the relay drops for that consumer',
    check: checks.atLeast(65536),
  },
  maxEventBytes: {
    type: 'int',
    default: HUB_DEFAULTS.maxEventBytes,
    help: 'largest event accepted from a node daemon; a larger one is dropped (counted as oversize) and the node redialed',
    check: checks.atLeast(1024),
  },
  tlsMaxPendingHandshakes: {
    type: 'int',
    default: HANDSHAKE_DEFAULTS.maxPending,
    help: 'connections without a completed TLS handshake the relay holds at once; more are refused (counted)',
    check: checks.atLeast(1),
  },
  tlsMaxPendingPerSource: {
    type: 'int',
    default: HANDSHAKE_DEFAULTS.maxPendingPerSource,
    help: 'the same, per remote address',
    check: checks.atLeast(1),
  },
  tlsHandshakeTimeout: {
    type: 'duration',
    default: `${HANDSHAKE_DEFAULTS.timeoutMs}ms`,
    help: 'a connection without a verified TLS handshake after this long is closed',
    check: checks.atLeast(100),
  },
  stallTimeout: {
    type: 'duration',
    default: `${HUB_DEFAULTS.stallMs}ms`,
    check: checks.atLeast(100),
    help: 'how long every consumer of a kind may be full (reads from nodes paused) before the full ones are treated as stalled and dropped for',
  },
  sinkQueueSize: {
    type: 'int',
    default: SINK_DEFAULTS.queue.maxEvents,
    help: 'events an Elasticsearch/OpenSearch sink may hold (queued and in flight) before it drops (counted as sink_full)',
    check: checks.atLeast(1),
  },
  sinkQueueBytes: {
    type: 'int',
    default: SINK_DEFAULTS.queue.maxBytes,
    help: 'event bytes an Elasticsearch/OpenSearch sink may hold before it drops (counted as sink_full)',
    check: checks.atLeast(65536),
  },
  sinkFlushInterval: {
    type: 'duration',
    default: `${SINK_DEFAULTS.flushMs}ms`,
    help: 'the longest an event waits for a bulk request to fill before it is sent anyway',
    check: checks.atLeast(1),
  },
  sinkRequestTimeout: {
    type: 'duration',
    default: `${SINK_DEFAULTS.requestTimeoutMs / 1000}s`,
    help: 'a bulk request the cluster has not answered after this long is sent again (same document ids: overwritten, not copied)',
    check: checks.atLeast(100),
  },
  tlsEnabled: { type: 'bool', default: false, help: 'mutual TLS toward consumers and node daemons' },
  tlsCertPath: { type: 'string', default: '/var/lib/kubearmor/tls', form: 'DIR', help: 'directory with ca.crt (+ server.crt/key, client.crt/key for external; + ca.key for self)' },
  tlsCertProvider: { type: 'string', default: 'external', form: 'external|self', help: 'external: certificates mounted from secrets; self: issued by the relay from ca.crt/ca.key', check: checks.oneOf(['external', 'self']) },
  certValidity: { type: 'duration', default: '720h', help: 'lifetime of certificates the relay issues itself (self provider); renewed at two thirds' },
  namespace: { type: 'string', default: 'kubearmor', help: 'namespace of the relay Service, for the DNS names of a self-issued server certificate' },
  extraDnsNames: { type: 'list', default: [], form: 'NAME[,NAME...]', help: 'extra DNS names in a self-issued server certificate' },
  extraIpAddresses: { type: 'list', default: [], form: 'IP[,IP...]', help: 'extra IP addresses in a self-issued server certificate', check: checks.ipList },
  tlsServerName: { type: 'string', default: '', help: 'name to verify node daemon certificates against instead of the dialed IP (testing)' },
  discovery: { type: 'bool', default: false, defaultText: 'true in a cluster or with --kubeconfig, else false', help: 'find node daemons through the Kubernetes API' },
  kubeconfig: { type: 'string', default: '', form: 'FILE', help: 'kubeconfig for discovery outside a cluster (in-cluster config otherwise)' },
  discoveryNamespace: { type: 'string', default: '', help: 'namespace of node daemon pods (empty: all namespaces)' },
  nodePort: { type: 'port', default: 32767, help: 'gRPC port of node daemons found by discovery' },
  discoveryLabelSelector: { type: 'string', default: 'kubearmor-app=kubearmor', help: 'label selector of node daemon pods' },
  enrichRemoteHost: { type: 'bool', default: false, defaultText: 'same as --discovery', help: 'append remotehost=pod/ns/name|svc/ns/name to network logs' },
  reencode: { type: 'bool', default: false, help: 'decode and re-encode every event instead of forwarding the node\'s bytes (what a naive relay does; for benchmarks)' },
  natsUrl: {
    type: 'list',
    default: [],
    form: 'nats://HOST:PORT[,nats://HOST:PORT...]',
    help: 'scale-out mode: replicas share the node daemons and serve every event through NATS JetStream (see README, Scale-out)',
    check: checks.natsUrls,
  },
  natsUser: { type: 'string', default: '', help: 'NATS user name (password from --natsPassword or env NATS_PASSWORD)' },
  natsPassword: { type: 'string', default: '', env: 'NATS_PASSWORD', help: 'NATS password' },
  natsCreds: { type: 'string', default: '', form: 'FILE', help: 'NATS credentials file (JWT and nkey seed)' },
  natsTls: { type: 'bool', default: false, defaultText: 'same as --tlsEnabled', help: 'TLS to NATS with the relay\'s client certificate and CA (--tlsCertPath, rotated with them)' },
  natsStream: { type: 'string', default: 'KUBEARMOR', help: 'JetStream stream holding the events (created when missing)', check: checks.natsName },
  natsStreamReplicas: { type: 'int', default: 1, help: 'copies JetStream keeps of the stream and the membership bucket (3 on a 3-server cluster)', check: checks.between(1, 5) },
  natsMaxAge: { type: 'duration', default: '24h', help: 'the stream keeps events this long (for outside consumers that replay)', check: checks.atLeast(1000) },
  natsMaxBytes: { type: 'int', default: 1024 * 1024 * 1024, help: 'the stream keeps at most this many bytes, dropping the oldest', check: checks.atLeast(1024 * 1024) },
  natsDuplicateWindow: { type: 'duration', default: '2m', help: 'JetStream de-duplication window: a re-sent or second copy of an event within it is stored once', check: checks.atLeast(1000) },
  upstreamReplicas: { type: 'int', default: 2, help: 'scale-out: how many replicas dial each node daemon', check: checks.atLeast(1) },
  replicaId: { type: 'string', default: '', defaultText: 'env POD_NAME, else the host name, plus the process id', help: 'scale-out: this replica\'s name in the membership bucket' },
  membershipTtl: { type: 'duration', default: '5s', help: 'scale-out: a replica that stops refreshing its membership is taken for dead after this long', check: checks.atLeast(1000) },
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
  const flags = parseFlags(argv, RELAY_FLAGS, {
    command: 'kubearmor-relay',
    summary: [
      'Relays KubeArmor alerts, logs and messages from every node daemon to any number of consumers.',
      '',
      'Subcommands: kubearmor-relay fake-node|logs|status|certs|seccomp --help',
      'Environment: ENABLE_STDOUT_ALERTS, ENABLE_STDOUT_LOGS, ENABLE_STDOUT_MSGS=true print events as JSON lines on stdout.',
      '  ENABLE_DASHBOARDS=true (ES_URL, ES_ALERTS_INDEX, ES_USERNAME, ES_PASSWORD, ES_CA_CERT_PATH, ES_ALLOW_INSECURE_TLS) indexes alerts into Elasticsearch;',
      '  ENABLE_OPENSEARCH_DASHBOARD=true (OS_URL, OS_ALERTS_INDEX, OS_USERNAME, OS_PASSWORD, OS_CA_CERT_PATH, OS_ALLOW_INSECURE_TLS) alerts and logs into OpenSearch.',
    ].join('\n'),
  }, env);
  const stray = flags._[0];
  if (stray !== undefined) {
    throw new UsageError(`unexpected argument ${JSON.stringify(stray)}: flags take values as --flag=value or --flag value, booleans only as --flag=true|false`);
  }
  if (flags.maxEventBytes > flags.clientQueueBytes && !flags._set.has('maxEventBytes')) {
    // the default yields to a smaller queue the user chose
    (flags as { maxEventBytes: number }).maxEventBytes = flags.clientQueueBytes;
  } else if (flags.maxEventBytes > flags.clientQueueBytes) {
    throw new UsageError(`--maxEventBytes (${flags.maxEventBytes}) must not exceed --clientQueueBytes (${flags.clientQueueBytes}): a larger event could never be queued for a consumer`);
  }
  return flags;
}
