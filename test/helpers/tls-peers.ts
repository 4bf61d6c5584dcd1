// Peers of a relay process over mutual TLS: bare handshakes that report what the relay
// served, consumers with a given identity, mutual-TLS node daemons, and the openssl CLI.
import * as grpc from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tls from 'node:tls';
import type { IssuedPair } from '../../certs/issue.js';
import type { CertManager } from '../../certs/manager.js';
import { decodeReply, encodeNonce } from '../../server/proto.js';
import { MutualTlsTransport, openMutualTls } from '../../server/tls.js';
import { type FakeNode, type FakeNodeOptions, startFakeNode } from '../../server/tools/fake-node.js';
import { StaticSource, captureLogger, rawMaterial, tempDir } from './certs-fixtures.js';

export interface Handshake {
  cert: X509Certificate;
  /** negotiated TLS version, e.g. TLSv1.3 */
  protocol: string | null;
  alpn: string | false | null;
  /** when the connection was started: the server chose its certificate after this */
  startedAt: number;
  /** when the client saw the handshake complete */
  at: number;
}

/**
 * One new TLS connection to 127.0.0.1:port presenting `client` (or no certificate), not
 * verifying the server (the caller inspects what was served). Resolves at the client's
 * end of the handshake with the served certificate.
 */
export function handshake(port: number, client?: IssuedPair, servername?: string): Promise<Handshake> {
  const startedAt = Date.now();
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host: '127.0.0.1',
        port,
        ...(client ? { key: client.keyPem, cert: client.certPem } : {}),
        ...(servername ? { servername } : {}),
        rejectUnauthorized: false,
        ALPNProtocols: ['h2'],
      },
      () => {
        const cert = socket.getPeerX509Certificate();
        const result = { protocol: socket.getProtocol(), alpn: socket.alpnProtocol, startedAt, at: Date.now() };
        socket.destroy();
        if (cert) resolve({ cert, ...result });
        else reject(new Error('no server certificate'));
      },
    );
    socket.setTimeout(10_000, () => socket.destroy(new Error('TLS handshake timed out')));
    socket.on('error', reject);
  });
}

/**
 * Bounded wait, after a certificate swap, until a NEW connection is served `serial`:
 * a handshake every 100 ms, failing after `withinMs`. Resolves with the time it took.
 */
export async function seesServerSerial(port: number, client: IssuedPair, serial: string, withinMs = 2000): Promise<number> {
  const start = Date.now();
  let last = '';
  for (;;) {
    try {
      last = (await handshake(port, client)).cert.serialNumber;
    } catch (err) {
      last = `(handshake failed: ${(err as Error).message})`;
    }
    if (last === serial) return Date.now() - start;
    if (Date.now() - start >= withinMs) throw new Error(`a new connection still sees server serial ${last}, not ${serial}, ${withinMs} ms after the swap`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A consumer's transport that presents `client` and trusts `caPem` (no validation of its own material). */
export function consumerTransport(caPem: string, client?: IssuedPair, serverName?: string): MutualTlsTransport {
  return new MutualTlsTransport(new StaticSource(rawMaterial(caPem, client ? { client } : {})), { logger: captureLogger().logger, serverName });
}

/** HealthCheck over a fresh channel with a deadline; resolves with Retval or rejects with the gRPC error. */
export function healthCheck(target: string, credentials: grpc.ChannelCredentials, nonce = 42, timeoutMs = 10_000): Promise<number> {
  const client = new grpc.Client(target, credentials, { 'grpc.use_local_subchannel_pool': 1 });
  return new Promise<number>((resolve, reject) => {
    client.makeUnaryRequest('/feeder.LogService/HealthCheck', (b: Buffer) => b, decodeReply, encodeNonce(nonce), { deadline: Date.now() + timeoutMs }, (err, value) => {
      client.close();
      if (err) reject(err);
      else resolve(value!);
    });
  });
}

export interface TlsNode {
  node: FakeNode;
  manager: CertManager;
  close(): Promise<void>;
}

/**
 * A fake node daemon serving mutual TLS from its own certificate directory (ca.crt,
 * server.crt, server.key), as a KubeArmor daemon does.
 */
export async function startTlsNode(caPem: string, server: IssuedPair, options: Omit<FakeNodeOptions, 'transport'> = {}): Promise<TlsNode> {
  const dir = tempDir('tls-node-');
  writeFileSync(join(dir.path, 'ca.crt'), caPem);
  writeFileSync(join(dir.path, 'server.crt'), server.certPem);
  writeFileSync(join(dir.path, 'server.key'), server.keyPem, { mode: 0o600 });
  const { transport, manager } = await openMutualTls({ provider: 'external', dir: dir.path, roles: ['server'], logger: captureLogger().logger });
  const node = await startFakeNode({ ...options, transport });
  return {
    node,
    manager,
    close: async () => {
      await node.close();
      manager.close();
      dir.remove();
    },
  };
}

/** Runs a command without blocking the event loop; stdin gets `input` and is closed. */
export function runCommand(cmd: string, args: string[], input = '', timeoutMs = 10_000): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      // A command that cannot start (ENOENT) says so in the output the test shows.
      const failedToStart = err && typeof err.code !== 'number' ? `${cmd}: ${err.message}\n` : '';
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: failedToStart + stdout + stderr });
    });
    child.stdin?.end(input);
  });
}

/** Writes PEM files into dir for the openssl CLI; returns their paths by name. */
export function pemFiles(dir: string, files: Record<string, string>): Record<string, string> {
  const paths: Record<string, string> = {};
  for (const [name, text] of Object.entries(files)) {
    paths[name] = join(dir, name);
    writeFileSync(paths[name], text, { mode: 0o600 });
  }
  return paths;
}
