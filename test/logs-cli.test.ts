import { afterEach, describe, expect, it } from 'vitest';
import { KIND_BY_NAME, type Kind } from '../server/kinds.js';
import { decodeToObject, type EventObject } from '../server/proto.js';
import { createEventSource, decodeEvent, encodeEvent } from '../server/tools/events.js';
import { startFakeNode, type FakeNode, type FakeNodeOptions } from '../server/tools/fake-node.js';
import { formatText, runLogs, streamsFor, watch, type LogsDeps } from '../server/tools/logs.js';
import { collect, eventually } from './helpers/node-watch.js';
import { startPythonNode } from './helpers/python-peers.js';

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function node(opts: FakeNodeOptions): Promise<FakeNode> {
  const n = await startFakeNode(opts);
  cleanup.push(() => n.close());
  return n;
}

interface Run {
  code: Promise<number>;
  out: string[];
  err: string[];
  stop: AbortController;
}

/** runLogs in-process with captured output and a fast reconnect backoff. */
function logs(argv: string[], deps: Partial<LogsDeps> = {}): Run {
  const out: string[] = [];
  const err: string[] = [];
  const stop = new AbortController();
  const code = runLogs(argv, {
    stdout: (l) => out.push(l),
    stderr: (l) => err.push(l),
    signal: stop.signal,
    backoff: { initialMs: 50, maxMs: 200 },
    env: {},
    ...deps,
  });
  cleanup.push(async () => {
    stop.abort();
    await code;
  });
  return { code, out, err, stop };
}

const decoded = (kind: Kind, bytes: Buffer) => decodeToObject(KIND_BY_NAME[kind].type, bytes);

describe('watch', () => {
  it('hands out the raw bytes the node sent, for every stream asked for', async () => {
    const n = await node({ rate: 0, count: 10, record: true });
    const c = collect(n.target, streamsFor('all', true));
    cleanup.push(() => c.handle.close());
    await c.handle.ready;
    for (const kind of ['alert', 'log', 'message'] as const) {
      expect(await c.until(kind, 10)).toEqual(n.recorded[kind].map((e) => e.bytes));
    }
    expect(n.requests).toEqual([
      { kind: 'alert', filter: 'all' },
      { kind: 'log', filter: 'all' },
      { kind: 'message', filter: '' },
    ]);
    expect(n.healthChecks).toBe(1);
  });

  it('reconnects when the node goes away and comes back on the same port', async () => {
    const first = await startFakeNode({ rate: 200, kinds: ['alert'] });
    const c = collect(first.target, [{ kind: 'alert', filter: 'policy' }]);
    cleanup.push(() => c.handle.close());
    await c.until('alert', 3);
    await first.close();
    await eventually(() => c.log.length > 0);
    const second = await node({ port: first.port, rate: 200, kinds: ['alert'], nodeName: 'node-2' });
    await eventually(() => c.events.alert.some((b) => decodeEvent('alert', b).HostName === 'node-2'));
    expect(c.handle.reconnects).toBeGreaterThanOrEqual(1);
    expect(c.log.every((line) => /^lost 127\.0\.0\.1:\d+ \(.+\); reconnecting in \d+\.\ds$/.test(line))).toBe(true);
    expect(second.healthChecks).toBe(1);
  });

  it('without reconnect, ends with an error at the first lost stream, as karmor does', async () => {
    const n = await startFakeNode({ rate: 100 });
    const h = watch({ target: n.target, streams: [{ kind: 'alert', filter: 'policy' }], reconnect: false, onEvent: () => undefined });
    await h.ready;
    await n.close();
    await expect(h.done).rejects.toThrow(/lost the connection/);
  });

  it('rejects a peer whose HealthCheck does not echo the nonce', async () => {
    const n = await node({ healthCheckReply: (nonce) => nonce + 1 });
    const h = watch({ target: n.target, streams: [{ kind: 'alert', filter: 'policy' }], onEvent: () => undefined });
    await expect(h.done).rejects.toThrow(/HealthCheck/);
  });
});

describe('the logs command', () => {
  it('prints alerts as JSON lines with protobuf field names in declaration order', async () => {
    const n = await node({ rate: 0, count: 5, record: true });
    const run = logs(['--gRPC', n.target, '--json', '--limit', '5']);
    expect(await run.code).toBe(0);
    expect(run.out).toHaveLength(5);
    const declared = KIND_BY_NAME.alert.type.fieldsArray.map((f) => f.name);
    run.out.forEach((line, i) => {
      const obj = JSON.parse(line) as EventObject;
      expect(obj).toEqual(decoded('alert', n.recorded.alert[i]!.bytes));
      expect(Object.keys(obj)).toEqual(declared);
    });
    expect(n.requests.map((r) => r.kind)).toEqual(['alert']);
  });

  it('leaves empty fields out of JSON but keeps a sub-message the node sent empty', async () => {
    const source = createEventSource({ seed: 2 });
    const sparse = { ...source.next('alert'), Owner: {}, ATags: [], Labels: '', UID: 0 };
    const py = await startPythonNode({ alert: [sparse] });
    cleanup.push(() => py.stop());
    const run = logs(['--gRPC', py.target, '--json', '--limit', '1']);
    expect(await run.code).toBe(0);
    const obj = JSON.parse(run.out[0]!) as EventObject;
    expect(obj.Owner).toEqual({});
    expect('ATags' in obj || 'Labels' in obj || 'UID' in obj).toBe(false);
  });

  it('watches logs for --logFilter system and both kinds for all, messages only when asked', async () => {
    const n = await node({ rate: 0, count: 4, record: true });
    const system = logs(['--gRPC', n.target, '--logFilter', 'system', '--json', '--limit', '4']);
    expect(await system.code).toBe(0);
    expect(system.out.map((l) => JSON.parse(l) as EventObject)).toEqual(n.recorded.log.map((e) => decoded('log', e.bytes)));

    // count is per node and kind (one broadcast sequence), so the second run needs a fresh node
    const m = await node({ rate: 0, count: 4 });
    const all = logs(['--gRPC', m.target, '--logFilter=all', '--messages', '--json', '--limit', '12']);
    expect(await all.code).toBe(0);
    const objs = all.out.map((l) => JSON.parse(l) as EventObject);
    expect(objs.filter((o) => o.PolicyName)).toHaveLength(4);
    expect(objs.filter((o) => o.Type === 'ContainerLog' || o.Type === 'HostLog')).toHaveLength(4);
    expect(objs.filter((o) => o.Level)).toHaveLength(4);
    expect(n.requests).toEqual([{ kind: 'log', filter: 'system' }]);
    expect(m.requests).toEqual([
      { kind: 'alert', filter: 'all' },
      { kind: 'log', filter: 'all' },
      { kind: 'message', filter: '' },
    ]);
  });

  it('filters by namespace and operation in the client', async () => {
    const count = 300;
    // The generator is deterministic: the same seed tells how many events will match.
    const preview = createEventSource({ seed: 9, nodeName: 'node-f' });
    const matching = Array.from({ length: count }, () => preview.next('alert')).filter((e) => e.NamespaceName === 'wordpress-mysql' && e.Operation === 'File').length;
    expect(matching).toBeGreaterThan(0);
    const n = await node({ rate: 0, count, seed: 9, nodeName: 'node-f', record: true, kinds: ['alert'] });
    const run = logs(['--gRPC', n.target, '--namespace', 'wordpress-mysql', '--operation', 'File', '--json', '--limit', String(matching)]);
    expect(await run.code).toBe(0);
    const expected = n.recorded.alert.map((e) => decoded('alert', e.bytes)).filter((e) => e.NamespaceName === 'wordpress-mysql' && e.Operation === 'File');
    expect(run.out.map((l) => JSON.parse(l) as EventObject)).toEqual(expected.slice(0, matching));
  });

  it('prints a karmor-style header and one field per line by default', async () => {
    const n = await node({ rate: 0, count: 2, record: true, kinds: ['alert'] });
    const run = logs(['-gRPC', n.target, '-limit=2']);
    expect(await run.code).toBe(0);
    const first = decoded('alert', n.recorded.alert[0]!.bytes);
    expect(run.out[0]).toBe(formatText('alert', first));
    const lines = run.out[0]!.split('\n');
    expect(lines[0]).toBe(`== Alert / ${String(first.UpdatedTime)} ==`);
    expect(lines).toContain(`PolicyName: ${String(first.PolicyName)}`);
    expect(lines).toContain(`Owner: Ref=Deployment Name=${(first.Owner as { Name: string }).Name} Namespace=${String(first.NamespaceName)}`);
  });

  it('dials KUBEARMOR_SERVICE when --gRPC is not given', async () => {
    const n = await node({ rate: 0, count: 1, kinds: ['alert'] });
    const run = logs(['--limit', '1'], { env: { KUBEARMOR_SERVICE: n.target } });
    expect(await run.code).toBe(0);
    expect(run.out).toHaveLength(1);
  });

  it('logs one line per reconnect to stderr and carries on printing', async () => {
    const first = await startFakeNode({ rate: 0, count: 2, kinds: ['alert'] });
    const run = logs(['--gRPC', first.target, '--json', '--limit', '4']);
    await eventually(() => run.out.length === 2);
    await first.close();
    await eventually(() => run.err.length > 0);
    await node({ port: first.port, rate: 0, count: 2, kinds: ['alert'], nodeName: 'node-b' });
    expect(await run.code).toBe(0);
    expect(run.out.map((l) => (JSON.parse(l) as EventObject).HostName)).toEqual(['node-1', 'node-1', 'node-b', 'node-b']);
    expect(run.err.length).toBeGreaterThanOrEqual(1);
    expect(run.err.every((l) => l.startsWith('logs: lost ') && l.includes('reconnecting in'))).toBe(true);
  });

  it('exits 1 when HealthCheck answers a different value', async () => {
    const n = await node({ healthCheckReply: () => 7 });
    const run = logs(['--gRPC', n.target]);
    expect(await run.code).toBe(1);
    expect(run.err.join('\n')).toMatch(/HealthCheck .* answered 7/);
  });

  it('exits 0 when stopped by a signal', async () => {
    const n = await node({ rate: 100, kinds: ['alert'] });
    const run = logs(['--gRPC', n.target, '--json']);
    await eventually(() => run.out.length > 0);
    run.stop.abort();
    expect(await run.code).toBe(0);
  });

  it('reads fully populated events from the independent Python node', async () => {
    const source = createEventSource({ seed: 21, nodeName: 'py-node' });
    const events = { alert: [source.next('alert'), source.next('alert')], log: [source.next('log'), source.next('log')], message: [source.next('message')] };
    const py = await startPythonNode(events);
    cleanup.push(() => py.stop());
    const run = logs(['--gRPC', py.target, '--logFilter', 'all', '--msgPath', 'stdout', '--json', '--limit', '5']);
    expect(await run.code).toBe(0);
    const objs = run.out.map((l) => JSON.parse(l) as EventObject);
    const roundTrip = (kind: Kind, o: EventObject) => decodeEvent(kind, encodeEvent(kind, o));
    expect(objs.filter((o) => o.PolicyName)).toEqual(events.alert.map((o) => roundTrip('alert', o)));
    expect(objs.filter((o) => o.Type === 'ContainerLog' || o.Type === 'HostLog')).toEqual(events.log.map((o) => roundTrip('log', o)));
    expect(objs.filter((o) => o.Level)).toEqual(events.message.map((o) => roundTrip('message', o)));
  });

  it.each([
    [['--logFilter', 'alerts'], '--logFilter'],
    [['--gRPC', 'relay'], '--gRPC'],
    [['--operation', 'Syscall'], '--operation'],
    [['--limit=-1'], '--limit'],
    [['--msgPath', '/tmp/x'], '--msgPath'],
    [['--json=maybe'], '--json'],
    [['--namespace'], '--namespace'],
    [['--follow'], '--follow'],
  ])('rejects %j with exit code 2 and a message naming the flag', async (argv, flag) => {
    const run = logs(argv);
    expect(await run.code).toBe(2);
    expect(run.err.join('\n')).toContain(flag);
  });

  it('names KUBEARMOR_SERVICE when the environment holds a malformed address', async () => {
    const run = logs([], { env: { KUBEARMOR_SERVICE: 'no-port' } });
    expect(await run.code).toBe(2);
    expect(run.err.join('\n')).toMatch(/--gRPC.*KUBEARMOR_SERVICE/);
  });
});
