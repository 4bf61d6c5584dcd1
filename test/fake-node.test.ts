import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { KINDS, KIND_BY_NAME, type Kind } from '../server/kinds.js';
import { decodeReply, decodeToObject, encodeNonce, encodeRequest, type EventObject } from '../server/proto.js';
import { createEventSource, decodeEvent, encodeEvent, eventMeta, eventMetaFromBytes, rfc3339Nano } from '../server/tools/events.js';
import { runFakeNode, startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { startPausableProxy } from './helpers/node-proxy.js';
import { collect, eventually } from './helpers/node-watch.js';
import { normalizePythonEvent, runPythonConsumer } from './helpers/python-peers.js';

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function node(opts: Parameters<typeof startFakeNode>[0]): Promise<FakeNode> {
  const n = await startFakeNode(opts);
  cleanup.push(() => n.close());
  return n;
}

function fixedClock(startNs = 1_767_225_600_123_456_789n): () => bigint {
  let t = startNs;
  return () => (t += 1_234_567n);
}

const identity = (b: Buffer): Buffer => b;

function client(target: string): grpc.Client {
  const c = new grpc.Client(target, grpc.credentials.createInsecure());
  cleanup.push(() => c.close());
  return c;
}

function unary(c: grpc.Client, path: string, request: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    c.makeUnaryRequest(path, identity, identity, request, (err, reply) => (err || !reply ? reject(err) : resolve(reply))),
  );
}

/** Every field of the message type, recursively, as dotted paths present in a decoded object. */
function missingFields(kind: Kind, obj: EventObject): string[] {
  const type = KIND_BY_NAME[kind].type;
  const missing: string[] = [];
  for (const field of type.fieldsArray) {
    const value = obj[field.name];
    if (value === undefined) missing.push(field.name);
    else if (field.resolvedType && 'fieldsArray' in field.resolvedType) {
      for (const sub of field.resolvedType.fieldsArray) {
        if ((value as Record<string, unknown>)[sub.name] === undefined) missing.push(`${field.name}.${sub.name}`);
      }
    }
  }
  return missing;
}

describe('the event generator', () => {
  it('sets every field of Alert and Log to a non-default value, so a lost field is noticed', () => {
    const source = createEventSource({ seed: 3 });
    for (const kind of ['alert', 'log', 'message'] as const) {
      for (let i = 0; i < 300; i++) {
        const decoded = decodeEvent(kind, encodeEvent(kind, source.next(kind)));
        expect(missingFields(kind, decoded), `${kind} #${i}`).toEqual([]);
        if (kind !== 'message') {
          expect(Object.keys(decoded.EventData as object).length).toBeGreaterThanOrEqual(4);
        }
      }
    }
  });

  it('round-trips each event through the wire format unchanged', () => {
    const source = createEventSource({ seed: 4 });
    for (const kind of ['alert', 'log', 'message'] as const) {
      const obj = source.next(kind);
      expect(decodeEvent(kind, encodeEvent(kind, obj))).toEqual(obj);
    }
  });

  it('gives the same events for the same seed and clock, and different ones for another seed', () => {
    const take = (seed: number) => {
      const s = createEventSource({ seed, nodeName: 'node-a', clock: fixedClock() });
      return [s.next('alert'), s.next('log'), s.next('message'), s.next('alert')];
    };
    expect(take(11)).toEqual(take(11));
    expect(take(12)).not.toEqual(take(11));
  });

  it('draws each kind from its own stream, so interleaving kinds does not change a sequence', () => {
    const a = createEventSource({ seed: 5, clock: fixedClock() });
    const b = createEventSource({ seed: 5, clock: fixedClock() });
    const onlyAlerts = [a.next('alert'), a.next('alert'), a.next('alert')];
    b.next('log');
    const mixed = [b.next('alert'), (b.next('message'), b.next('alert')), b.next('alert')];
    const strip = (o: EventObject) => ({ ...o, Timestamp: 0, UpdatedTime: '', EventData: { ...(o.EventData as object), sentAtNs: '' } });
    expect(mixed.map(strip)).toEqual(onlyAlerts.map(strip));
  });

  it('produces about a kilobyte per alert or log on average', () => {
    const source = createEventSource({ seed: 6 });
    for (const kind of ['alert', 'log'] as const) {
      let total = 0;
      for (let i = 0; i < 500; i++) total += encodeEvent(kind, source.next(kind)).length;
      const average = total / 500;
      expect(average).toBeGreaterThan(700);
      expect(average).toBeLessThan(1600);
    }
  });

  it('numbers events per kind and carries their send time, readable back from the bytes', () => {
    const source = createEventSource({ seed: 7 });
    for (const kind of ['alert', 'log', 'message'] as const) {
      const sentAt = 1_767_225_600_000_000_001n;
      const first = source.next(kind, sentAt);
      const second = source.next(kind);
      expect(eventMeta(kind, first)).toEqual({ seq: 1, sentAtNs: sentAt });
      expect(eventMetaFromBytes(kind, encodeEvent(kind, second))?.seq).toBe(2);
      expect(first.UpdatedTime).toBe('2026-01-01T00:00:00.000000001Z');
    }
  });

  it('writes UpdatedTime as RFC 3339 with nanoseconds', () => {
    expect(rfc3339Nano(1_700_000_000_123_456_789n)).toBe('2023-11-14T22:13:20.123456789Z');
  });

  it('varies operations, actions, enforcers, namespaces and log types', () => {
    const source = createEventSource({ seed: 8 });
    const seen = (kind: Kind, field: string) => new Set(Array.from({ length: 400 }, () => source.next(kind)[field]));
    expect(seen('alert', 'Operation')).toEqual(new Set(['Process', 'File', 'Network']));
    expect(seen('alert', 'Action')).toEqual(new Set(['Block', 'Audit']));
    expect(seen('alert', 'Enforcer')).toEqual(new Set(['AppArmor', 'BPFLSM']));
    expect(seen('log', 'Type')).toEqual(new Set(['ContainerLog', 'HostLog']));
    expect(seen('log', 'NamespaceName').size).toBeGreaterThan(4);
    const network = Array.from({ length: 400 }, () => source.next('log')).filter((e) => e.Operation === 'Network');
    expect(network.some((e) => /^kprobe=tcp_connect domain=AF_INET$/.test(String(e.Data)) && /^remoteip=10\.\d+\.\d+\.\d+ port=\d+ protocol=TCP$/.test(String(e.Resource)))).toBe(true);
  });
});

describe('the fake node daemon', () => {
  it('answers HealthCheck with the nonce it was given', async () => {
    const n = await node({});
    const reply = await unary(client(n.target), '/feeder.LogService/HealthCheck', encodeNonce(123456789));
    expect(decodeReply(reply)).toBe(123456789);
    expect(n.healthChecks).toBe(1);
  });

  it('reports SERVING on grpc.health.v1', async () => {
    const n = await node({});
    // HealthCheckRequest{service: ""} is empty; HealthCheckResponse{status: SERVING(1)} is 08 01.
    const reply = await unary(client(n.target), '/grpc.health.v1.Health/Check', Buffer.alloc(0));
    expect([...reply]).toEqual([0x08, 0x01]);
  });

  it('sends each watcher exactly the recorded events of every kind, byte for byte', async () => {
    const n = await node({ rate: 0, count: 40, record: true });
    const c = collect(n.target, [
      { kind: 'alert', filter: 'policy' },
      { kind: 'log', filter: 'system' },
      { kind: 'message', filter: 'all' },
    ]);
    cleanup.push(() => c.handle.close());
    for (const { kind } of KINDS) {
      const got = await c.until(kind, 40);
      await n.finished(kind);
      expect(got).toEqual(n.recorded[kind].map((e) => e.bytes));
      expect(n.recorded[kind].map((e) => eventMeta(kind, e.object)?.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      expect(n.sent[kind]).toBe(40);
    }
    expect(n.requests).toEqual([
      { kind: 'alert', filter: 'policy' },
      { kind: 'log', filter: 'system' },
      { kind: 'message', filter: 'all' },
    ]);
  });

  it('keeps streams open and quiet once the count is reached', async () => {
    const n = await node({ rate: 0, count: 5, kinds: ['alert'] });
    const c = collect(n.target, [{ kind: 'alert', filter: 'policy' }]);
    cleanup.push(() => c.handle.close());
    await c.until('alert', 5);
    await c.handle.ready;
    expect(n.watchers('alert')).toBe(1);
    expect(c.handle.reconnects).toBe(0);
    expect(n.sent.alert).toBe(5);
  });

  it('broadcasts one sequence to every watcher of a kind', async () => {
    const n = await node({ rate: 400, record: true, kinds: ['log'] });
    const first = collect(n.target, [{ kind: 'log', filter: 'system' }]);
    cleanup.push(() => first.handle.close());
    await first.until('log', 3);
    const second = collect(n.target, [{ kind: 'log', filter: 'all' }]);
    cleanup.push(() => second.handle.close());
    const late = await second.until('log', 10);
    const recorded = n.recorded.log.map((e) => e.bytes);
    const start = recorded.findIndex((b) => b.equals(late[0]!));
    expect(start).toBeGreaterThan(0);
    expect(late).toEqual(recorded.slice(start, start + 10));
    expect(await first.until('log', start + 10)).toEqual(recorded.slice(0, start + 10));
  });

  it('waits for a reader that stops reading, then delivers everything in order', async () => {
    const total = 20_000;
    const n = await node({ rate: 0, count: total, kinds: ['alert'] });
    const proxy = await startPausableProxy(n.host, n.port);
    cleanup.push(() => proxy.close());
    const seqs: number[] = [];
    const call = client(proxy.target).makeServerStreamRequest('/feeder.LogService/WatchAlerts', identity, identity, encodeRequest('policy'));
    cleanup.push(() => call.cancel());
    call.on('error', () => undefined);
    call.on('data', (b: Buffer) => seqs.push(eventMetaFromBytes('alert', b)!.seq));
    await n.waitForWatchers('alert'); // the HTTP/2 handshake needs both directions open
    proxy.pause();
    // The node fills socket buffers and HTTP/2 windows, then must stop well short of the count.
    let last = -1;
    let stable = 0;
    while (stable < 5) {
      await new Promise((r) => setTimeout(r, 40));
      stable = n.sent.alert === last ? stable + 1 : 0;
      last = n.sent.alert;
    }
    expect(n.sent.alert).toBeGreaterThan(0);
    expect(n.sent.alert).toBeLessThan(total);
    proxy.resume();
    // The node builds and encodes each of the 20 000 events as it sends (hundreds of µs
    // each): on two loaded cores that alone can pass the default 10 s.
    await eventually(() => seqs.length === total, 45_000, `all ${total} events after the reader resumed`);
    expect(seqs).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  });

  it('drops every watcher when closed', async () => {
    const n = await startFakeNode({ rate: 50 });
    const c = collect(n.target, [{ kind: 'alert', filter: 'policy' }]);
    cleanup.push(() => c.handle.close());
    await c.handle.ready;
    await n.close();
    await eventually(() => c.log.length > 0);
    expect(c.log[0]).toMatch(/reconnecting/);
  });
});

describe('the fake node with an independent Python consumer', () => {
  it('delivers every field the node recorded as sent to a grpcio client', async () => {
    const n = await node({ rate: 0, count: 15, record: true, nodeName: 'node-py' });
    const result = await runPythonConsumer({
      target: n.target,
      watch: ['alert:policy', 'log:system', 'message:'],
      count: 45,
      timeoutSeconds: 60,
      healthcheck: 2_000_000_001,
    });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.retval).toBe(2_000_000_001);
    for (const { kind } of KINDS) {
      const got = result.events.filter((e) => e.kind === kind).map((e) => normalizePythonEvent(e.event));
      const sent = n.recorded[kind].map((e) => decodeToObject(KIND_BY_NAME[kind].type, e.bytes));
      expect(got).toHaveLength(15);
      expect(got).toEqual(sent);
      // and what was sent is exactly what the generator made
      expect(sent).toEqual(n.recorded[kind].map((e) => e.object));
    }
  });
});

describe('the fake-node command', () => {
  it.each([
    [['--rate', '-1'], '--rate'],
    [['--port', 'http'], '--port'],
    [['--count'], '--count'],
    [['--kinds', 'alert,audit'], '--kinds'],
    [['--nodeName='], '--nodeName'],
    [['--bogus'], '--bogus'],
  ])('rejects %j with exit code 2 and a message naming the flag', async (argv, flag) => {
    const errors: string[] = [];
    const code = await runFakeNode(argv, { stderr: (l) => errors.push(l), stdout: () => undefined });
    expect(code).toBe(2);
    expect(errors.join('\n')).toContain(flag);
  });

  it('serves until stopped, then exits 0 with a JSON summary of what it sent', async () => {
    const stop = new AbortController();
    const errors: string[] = [];
    const out: string[] = [];
    const running = runFakeNode(['--port', '0', '--rate=0', '--count', '7', '--nodeName', 'cli-node', '--json-summary'], {
      signal: stop.signal,
      stderr: (l) => errors.push(l),
      stdout: (l) => out.push(l),
    });
    await eventually(() => errors.length > 0);
    const target = /on (127\.0\.0\.1:\d+)/.exec(errors[0]!)?.[1];
    expect(target).toBeDefined();
    const c = collect(target!, [{ kind: 'alert', filter: 'policy' }]);
    const got = await c.until('alert', 7);
    await c.handle.close();
    expect(decodeEvent('alert', got[0]!).HostName).toBe('cli-node');
    stop.abort();
    expect(await running).toBe(0);
    expect(JSON.parse(out.at(-1)!)).toMatchObject({ node: 'cli-node', sent: { alert: 7 }, healthChecks: 1 });
  });
});
