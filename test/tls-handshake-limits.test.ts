// What a peer without a certificate can hold: nothing past the handshake deadline, and no
// more than the pending caps allow, while real consumers keep being served.
import { connect, type Socket } from 'node:net';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MutualTlsTransport } from '../server/tls.js';
import { StaticSource, type Served, type TestCa, callEcho, captureLogger, leaf, metricValue, newCa, rawMaterial, serveEcho, waitFor } from './helpers/certs-fixtures.js';

const FAILURES = 'kubearmor_relay_tls_handshake_failures_total';

describe('connections that do not complete a verified handshake', () => {
  let ca: TestCa;
  let served: Served;
  const registry = new Registry();
  const open: Socket[] = [];

  beforeAll(async () => {
    ca = await newCa('limits-ca');
    const server = await leaf(ca, 'server', { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    const relay = new MutualTlsTransport(new StaticSource(rawMaterial(ca.certPem, { server })), {
      logger: captureLogger().logger,
      registry,
      handshake: { timeoutMs: 400, maxPending: 6, maxPendingPerSource: 3 },
    });
    served = await serveEcho(relay);
  });
  afterAll(async () => {
    for (const s of open) s.destroy();
    await served.close();
  });

  const refusals = (reason: string) => metricValue(registry, FAILURES, { side: 'server', reason });

  /** A TCP connection from `localAddress`; resolves when the server has accepted it. */
  const tcp = (localAddress = '127.0.0.1'): Promise<Socket & { closedByServer: Promise<void> }> =>
    new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: served.port, localAddress }) as Socket & { closedByServer: Promise<void> };
      socket.closedByServer = new Promise((done) => socket.once('close', () => done()));
      socket.on('error', () => undefined);
      socket.once('connect', () => resolve(socket));
      socket.once('error', reject);
      open.push(socket);
    });

  const consumer = async () => new MutualTlsTransport(new StaticSource(rawMaterial(ca.certPem, { client: await leaf(ca, 'client') })), { logger: captureLogger().logger, registry: new Registry() });

  it('closes an idle TCP connection when the handshake deadline passes and counts a timeout', async () => {
    const before = await refusals('timeout');
    const idle = await tcp();
    await idle.closedByServer;
    expect(await refusals('timeout')).toBe(before + 1);
  });

  it('closes a connection that sends its ClientHello one byte at a time', async () => {
    const slow = await tcp();
    const hello = Buffer.from('16030100f4010000f00303', 'hex');
    let i = 0;
    const drip = setInterval(() => (i < hello.length && !slow.destroyed ? slow.write(hello.subarray(i, ++i)) : clearInterval(drip)), 100);
    await slow.closedByServer;
    clearInterval(drip);
    expect(i).toBeLessThan(hello.length);
  });

  it('refuses connections past the per-source cap at once, counted, and admits another source', async () => {
    const before = await refusals('too_many_pending');
    const held = await Promise.all([tcp(), tcp(), tcp()]);
    const extra = await tcp();
    await extra.closedByServer;
    expect(await refusals('too_many_pending')).toBe(before + 1);
    const other = await tcp('127.0.0.2');
    const early = await Promise.race([other.closedByServer.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 100))]);
    expect(early).toBe('open');
    for (const s of [...held, other]) s.destroy();
  });

  it('refuses connections past the total cap, counted', async () => {
    const before = await refusals('too_many_pending');
    const held = await Promise.all([tcp('127.0.0.1'), tcp('127.0.0.1'), tcp('127.0.0.2'), tcp('127.0.0.2'), tcp('127.0.0.3'), tcp('127.0.0.3')]);
    const extra = await tcp('127.0.0.4');
    await extra.closedByServer;
    expect(await refusals('too_many_pending')).toBe(before + 1);
    for (const s of held) s.destroy();
  });

  it('serves a real consumer once the pending connections are gone', async () => {
    const held = await Promise.all([tcp(), tcp(), tcp()]);
    for (const s of held) s.destroy();
    await waitFor(async () => (await callEcho(await consumer(), '127.0.0.1', served.port, 2000)).ok, 'a consumer call to succeed');
  });
});
