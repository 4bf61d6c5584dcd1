import * as grpc from '@grpc/grpc-js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { IssuedPair } from '../certs/issue.js';
import { KubeletVolume, externalContents, type ExternalGeneration } from './helpers/tls-volume.js';
import { CertManager } from '../certs/manager.js';
import { MutualTlsTransport } from '../server/tls.js';
import {
  type Served,
  StaticSource,
  type TestCa,
  callEcho,
  captureLogger,
  leaf,
  metricValue,
  newCa,
  rawMaterial,
  serialOf,
  serveEcho,
  serverSerialSeen,
  tempDir,
  waitFor,
  writeExternal,
} from './helpers/certs-fixtures.js';

/** Well below the 60 s periodic check the managers here use: a change seen within it came through the watch. */
const WATCH_BOUND_MS = 10_000;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function generation(ca: TestCa, caPem = ca.certPem): Promise<ExternalGeneration> {
  return { caPem, server: await leaf(ca, 'server'), client: await leaf(ca, 'client') };
}

async function relayOn(dir: string, registry = new Registry()): Promise<{ manager: CertManager; served: Served; registry: Registry }> {
  const { logger } = captureLogger();
  // a long periodic check: only the directory watch can pick changes up within WATCH_BOUND_MS
  const manager = new CertManager({ provider: 'external', dir, logger, registry, checkIntervalMs: 60_000 });
  await manager.start();
  const served = await serveEcho(new MutualTlsTransport(manager, { logger, registry }));
  cleanups.push(async () => {
    await served.close();
    manager.close();
  });
  return { manager, served, registry };
}

function consumerWith(caPem: string, client: IssuedPair): MutualTlsTransport {
  return new MutualTlsTransport(new StaticSource(rawMaterial(caPem, { client })), { logger: captureLogger().logger });
}

describe('certificate rotation under a running server', () => {
  it('picks up a kubelet ..data symlink swap through the directory watch: new handshakes see the new serial, an established channel keeps working', async () => {
    const ca = await newCa('rotation-ca');
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const volume = new KubeletVolume(dir.path);
    const first = await generation(ca);
    volume.publish(externalContents(first));
    const { manager, served } = await relayOn(dir.path);
    expect(await serverSerialSeen(served.port, first.client)).toBe(serialOf(first.server.certPem));

    const consumer = consumerWith(ca.certPem, first.client);
    const channel = new grpc.Client(`127.0.0.1:${served.port}`, consumer.channelCredentials('127.0.0.1'));
    cleanups.push(() => channel.close());
    const callOn = () =>
      new Promise<string>((resolve, reject) =>
        channel.makeUnaryRequest('/test.Echo/Who', (b: Buffer) => b, (b: Buffer) => b, Buffer.from('again'), { deadline: Date.now() + 3000 }, (err, reply) =>
          err ? reject(err) : resolve(reply!.toString()),
        ),
      );
    expect(await callOn()).toBe('hello again');

    const second = await generation(ca);
    volume.publish(externalContents(second));
    await waitFor(async () => (await serverSerialSeen(served.port, first.client)) === serialOf(second.server.certPem), 'the new server serial in a new handshake', WATCH_BOUND_MS);
    expect(manager.current().generation).toBe(2);
    expect(await callOn()).toBe('hello again');
    expect(await callEcho(consumerWith(ca.certPem, second.client), '127.0.0.1', served.port)).toMatchObject({ ok: true });
  });

  it('picks up an in-place rewrite of the files through the directory watch', async () => {
    const ca = await newCa('inplace-ca');
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const first = await generation(ca);
    writeExternal(dir.path, first);
    const { served, registry } = await relayOn(dir.path);
    const second = await generation(ca);
    writeExternal(dir.path, second);
    await waitFor(async () => (await serverSerialSeen(served.port, first.client)) === serialOf(second.server.certPem), 'the rewritten server certificate', WATCH_BOUND_MS);
    expect(await metricValue(registry, 'kubearmor_relay_cert_reloads_total', { result: 'success' })).toBe(1);
  });

  it('rotates the CA: a bundle of old and new CAs accepts both generations of clients; dropping the old CA refuses old clients', async () => {
    const oldCa = await newCa('old-ca');
    const newCaPair = await newCa('new-ca');
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const volume = new KubeletVolume(dir.path);
    volume.publish(externalContents(await generation(oldCa)));
    const { manager, served, registry } = await relayOn(dir.path);
    const both = oldCa.certPem + newCaPair.certPem;
    const oldClient = consumerWith(both, await leaf(oldCa, 'client'));
    const newClient = consumerWith(both, await leaf(newCaPair, 'client'));
    expect(await callEcho(oldClient, 'localhost', served.port)).toMatchObject({ ok: true });

    // stage 1: trust both, serve leaves from the new CA
    volume.publish(externalContents(await generation(newCaPair, both)));
    await waitFor(() => manager.current().generation === 2, 'stage 1', WATCH_BOUND_MS);
    expect(await callEcho(oldClient, 'localhost', served.port)).toMatchObject({ ok: true });
    expect(await callEcho(newClient, 'localhost', served.port)).toMatchObject({ ok: true });

    // stage 2: drop the old CA
    volume.publish(externalContents(await generation(newCaPair)));
    await waitFor(() => manager.current().generation === 3, 'stage 2', WATCH_BOUND_MS);
    expect(await callEcho(newClient, 'localhost', served.port)).toMatchObject({ ok: true });
    expect(await callEcho(oldClient, 'localhost', served.port, 3000)).toMatchObject({ ok: false });
    await waitFor(async () => (await metricValue(registry, 'kubearmor_relay_tls_handshake_failures_total', { side: 'server', reason: 'unknown_authority' })) === 1, 'the refusal');
  });

  it('renews self-issued certificates with a lifetime of a few seconds; calls across renewals never meet an expired certificate', async () => {
    const ca = await newCa('renew-ca');
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    writeFileSync(join(dir.path, 'ca.crt'), ca.certPem);
    writeFileSync(join(dir.path, 'ca.key'), ca.keyPem);
    const { logger } = captureLogger();
    const manager = new CertManager({ provider: 'self', dir: dir.path, logger, validityMs: 4500 });
    await manager.start();
    const relay = new MutualTlsTransport(manager, { logger });
    const served = await serveEcho(relay);
    cleanups.push(async () => {
      await served.close();
      manager.close();
    });
    // the relay dials itself too, so its own client identity is renewed under use as well
    const probe = await leaf(ca, 'client');
    const serials = new Set<string>();
    const failures: string[] = [];
    const until = Date.now() + 7000;
    while (Date.now() < until) {
      const outcome = await callEcho(relay, 'localhost', served.port, 2000);
      if (!outcome.ok) failures.push(outcome.details);
      serials.add(await serverSerialSeen(served.port, probe));
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(failures).toEqual([]);
    expect(manager.current().generation).toBeGreaterThanOrEqual(3);
    expect(serials.size).toBeGreaterThanOrEqual(2);
  });
});
