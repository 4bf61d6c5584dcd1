import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertManager } from '../certs/manager.js';
import { MutualTlsTransport } from '../server/tls.js';
import {
  DAY,
  type LogLine,
  type Served,
  StaticSource,
  type TestCa,
  callEcho,
  captureLogger,
  karmorLeaf,
  leaf,
  metricValue,
  newCa,
  operatorCa,
  rawMaterial,
  serveEcho,
  tempDir,
  waitFor,
} from './helpers/certs-fixtures.js';
import { runCommand } from './helpers/tls-peers.js';

const FAILURES = 'kubearmor_relay_tls_handshake_failures_total';

const run = runCommand;

describe('mutual TLS transport, serving side (self provider relay)', () => {
  let ca: TestCa;
  const dir = tempDir();
  const registry = new Registry();
  const log = captureLogger();
  let manager: CertManager;
  let relay: MutualTlsTransport;
  let served: Served;
  const consumerLog = captureLogger();

  /** A consumer transport presenting `client` and trusting `caPem`. */
  const consumer = (client: Parameters<typeof rawMaterial>[1]['client'], caPem = ca.certPem, serverName?: string) =>
    new MutualTlsTransport(new StaticSource(rawMaterial(caPem, client ? { client } : {})), { logger: consumerLog.logger, registry: new Registry(), serverName });

  const refusals = (reason: string) => metricValue(registry, FAILURES, { side: 'server', reason });
  const warnFor = (reason: string): LogLine | undefined => log.lines.find((l) => l.msg === 'TLS connection refused' && l.reason === reason);

  beforeAll(async () => {
    ca = await newCa('relay-ca');
    writeFileSync(join(dir.path, 'ca.crt'), ca.certPem);
    writeFileSync(join(dir.path, 'ca.key'), ca.keyPem);
    manager = new CertManager({ provider: 'self', dir: dir.path, logger: log.logger, registry, extraDnsNames: ['relay.test.example'], extraIpAddresses: ['192.0.2.1'] });
    await manager.start();
    relay = new MutualTlsTransport(manager, { logger: log.logger, registry });
    served = await serveEcho(relay);
  });
  afterAll(async () => {
    await served.close();
    manager.close();
    dir.remove();
  });

  it('accepts a valid client certificate and verifies the server as localhost and as 127.0.0.1', async () => {
    const c = consumer(await leaf(ca, 'client'));
    expect(await callEcho(c, 'localhost', served.port)).toEqual({ ok: true, reply: 'hello there' });
    expect(await callEcho(c, '127.0.0.1', served.port)).toEqual({ ok: true, reply: 'hello there' });
    expect(log.lines.some((l) => l.msg === 'client certificate accepted' && l.subject === 'O=kubearmor, CN=test-client')).toBe(true);
  });

  it('puts extraDnsNames and extraIpAddresses in the server certificate, and a serverName override verifies against them', async () => {
    const sans = manager.current().server!.cert.subjectAltName!;
    expect(sans).toContain('DNS:relay.test.example');
    expect(sans).toContain('IP Address:192.0.2.1');
    const c = consumer(await leaf(ca, 'client'), ca.certPem, 'relay.test.example');
    expect(await callEcho(c, '127.0.0.1', served.port)).toMatchObject({ ok: true });
  });

  it('refuses a client that presents no certificate (no_certificate)', async () => {
    const before = await refusals('no_certificate');
    await new Promise<void>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: served.port, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
      socket.on('error', () => undefined);
      socket.on('close', () => resolve());
      setTimeout(() => reject(new Error('the server did not close the connection')), 5000).unref();
    });
    await waitFor(async () => (await refusals('no_certificate')) === before + 1, 'the no_certificate refusal');
    expect(warnFor('no_certificate')).toMatchObject({ peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), detail: 'peer presented no client certificate' });
  });

  const refusedCases: Array<[string, string, () => Promise<Parameters<typeof rawMaterial>[1]['client']>]> = [
    ['a client certificate from another CA', 'unknown_authority', async () => leaf(await newCa('stranger-ca'), 'client')],
    ['an expired client certificate', 'expired', async () => leaf(ca, 'client', { now: new Date(Date.now() - 3 * DAY), validityMs: DAY })],
    ['a client certificate valid only from tomorrow', 'not_yet_valid', async () => leaf(ca, 'client', { now: new Date(Date.now() + DAY) })],
    ['a server-only certificate used as a client certificate', 'bad_key_usage', async () => leaf(ca, 'server')],
  ];
  for (const [what, reason, make] of refusedCases) {
    it(`refuses ${what} (${reason}) and logs peer, reason and detail`, async () => {
      const before = await refusals(reason);
      const outcome = await callEcho(consumer(await make()), 'localhost', served.port, 3000);
      expect(outcome.ok).toBe(false);
      await waitFor(async () => (await refusals(reason)) > before, `the ${reason} refusal to be counted`);
      const line = warnFor(reason)!;
      expect(line.level).toBe(40);
      expect(String(line.detail)).toMatch(/^client certificate /);
      if (reason === 'expired') expect(String(line.detail)).toMatch(/expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/);
    });
  }

  it('counts every refusal but logs the same failure from the same peer only once a minute', async () => {
    const stale = await leaf(ca, 'client', { now: new Date(Date.now() - 5 * DAY), validityMs: DAY });
    const detailOf = `client certificate O=kubearmor, CN=test-client serial ${new X509Certificate(stale.certPem).serialNumber} expired at`;
    const before = await refusals('expired');
    await callEcho(consumer(stale), 'localhost', served.port, 1000);
    await callEcho(consumer(stale), 'localhost', served.port, 1000);
    await waitFor(async () => (await refusals('expired')) >= before + 2, 'two refusals counted');
    expect(log.lines.filter((l) => l.msg === 'TLS connection refused' && String(l.detail).startsWith(detailOf))).toHaveLength(1);
  });

  it('refuses plaintext HTTP/2 on the TLS port (not_tls)', async () => {
    const before = await refusals('not_tls');
    const plain = await callEcho({ name: 'plaintext', serve: () => Promise.reject(new Error('unused')), channelCredentials: () => grpc.credentials.createInsecure() }, '127.0.0.1', served.port, 3000);
    expect(plain.ok).toBe(false);
    await waitFor(async () => (await refusals('not_tls')) > before, 'the not_tls refusal');
  });

  it('completes a handshake with openssl s_client: ALPN h2, TLS 1.2 or later, chain valid for localhost', async () => {
    const work = tempDir();
    try {
      const c = await leaf(ca, 'client');
      writeFileSync(join(work.path, 'ca.crt'), ca.certPem);
      writeFileSync(join(work.path, 'c.crt'), c.certPem);
      writeFileSync(join(work.path, 'c.key'), c.keyPem);
      const accepted = log.lines.filter((l) => l.msg === 'client certificate accepted').length;
      const { code, output } = await run('openssl', [
        's_client', '-connect', `127.0.0.1:${served.port}`, '-alpn', 'h2', '-cert', join(work.path, 'c.crt'), '-key', join(work.path, 'c.key'),
        '-CAfile', join(work.path, 'ca.crt'), '-verify_return_error', '-verify_hostname', 'localhost', '-servername', 'localhost',
      ]);
      expect(code).toBe(0);
      expect(output).toMatch(/ALPN protocol: h2/);
      expect(output).toMatch(/New, TLSv1\.[23], Cipher is/);
      expect(output).toMatch(/Verify return code: 0 \(ok\)/);
      await waitFor(() => log.lines.filter((l) => l.msg === 'client certificate accepted').length > accepted, 'the server to accept the client');
    } finally {
      work.remove();
    }
  });

  it('refuses TLS 1.1 from openssl s_client (protocol_version)', async () => {
    const before = await refusals('protocol_version');
    const { code } = await run('openssl', ['s_client', '-connect', `127.0.0.1:${served.port}`, '-tls1_1', '-alpn', 'h2']);
    expect(code).not.toBe(0);
    await waitFor(async () => (await refusals('protocol_version')) > before, 'the protocol_version refusal');
  });
});

describe('mutual TLS transport with operator- and karmor-shaped certificates', () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it('accepts a karmor client certificate (RSA 2048, serial 1, no SANs, subject = CA subject, no AKI) under an operator CA with a non-verifying self-signature', async () => {
    const operator = operatorCa(dir.path);
    const karmor = karmorLeaf(dir.path, 'karmor', 'client');
    const relayDir = tempDir();
    writeFileSync(join(relayDir.path, 'ca.crt'), operator.certPem);
    writeFileSync(join(relayDir.path, 'ca.key'), operator.keyPem);
    const { logger } = captureLogger();
    const manager = new CertManager({ provider: 'self', dir: relayDir.path, logger });
    await manager.start();
    const relay = new MutualTlsTransport(manager, { logger });
    const served = await serveEcho(relay);
    try {
      const karmorSide = new MutualTlsTransport(new StaticSource(rawMaterial(operator.certPem, { client: karmor })), { logger });
      expect(await callEcho(karmorSide, 'localhost', served.port)).toMatchObject({ ok: true });

      // and the other way round: the relay dials a node daemon whose certificate has only the node IP
      const nodeServer = karmorLeaf(dir.path, 'node', 'server', '127.0.0.1');
      const node = new MutualTlsTransport(new StaticSource(rawMaterial(operator.certPem, { server: nodeServer })), { logger });
      const nodeServed = await serveEcho(node);
      try {
        expect(await callEcho(relay, '127.0.0.1', nodeServed.port)).toMatchObject({ ok: true });
      } finally {
        await nodeServed.close();
      }
    } finally {
      await served.close();
      manager.close();
      relayDir.remove();
    }
  });
});

describe('mutual TLS transport, dialing side', () => {
  let ca: TestCa;
  const registry = new Registry();
  const { logger } = captureLogger();
  let client: MutualTlsTransport;
  beforeAll(async () => {
    ca = await newCa('dial-ca');
    client = new MutualTlsTransport(new StaticSource(rawMaterial(ca.certPem, { client: await leaf(ca, 'client') })), { logger, registry });
  });

  const cases: Array<[string, string, RegExp, () => Promise<Parameters<typeof rawMaterial>[1]['server']>]> = [
    ['a server certificate from another CA', 'unknown_authority', /unknown_authority: server certificate .* is not signed by any trusted CA/, async () => leaf(await newCa('rogue-ca'), 'server')],
    ['an expired server certificate', 'expired', /expired: server certificate .* expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/, () => leaf(ca, 'server', { now: new Date(Date.now() - 3 * DAY), validityMs: DAY })],
    ['a server certificate for another name', 'name_mismatch', /name_mismatch: .* is not valid for localhost/, () => leaf(ca, 'server', { dnsNames: ['elsewhere.example'], ipAddresses: [] })],
  ];
  for (const [what, reason, message, make] of cases) {
    it(`refuses ${what} with the real reason in the call's error and counts it on side=client`, async () => {
      const server = new MutualTlsTransport(new StaticSource(rawMaterial(ca.certPem, { server: await make() })), { logger });
      const served = await serveEcho(server);
      try {
        const outcome = await callEcho(client, 'localhost', served.port, 3000);
        expect(outcome.ok).toBe(false);
        expect(!outcome.ok && outcome.details).toMatch(message);
        expect(await metricValue(registry, FAILURES, { side: 'client', reason })).toBeGreaterThan(0);
      } finally {
        await served.close();
      }
    });
  }
});
