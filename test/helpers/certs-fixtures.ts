// Shared fixtures for the certificate and TLS tests: temp dirs, a log capture, certificate
// material made by our issuer or (for the operator/karmor shapes) by the openssl CLI, and a
// tiny generic-unary gRPC service served and dialed through a Transport.
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import * as tls from 'node:tls';
import pino from 'pino';
import type { Registry } from 'prom-client';
import { type CaSigner, type IssuedPair, type LeafRequest, createCa, issueLeaf, loadCaSigner } from '../../certs/issue.js';
import type { Identity, Role, TlsMaterial, TlsMaterialSource } from '../../certs/material.js';
import { notAfter, notBefore } from '../../certs/pem.js';
import { loadTrustBundle } from '../../certs/verify.js';
import type { Transport } from '../../server/transport.js';

export const DAY = 86_400_000;

export function tempDir(prefix = 'certs-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A pino logger at debug level whose lines are kept, parsed, for assertions. */
export function captureLogger(): { logger: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString().split('\n')) if (text.trim()) lines.push(JSON.parse(text) as LogLine);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

export interface TestCa extends IssuedPair {
  signer: CaSigner;
}

export async function newCa(commonName = 'test-ca', validityMs = 30 * DAY): Promise<TestCa> {
  const pair = await createCa({ commonName, validityMs });
  return { ...pair, signer: loadCaSigner(pair.certPem, pair.keyPem) };
}

export function leaf(ca: TestCa, purpose: Role, extra: Partial<LeafRequest> = {}): Promise<IssuedPair> {
  return issueLeaf(ca.signer, {
    purpose,
    commonName: `test-${purpose}`,
    dnsNames: purpose === 'server' ? ['localhost'] : [],
    ipAddresses: purpose === 'server' ? ['127.0.0.1'] : [],
    validityMs: DAY,
    ...extra,
  });
}

/** Writes the five files of the `external` provider (or a subset) into dir. */
export function writeExternal(dir: string, files: { caPem?: string; server?: IssuedPair; client?: IssuedPair }): void {
  if (files.caPem !== undefined) writeFileSync(join(dir, 'ca.crt'), files.caPem);
  for (const role of ['server', 'client'] as const) {
    const pair = files[role];
    if (!pair) continue;
    writeFileSync(join(dir, `${role}.crt`), pair.certPem);
    writeFileSync(join(dir, `${role}.key`), pair.keyPem, { mode: 0o600 });
  }
}

export function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber;
}

// ---- operator / karmor shapes, made by the openssl CLI -------------------------------

function openssl(cwd: string, args: string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A CA as the KubeArmor operator makes it: RSA 2048 PKCS#1 key, serial 1, subject
 * O=kubearmor, CN=kubearmor, and a self-signature made with a throw-away key, so it does
 * NOT verify with its own public key. Writes ca.crt and ca.key into dir.
 */
export function operatorCa(dir: string): { certPem: string; keyPem: string } {
  openssl(dir, ['genrsa', '-traditional', '-out', 'ca.key', '2048']);
  openssl(dir, ['genrsa', '-out', 'throwaway.key', '2048']);
  openssl(dir, ['rsa', '-in', 'ca.key', '-pubout', '-out', 'ca.pub']);
  openssl(dir, ['req', '-new', '-key', 'ca.key', '-subj', '/O=kubearmor/CN=kubearmor', '-out', 'ca.csr']);
  writeFileSync(
    join(dir, 'ca.ext'),
    'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,digitalSignature,keyEncipherment\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=none\n',
  );
  openssl(dir, ['x509', '-req', '-in', 'ca.csr', '-signkey', 'throwaway.key', '-force_pubkey', 'ca.pub', '-days', '3', '-set_serial', '1', '-extfile', 'ca.ext', '-out', 'ca.crt']);
  return { certPem: readText(join(dir, 'ca.crt')), keyPem: readText(join(dir, 'ca.key')) };
}

/**
 * A leaf as karmor (client) or a node daemon (server) makes it: RSA 2048, serial 1,
 * subject equal to the CA's (O=kubearmor, CN=kubearmor), no AKI/SKI; a client cert has
 * no SANs, a server cert only the node IP. Needs ca.crt/ca.key in dir. Writes <name>.crt/.key.
 */
export function karmorLeaf(dir: string, name: string, purpose: Role, ip?: string): IssuedPair {
  openssl(dir, ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-subj', '/O=kubearmor/CN=kubearmor', '-out', `${name}.csr`]);
  const ext = [
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${purpose === 'server' ? 'serverAuth' : 'clientAuth'}`,
    'subjectKeyIdentifier=none',
    'authorityKeyIdentifier=none',
    ...(ip ? [`subjectAltName=IP:${ip}`] : []),
  ];
  writeFileSync(join(dir, `${name}.ext`), ext.join('\n') + '\n');
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', '1', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
  return { certPem: readText(join(dir, `${name}.crt`)), keyPem: readText(join(dir, `${name}.key`)) };
}

function readText(path: string): string {
  return readFileSync(path, 'utf8');
}

/**
 * Material taken as given, with no validation: how tests present expired, foreign or
 * misused certificates, which a CertManager would (rightly) refuse to load.
 */
export function rawMaterial(caPem: string, identities: Partial<Record<Role, IssuedPair>>, generation = 1): TlsMaterial {
  const ca = loadTrustBundle(caPem);
  const toIdentity = (pair: IssuedPair): Identity => {
    const cert = new X509Certificate(pair.certPem);
    return {
      certPem: pair.certPem,
      keyPem: pair.keyPem,
      cert,
      issuer: ca.certs[0]!,
      serial: cert.serialNumber,
      fingerprint256: cert.fingerprint256,
      notBefore: notBefore(cert),
      notAfter: notAfter(cert),
    };
  };
  return {
    generation,
    origin: 'test',
    ca,
    ...(identities.server ? { server: toIdentity(identities.server) } : {}),
    ...(identities.client ? { client: toIdentity(identities.client) } : {}),
    loadedAt: new Date(),
  };
}

/** A TlsMaterialSource the test sets by hand. */
export class StaticSource extends EventEmitter implements TlsMaterialSource {
  constructor(private material: TlsMaterial) {
    super();
  }
  current(): TlsMaterial {
    return this.material;
  }
  set(material: TlsMaterial): void {
    this.material = material;
    this.emit('change', material);
  }
}

// ---- a tiny gRPC service through a Transport -----------------------------------------

const identity = (b: Buffer): Buffer => b;
const echoService: grpc.ServiceDefinition = {
  who: {
    path: '/test.Echo/Who',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo');

export interface Served {
  server: grpc.Server;
  port: number;
  close(): Promise<void>;
}

/** Serves the echo service on 127.0.0.1:0 through the transport. */
export async function serveEcho(transport: Transport): Promise<Served> {
  const server = new grpc.Server();
  server.addService(echoService, {
    who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.concat([Buffer.from('hello '), call.request])),
  });
  const listening = await transport.serve(server, '127.0.0.1', 0);
  return {
    server,
    port: listening.port,
    close: async () => {
      await listening.close();
      server.forceShutdown();
    },
  };
}

export type CallOutcome = { ok: true; reply: string } | { ok: false; code: number; details: string };

/** One unary call through the transport's credentials to host:port (a fresh channel). */
export function callEcho(transport: Transport, host: string, port: number, timeoutMs = 5000): Promise<CallOutcome> {
  const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const client = new EchoClient(target, transport.channelCredentials(host), transport.channelOptions?.(host) ?? {});
  return new Promise((resolve) => {
    client.makeUnaryRequest<Buffer, Buffer>(
      '/test.Echo/Who',
      identity,
      identity,
      Buffer.from('there'),
      { deadline: Date.now() + timeoutMs },
      (err, reply) => {
        client.close();
        if (err) resolve({ ok: false, code: err.code, details: err.details });
        else resolve({ ok: true, reply: reply!.toString() });
      },
    );
  });
}

/** A bare TLS handshake (new connection) with a client identity; returns the server's serial. */
export function serverSerialSeen(port: number, client: IssuedPair): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, key: client.keyPem, cert: client.certPem, rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
      const serial = socket.getPeerX509Certificate()?.serialNumber;
      socket.destroy();
      if (serial) resolve(serial);
      else reject(new Error('no server certificate'));
    });
    socket.on('error', reject);
  });
}

export async function metricValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  const found = data.values.find((v) => Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val));
  return found ? found.value : 0;
}

/** Polls until check() is truthy; throws with `what` after timeoutMs. */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
