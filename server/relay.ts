// Composition: wires the hub, the upstream set, the LogService, health, metrics and stdout
// export together, and takes them apart again in the right order on shutdown.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { BACKOFF_DEFAULTS, type BackoffOptions } from './backoff.js';
import { LogService } from './downstream.js';
import { startHttp, type HttpEndpoints } from './http.js';
import { HUB_DEFAULTS, Hub, type QueueLimits } from './hub.js';
import type { KindSpec } from './kinds.js';
import type { Logger } from './logger.js';
import { createMetrics, type RelayMetrics } from './metrics.js';
import { StatusBoard, type CertificateSource } from './status.js';
import { StdoutExporter } from './stdout.js';
import type { Listening, Transport } from './transport.js';
import type { EventTransform, SinkFor } from './upstream.js';
import { UpstreamSet } from './upstreams.js';

export interface RelayOptions {
  listenAddress: string;
  grpcPort: number;
  /** 0 disables the HTTP listener */
  httpPort: number;
  nodes: readonly string[];
  queue: QueueLimits;
  stallMs: number;
  transport: Transport;
  logger: Logger;
  stdoutKinds: readonly KindSpec[];
  backoff?: BackoffOptions;
  metrics?: RelayMetrics;
  transform?: EventTransform;
  /** largest event accepted from a node daemon (default HUB_DEFAULTS.maxEventBytes) */
  maxEventBytes?: number;
  /** another source (discovery) adds nodes later: no warning for an empty static list */
  expectMoreNodes?: boolean;
  /** the certificate manager, for /status (mutual TLS only) */
  certificates?: CertificateSource;
  /** where node events go instead of the hub (scale-out mode) */
  sinkFor?: SinkFor;
}

/** How long a graceful close may take before streams are cut (and sinks stop flushing). */
const SHUTDOWN_GRACE_MS = 3000;

/** A consumer of the hub that must finish its work on shutdown (the search-cluster sinks). */
export interface Flushable {
  /** stops taking events and delivers what it holds until `deadline` (ms since the epoch) */
  close(deadline: number): Promise<void>;
}

// Toward consumers: ping idle connections every 5 s like the reference relay (keeps
// kubectl port-forward paths alive) and accept client pings without active calls.
const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.keepalive_time_ms': 5000,
  'grpc.keepalive_timeout_ms': 20_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 1000,
  'grpc.max_receive_message_length': 1024 * 1024,
};

export class Relay {
  readonly metrics: RelayMetrics;
  readonly hub: Hub;
  readonly upstreams: UpstreamSet;
  readonly status: StatusBoard;
  private readonly server: grpc.Server;
  private readonly logService: LogService;
  private readonly health: HealthImplementation;
  private stdout: StdoutExporter | undefined;
  private readonly sinks: Flushable[] = [];
  private listening: Listening | undefined;
  private http: HttpEndpoints | undefined;
  private ready = false;
  private readonly readinessChecks: (() => boolean)[] = [];
  private closing: Promise<void> | undefined;

  constructor(private readonly opts: RelayOptions) {
    this.metrics = opts.metrics ?? createMetrics();
    this.hub = new Hub({
      queue: opts.queue,
      stallMs: opts.stallMs,
      dropReportMs: HUB_DEFAULTS.dropReportMs,
      logger: opts.logger,
      metrics: this.metrics,
    });
    this.upstreams = new UpstreamSet({
      transport: opts.transport,
      hub: this.hub,
      metrics: this.metrics,
      logger: opts.logger,
      backoff: opts.backoff ?? BACKOFF_DEFAULTS,
      healthTimeoutMs: 5000,
      stableAfterMs: 10_000,
      transform: opts.transform,
      maxEventBytes: opts.maxEventBytes ?? HUB_DEFAULTS.maxEventBytes,
      sinkFor: opts.sinkFor,
    });
    this.server = new grpc.Server(SERVER_OPTIONS);
    this.logService = new LogService(this.hub, opts.logger, (peer) => opts.transport.peerSubject?.(peer));
    this.logService.addTo(this.server);
    this.health = new HealthImplementation({ '': 'NOT_SERVING', 'feeder.LogService': 'NOT_SERVING' });
    this.health.addToServer(this.server);
    this.status = new StatusBoard({ upstreams: this.upstreams, hub: this.hub, transport: opts.transport, certificates: opts.certificates, ready: () => this.isReady() });
  }

  /** /readyz also answers 503 while this check is false (e.g. the engine link is down) */
  addReadinessCheck(check: () => boolean): void {
    this.readinessChecks.push(check);
  }

  get grpcPort(): number {
    return this.listening?.port ?? 0;
  }

  get httpPort(): number {
    return this.http?.port ?? 0;
  }

  /** serving, and every added check (e.g. the scale-out engine reachable) passes */
  private isReady(): boolean {
    return this.ready && this.readinessChecks.every((check) => check());
  }

  async start(): Promise<void> {
    const { opts } = this;
    if (opts.httpPort !== 0) {
      this.http = await startHttp({
        host: opts.listenAddress,
        port: opts.httpPort,
        registry: this.metrics.registry,
        ready: () => this.isReady(),
        status: () => this.status.snapshot(),
        logger: opts.logger,
      });
    }
    if (opts.stdoutKinds.length > 0) this.stdout = new StdoutExporter(this.hub, opts.stdoutKinds, this.metrics);
    this.listening = await opts.transport.serve(this.server, opts.listenAddress, opts.grpcPort);
    this.health.setStatus('', 'SERVING');
    this.health.setStatus('feeder.LogService', 'SERVING');
    this.ready = true;
    this.metrics.ready.set(1);
    opts.logger.info({ port: this.listening.port, transport: opts.transport.name, nodes: opts.nodes.length }, 'relay serving feeder.LogService');
    if (opts.nodes.length === 0 && !opts.expectMoreNodes) opts.logger.warn('no node daemons configured yet (--nodes or KUBEARMOR_SERVICE)');
    this.upstreams.setTargets('static', opts.nodes);
    this.status.start();
  }

  addSink(sink: Flushable): void {
    this.sinks.push(sink);
  }

  /** Stops accepting, ends consumer streams with UNAVAILABLE, closes upstreams, flushes sinks. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.ready = false;
    this.metrics.ready.set(0);
    this.status.close();
    this.health.setStatus('', 'NOT_SERVING');
    this.health.setStatus('feeder.LogService', 'NOT_SERVING');
    await this.listening?.close();
    this.upstreams.close();
    // no event arrives any more: sinks flush what they hold while consumer streams drain
    const sinksFlushed = Promise.all(this.sinks.map((s) => s.close(Date.now() + SHUTDOWN_GRACE_MS)));
    // GOAWAY first (tryShutdown), so a consumer reconnecting after UNAVAILABLE goes to a
    // new connection, i.e. another replica, not back to this one.
    const drained = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.logService.endAll('relay shutting down; reconnect');
    await drained;
    await sinksFlushed;
    await this.stdout?.close();
    this.hub.close();
    await this.http?.close();
  }
}
