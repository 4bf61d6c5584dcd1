// Mutual TLS for both directions, from a certificate source (the CertManager).
//
// Why this seam instead of grpc.ServerCredentials.createSsl / credentials.createSsl:
//  - Verification: operator- and karmor-made certificates have leaf subject == CA subject
//    and no AKI, and the operator's CA carries a self-signature that does not verify.
//    OpenSSL's default verification (what createSsl uses) rejects those as "self-signed
//    certificate", so the relay could not talk to operator-installed clusters. Here the
//    TLS layer only does the handshake (rejectUnauthorized: false) and certs/verify.ts
//    checks the peer itself, against the CURRENT trust bundle, before gRPC ever sees the socket.
//  - Hot rotation: owning the tls.Server means setSecureContext() on every material
//    change, so new handshakes use new certificates at once while established connections
//    carry on; dials read the current client identity at every connection attempt.
//  - Diagnostics: refusals are logged with peer, reason and detail and counted in
//    kubearmor_relay_tls_handshake_failures_total{side,reason}; a dial that fails
//    verification rejects with the real reason ("expired at T"), never a bare timeout.
//
// Serving: accepted, verified sockets are handed to grpc-js through
// Server.createConnectionInjector(insecure), which runs HTTP/2 on any duplex stream.
// Dialing: a ChannelCredentials subclass whose secure connector wraps tls.connect.
import * as grpc from '@grpc/grpc-js';
import type { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { CertManager, type CertManagerInit } from '../certs/manager.js';
import type { TlsMaterial, TlsMaterialSource } from '../certs/material.js';
import { handshakeFailureCounter } from '../certs/metrics.js';
import { ParsedCertificates, type PeerFailureReason, verifyPeer } from '../certs/verify.js';
import { HANDSHAKE_DEFAULTS, HandshakeGate, type HandshakeLimits } from './handshake-gate.js';
import { type Listening, type Transport, formatHostPort } from './transport.js';

export interface MutualTlsOptions {
  logger: Logger;
  registry?: Registry;
  /** name to verify the dialed server's certificate against instead of the dialed host */
  serverName?: string;
  /** bounds on connections that have not completed a verified handshake */
  handshake?: Partial<HandshakeLimits>;
}

/** Reasons a handshake is refused: the verifier's (certs/verify.ts) and the transport's own. */
export type HandshakeFailureReason =
  | PeerFailureReason
  | 'no_alpn'
  | 'not_tls'
  | 'protocol_version'
  | 'reset'
  | 'timeout'
  | 'too_many_pending'
  | 'closed'
  | 'handshake_error';

const MIN_VERSION: tls.SecureVersion = 'TLSv1.2';
const ALPN = ['h2'];
const REPEAT_LOG_INTERVAL_MS = 60_000;

type SecureConnector = ReturnType<grpc.ChannelCredentials['_createSecureConnector']>;
type SecureConnectResult = Awaited<ReturnType<SecureConnector['connect']>>;
type GrpcUri = Parameters<grpc.ChannelCredentials['_createSecureConnector']>[0];

/** Maps OpenSSL/Node handshake errors to a short metric label. */
export function classifyTlsError(err: Error & { code?: string }): HandshakeFailureReason {
  const code = err.code ?? '';
  const text = `${code} ${err.message}`.toLowerCase();
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'reset';
  if (/no_application_protocol|no application protocol/.test(text)) return 'no_alpn';
  if (/unsupported_protocol|unsupported protocol|protocol_version|protocol version|no protocols available/.test(text)) return 'protocol_version';
  if (/wrong_version_number|wrong version number|http_request|https_proxy_request|packet_length_too_long|record_layer_failure|unknown_protocol/.test(text)) return 'not_tls';
  if (/certificate_required|peer_did_not_return_a_certificate/.test(text)) return 'no_certificate';
  return 'handshake_error';
}

/** OpenSSL messages carry addresses and source paths; its `reason` field is the readable part. */
function describeTlsError(err: Error & { code?: string; reason?: string }): string {
  return err.reason ? `${err.reason}${err.code ? ` (${err.code})` : ''}` : err.message;
}

/** Most certificates of a peer's chain looked at: Go's verifier gives up after 100 signature checks. */
const MAX_PRESENTED_CHAIN = 16;

/**
 * The leaf a peer presented, then the intermediates it sent. Node exposes the sent chain
 * only as issuer links that OpenSSL made (X509_check_issued over what the peer sent, then
 * our own trust store): walk them, stopping at a loop.
 */
function peerChain(socket: tls.TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  for (let cert = socket.getPeerX509Certificate(); cert && chain.length < MAX_PRESENTED_CHAIN; cert = cert.issuerCertificate) {
    if (seen.has(cert.fingerprint256)) break;
    seen.add(cert.fingerprint256);
    chain.push(cert);
  }
  return chain;
}

function serverContextOptions(material: TlsMaterial): tls.SecureContextOptions {
  if (!material.server) throw new Error(`TLS material (${material.origin}) holds no server certificate: cannot serve`);
  // setSecureContext resets every option it is not given, minVersion included
  return { key: material.server.keyPem, cert: material.server.certPem, ca: material.ca.pem, minVersion: MIN_VERSION };
}

function stripPort(host: string): string {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(host) ?? /^([^:]+):\d+$/.exec(host);
  return m ? m[1]! : host;
}

/** host part of a grpc target such as dns:///node-a:32767 or ipv4:10.0.0.1:32767 */
function targetHost(target: GrpcUri): string {
  const path = target.path.split(',')[0] ?? '';
  return stripPort(path);
}

export class MutualTlsTransport implements Transport {
  readonly name: string;
  private readonly log: Logger;
  private readonly failures: Counter<'side' | 'reason'>;
  /** one client SecureContext per material generation, instead of parsing the key at every dial */
  private readonly clientContexts = new WeakMap<TlsMaterial, tls.SecureContext>();
  private readonly recentRefusals = new Map<string, { at: number; quiet: number }>();
  private readonly limits: HandshakeLimits;
  private readonly parsed = new ParsedCertificates();

  constructor(
    private readonly source: TlsMaterialSource,
    private readonly options: MutualTlsOptions,
  ) {
    this.name = `mutual TLS (${source.current().origin})`;
    this.log = options.logger.child({ component: 'tls' });
    this.failures = handshakeFailureCounter(options.registry);
    this.limits = { ...HANDSHAKE_DEFAULTS, ...options.handshake };
  }

  serve(server: grpc.Server, host: string, port: number): Promise<Listening> {
    const tlsServer = tls.createServer({
      ...serverContextOptions(this.source.current()),
      requestCert: true,
      // the chain is checked in 'secureConnection' by certs/verify.ts (see top of file)
      rejectUnauthorized: false,
      ALPNProtocols: ALPN,
      // the gate below closes late handshakes; Node's own timer is only a backstop
      handshakeTimeout: this.limits.timeoutMs + 1000,
      // as grpc-js does for its own sockets: events are small writes that must not wait
      // for Nagle; TCP keepalive notices consumers whose host vanished
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: 30_000,
    });
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const onChange = (material: TlsMaterial): void => {
      try {
        tlsServer.setSecureContext(serverContextOptions(material));
        this.log.info({ generation: material.generation, serial: material.server?.serial }, 'serving new TLS material to new connections');
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'cannot apply new TLS material; new connections keep the previous one');
      }
    };
    this.source.on('change', onChange);

    const gate = new HandshakeGate(this.limits, (reason, socket, detail) => this.refused('server', reason, detail, socket.remoteAddress, socket.remotePort));
    // 'connection' hands over the TCP socket before any TLS byte is read
    tlsServer.on('connection', (socket: Socket) => gate.admit(socket));
    tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
      gate.settled(socket);
      this.accept(socket, injector);
    });
    tlsServer.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => {
      gate.settled(socket);
      this.refused('server', classifyTlsError(err), describeTlsError(err), socket.remoteAddress, socket.remotePort);
      // Node leaves the socket open after a handshake error or timeout: close it
      socket.destroy();
    });

    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        this.source.off('change', onChange);
        injector.destroy();
        reject(new Error(`cannot listen on ${formatHostPort(host, port)}: ${err.message}`));
      };
      tlsServer.once('error', onError);
      tlsServer.listen(port, host, () => {
        tlsServer.off('error', onError);
        tlsServer.on('error', (err) => this.log.error({ err: err.message }, 'TLS listener error'));
        const address = tlsServer.address();
        const bound = typeof address === 'object' && address ? address.port : port;
        this.log.info({ address: formatHostPort(host, bound) }, `serving gRPC over ${this.name}`);
        resolve({
          port: bound,
          close: async () => {
            this.source.off('change', onChange);
            // stop accepting; established connections belong to the grpc Server now
            tlsServer.close();
            gate.close();
          },
        });
      });
    });
  }

  /** Verifies a completed handshake's client certificate and hands the socket to gRPC. */
  private accept(socket: tls.TLSSocket, injector: grpc.ConnectionInjector): void {
    const refuse = (reason: HandshakeFailureReason, detail: string): void => {
      this.refused('server', reason, detail, socket.remoteAddress, socket.remotePort);
      socket.on('error', () => undefined); // a reset while closing is expected, not news
      socket.destroy();
    };
    if (socket.alpnProtocol !== 'h2') {
      refuse('no_alpn', `peer did not negotiate ALPN h2 (got ${socket.alpnProtocol || 'none'})`);
      return;
    }
    const material = this.source.current();
    const verdict = verifyPeer(peerChain(socket), material.ca, { purpose: 'client', cache: this.parsed });
    if (!verdict.ok) {
      refuse(verdict.reason, verdict.detail);
      return;
    }
    this.log.debug(
      { peer: formatHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0), subject: verdict.subject, serial: verdict.serial, protocol: socket.getProtocol() },
      'client certificate accepted',
    );
    injector.injectConnection(socket);
  }

  private refused(side: 'server' | 'client', reason: HandshakeFailureReason, detail: string, address: string | undefined, port: number | undefined): void {
    this.failures.inc({ side, reason });
    const peer = formatHostPort(address ?? '?', port ?? 0);
    // resets and timeouts are what port scanners and TCP probes produce: keep them quiet
    if (reason === 'reset' || reason === 'timeout' || reason === 'closed') {
      this.log.debug({ side, peer, reason, detail }, 'TLS handshake failed');
      return;
    }
    const suppressed = this.repeats(`${side}|${address}|${reason}|${detail}`);
    if (suppressed === undefined) return;
    this.log.warn({ side, peer, reason, detail, ...(suppressed > 0 ? { suppressed } : {}) }, side === 'server' ? 'TLS connection refused' : 'TLS dial refused');
  }

  /**
   * A refused peer redials with backoff, failing the same way each time: the same failure
   * from the same address is logged at most once a minute (the counter sees every one).
   * Returns undefined to stay quiet, or how many were kept quiet since the last line.
   */
  private repeats(key: string): number | undefined {
    const now = Date.now();
    const seen = this.recentRefusals.get(key);
    if (seen && now - seen.at < REPEAT_LOG_INTERVAL_MS) {
      seen.quiet++;
      return undefined;
    }
    if (this.recentRefusals.size > 1000) this.recentRefusals.clear();
    this.recentRefusals.set(key, { at: now, quiet: 0 });
    return seen?.quiet ?? 0;
  }

  channelCredentials(host: string): grpc.ChannelCredentials {
    return new VerifyingChannelCredentials((socket, target, options) => this.dial(socket, host, target, options));
  }

  /** One TLS client handshake over an established TCP socket, verified by certs/verify.ts. */
  private dial(socket: Socket, host: string, target: GrpcUri, options: grpc.ChannelOptions): Promise<SecureConnectResult> {
    const override = options['grpc.ssl_target_name_override'];
    const name = stripPort(typeof override === 'string' && override ? override : (this.options.serverName ?? (host || targetHost(target))));
    const material = this.source.current();
    const identity = material.client;
    if (!identity) return Promise.reject(new Error(`TLS material (${material.origin}) holds no client certificate: cannot dial ${name}`));
    let secureContext = this.clientContexts.get(material);
    if (!secureContext) {
      secureContext = tls.createSecureContext({ key: identity.keyPem, cert: identity.certPem, minVersion: MIN_VERSION });
      this.clientContexts.set(material, secureContext);
    }
    // A node whose host vanished sends nothing, not even a reset: TCP keepalive notices it
    // long before our gRPC pings may (grpc-go daemons allow one every 5 minutes).
    socket.setKeepAlive(true, 30_000);
    return new Promise((resolve, reject) => {
      const tlsSocket = tls.connect({
        socket,
        secureContext,
        ALPNProtocols: ALPN,
        rejectUnauthorized: false, // verified below against the current bundle (see top of file)
        ...(isIP(name) ? {} : { servername: name }),
      });
      let settled = false;
      const fail = (reason: HandshakeFailureReason, detail: string): void => {
        if (settled) return;
        settled = true;
        this.refused('client', reason, detail, socket.remoteAddress, socket.remotePort);
        tlsSocket.removeListener('close', onClose);
        tlsSocket.on('error', () => undefined);
        tlsSocket.destroy();
        reject(new Error(`TLS handshake with ${name} (${formatHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0)}) failed: ${reason}: ${detail}`));
      };
      const onError = (err: Error & { code?: string }): void => fail(classifyTlsError(err), describeTlsError(err));
      const onClose = (): void => fail('closed', 'connection closed during the TLS handshake');
      const onTimeout = (): void => fail('timeout', `no TLS handshake within ${this.limits.timeoutMs / 1000}s`);
      tlsSocket.once('error', onError);
      tlsSocket.once('close', onClose);
      tlsSocket.setTimeout(this.limits.timeoutMs, onTimeout);
      tlsSocket.once('secureConnect', () => {
        tlsSocket.setTimeout(0);
        tlsSocket.removeListener('timeout', onTimeout);
        if (tlsSocket.alpnProtocol !== 'h2') return fail('no_alpn', `server did not negotiate ALPN h2 (got ${tlsSocket.alpnProtocol || 'none'})`);
        const verdict = verifyPeer(peerChain(tlsSocket), this.source.current().ca, { purpose: 'server', host: name, cache: this.parsed });
        if (!verdict.ok) return fail(verdict.reason, verdict.detail);
        settled = true;
        tlsSocket.removeListener('error', onError);
        tlsSocket.removeListener('close', onClose);
        this.log.debug({ server: name, subject: verdict.subject, serial: verdict.serial }, 'server certificate accepted');
        resolve({ socket: tlsSocket, secure: true });
      });
    });
  }
}

type Dialer = (socket: Socket, target: GrpcUri, options: grpc.ChannelOptions) => Promise<SecureConnectResult>;

/**
 * grpc-js calls _createSecureConnector once per subchannel and connector.connect() at
 * every connection attempt, so reading material inside the dialer picks up rotations.
 */
export class VerifyingChannelCredentials extends grpc.ChannelCredentials {
  constructor(private readonly dialer: Dialer) {
    super();
  }

  _isSecure(): boolean {
    return true;
  }

  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(channelTarget: GrpcUri, options: grpc.ChannelOptions, callCredentials?: grpc.CallCredentials): SecureConnector {
    const perCall = callCredentials ?? grpc.credentials.createEmpty();
    return {
      connect: (socket: Socket) => this.dialer(socket, channelTarget, options),
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => perCall,
      destroy: () => undefined,
    };
  }
}

/**
 * Builds a started CertManager and the transport over it, e.g. for a fake node daemon
 * (`roles: ['server']`: ca.crt, server.crt, server.key) or a consumer (`roles: ['client']`).
 * Close the manager when done.
 */
export async function openMutualTls(
  init: CertManagerInit & Pick<MutualTlsOptions, 'serverName' | 'handshake'>,
): Promise<{ transport: MutualTlsTransport; manager: CertManager }> {
  const manager = new CertManager(init);
  await manager.start();
  return { transport: new MutualTlsTransport(manager, { logger: init.logger, registry: init.registry, serverName: init.serverName, handshake: init.handshake }), manager };
}
