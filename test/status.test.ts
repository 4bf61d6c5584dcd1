// GET /status of a relay serving mutual TLS, in this process: node daemons by name with
// their state and the reason they are not connected, consumers with the subject of their
// client certificates, and the relay's certificates, all from real sockets and handshakes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import type { CertManager } from '../certs/manager.js';
import { HUB_DEFAULTS } from '../server/hub.js';
import { Relay } from '../server/relay.js';
import type { RelayStatus } from '../server/status.js';
import { openMutualTls } from '../server/tls.js';
import { watch, type WatchHandle } from '../server/tools/logs.js';
import { freePort } from '../harness/free-port.js';
import { eventually } from '../harness/eventually.js';
import { captureLogger, leaf, newCa, tempDir, writeExternal } from './helpers/certs-fixtures.js';
import { consumerTransport, startTlsNode, type TlsNode } from './helpers/tls-peers.js';

describe('GET /status of a relay on mutual TLS', () => {
  const dir = tempDir('status-');
  let relay: Relay;
  let manager: CertManager;
  let good: TlsNode;
  let foreign: TlsNode;
  let consumer: WatchHandle;
  let relayCerts: { ca: string; server: string; client: string };

  const status = async (): Promise<RelayStatus> => (await (await fetch(`http://127.0.0.1:${relay.httpPort}/status`)).json()) as RelayStatus;

  beforeAll(async () => {
    const ca = await newCa('status-ca');
    const other = await newCa('someone-elses-ca');
    const server = await leaf(ca, 'server', { commonName: 'relay-under-test' });
    const client = await leaf(ca, 'client', { commonName: 'relay-client' });
    writeExternal(dir.path, { caPem: ca.certPem, server, client });
    relayCerts = { ca: ca.certPem, server: server.certPem, client: client.certPem };
    good = await startTlsNode(ca.certPem, await leaf(ca, 'server'), { nodeName: 'worker-1', rate: 20 });
    foreign = await startTlsNode(other.certPem, await leaf(other, 'server'), { nodeName: 'worker-x' });
    const logger = captureLogger().logger;
    const tls = await openMutualTls({ provider: 'external', dir: dir.path, logger });
    manager = tls.manager;
    relay = new Relay({
      listenAddress: '127.0.0.1',
      grpcPort: 0,
      httpPort: await freePort(),
      nodes: [good.node.target, foreign.node.target],
      queue: HUB_DEFAULTS.queue,
      stallMs: HUB_DEFAULTS.stallMs,
      transport: tls.transport,
      logger,
      stdoutKinds: [],
      certificates: manager,
      backoff: { initialMs: 200, maxMs: 1000 },
    });
    await relay.start();
    consumer = watch({
      target: `127.0.0.1:${relay.grpcPort}`,
      streams: [{ kind: 'alert', filter: 'policy' }, { kind: 'message', filter: '' }],
      transport: consumerTransport(ca.certPem, await leaf(ca, 'client', { commonName: 'siem-adapter' })),
      onEvent: () => undefined,
    });
    await consumer.ready;
  });

  afterAll(async () => {
    await consumer?.close();
    await relay?.close();
    manager?.close();
    await good?.close();
    await foreign?.close();
    dir.remove();
  });

  it('says the relay is ready, with its version, transport and uptime', async () => {
    const { relay: r } = await status();
    expect(r.ready).toBe(true);
    expect(r.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(r.transport).toMatch(/^mutual TLS \(external /);
    expect(r.uptimeSeconds).toBeGreaterThanOrEqual(0);
  });

  it('names a node by the HostName of its events and reports it connected, with its recent events per second', async () => {
    const node = await eventually(async () => {
      const n = (await status()).nodes.find((x) => x.address === good.node.target);
      return n?.connected && n.name && n.lastEventAt && n.eventsPerSecond.alert > 0 ? n : undefined;
    }, 15_000, 'the node connected, named and sending');
    expect(node).toMatchObject({ name: 'worker-1', source: 'static', connected: true });
    expect(node.eventsPerSecond.log).toBeGreaterThan(0);
    expect(node.eventsPerSecond.message).toBeGreaterThan(0);
  });

  it('reports a node whose certificate it refuses as disconnected, with the refusal reason', async () => {
    const node = await eventually(async () => (await status()).nodes.find((x) => x.address === foreign.node.target && x.lastError), 15_000, 'a failed dial to the foreign node');
    expect(node.connected).toBe(false);
    expect(node.name).toBeNull();
    expect(node.lastError).toMatch(/unknown_authority/);
    expect(node.lastEventAt).toBeNull();
  });

  it('lists each consumer stream with its kind, filter, queue and drops, and the subject of its client certificate', async () => {
    const { consumers } = await status();
    expect(consumers.map((c) => [c.kind, c.filter]).sort()).toEqual([
      ['alert', 'policy'],
      ['message', ''],
    ]);
    for (const c of consumers) {
      expect(c.subject).toBe('O=kubearmor, CN=siem-adapter');
      expect(c.peer).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(c).toMatchObject({ queuedEvents: expect.any(Number), queuedBytes: expect.any(Number), dropped: 0, stalled: false });
    }
  });

  it('shows the CA, server and client certificates with subject, serial and expiry, and the last reload', async () => {
    const { certificates } = await status();
    expect(certificates.map((c) => c.role)).toEqual(['ca', 'server', 'client']);
    for (const c of certificates) {
      const pem = relayCerts[c.role];
      const cert = new X509Certificate(pem);
      expect(c.serial).toBe(cert.serialNumber);
      expect(new Date(c.notAfter).getTime()).toBe(new Date(cert.validTo).getTime());
      expect(c.lastReloadResult).toBe('success');
    }
    expect(certificates.find((c) => c.role === 'server')?.subject).toBe('O=kubearmor, CN=relay-under-test');
  });

  it('holds no key material and no certificate bodies', async () => {
    const text = await (await fetch(`http://127.0.0.1:${relay.httpPort}/status`)).text();
    expect(text).not.toMatch(/BEGIN|PRIVATE|MII/);
  });
});
