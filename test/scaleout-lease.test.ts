// The publisher's lease (one writer per node and kind) against a real nats-server: two
// replicas, each with its own connection, ack router and KV handle, reading the same node.
// Events are handed to the sinks as an upstream would; what a replica's JetStream reader
// would report stored is reported from the stream itself.
import { afterEach, describe, expect, it } from 'vitest';
import { jetstream, DeliverPolicy } from '@nats-io/jetstream';
import { startNats, type NatsCluster } from '../harness/nats-server.js';
import { eventually } from '../harness/eventually.js';
import { connectEngine, type Engine } from '../server/scaleout/engine.js';
import { AckRouter, JetStreamSink, StoredIndex } from '../server/scaleout/publisher.js';
import { leaseKey } from '../server/scaleout/lease.js';
import { subjectFor } from '../server/scaleout/subjects.js';
import { createLogger } from '../server/logger.js';
import type { Tally } from '../server/metrics.js';

const NODE = '127.0.0.1:32767';
const LEASE_TTL_MS = 1000;
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const event = (seq: number) => Buffer.from(`event ${seq} of ${NODE}`);

interface Replica {
  engine: Engine;
  sink: JetStreamSink;
  tallies: { published: Tally; duplicates: Tally; failures: Tally; gap: Tally; shed: Tally };
  /** reports to the sink every event stored since the last call, as its feeder would */
  feed(): Promise<void>;
}

async function replica(cluster: NatsCluster, name: string, maxPending = 1024, tickMs = LEASE_TTL_MS / 4): Promise<Replica> {
  const engine = await connectEngine({
    servers: [cluster.urls],
    name,
    stream: 'KUBEARMOR',
    streamReplicas: 1,
    maxAgeMs: 60_000,
    maxBytes: 16 * 1024 * 1024,
    duplicateWindowMs: 60_000,
    membershipTtlMs: LEASE_TTL_MS,
    logger: createLogger('silent', true),
  });
  const router = new AckRouter(engine.nc);
  cleanups.push(async () => {
    router.close();
    await engine.close();
  });
  const index = new StoredIndex();
  const tallies = { published: { n: 0 }, duplicates: { n: 0 }, failures: { n: 0 }, gap: { n: 0 }, shed: { n: 0 } };
  const sink = new JetStreamSink(NODE, 'alert', {
    replica: name,
    router: () => router,
    leases: () => engine.leases,
    index,
    closing: new Set(),
    tallies: () => tallies,
    logger: createLogger('silent', true),
    leaseTtlMs: LEASE_TTL_MS,
    tickMs,
    settleMs: LEASE_TTL_MS / 4 + 300,
    maxPending,
    maxPendingBytes: 1024 * 1024,
    ackTimeoutMs: 1000,
  });
  cleanups.push(() => sink.close());
  let after = 0;
  const feed = async () => {
    for (const m of await storedMessages(engine, after)) {
      after = m.seq;
      index.stored(m.id);
    }
  };
  return { engine, sink, tallies, feed };
}

async function storedMessages(engine: Engine, after: number): Promise<{ seq: number; id: string; text: string }[]> {
  const info = await engine.jsm.streams.info('KUBEARMOR');
  if (info.state.last_seq <= after) return [];
  const consumer = await jetstream(engine.nc).consumers.get('KUBEARMOR', { filter_subjects: subjectFor('alert', NODE), deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 });
  const out: { seq: number; id: string; text: string }[] = [];
  const batch = await consumer.fetch({ max_messages: 10_000, expires: 1000 });
  for await (const m of batch) {
    out.push({ seq: m.seq, id: m.headers?.get('Nats-Msg-Id') ?? '', text: Buffer.from(m.data).toString() });
    if (m.info.pending === 0) break;
  }
  return out;
}

async function storedTexts(engine: Engine): Promise<string[]> {
  return (await storedMessages(engine, 0)).map((m) => m.text);
}

/** A NATS server and two replicas reading the same node (the second with its own bound). */
async function twoReplicas(first: string, second: string, secondMaxPending?: number, tickMs?: number): Promise<[Replica, Replica]> {
  const cluster = await startNats(1);
  cleanups.push(() => cluster.close());
  return [await replica(cluster, first, undefined, tickMs), await replica(cluster, second, secondMaxPending, tickMs)];
}

/** A replica's session begins with `seq`, and it takes the lease and publishes. */
async function holds(r: Replica, seq: number): Promise<void> {
  r.sink.sessionStarted();
  r.sink.publish(event(seq));
  await eventually(() => r.sink.holding, 5000, 'the first reader to hold the lease');
}

async function storedCount(engine: Engine, n: number, timeoutMs = 10_000): Promise<void> {
  await eventually(async () => (await storedTexts(engine)).length === n, timeoutMs, `${n} events stored`);
}

const texts = (seqs: number[]) => seqs.map((s) => event(s).toString());

/**
 * The early reader reads `earlySeqs` and takes the lease; the key then goes as if it had
 * expired while the early reader's refreshes got no answer (a NATS server died), and the
 * late reader, whose session begins with the node's `lateFirst`, takes it and settles.
 */
async function leaseExpiresToLaterReader(early: Replica, late: Replica, earlySeqs: number[], lateFirst: number): Promise<void> {
  early.sink.sessionStarted();
  for (const seq of earlySeqs) early.sink.publish(event(seq));
  await eventually(() => early.sink.state === 'settling', 5000, 'the early reader to take the lease');
  await new Promise((r) => setTimeout(r, 200));
  await early.engine.leases.purge(leaseKey(NODE, 'alert'));
  late.sink.sessionStarted();
  late.sink.publish(event(lateFirst));
  await eventually(() => late.sink.state === 'settling', 5000, 'the late reader to take the lease');
}

describe('one publisher per node and kind (the lease)', () => {
  it('lets a standby that began reading earlier take the lease over from a holder that began later, so its earlier events are stored first', async () => {
    const [early, late] = await twoReplicas('early', 'late');

    // the late reader takes the lease first, its first event being the node's third
    late.sink.sessionStarted();
    late.sink.publish(event(3));
    await eventually(() => late.sink.state === 'settling', 5000, 'the late reader to take the lease');
    early.sink.sessionStarted();
    for (const seq of [1, 2, 3]) early.sink.publish(event(seq));
    for (const seq of [4, 5]) {
      early.sink.publish(event(seq));
      late.sink.publish(event(seq));
    }

    await eventually(() => early.sink.holding, 10_000, 'the early reader to hold the lease');
    await storedCount(early.engine, 5);
    expect(await storedTexts(early.engine)).toEqual(texts([1, 2, 3, 4, 5]));
    expect(late.sink.holding).toBe(false);
    await late.feed();
    expect(late.sink.pending, 'the late reader forgets what it saw stored').toBe(0);
    expect(late.tallies.gap.n).toBe(0);
  });

  it('has a settling replica whose lease expired unrefreshed and went to a later reader take it back at once, so its earlier events are stored first', async () => {
    // no tick in the test's few seconds: only the look that follows the failed refresh can save events 1 and 2
    const [early, late] = await twoReplicas('early', 'late', undefined, 60_000);
    await leaseExpiresToLaterReader(early, late, [1, 2, 3], 3);
    for (const seq of [4, 5]) {
      early.sink.publish(event(seq));
      late.sink.publish(event(seq));
    }

    await storedCount(early.engine, 5);
    expect(await storedTexts(early.engine)).toEqual(texts([1, 2, 3, 4, 5]));
    await late.feed();
    expect(late.sink.pending, 'the late reader forgets what it saw stored').toBe(0);
    expect(early.tallies.gap.n + late.tallies.gap.n).toBe(0);
  });

  it('has a replica whose full buffer stops short of a later reader\'s first event take the lease over by the clock, so its earlier events are stored first', async () => {
    // the early reader holds at most 4 events: it never reads the late reader's first (the 7th)
    const [late, early] = await twoReplicas('late', 'early', 4, 60_000);
    await leaseExpiresToLaterReader(early, late, [1, 2, 3, 4], 7);
    expect(early.sink.paused).toBe(true);

    await storedCount(early.engine, 4);
    for (const seq of [5, 6, 7]) early.sink.publish(event(seq));
    late.sink.publish(event(8));
    early.sink.publish(event(8));
    await storedCount(early.engine, 8);
    expect(await storedTexts(early.engine)).toEqual(texts([1, 2, 3, 4, 5, 6, 7, 8]));
    expect(early.tallies.gap.n + early.tallies.shed.n).toBe(0);
  });

  it('has a standby publish, after the holder stops refreshing, every event it has not seen stored, after the stored ones', async () => {
    const [holder, standby] = await twoReplicas('holder', 'standby');
    await holds(holder, 1);
    standby.sink.sessionStarted();
    for (const seq of [2, 3]) {
      holder.sink.publish(event(seq));
      standby.sink.publish(event(seq));
    }
    await storedCount(holder.engine, 3, 5000);
    await standby.feed();
    expect(standby.sink.pending).toBe(0);

    // the holder's process dies: its connection goes, nothing is released
    await holder.engine.nc.close();
    for (const seq of [4, 5, 6]) standby.sink.publish(event(seq));
    await eventually(() => standby.sink.holding, 10_000, 'the standby to take the lease once it expired');
    await storedCount(standby.engine, 6);
    expect(await storedTexts(standby.engine)).toEqual(texts([1, 2, 3, 4, 5, 6]));
  });

  it('has a holder whose node session ends let a standby publish what the holder missed, in order, before its own next events', async () => {
    const [holder, standby] = await twoReplicas('holder', 'standby');
    standby.sink.sessionStarted();
    await holds(holder, 1);
    standby.sink.publish(event(1));
    await storedCount(holder.engine, 1, 5000);

    // the holder's connection to the node drops; the standby's does not
    holder.sink.sessionEnded();
    for (const seq of [2, 3]) standby.sink.publish(event(seq));
    holder.sink.sessionStarted();
    for (const seq of [4, 5]) {
      holder.sink.publish(event(seq));
      standby.sink.publish(event(seq));
    }
    await eventually(async () => {
      await standby.feed();
      await holder.feed();
      return (await storedTexts(holder.engine)).length === 5;
    }, 15_000, 'five events stored');
    expect(await storedTexts(holder.engine)).toEqual(texts([1, 2, 3, 4, 5]));
    expect(standby.tallies.gap.n + holder.tallies.gap.n).toBe(0);
  });

  it('has a standby forget events its JetStream reader saw stored before the standby itself read them from the node', async () => {
    const [holder, standby] = await twoReplicas('holder', 'standby');
    holder.sink.sessionStarted();
    standby.sink.sessionStarted();
    for (let seq = 1; seq <= 4; seq++) holder.sink.publish(event(seq));
    await storedCount(holder.engine, 4);
    // the standby's reads lag: its reader reports the events first
    await standby.feed();
    for (let seq = 1; seq <= 4; seq++) standby.sink.publish(event(seq));
    expect(standby.sink.pending).toBe(0);
    expect(standby.tallies.gap.n).toBe(0);
  });

  it('has a standby whose buffer fills while the holder publishes shed its oldest events, counted, instead of pausing the node', async () => {
    const [holder, standby] = await twoReplicas('holder', 'standby', 8);
    await holds(holder, 0);
    // events the standby read that the holder never stores (it began reading after them)
    standby.sink.sessionStarted();
    for (let seq = 100; seq < 108; seq++) standby.sink.publish(event(seq));
    expect(standby.sink.paused, 'full: reads pause until it knows the holder is alive').toBe(true);

    await eventually(() => !standby.sink.paused, 10_000, 'the standby to resume reading');
    expect(standby.tallies.shed.n).toBeGreaterThan(0);
    expect(standby.sink.pending).toBeLessThan(8);
  });
});
