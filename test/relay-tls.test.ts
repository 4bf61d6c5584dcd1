// The relay PROCESS over mutual TLS, end to end: `node dist/server/main.js --tlsEnabled ...`
// (through startRelayProcess, so RELAY_LAUNCHER confinement applies), mutual-TLS node
// daemons, consumers and the openssl CLI on loopback. Certificate rotation (kubelet's
// projected-volume swap and in-place rewrites), bad updates, refusals with their reasons,
// operator/karmor-shaped certificates, the self provider's names and renewal, CA rotation.
import * as grpc from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { X509Certificate } from 'node:crypto';
import { lstatSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { IssuedPair } from '../certs/issue.js';
import { notAfter } from '../certs/pem.js';
import { decodeToObject, types } from '../server/proto.js';
import { openMutualTls } from '../server/tls.js';
import { DAY, type TestCa, captureLogger, karmorLeaf, leaf, newCa, operatorCa, serialOf, tempDir, writeExternal } from './helpers/certs-fixtures.js';
import { rawWatch, type RawWatch } from './helpers/raw-client.js';
import { type LogLine, type RelayProcess, eventually, metricValue, startRelayProcess } from './helpers/relay-process.js';
import { consumerTransport, handshake, healthCheck, pemFiles, runCommand, seesServerSerial, startTlsNode } from './helpers/tls-peers.js';
import { EXTERNAL_FILES, type ExternalGeneration, KubeletVolume, externalContents } from './helpers/tls-volume.js';

const RELOADS = 'kubearmor_relay_cert_reloads_total';
const FAILURES = 'kubearmor_relay_tls_handshake_failures_total';
const REJECTED = 'changed TLS material rejected; still using the previous material';
/**
 * A swap must be served before the relay's 10 s periodic checksum check could have found it,
 * i.e. through the directory watch; typically 0.3 s (npm run bench:tls), the margin is for a
 * loaded CI machine.
 */
const WATCH_BOUND_MS = 8000;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

function tlsArgs(provider: 'external' | 'self', dir: string, extra: string[] = []): string[] {
  return ['--tlsEnabled', `--tlsCertProvider=${provider}`, `--tlsCertPath=${dir}`, ...extra];
}

/** A relay process stopped after the current test. */
async function relayFor(args: string[]): Promise<RelayProcess> {
  const relay = await startRelayProcess({ args });
  cleanups.push(() => relay.stop());
  return relay;
}

function dirFor(prefix: string): string {
  const dir = tempDir(prefix);
  cleanups.push(() => dir.remove());
  return dir.path;
}

async function generation(ca: TestCa, caPem = ca.certPem, leafCa: TestCa = ca): Promise<ExternalGeneration> {
  return { caPem, server: await leaf(leafCa, 'server'), client: await leaf(leafCa, 'client') };
}

async function relayMetric(relay: RelayProcess, name: string, labels: Record<string, string>): Promise<number> {
  return metricValue(await relay.metrics(), name, labels) ?? 0;
}

/** Tracks a watch's end: undefined while the stream is open. */
function endOf(watch: RawWatch): () => string | undefined {
  let ended: string | undefined;
  void watch.status.then((s) => (ended = `stream ended: ${grpc.status[s.code]} ${s.details}`));
  return () => ended;
}

/**
 * Ten rotations under a live consumer stream: after each, a new connection must see the
 * new server serial before the 10 s periodic check could have found it (so the directory
 * watch did), and the stream must go on delivering the node's events.
 */
async function rotateTenTimes(relay: RelayProcess, watch: RawWatch, probe: IssuedPair, newConsumer: () => grpc.ChannelCredentials, rotate: () => Promise<string>): Promise<void> {
  const ended = endOf(watch);
  await watch.waitFor(3);
  for (let i = 1; i <= 10; i++) {
    const serial = await rotate();
    await seesServerSerial(relay.grpcPort, probe, serial, WATCH_BOUND_MS);
    // and a whole new consumer connection (chain, name, ALPN h2 checked) works on the new certificate
    expect(await healthCheck(relay.target, newConsumer(), i)).toBe(i);
    const before = watch.events.length;
    await watch.waitFor(before + 3, 10_000);
    expect(ended(), `after rotation ${i}`).toBeUndefined();
  }
}

/** A mutual-TLS node daemon producing alerts, closed after the current test. */
async function alertNode(caPem: string, server: IssuedPair, nodeName: string) {
  const tlsNode = await startTlsNode(caPem, server, { kinds: ['alert'], rate: 20, nodeName });
  cleanups.push(() => tlsNode.close());
  return tlsNode;
}

function hostNames(watch: RawWatch): Set<string> {
  return new Set(watch.events.map((b) => decodeToObject(types.Alert, b).HostName as string));
}

describe('relay process, --tlsCertProvider=external: rotation under a live consumer stream', () => {
  it('keeps a WatchAlerts stream from an mTLS node open across ten kubelet-style ..data swaps of a projected secret volume, and a new connection sees each new server serial before the periodic check could have', async () => {
    const ca = await newCa('kubelet-ca');
    const dir = dirFor('relay-tls-kubelet-');
    const volume = new KubeletVolume(dir);
    const first = await generation(ca);
    volume.publish(externalContents(first));
    // the layout is kubelet's: file symlinks through ..data, ..data a symlink to a timestamped dir
    expect(readlinkSync(join(dir, '..data'))).toMatch(/^\.\.2026_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$/);
    for (const name of EXTERNAL_FILES) {
      expect(lstatSync(join(dir, name)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(dir, name))).toBe(join('..data', name));
    }

    const { node } = await alertNode(ca.certPem, await leaf(ca, 'server'), 'kubelet-node');
    const relay = await relayFor([...tlsArgs('external', dir), `--nodes=${node.target}`]);
    // the consumer uses the relay's own client identity from the same volume
    const consumer = await openMutualTls({ provider: 'external', dir, roles: ['client'], logger: captureLogger().logger });
    cleanups.push(() => consumer.manager.close());
    const watch = rawWatch(relay.target, 'alert', 'policy', consumer.transport.channelCredentials('127.0.0.1'));
    cleanups.push(() => watch.close());
    expect((await handshake(relay.grpcPort, first.client)).cert.serialNumber).toBe(serialOf(first.server.certPem));

    await rotateTenTimes(relay, watch, first.client, () => consumer.transport.channelCredentials('127.0.0.1'), async () => {
      const next = await generation(ca);
      volume.publish(externalContents(next));
      return serialOf(next.server.certPem);
    });

    expect(hostNames(watch)).toEqual(new Set(['kubelet-node']));
    // the relay's subscription to the node was never re-made, the consumer's stream never ended
    expect(node.requests.filter((r) => r.kind === 'alert')).toHaveLength(1);
    expect(await relayMetric(relay, RELOADS, { result: 'success' })).toBe(10);
    expect(await relayMetric(relay, RELOADS, { result: 'failure' })).toBe(0);
  });

  it('keeps a WatchAlerts stream from an mTLS node open across ten in-place rewrites of server.key and server.crt, and a new connection sees each new server serial before the periodic check could have', async () => {
    const ca = await newCa('inplace-ca');
    const dir = dirFor('relay-tls-inplace-');
    const first = await generation(ca);
    writeExternal(dir, first);
    const { node } = await alertNode(ca.certPem, await leaf(ca, 'server'), 'inplace-node');
    const relay = await relayFor([...tlsArgs('external', dir), `--nodes=${node.target}`]);
    const consumer = consumerTransport(ca.certPem, first.client);
    const watch = rawWatch(relay.target, 'alert', 'policy', consumer.channelCredentials('127.0.0.1'));
    cleanups.push(() => watch.close());

    await rotateTenTimes(relay, watch, first.client, () => consumer.channelCredentials('127.0.0.1'), async () => {
      const next = await leaf(ca, 'server');
      // key first, then certificate: between the two writes the pair does not match, which
      // the manager must never serve (it validates, and confirms the content has settled)
      writeFileSync(join(dir, 'server.key'), next.keyPem, { mode: 0o600 });
      writeFileSync(join(dir, 'server.crt'), next.certPem);
      return serialOf(next.certPem);
    });

    expect(node.requests.filter((r) => r.kind === 'alert')).toHaveLength(1);
    expect(await relayMetric(relay, RELOADS, { result: 'success' })).toBe(10);
  });

  it('keeps serving the old certificate when server.crt becomes garbage or server.key stops matching it, counts each rejected reload, and recovers without a restart once the files are repaired', async () => {
    const ca = await newCa('corrupt-ca');
    const dir = dirFor('relay-tls-corrupt-');
    const first = await generation(ca);
    writeExternal(dir, first);
    const relay = await relayFor(tlsArgs('external', dir));
    const oldSerial = serialOf(first.server.certPem);
    const consumer = consumerTransport(ca.certPem, first.client);
    const pid = relay.proc.pid;
    const failures = () => relayMetric(relay, RELOADS, { result: 'failure' });
    const rejectedBecause = (pattern: RegExp) => relay.waitForLog((l) => l.msg === REJECTED && pattern.test(String(l.reason)), 10_000);
    expect(await failures()).toBe(0);

    // garbage in place of the certificate
    writeFileSync(join(dir, 'server.crt'), 'this is not a certificate\n');
    await eventually(async () => (await failures()) >= 1 || undefined, 10_000, 'a failed reload for a garbage server.crt');
    const garbage = await rejectedBecause(/server\.crt/);
    expect(garbage.level).toBe(40);
    expect((await handshake(relay.grpcPort, first.client)).cert.serialNumber).toBe(oldSerial);
    expect(await healthCheck(relay.target, consumer.channelCredentials('127.0.0.1'), 7)).toBe(7);

    // a valid certificate with another certificate's key
    const fixed = await leaf(ca, 'server');
    const stranger = await leaf(ca, 'server');
    const failedSoFar = await failures();
    writeFileSync(join(dir, 'server.key'), stranger.keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'server.crt'), fixed.certPem);
    await eventually(async () => (await failures()) > failedSoFar || undefined, 10_000, 'a failed reload for a mismatched server.key');
    await rejectedBecause(/server\.key does not match server\.crt/);
    expect((await handshake(relay.grpcPort, first.client)).cert.serialNumber).toBe(oldSerial);
    expect(await healthCheck(relay.target, consumer.channelCredentials('127.0.0.1'), 8)).toBe(8);

    // repaired: the matching key arrives, the same process serves the new certificate
    writeFileSync(join(dir, 'server.key'), fixed.keyPem, { mode: 0o600 });
    await seesServerSerial(relay.grpcPort, first.client, serialOf(fixed.certPem), 10_000);
    expect(await healthCheck(relay.target, consumer.channelCredentials('127.0.0.1'), 9)).toBe(9);
    expect(relay.proc.pid).toBe(pid);
    expect(relay.proc.exitCode).toBeNull();
    expect(await relayMetric(relay, RELOADS, { result: 'success' })).toBeGreaterThanOrEqual(1);
  });
});

describe('relay process, --tlsCertProvider=self: who may connect, and the certificate it serves', () => {
  let ca: TestCa;
  let dir: { path: string; remove(): void };
  let relay: RelayProcess;
  let client: IssuedPair;

  beforeAll(async () => {
    ca = await newCa('self-relay-ca');
    client = await leaf(ca, 'client');
    dir = tempDir('relay-tls-self-');
    writeFileSync(join(dir.path, 'ca.crt'), ca.certPem);
    writeFileSync(join(dir.path, 'ca.key'), ca.keyPem, { mode: 0o600 });
    relay = await startRelayProcess({ args: tlsArgs('self', dir.path, ['--extraDnsNames=relay.example.test']) });
  });
  afterAll(async () => {
    await relay?.stop();
    dir?.remove();
  });

  const refusals = (reason: string) => relayMetric(relay, FAILURES, { side: 'server', reason });

  /** The relay's warn line for a refusal: the peer's address, the reason and a detail. */
  async function expectRefusalLogged(reason: string, detail: RegExp): Promise<LogLine> {
    const line = await relay.waitForLog((l) => l.msg === 'TLS connection refused' && l.reason === reason, 10_000);
    expect(line).toMatchObject({ level: 40, side: 'server', reason, peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
    expect(String(line.detail)).toMatch(detail);
    return line;
  }

  it('refuses a client that presents no certificate, logging peer and reason and counting reason="no_certificate"', async () => {
    const before = await refusals('no_certificate');
    await new Promise<void>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: relay.grpcPort, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
      socket.on('error', () => undefined);
      socket.on('close', () => resolve());
      setTimeout(() => reject(new Error('the relay did not close a connection without a client certificate')), 10_000).unref();
    });
    await eventually(async () => (await refusals('no_certificate')) > before || undefined, 10_000, 'the no_certificate refusal to be counted');
    await expectRefusalLogged('no_certificate', /no client certificate/);
  });

  const refused: Array<[string, string, RegExp, () => Promise<IssuedPair>]> = [
    ['a client certificate from another CA', 'unknown_authority', /is not signed by any trusted CA/, async () => leaf(await newCa('stranger-ca'), 'client')],
    ['an expired client certificate', 'expired', /expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/, () => leaf(ca, 'client', { now: new Date(Date.now() - 3 * DAY), validityMs: DAY })],
    ['a client certificate not valid until tomorrow', 'not_yet_valid', /is not valid before/, () => leaf(ca, 'client', { now: new Date(Date.now() + DAY) })],
    ['a server-only certificate (EKU serverAuth) used as a client certificate', 'bad_key_usage', /not valid for clientAuth/, () => leaf(ca, 'server')],
  ];
  for (const [what, reason, detail, make] of refused) {
    it(`refuses ${what}, logging peer and reason and counting reason="${reason}"`, async () => {
      const before = await refusals(reason);
      await expect(healthCheck(relay.target, consumerTransport(ca.certPem, await make()).channelCredentials('127.0.0.1'), 1, 10_000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      await eventually(async () => (await refusals(reason)) > before || undefined, 10_000, `the ${reason} refusal to be counted`);
      await expectRefusalLogged(reason, detail);
    });
  }

  it('refuses plaintext gRPC on the TLS port, logging peer and reason and counting reason="not_tls"', async () => {
    const before = await refusals('not_tls');
    await expect(healthCheck(relay.target, grpc.credentials.createInsecure(), 1, 10_000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    await eventually(async () => (await refusals('not_tls')) > before || undefined, 10_000, 'the not_tls refusal to be counted');
    await expectRefusalLogged('not_tls', /./);
  });

  it('verifies as server name localhost and as 127.0.0.1, for our consumer and for openssl', async () => {
    expect(await healthCheck(relay.target, consumerTransport(ca.certPem, client).channelCredentials('localhost'), 11)).toBe(11);
    expect(await healthCheck(relay.target, consumerTransport(ca.certPem, client).channelCredentials('127.0.0.1'), 12)).toBe(12);
    const work = dirFor('relay-tls-openssl-');
    const files = pemFiles(work, { 'ca.crt': ca.certPem, 'c.crt': client.certPem, 'c.key': client.keyPem });
    const common = ['s_client', '-connect', `127.0.0.1:${relay.grpcPort}`, '-alpn', 'h2', '-cert', files['c.crt']!, '-key', files['c.key']!, '-CAfile', files['ca.crt']!, '-verify_return_error'];
    for (const check of [['-verify_hostname', 'localhost', '-servername', 'localhost'], ['-verify_ip', '127.0.0.1']]) {
      const { code, output } = await runCommand('openssl', [...common, ...check]);
      expect(output).toMatch(/Verify return code: 0 \(ok\)/);
      expect(code).toBe(0);
    }
  });

  it('serves a certificate whose subject alternative names include --extraDnsNames=relay.example.test, localhost and 127.0.0.1', async () => {
    const { cert } = await handshake(relay.grpcPort, client, 'relay.example.test');
    const sans = (cert.subjectAltName ?? '').split(', ');
    expect(sans).toEqual(expect.arrayContaining(['DNS:relay.example.test', 'DNS:localhost', 'IP Address:127.0.0.1']));
    expect(await healthCheck(relay.target, consumerTransport(ca.certPem, client, 'relay.example.test').channelCredentials('127.0.0.1'), 13)).toBe(13);
  });

  it('negotiates ALPN h2 with TLS 1.2 or later for openssl s_client presenting a client certificate, which the relay accepts', async () => {
    const work = dirFor('relay-tls-sclient-');
    const files = pemFiles(work, { 'ca.crt': ca.certPem, 'c.crt': client.certPem, 'c.key': client.keyPem });
    const accepted = relay.logs.filter((l) => l.msg === 'client certificate accepted').length;
    const { code, output } = await runCommand('openssl', [
      's_client', '-connect', `127.0.0.1:${relay.grpcPort}`, '-alpn', 'h2', '-cert', files['c.crt']!, '-key', files['c.key']!, '-CAfile', files['ca.crt']!,
    ]);
    expect(code).toBe(0);
    expect(output).toMatch(/ALPN protocol: h2/);
    expect(output).toMatch(/New, TLSv1\.[23], Cipher is/);
    expect(output).toMatch(/Verify return code: 0 \(ok\)/);
    await eventually(() => relay.logs.filter((l) => l.msg === 'client certificate accepted').length > accepted || undefined, 10_000, 'the relay to accept the openssl client');
  });
});

describe('relay process with operator- and karmor-shaped certificates', () => {
  it('accepts a karmor-shaped client certificate under an operator CA whose self-signature does not verify, and streams the events of a node daemon whose certificate has the same shape with only SAN IP:127.0.0.1', async () => {
    const work = dirFor('relay-tls-operator-');
    const operator = operatorCa(work);
    const karmor = karmorLeaf(work, 'karmor', 'client');
    const nodeCert = karmorLeaf(work, 'node', 'server', '127.0.0.1');

    // the shapes, as the operator and karmor make them
    const caCert = new X509Certificate(operator.certPem);
    expect(operator.keyPem).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
    expect(caCert.verify(caCert.publicKey)).toBe(false);
    for (const [pair, sans] of [
      [karmor, undefined],
      [nodeCert, 'IP Address:127.0.0.1'],
    ] as const) {
      const cert = new X509Certificate(pair.certPem);
      expect(cert.serialNumber).toBe('01');
      expect(cert.subject).toBe(caCert.subject);
      expect(cert.issuer).toBe(caCert.subject);
      expect(cert.subjectAltName).toBe(sans);
      expect(cert.publicKey.asymmetricKeyType).toBe('rsa');
      expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
      expect(new x509.X509Certificate(pair.certPem).getExtension(x509.AuthorityKeyIdentifierExtension)).toBeNull();
    }

    const relayDir = dirFor('relay-tls-operator-relay-');
    writeFileSync(join(relayDir, 'ca.crt'), operator.certPem);
    writeFileSync(join(relayDir, 'ca.key'), operator.keyPem, { mode: 0o600 });
    const { node } = await alertNode(operator.certPem, nodeCert, 'operator-node');
    const relay = await relayFor([...tlsArgs('self', relayDir), `--nodes=${node.target}`]);

    // karmor verifies the relay as localhost (port-forward) against the operator CA
    const karmorSide = consumerTransport(operator.certPem, karmor);
    const watch = rawWatch(relay.target, 'alert', 'policy', karmorSide.channelCredentials('localhost'));
    cleanups.push(() => watch.close());
    await watch.waitFor(5);
    expect(hostNames(watch)).toEqual(new Set(['operator-node']));
    expect(await healthCheck(relay.target, karmorSide.channelCredentials('localhost'), 5)).toBe(5);
    const accepted = await relay.waitForLog((l) => l.msg === 'client certificate accepted' && l.serial === '01');
    expect(accepted.subject).toBe('O=kubearmor, CN=kubearmor');
    await relay.waitForLog((l) => l.msg === 'node connected');
  });
});

describe('relay process, CA rotation through a projected secret volume', () => {
  it('accepts an old-CA client while ca.crt holds old and new CAs, refuses it once the old CA is dropped, and accepts a new-CA client at every step', async () => {
    const oldCa = await newCa('old-ca');
    const nextCa = await newCa('new-ca');
    const both = oldCa.certPem + nextCa.certPem;
    const dir = dirFor('relay-tls-ca-rotation-');
    const volume = new KubeletVolume(dir);
    volume.publish(externalContents(await generation(oldCa)));
    const relay = await relayFor(tlsArgs('external', dir));

    const oldLeaf = await leaf(oldCa, 'client');
    const newLeaf = await leaf(nextCa, 'client');
    // consumers trust both CAs, so only the relay's trust decides
    const oldClient = consumerTransport(both, oldLeaf);
    const newClient = consumerTransport(both, newLeaf);
    const works = async (c: typeof oldClient, nonce: number) => expect(await healthCheck(relay.target, c.channelCredentials('127.0.0.1'), nonce)).toBe(nonce);
    await works(oldClient, 1);

    const steps: Array<[string, ExternalGeneration, boolean]> = [
      ['ca.crt = old + new, leaves from the old CA', await generation(oldCa, both), true],
      ['ca.crt = old + new, leaves from the new CA', await generation(oldCa, both, nextCa), true],
      ['ca.crt = new only', await generation(nextCa), false],
    ];
    let nonce = 10;
    for (const [step, g, oldAccepted] of steps) {
      volume.publish(externalContents(g));
      await seesServerSerial(relay.grpcPort, newLeaf, serialOf(g.server.certPem), WATCH_BOUND_MS).catch((err: Error) => {
        throw new Error(`${step}: ${err.message}`);
      });
      await works(newClient, nonce++);
      if (oldAccepted) {
        await works(oldClient, nonce++);
        continue;
      }
      const before = await relayMetric(relay, FAILURES, { side: 'server', reason: 'unknown_authority' });
      await expect(healthCheck(relay.target, oldClient.channelCredentials('127.0.0.1'), nonce++, 10_000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      await eventually(async () => (await relayMetric(relay, FAILURES, { side: 'server', reason: 'unknown_authority' })) > before || undefined, 10_000, 'the old-CA client refusal');
      const line = await relay.waitForLog((l) => l.msg === 'TLS connection refused' && l.reason === 'unknown_authority');
      expect(String(line.detail)).toMatch(/issued by "O=kubearmor, CN=old-ca" is not signed by any trusted CA \(O=kubearmor, CN=new-ca\)/);
    }
    expect(await relayMetric(relay, RELOADS, { result: 'success' })).toBe(3);
  });
});

describe('relay process, --tlsCertProvider=self renewal', () => {
  it('renews a self-issued server certificate with --certValidity=6s before the first one expires, and a consumer connecting again and again never meets an expired certificate', async () => {
    const ca = await newCa('renewal-ca');
    const dir = dirFor('relay-tls-renewal-');
    writeFileSync(join(dir, 'ca.crt'), ca.certPem);
    writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
    const relay = await relayFor(tlsArgs('self', dir, ['--certValidity=6s']));
    const client = await leaf(ca, 'client');
    const consumer = consumerTransport(ca.certPem, client);

    const first = await handshake(relay.grpcPort, client);
    const firstSerial = first.cert.serialNumber;
    const firstNotAfter = notAfter(first.cert).getTime();
    expect(firstNotAfter - first.startedAt).toBeLessThanOrEqual(6000);

    const serials = new Set<string>();
    const expiredSeen: string[] = [];
    const callFailures: string[] = [];
    let renewedAt: number | undefined;
    let nonce = 100;
    // connect again and again until well past the first certificate's NotAfter
    while (Date.now() < firstNotAfter + 1500) {
      const h = await handshake(relay.grpcPort, client);
      const serial = h.cert.serialNumber;
      serials.add(serial);
      // the relay picked the certificate after startedAt: it must not have expired by then
      if (notAfter(h.cert).getTime() <= h.startedAt) expiredSeen.push(`serial ${serial} notAfter ${h.cert.validTo} served to a connection started at ${new Date(h.startedAt).toISOString()}`);
      if (serial !== firstSerial) renewedAt ??= h.at; // the new certificate was being served by then
      try {
        // our consumer verifies the server itself (chain, validity, name) at every new connection
        await healthCheck(relay.target, consumer.channelCredentials('localhost'), nonce++, 10_000);
      } catch (err) {
        callFailures.push((err as Error).message);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const renewals = relay.logs.filter((l) => l.msg === 'TLS material replaced').map((l) => `${new Date(Number(l.time)).toISOString()} ${JSON.stringify(l.server)}`);
    expect(expiredSeen, `renewals logged by the relay: ${renewals.join('; ')}`).toEqual([]);
    expect(callFailures).toEqual([]);
    expect(renewedAt, 'the served serial never changed').toBeDefined();
    expect(renewedAt!).toBeLessThan(firstNotAfter);
    expect(serials.size).toBeGreaterThanOrEqual(2);
  });
});
