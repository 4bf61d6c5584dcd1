// The relay end to end: real node daemons (simulated) on loopback, the relay started as
// its own process, consumers dialing it over real sockets.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { KINDS, type Kind } from '../server/kinds.js';
import { decodeToObject, types } from '../server/proto.js';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { eventually, freePort, metricValue, startRelayProcess, type RelayProcess } from './helpers/relay-process.js';
import { rawHealthCheck, rawWatch, type RawWatch } from './helpers/raw-client.js';

const EVENTS_PER_KIND = 50;

describe('relay with two node daemons', () => {
  let nodes: FakeNode[];
  let relay: RelayProcess;
  const watches: RawWatch[] = [];

  let ports: number[];

  beforeAll(async () => {
    // The relay starts first and finds its nodes down: it must keep redialling them.
    ports = [await freePort(), await freePort()];
    relay = await startRelayProcess({ args: [`--nodes=${ports.map((p) => `127.0.0.1:${p}`).join(',')}`] });
  });

  afterAll(async () => {
    for (const w of watches) w.close();
    await relay?.stop();
    await Promise.all((nodes ?? []).map((n) => n.close()));
  });

  it('delivers every event of every node to two consumers of each kind, field for field and byte for byte', async () => {
    // Two consumers per kind join before the nodes start producing.
    for (const spec of KINDS) {
      for (let c = 0; c < 2; c++) watches.push(rawWatch(relay.target, spec.kind, spec.acceptedFilters?.[0] ?? ''));
    }
    await eventually(async () => {
      const text = await relay.metrics();
      return KINDS.every((s) => metricValue(text, 'kubearmor_relay_clients', { kind: s.kind }) === 2) || undefined;
    }, 10_000, 'consumers to subscribe');
    nodes = await Promise.all(
      ['node-a', 'node-b'].map((nodeName, i) => startFakeNode({ port: ports[i], nodeName, seed: i + 1, rate: 0, count: EVENTS_PER_KIND, record: true })),
    );
    for (const w of watches) await w.waitFor(2 * EVENTS_PER_KIND);

    for (const w of watches) {
      const spec = KINDS.find((s) => s.kind === w.kind)!;
      for (const node of nodes) {
        const sent = node.recorded[w.kind];
        const got = w.events.filter((b) => (decodeToObject(spec.type, b).HostName as string) === node.nodeName);
        expect(got).toHaveLength(sent.length);
        // byte for byte: the relay forwards what the node encoded
        expect(got.map((b) => b.toString('base64'))).toEqual(sent.map((s) => s.bytes.toString('base64')));
        // field for field, against the object the node encoded (nothing lost or altered)
        expect(got.map((b) => decodeToObject(spec.type, b))).toEqual(sent.map((s) => decodeToObject(spec.type, s.bytes)));
        expect(decodeToObject(spec.type, got[0]!)).toMatchObject(stripped(sent[0]!.object));
      }
    }
  });

  it('writes to consumers through the batching writer, not the per-event fallback', () => {
    const joined = relay.logs.filter((l) => l.msg === 'client joined');
    expect(joined.length).toBeGreaterThan(0);
    for (const l of joined) expect(l.writer).toBe('batched');
  });

  it('answers HealthCheck with the nonce it was sent', async () => {
    expect(await rawHealthCheck(relay.target, 123456789)).toBe(123456789);
  });

  it('answers HealthCheck for nonce 0, which encodes as an empty message', async () => {
    expect(await rawHealthCheck(relay.target, 0)).toBe(0);
  });

  it('reports SERVING on the standard grpc.health.v1 service', async () => {
    const client = new grpc.Client(relay.target, grpc.credentials.createInsecure());
    const status = await new Promise<number>((resolve, reject) => {
      client.makeUnaryRequest(
        '/grpc.health.v1.Health/Check',
        (s: string) => Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(s)]), Buffer.from(s)]),
        (b: Buffer) => (b.length >= 2 ? b[1]! : 0),
        'feeder.LogService',
        (err, value) => (err ? reject(err) : resolve(value!)),
      );
    });
    client.close();
    expect(status).toBe(1); // ServingStatus.SERVING
  });

  it.each([
    ['alert', 'system'],
    ['log', 'policy'],
    ['alert', 'bogus'],
  ] as [Kind, string][])('ends a %s watch with filter %j with INVALID_ARGUMENT naming the accepted values', async (kind, filter) => {
    const w = rawWatch(relay.target, kind, filter);
    const status = await w.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toMatch(/accepted: "all", "(policy|system)"/);
  });

  it('accepts any filter on WatchMessages, including the empty one karmor sends', async () => {
    const w = rawWatch(relay.target, 'message', '');
    await eventually(async () => metricValue(await relay.metrics(), 'kubearmor_relay_clients', { kind: 'message' })! >= 3 || undefined);
    w.close();
  });

  it('shows the node daemons as connected in /metrics', async () => {
    const text = await relay.metrics();
    for (const n of nodes) expect(metricValue(text, 'kubearmor_relay_upstream_connected', { node: n.target })).toBe(1);
    for (const n of nodes) expect(metricValue(text, 'kubearmor_relay_events_received_total', { kind: 'alert', node: n.target })).toBe(EVENTS_PER_KIND);
  });
});

/** the generator's object as protobufjs renders it (drops nothing we set) */
function stripped(obj: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) if (v !== '' && v !== 0 && v !== undefined) out[k] = typeof v === 'bigint' ? Number(v) : v;
  return out;
}

describe('relay process', () => {
  let relay: RelayProcess | undefined;
  afterEach(async () => {
    await relay?.stop('SIGKILL');
    relay = undefined;
  });

  it('exits 0 on SIGTERM', async () => {
    relay = await startRelayProcess();
    expect(await relay.stop('SIGTERM')).toBe(0);
  });

  it('ends consumer streams with UNAVAILABLE when it shuts down', async () => {
    relay = await startRelayProcess();
    const w = rawWatch(relay.target, 'alert', 'policy');
    await eventually(async () => metricValue(await relay!.metrics(), 'kubearmor_relay_clients', { kind: 'alert' }) === 1 || undefined);
    const code = relay.stop('SIGTERM');
    expect((await w.status).code).toBe(grpc.status.UNAVAILABLE);
    expect(await code).toBe(0);
  });
});

void types;
