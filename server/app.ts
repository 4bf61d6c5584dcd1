// From parsed flags to a running relay: picks the transport (plaintext or mutual TLS from
// the certificate manager), node sources (static list, Kubernetes discovery) and the
// remote-host enrichment, and owns their shutdown order.
import { openMutualTls } from './tls.js';
import type { CertManager } from '../certs/manager.js';
import type { RelayFlags } from './config.js';
import type { Discovery } from './discovery.js';
import type { ScaleOut } from './scaleout/index.js';
import { enrichLog } from './enrich.js';
import { hostname } from 'node:os';
import { KIND_BY_NAME } from './kinds.js';
import type { Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { Relay, type Flushable } from './relay.js';
import type { NodeSource } from './upstreams.js';
import { SINK_DEFAULTS } from './sinks/defaults.js';
import { sinkConfigsFromEnv } from './sinks/config.js';
import { StdoutExporter } from './stdout.js';
import { PlaintextTransport, type Transport } from './transport.js';
import type { EventTransform } from './upstream.js';

export interface App {
  relay: Relay;
  close(): Promise<void>;
}

/** The naive relay's path, kept for benchmarks: a full decode and encode of every event. */
const reencode: EventTransform = (kind, bytes) => {
  const type = KIND_BY_NAME[kind].type;
  const out = type.encode(type.decode(bytes)).finish();
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
};

function chain(first: EventTransform, second: EventTransform | undefined): EventTransform {
  return second ? (kind, bytes) => second(kind, first(kind, bytes)) : first;
}

export async function startApp(flags: RelayFlags, env: NodeJS.ProcessEnv, logger: Logger): Promise<App> {
  // a sink switched on but misconfigured stops the start here, before anything listens
  const sinkConfig = await sinkConfigsFromEnv(env);
  for (const warning of sinkConfig.warnings) logger.warn(warning);
  const metrics = createMetrics();
  let manager: CertManager | undefined;
  let transport: Transport = new PlaintextTransport();
  if (flags.tlsEnabled) {
    const tls = await openMutualTls({
      provider: flags.tlsCertProvider as 'external' | 'self',
      dir: flags.tlsCertPath,
      validityMs: flags.certValidity,
      namespace: flags.namespace,
      extraDnsNames: flags.extraDnsNames,
      extraIpAddresses: flags.extraIpAddresses,
      podIp: env.POD_IP || undefined,
      serverName: flags.tlsServerName || undefined,
      handshake: { maxPending: flags.tlsMaxPendingHandshakes, maxPendingPerSource: flags.tlsMaxPendingPerSource, timeoutMs: flags.tlsHandshakeTimeout },
      logger,
      registry: metrics.registry,
    });
    manager = tls.manager;
    transport = tls.transport;
  }

  const inCluster = Boolean(env.KUBERNETES_SERVICE_HOST);
  const discoveryOn = flags._set.has('discovery') ? flags.discovery : inCluster || flags.kubeconfig !== '';
  const enrichOn = flags._set.has('enrichRemoteHost') ? flags.enrichRemoteHost : discoveryOn;
  if (enrichOn && !discoveryOn) logger.warn('--enrichRemoteHost needs Kubernetes discovery (pod and service IPs); enrichment stays off');
  // @kubernetes/client-node is large: loaded only when discovery is on.
  const discoveryModule = discoveryOn ? await import('./discovery.js') : undefined;
  const ipNames = enrichOn && discoveryModule ? new discoveryModule.IpNameMap() : undefined;
  const enrich: EventTransform | undefined = ipNames ? (kind, bytes) => (kind === 'log' ? enrichLog(bytes, ipNames.lookup) : bytes) : undefined;
  const transform = flags.reencode ? chain(reencode, enrich) : enrich;

  // The NATS client is loaded only in scale-out mode.
  const scaleOut = flags.natsUrl.length > 0 ? await startScaleOut(flags, env, logger, metrics, manager) : undefined;

  const relay = new Relay({
    listenAddress: flags.listenAddress,
    grpcPort: flags.gRPCPort,
    httpPort: flags.httpPort,
    // in scale-out mode the assignment decides which nodes this replica dials
    nodes: scaleOut ? [] : flags.nodes,
    queue: { maxEvents: flags.clientQueueSize, maxBytes: flags.clientQueueBytes },
    stallMs: flags.stallTimeout,
    maxEventBytes: flags.maxEventBytes,
    transport,
    logger,
    stdoutKinds: StdoutExporter.kindsFromEnv(env),
    metrics,
    transform,
    expectMoreNodes: discoveryOn || scaleOut !== undefined,
    certificates: manager,
    sinkFor: scaleOut?.sinkFor,
  });
  let sinks: Flushable[] = [];
  if (sinkConfig.sinks.length > 0) {
    // the search clients are large: loaded only when a sink is on. Sinks subscribe before
    // the relay dials any node, so they see every event from the first one
    const { startSinks } = await import('./sinks/index.js');
    const sinkOptions = {
      ...SINK_DEFAULTS,
      queue: { maxEvents: flags.sinkQueueSize, maxBytes: flags.sinkQueueBytes },
      flushMs: flags.sinkFlushInterval,
      requestTimeoutMs: flags.sinkRequestTimeout,
    };
    sinks = await startSinks(sinkConfig.sinks, sinkOptions, relay.hub, metrics, logger);
    for (const sink of sinks) relay.addSink(sink);
  }
  try {
    await relay.start();
  } catch (err) {
    await Promise.all(sinks.map((s) => s.close(Date.now())));
    manager?.close();
    throw err;
  }
  const setNodes = scaleOut ? (source: NodeSource, nodes: readonly string[]) => scaleOut.setCandidates(source, nodes) : (source: NodeSource, nodes: readonly string[]) => relay.upstreams.setTargets(source, nodes);
  if (scaleOut) {
    setNodes('static', flags.nodes);
    scaleOut.start(relay);
  }

  let discovery: Discovery | undefined;
  if (discoveryModule) {
    discovery = discoveryModule.startDiscovery({
      kubeconfig: flags.kubeconfig || undefined,
      namespace: flags.discoveryNamespace || undefined,
      labelSelector: flags.discoveryLabelSelector,
      port: flags.nodePort,
      logger: logger.child({ component: 'discovery' }),
      ipNames,
      onTargets: (targets) => setNodes('kubernetes', targets),
    });
  }

  return {
    relay,
    close: async () => {
      discovery?.stop();
      // leave the membership first, so the other replicas take over this one's nodes at once
      await scaleOut?.close();
      await relay.close();
      manager?.close();
    },
  };
}

async function startScaleOut(flags: RelayFlags, env: NodeJS.ProcessEnv, logger: Logger, metrics: ReturnType<typeof createMetrics>, tls: CertManager | undefined): Promise<ScaleOut> {
  const { ScaleOut } = await import('./scaleout/index.js');
  return new ScaleOut({
    servers: flags.natsUrl,
    user: flags.natsUser || undefined,
    password: flags.natsPassword || undefined,
    credsFile: flags.natsCreds || undefined,
    tls: (flags._set.has('natsTls') ? flags.natsTls : flags.tlsEnabled) ? tls : undefined,
    stream: flags.natsStream,
    streamReplicas: flags.natsStreamReplicas,
    maxAgeMs: flags.natsMaxAge,
    maxBytes: flags.natsMaxBytes,
    duplicateWindowMs: flags.natsDuplicateWindow,
    membershipTtlMs: flags.membershipTtl,
    upstreamReplicas: flags.upstreamReplicas,
    replicaId: flags.replicaId || `${env.POD_NAME || hostname()}-${process.pid}`,
    logger,
    metrics,
  });
}
