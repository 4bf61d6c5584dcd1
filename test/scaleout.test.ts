// Scale-out mode end to end: real nats-server processes (a three-server cluster where a
// server dies), real relay processes started as a user would, fake node daemons that
// record what they sent, and consumers on every relay.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { runCerts } from '../certs/cli.js';
import { startNats, type NatsCluster } from '../harness/nats-server.js';
import { KINDS, type Kind } from '../server/kinds.js';
import { eventMetaFromBytes, decodeEvent } from '../server/tools/events.js';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { rawWatch, type RawWatch } from './helpers/raw-client.js';
import { eventually, freePort, metricValue, startRelayProcess, type RelayProcess } from './helpers/relay-process.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function nats(size: 1 | 3, serverArgs: string[] = []): Promise<NatsCluster> {
  // with TLS required, the harness's own plaintext readiness check cannot connect
  const cluster = await startNats(size, serverArgs, serverArgs.length === 0);
  cleanups.push(() => cluster.close());
  return cluster;
}

async function relays(n: number, nodes: string[], natsUrls: string, extra: string[] = []): Promise<RelayProcess[]> {
  const started = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      startRelayProcess({ args: [`--nodes=${nodes.join(',')}`, `--natsUrl=${natsUrls}`, `--replicaId=relay-${i}`, '--logLevel=debug', ...extra] }),
    ),
  );
  for (const r of started) cleanups.push(() => r.stop('SIGKILL'));
  // what each replica decided, for a failure's report
  onTestFailed(() => {
    for (const [i, r] of started.entries()) {
      const lines = r.logs.filter((l) => l.component === 'scaleout' || l.level >= 40).map((l) => `relay-${i} ${JSON.stringify(l)}`);
      process.stderr.write(`${lines.join('\n')}\n`);
    }
  });
  return started;
}

async function metric(relay: RelayProcess, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  return metricValue(await relay.metrics(), name, labels);
}

/** every relay is ready and sees all `n` replicas */
async function converged(all: RelayProcess[], n: number): Promise<void> {
  await eventually(async () => {
    for (const r of all) if ((await metric(r, 'kubearmor_relay_scaleout_replicas')) !== n) return false;
    return true;
  }, 20_000, `every relay to see ${n} replicas`);
}

function consumersOn(all: RelayProcess[]): Record<Kind, RawWatch>[] {
  return all.map((r) => {
    const watches = Object.fromEntries(KINDS.map((k) => [k.kind, rawWatch(r.target, k.kind, 'all')])) as Record<Kind, RawWatch>;
    for (const w of Object.values(watches)) cleanups.push(() => w.close());
    return watches;
  });
}

async function subscribed(all: RelayProcess[]): Promise<void> {
  await eventually(async () => {
    for (const r of all) for (const k of KINDS) if ((await metric(r, 'kubearmor_relay_clients', { kind: k.kind })) !== 1) return false;
    return true;
  }, 10_000, 'a consumer of every kind on every relay');
}

async function fakeNodes(ports: number[], opts: { rate: number; count: number }): Promise<FakeNode[]> {
  const nodes = await Promise.all(ports.map((port, i) => startFakeNode({ port, nodeName: `node-${i}`, rate: opts.rate, count: opts.count, record: true })));
  for (const n of nodes) cleanups.push(() => n.close());
  return nodes;
}

/**
 * The seq numbers a consumer got from one node, in arrival order. Decoded once per event
 * (polling re-decoded thousands of events every 100 ms and starved the test's own reading).
 */
const bySource = new WeakMap<RawWatch, { decoded: number; seqs: Map<string, number[]> }>();
function seqsFrom(w: RawWatch, node: FakeNode): number[] {
  let index = bySource.get(w);
  if (!index) bySource.set(w, (index = { decoded: 0, seqs: new Map() }));
  for (; index.decoded < w.events.length; index.decoded++) {
    const b = w.events[index.decoded]!;
    const host = String(decodeEvent(w.kind, b).HostName);
    let list = index.seqs.get(host);
    if (!list) index.seqs.set(host, (list = []));
    list.push(eventMetaFromBytes(w.kind, b)!.seq);
  }
  return index.seqs.get(node.nodeName) ?? [];
}

const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/**
 * Waits until each consumer has `count` events of every kind from each of `nodes`, for as
 * long as events keep arriving: a slow machine passes, a delivery that stops short fails
 * once nothing new has come for `stallMs`, saying what is missing and what the relays counted.
 */
async function allDelivered(consumers: Record<Kind, RawWatch>[], nodes: FakeNode[], relaysAlive: RelayProcess[], count: number, context: string, stallMs = 30_000): Promise<void> {
  const total = () => consumers.reduce((sum, c) => sum + KINDS.reduce((s, k) => s + c[k.kind].events.length, 0), 0);
  const complete = () => consumers.every((c) => KINDS.every((k) => nodes.every((n) => seqsFrom(c[k.kind], n).length >= count)));
  let seen = total();
  let movedAt = Date.now();
  while (!complete()) {
    if (Date.now() - movedAt > stallMs) throw new Error(`no event for ${stallMs} ms before every consumer had ${count} of each node's events\n${await deliveryReport(consumers, nodes, relaysAlive, count, context)}`);
    await new Promise((r) => setTimeout(r, 200));
    const now = total();
    if (now !== seen) (seen = now), (movedAt = Date.now());
  }
}

/** What each consumer lacks of each node's events, and the relays' drop and NATS counters. */
async function deliveryReport(consumers: Record<Kind, RawWatch>[], nodes: FakeNode[], relaysAlive: RelayProcess[], count: number, context: string): Promise<string> {
  const out: string[] = [`${context}; nodes sent ${nodes.map((n) => `${n.nodeName} ${JSON.stringify(n.sent)}`).join(', ')}`];
  for (const [i, c] of consumers.entries()) {
    for (const k of KINDS) {
      for (const n of nodes) {
        const seqs = seqsFrom(c[k.kind], n);
        const got = new Set(seqs);
        const missing = upTo(count).filter((q) => !got.has(q));
        if (missing.length === 0 && seqs.length === count) continue;
        out.push(`consumer ${i} ${k.kind} ${n.nodeName}: ${seqs.length} received, ${got.size} distinct, missing ${missing.length}: ${missing.slice(0, 20).join(',')}…${missing.slice(-5).join(',')}`);
      }
    }
  }
  for (const r of relaysAlive) {
    const text = await r.metrics().catch((err: Error) => `(no metrics: ${err.message})`);
    out.push(`metrics ${r.target}: ${text.split('\n').filter((l) => /nats_|dropped|scaleout_/.test(l) && !l.startsWith('#')).join(' | ')}`);
  }
  return out.join('\n');
}

/** Every event exactly once, in the node's order. */
function expectOnceInOrder(seqs: number[], count: number, what: string): void {
  expect(seqs, `${what}: every event once, in order`).toEqual(upTo(count));
}

async function readByTwo(nodes: FakeNode[]): Promise<void> {
  await eventually(() => nodes.every((n) => KINDS.every((k) => n.watchers(k.kind) === 2)), 15_000, 'two relays watching each node');
}

/**
 * `n` relays on NATS with the same two (not yet started) node daemons, every relay seeing
 * the others, a consumer of every kind on each: the nodes start once everything waits for them.
 */
async function relaysReady(natsServers: 1 | 3, n: number, extra: string[] = []) {
  const cluster = await nats(natsServers);
  const ports = [await freePort(), await freePort()];
  const targets = ports.map((p) => `127.0.0.1:${p}`);
  const all = await relays(n, targets, cluster.urls, ['--upstreamReplicas=2', ...extra]);
  await converged(all, n);
  const consumers = consumersOn(all);
  await subscribed(all);
  return { cluster, ports, targets, all, consumers };
}

describe('scale-out over NATS JetStream', () => {
  it('has each node dialled by exactly --upstreamReplicas relays, one of them publishing it, and gives every consumer every event once, in per-node order', async () => {
    const { ports, all, consumers } = await relaysReady(1, 3);
    const count = 300;
    const rate = 100;
    const nodes = await fakeNodes(ports, { rate, count });
    for (const n of nodes) for (const k of KINDS) await n.finished(k.kind);

    for (const n of nodes) for (const k of KINDS) expect(n.watchers(k.kind), `${n.nodeName} ${k.kind} watchers`).toBe(2);
    const dialled = await Promise.all(all.map((r) => metric(r, 'kubearmor_relay_scaleout_assigned_nodes')));
    expect(dialled.reduce((a, b) => a! + b!, 0)).toBe(4);

    for (const c of consumers) for (const k of KINDS) await c[k.kind].waitFor(2 * count);
    for (const c of consumers) {
      for (const k of KINDS) {
        for (const n of nodes) expectOnceInOrder(seqsFrom(c[k.kind], n), count, `${k.kind} from ${n.nodeName}`);
        // the node's bytes, unchanged
        const bytes = new Set(c[k.kind].events.map((b) => b.toString('base64')));
        for (const n of nodes) for (const e of n.recorded[k.kind]) expect(bytes.has(e.bytes.toString('base64'))).toBe(true);
      }
    }
    // one writer per node and kind: every event stored once, by the replica holding its lease
    const publishing = await Promise.all(all.map((r) => metric(r, 'kubearmor_relay_scaleout_publishing')));
    expect(publishing.reduce((a, b) => a! + b!, 0), 'node-and-kind streams published').toBe(nodes.length * KINDS.length);
    for (const k of KINDS) {
      let published = 0;
      for (const r of all) published += (await metric(r, 'kubearmor_relay_nats_published_total', { kind: k.kind })) ?? 0;
      expect(published, `${k.kind} events stored`).toBe(nodes.length * count);
    }
  });

  it('loses none of a node\'s events when a relay dialling it is killed, and re-assigns the node within 10 s', async () => {
    const { ports, targets, all, consumers } = await relaysReady(1, 3);
    const count = 1200;
    const rate = 200;
    const [nodeA, nodeB] = await fakeNodes(ports, { rate, count });
    await readByTwo([nodeA!, nodeB!]);
    // the node's events reach consumers through JetStream: its holder publishes
    await eventually(() => seqsFrom(consumers[0]!.alert, nodeA!).length > 200, 10_000, 'events flowing');

    const dialling: RelayProcess[] = [];
    for (const r of all) if ((await metric(r, 'kubearmor_relay_upstream_connected', { node: targets[0]! })) === 1) dialling.push(r);
    expect(dialling).toHaveLength(2);
    const victim = dialling[0]!;
    await victim.stop('SIGKILL');
    const survivors = all.filter((r) => r !== victim);
    const third = survivors.find((r) => !dialling.includes(r))!;
    await eventually(async () => (await metric(third, 'kubearmor_relay_upstream_connected', { node: targets[0]! })) === 1, 10_000, 'the third relay dialling the node of the killed one');

    for (const k of KINDS) await nodeA!.finished(k.kind);
    const survivorConsumers = consumers.filter((_, i) => all[i] !== victim);
    await allDelivered(survivorConsumers, [nodeA!], survivors, count, `victim was relay-${all.indexOf(victim)}`);
    for (const c of survivorConsumers) for (const k of KINDS) expectOnceInOrder(seqsFrom(c[k.kind], nodeA!), count, `${k.kind} from ${nodeA!.nodeName}`);
  }, 120_000);

  it('loses nothing for consumers that keep reading when one of three NATS servers dies during a flood', async () => {
    const { cluster, ports, all, consumers } = await relaysReady(3, 2, ['--natsStreamReplicas=3']);
    const count = 4000;
    const nodes = await fakeNodes(ports, { rate: 0, count });
    await eventually(() => nodes.every((n) => n.sent.alert > 500), 20_000, 'the flood under way');
    await cluster.servers[0]!.stop('SIGKILL');

    for (const n of nodes) for (const k of KINDS) await n.finished(k.kind);
    await allDelivered(consumers, nodes, all, count, 'nats server 0 killed');
    for (const c of consumers) {
      for (const k of KINDS) {
        for (const n of nodes) expect([...seqsFrom(c[k.kind], n)].sort((x, y) => x - y), `${k.kind} from ${n.nodeName}: every event once`).toEqual(upTo(count));
      }
    }
  }, 120_000);
});

describe('scale-out: the link to NATS', () => {
  it('speaks TLS to NATS with the relay\'s own client certificate and CA, and is ready only once connected', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'scaleout-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    expect(await runCerts(['init', `--out=${dir}`], { out: () => undefined, err: () => undefined })).toBe(0);
    // nats-server requires a client certificate from the same CA (Go verifies it)
    const tls = ['--tls', '--tlscert', join(dir, 'server.crt'), '--tlskey', join(dir, 'server.key'), '--tlscacert', join(dir, 'ca.crt'), '--tlsverify'];
    const cluster = await nats(1, tls);
    const url = cluster.urls.replace('nats://', 'tls://');
    const [withTls, without] = await Promise.all([
      startRelayProcess({ args: [`--natsUrl=${url}`, '--tlsEnabled', `--tlsCertPath=${dir}`, '--replicaId=tls'] }),
      startRelayProcess({ args: [`--natsUrl=${cluster.urls}`, '--natsTls=false', '--replicaId=plain'] }),
    ]);
    cleanups.push(() => withTls.stop('SIGKILL'), () => without.stop('SIGKILL'));
    await eventually(async () => (await fetch(`http://127.0.0.1:${withTls.httpPort}/readyz`)).status === 200, 20_000, 'the TLS relay ready');
    expect(await metric(withTls, 'kubearmor_relay_nats_connected')).toBe(1);
    expect(await metric(withTls, 'kubearmor_relay_scaleout_replicas')).toBe(1);
    // the server refuses a client without TLS: that relay serves, but is not ready
    expect((await fetch(`http://127.0.0.1:${without.httpPort}/readyz`)).status).toBe(503);
    expect(await metric(without, 'kubearmor_relay_nats_connected')).toBe(0);
  });

  it('authenticates to NATS with a user and the password from NATS_PASSWORD', async () => {
    const cluster = await nats(1, ['--user', 'relay', '--pass', 's3cret']);
    const [right, wrong] = await Promise.all([
      startRelayProcess({ args: [`--natsUrl=${cluster.urls}`, '--natsUser=relay', '--replicaId=right'], env: { NATS_PASSWORD: 's3cret' } }),
      startRelayProcess({ args: [`--natsUrl=${cluster.urls}`, '--natsUser=relay', '--replicaId=wrong'], env: { NATS_PASSWORD: 'guess' } }),
    ]);
    cleanups.push(() => right.stop('SIGKILL'), () => wrong.stop('SIGKILL'));
    await eventually(async () => (await metric(right, 'kubearmor_relay_nats_connected')) === 1, 20_000, 'the relay with the right password connected');
    expect((await fetch(`http://127.0.0.1:${right.httpPort}/readyz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${wrong.httpPort}/readyz`)).status).toBe(503);
  });
});
