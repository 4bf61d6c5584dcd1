// What happens when parts misbehave: nodes that die and come back, consumers that stop
// reading, bad command lines.
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { decodeNonce, decodeToObject, encodeReply, types } from '../server/proto.js';
import { MAIN, eventually, freePort, metricValue, startRelayProcess, type RelayProcess } from './helpers/relay-process.js';
import * as grpc from '@grpc/grpc-js';
import { rawHealthCheck, rawWatch, type RawWatch } from './helpers/raw-client.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function track<T extends { close(): unknown }>(thing: T): T {
  cleanups.push(() => thing.close());
  return thing;
}

function fromNode(w: RawWatch, nodeName: string): number {
  return w.events.filter((b) => decodeToObject(types.Alert, b).HostName === nodeName).length;
}

async function relayWith(args: string[], env: NodeJS.ProcessEnv = {}, logStream: 'stdout' | 'stderr' = 'stdout'): Promise<RelayProcess> {
  const relay = await startRelayProcess({ args, env, logStream });
  cleanups.push(() => relay.stop('SIGKILL'));
  return relay;
}

describe('node daemons that go away', () => {
  it('picks up a node that was killed and restarted, while the other node keeps flowing', async () => {
    const a = await startFakeNode({ nodeName: 'node-a', rate: 100, kinds: ['alert'] });
    const b = track(await startFakeNode({ nodeName: 'node-b', rate: 100, kinds: ['alert'] }));
    let aAgain: FakeNode | undefined;
    cleanups.push(() => aAgain?.close());
    const relay = await relayWith([`--nodes=${a.target},${b.target}`]);
    const w = track(rawWatch(relay.target, 'alert', 'policy'));
    await eventually(() => fromNode(w, 'node-a') > 10 && fromNode(w, 'node-b') > 10, 15_000, 'events from both nodes');

    await a.close();
    await relay.waitForLog((l) => l.msg === 'node lost' && l.node === a.target);
    // Both nodes share the consumer's one stream, in the order the relay wrote: once node-b
    // events written after the loss have arrived, so has every node-a event written before
    // it (reading the count at the log line itself raced the last one still in flight).
    const bAtLoss = fromNode(w, 'node-b');
    await eventually(() => fromNode(w, 'node-b') > bAtLoss + 10, 15_000, 'node-b events after node-a was lost');
    const aAtLoss = fromNode(w, 'node-a');
    expect(aAtLoss).toBeLessThanOrEqual(a.sent.alert);
    await eventually(() => fromNode(w, 'node-b') > bAtLoss + 60, 15_000, 'node-b events while node-a is down');
    expect(fromNode(w, 'node-a')).toBe(aAtLoss);

    aAgain = await startFakeNode({ nodeName: 'node-a', port: a.port, rate: 100, kinds: ['alert'] });
    await eventually(() => relay.logs.filter((l) => l.msg === 'node connected' && l.node === a.target).length >= 2, 20_000, 'node-a reconnected');
    await eventually(() => fromNode(w, 'node-a') > aAtLoss + 10, 15_000, 'node-a events after its restart');
    expect(metricValue(await relay.metrics(), 'kubearmor_relay_upstream_connected', { node: a.target })).toBe(1);
  });

  it('keeps redialling a node that is down at start and reports it as not connected', async () => {
    const relay = await relayWith(['--nodes=127.0.0.1:1']);
    await relay.waitForLog((l) => l.msg === 'node unreachable' && l.node === '127.0.0.1:1');
    expect(metricValue(await relay.metrics(), 'kubearmor_relay_upstream_connected', { node: '127.0.0.1:1' })).toBe(0);
  });
});

/** A LogService that sends `event` on every watch; HealthCheck echoes, or answers `healthReply`. */
function garbageNode(event: Buffer, healthReply?: Buffer): Promise<{ target: string; close(): void }> {
  return garbageNodeOn(0, event, healthReply);
}

async function garbageNodeOn(bindPort: number, event: Buffer, healthReply?: Buffer): Promise<{ target: string; close(): void }> {
  const server = new grpc.Server();
  const id = (b: Buffer) => b;
  const method = (name: string, responseStream: boolean) => ({ path: `/feeder.LogService/${name}`, requestStream: false, responseStream, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id });
  server.addService(
    { HealthCheck: method('HealthCheck', false), WatchAlerts: method('WatchAlerts', true), WatchLogs: method('WatchLogs', true), WatchMessages: method('WatchMessages', true) },
    {
      HealthCheck: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, healthReply ?? encodeReply(decodeNonce(call.request))),
      WatchAlerts: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.write(event),
      WatchLogs: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.write(event),
      WatchMessages: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.write(event),
    },
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${bindPort}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { target: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

describe('node daemons that send garbage', () => {
  it('keeps running when a node answers HealthCheck with bytes that do not decode', async () => {
    const bad = track(await garbageNode(Buffer.from([0x08]), Buffer.from([0x08])));
    const relay = await relayWith([`--nodes=${bad.target}`]);
    await relay.waitForLog((l) => l.msg === 'node unreachable' && String(l.reason).includes('HealthCheck reply'));
    expect(relay.proc.exitCode).toBeNull();
    expect(await rawHealthCheck(relay.target, 5)).toBe(5);
  });
});

describe('consumers that stop reading', () => {
  const QUEUE_BYTES = 65536;

  it('never delays a fast consumer, drops only for the stalled one, counts the drops and bounds the bytes queued', async () => {
    const TOTAL = 20_000;
    // The node starts once both consumers are in place; the relay redials until then.
    const port = await freePort();
    const relay = await relayWith([`--nodes=127.0.0.1:${port}`, '--clientQueueSize=100', `--clientQueueBytes=${QUEUE_BYTES}`, '--stallTimeout=500ms']);
    const fast = track(rawWatch(relay.target, 'alert', 'policy'));
    const stalled = track(rawWatch(relay.target, 'alert', 'policy'));
    stalled.pause();
    await eventually(async () => metricValue(await relay.metrics(), 'kubearmor_relay_clients', { kind: 'alert' }) === 2, 10_000, 'two consumers');

    const live = track(await startFakeNode({ nodeName: 'node-a', port, rate: 0, count: TOTAL, kinds: ['alert'] }));
    await live.finished('alert');
    await fast.waitFor(TOTAL, 30_000);

    const text = await relay.metrics();
    expect(fast.events).toHaveLength(TOTAL);
    expect(stalled.events.length).toBeLessThan(TOTAL);
    const dropped = metricValue(text, 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'queue_full' })!;
    expect(dropped).toBeGreaterThan(0);
    // every event reached the fast consumer or was counted as dropped for the stalled one,
    // apart from what sits in the stalled consumer's queue and socket buffers
    expect(dropped).toBeLessThanOrEqual(TOTAL);
    expect(metricValue(text, 'kubearmor_relay_queued_bytes', { kind: 'alert' })).toBeLessThanOrEqual(QUEUE_BYTES);
    await relay.waitForLog((l) => l.msg === 'events dropped for a consumer that is behind' || l.msg === 'consumer stalled: events for it are dropped until it reads again');
  });
});

describe('command line', () => {
  it.each([
    [['--gRPCPort=abc'], '--gRPCPort'],
    [['--httpPort', '70000'], '--httpPort'],
    [['--nodes=not-an-address'], '--nodes'],
    [['--no-such-flag'], '--no-such-flag'],
    [['-tlsCertProvider=vault'], '--tlsCertProvider'],
    [['--clientQueueSize'], '--clientQueueSize'],
  ])('exits 2 and names the flag for %j', (args, flag) => {
    const res = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 20_000 });
    expect(res.status).toBe(2);
    expect(res.stderr).toContain(flag);
    expect(res.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('accepts the Go-style spellings the Helm chart uses', () => {
    const res = spawnSync(process.execPath, [MAIN, '-tlsEnabled=false', '--tlsCertPath', '/nonexistent', '-tlsCertProvider=external', '--gRPCPort=32767', '--help'], { encoding: 'utf8', timeout: 20_000 });
    expect(res.status).toBe(0);
  });

  it('lists every flag with its default in --help', () => {
    const res = spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8', timeout: 20_000 });
    expect(res.status).toBe(0);
    for (const flag of ['--gRPCPort', '--httpPort', '--nodes', '--tlsEnabled', '--tlsCertPath', '--tlsCertProvider', '--clientQueueSize']) expect(res.stdout).toContain(flag);
    expect(res.stdout).toContain('(default "32767")');
  });
});

describe('stdout export', () => {
  it('prints each alert as one JSON line on stdout with the protobuf field names, and logs on stderr', async () => {
    const port = await freePort();
    const relay = await relayWith([`--nodes=127.0.0.1:${port}`], { ENABLE_STDOUT_ALERTS: 'true' }, 'stderr');
    const live = track(await startFakeNode({ nodeName: 'node-a', port, rate: 0, count: 20, kinds: ['alert'], record: true }));
    await eventually(() => relay.stdoutLines.length >= 20 || undefined, 15_000, 'stdout lines');
    const printed = relay.stdoutLines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(printed).toEqual(live.recorded.alert.map((e) => decodeToObject(types.Alert, e.bytes)));
    expect(printed[0]).toHaveProperty('PolicyName');
    // declaration order, as the reference relay's Go JSON and karmor print it
    const declared = types.Alert.fieldsArray.map((f) => f.name).filter((n) => n in printed[0]!);
    expect(Object.keys(printed[0]!)).toEqual(declared);
    expect(printed[0]).toHaveProperty('EventData');
    expect(relay.logs.some((l) => l.msg === 'relay serving feeder.LogService')).toBe(true);
  });

  it('counts an event that does not decode as malformed instead of crashing', async () => {
    const port = await freePort();
    const relay = await relayWith([`--nodes=127.0.0.1:${port}`], { ENABLE_STDOUT_LOGS: 'true' }, 'stderr');
    await eventually(async () => metricValue(await relay.metrics(), 'kubearmor_relay_clients', { kind: 'log' }) === 1, 10_000, 'the stdout consumer');
    const bad = await garbageNodeOn(port, Buffer.from([0x08])); // a truncated varint: not a Log
    cleanups.push(() => bad.close());
    await eventually(async () => (metricValue(await relay.metrics(), 'kubearmor_relay_events_dropped_total', { kind: 'log', reason: 'malformed' }) ?? 0) >= 1, 15_000, 'the malformed count');
    expect(relay.proc.exitCode).toBeNull();
    expect(relay.stdoutLines).toHaveLength(0);
  });
});
