// The relay between two gRPC implementations that are not grpc-js: a Python node daemon
// and a Python consumer. A wire mistake that grpc-js forgives on both ends shows up here.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { openMutualTls } from '../server/tls.js';
import { createEventSource } from '../server/tools/events.js';
import { KINDS, type Kind } from '../server/kinds.js';
import { decodeToObject, encodeFromObject, type EventObject } from '../server/proto.js';
import { normalizePythonEvent, runPythonConsumer, startPythonNode, whileConsumerRuns, type PythonNode } from './helpers/python-peers.js';
import { MAIN, eventually, freePort, metricValue, startRelayProcess, type RelayProcess } from './helpers/relay-process.js';

describe('relay between Python gRPC peers', () => {
  let relay: RelayProcess | undefined;
  let node: PythonNode | undefined;
  afterAll(async () => {
    await node?.stop();
    await relay?.stop();
  });

  it('carries every field of every kind from a Python node daemon to a Python consumer', async () => {
    const source = createEventSource({ seed: 7, nodeName: 'py-node' });
    const events: Record<Kind, EventObject[]> = { alert: [], log: [], message: [] };
    for (const spec of KINDS) for (let i = 0; i < 5; i++) events[spec.kind].push(source.next(spec.kind));
    // a sparse alert: only an empty Owner sub-message, whose presence must survive
    events.alert.push({ HostName: 'py-node', Owner: {} });

    const port = await freePort();
    relay = await startRelayProcess({ args: [`--nodes=127.0.0.1:${port}`] });
    const total = 16;
    const consumer = runPythonConsumer({ target: relay.target, watch: ['alert:policy', 'log:system', 'message:'], count: total, timeoutSeconds: 40, healthcheck: 4242 });
    await whileConsumerRuns(
      consumer,
      eventually(async () => {
        const text = await relay!.metrics();
        return KINDS.every((s) => metricValue(text, 'kubearmor_relay_clients', { kind: s.kind }) === 1) || undefined;
      }, 30_000, 'the Python consumer to subscribe'),
    );
    node = await startPythonNode(events, port);

    const result = await consumer;
    expect(result.code, result.stderr).toBe(0);
    expect(result.retval).toBe(4242);
    for (const spec of KINDS) {
      const got = result.events.filter((e) => e.kind === spec.kind).map((e) => normalizePythonEvent(e.event));
      // what the Python node encodes from these objects, decoded the same way on our side
      const expected = events[spec.kind].map((o) => decodeToObject(spec.type, encodeFromObject(spec.type, o)));
      expect(got).toEqual(expected);
    }
    const sparse = result.events.filter((e) => e.kind === 'alert').at(-1)!.event;
    expect(sparse).toHaveProperty('Owner');
  });

  it('serves a Python consumer over mutual TLS with certificates from `certs init`, verified by Python\'s own TLS stack', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relay-py-tls-'));
    const init = spawnSync(process.execPath, [MAIN, 'certs', 'init', '--out', dir], { encoding: 'utf8' });
    expect(init.status, init.stderr).toBe(0);
    const clientDir = join(dir, 'consumer');
    const client = spawnSync(process.execPath, [MAIN, 'certs', 'client', '--ca', dir, '--out', clientDir], { encoding: 'utf8' });
    expect(client.status, client.stderr).toBe(0);

    const nodePort = await freePort();
    const tlsRelay = await startRelayProcess({ args: [`--nodes=127.0.0.1:${nodePort}`, '--tlsEnabled', `--tlsCertPath=${dir}`] });
    const { transport, manager } = await openMutualTls({ provider: 'external', dir, roles: ['server'], logger: pino({ level: 'silent' }) });
    let fake: FakeNode | undefined;
    try {
      const consumer = runPythonConsumer({ target: tlsRelay.target, watch: ['alert:all'], count: 5, timeoutSeconds: 40, healthcheck: 7, tlsDir: clientDir, serverName: 'localhost' });
      await whileConsumerRuns(consumer, eventually(async () => metricValue(await tlsRelay.metrics(), 'kubearmor_relay_clients', { kind: 'alert' }) === 1 || undefined, 30_000, 'the Python consumer over TLS'));
      fake = await startFakeNode({ port: nodePort, nodeName: 'tls-node', rate: 50, kinds: ['alert'], transport });
      const result = await consumer;
      expect(result.code, result.stderr).toBe(0);
      expect(result.retval).toBe(7);
      expect(result.events).toHaveLength(5);
      expect(result.events[0]!.event.HostName).toBe('tls-node');
    } finally {
      await fake?.close();
      manager.close();
      await tlsRelay.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
