// From parsed flags to a running relay: picks the transport (plaintext or mutual TLS from
// the certificate manager), node sources (static list, Kubernetes discovery) and the
// remote-host enrichment, and owns their shutdown order.
import { openMutualTls } from './tls.js';
import type { CertManager } from '../certs/manager.js';
import type { RelayFlags } from './config.js';
import type { Discovery } from './discovery.js';
import { enrichLog } from './enrich.js';
import { KIND_BY_NAME } from './kinds.js';
import type { Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { SINK_DEFAULTS } from './sinks/defaults.js';
import { Relay, type Flushable } from './relay.js';
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

  const relay = new Relay({
    listenAddress: flags.listenAddress,
    grpcPort: flags.gRPCPort,
    httpPort: flags.httpPort,
    nodes: flags.nodes,
    queue: { maxEvents: flags.clientQueueSize, maxBytes: flags.clientQueueBytes },
    stallMs: flags.stallTimeout,
    maxEventBytes: flags.maxEventBytes,
    transport,
    logger,
    stdoutKinds: StdoutExporter.kindsFromEnv(env),
    metrics,
    transform,
    expectMoreNodes: discoveryOn,
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

  let discovery: Discovery | undefined;
  if (discoveryModule) {
    discovery = discoveryModule.startDiscovery({
      kubeconfig: flags.kubeconfig || undefined,
      namespace: flags.discoveryNamespace || undefined,
      labelSelector: flags.discoveryLabelSelector,
      port: flags.nodePort,
      logger: logger.child({ component: 'discovery' }),
      ipNames,
      onTargets: (targets) => relay.upstreams.setTargets('kubernetes', targets),
    });
  }

  return {
    relay,
    close: async () => {
      discovery?.stop();
      await relay.close();
      manager?.close();
    },
  };
}
