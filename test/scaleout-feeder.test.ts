// The scale-out feeder against a real nats-server: JetStream into a real hub channel, read
// by a consumer that can stop reading and read again, as a gRPC consumer's stream does.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../harness/eventually.js';
import { startNats, type NatsServer } from '../harness/nats-server.js';
import { Hub, type EventWriter, type Subscriber } from '../server/hub.js';
import type { Kind } from '../server/kinds.js';
import { createMetrics } from '../server/metrics.js';
import { Feeder, type FeederOptions } from '../server/scaleout/feeder.js';
import { STREAM_SUBJECTS, subjectFor } from '../server/scaleout/subjects.js';

const STREAM = 'KUBEARMOR';
const NODE = '10.0.0.1:32767';
const BATCH = 64;
const QUEUE = { maxEvents: 256, maxBytes: 1 << 20 };

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A consumer's stream: takes events while reading; once it stops, the hub queues for it. */
class Reader implements EventWriter {
  readonly got: string[] = [];
  private drain: (() => void) | undefined;
  constructor(private reading = true) {}
  write(bytes: Buffer): boolean {
    this.got.push(bytes.toString());
    return this.reading;
  }
  onDrain(callback: () => void): void {
    this.drain = callback;
  }
  readAgain(): void {
    this.reading = true;
    this.drain?.();
  }
}

interface Setup {
  server: NatsServer;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  hub: Hub;
  publish(kind: Kind, name: string): Promise<void>;
  /** a feeder of `kind` starting after the stream's last message now */
  feeder(kind: Kind, extra?: Partial<FeederOptions>): Promise<Feeder>;
}

async function setup(): Promise<Setup> {
  const cluster = await startNats(1);
  cleanups.push(() => cluster.close());
  const server = cluster.servers[0]!;
  // keeps redialling through a server restart
  const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  cleanups.push(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: STREAM, subjects: STREAM_SUBJECTS });
  const js = jetstream(nc);
  const hub = new Hub({ queue: QUEUE, stallMs: 600_000, dropReportMs: 600_000, logger: pino({ level: 'silent' }), metrics: createMetrics() });
  cleanups.push(() => hub.close());
  return {
    server,
    nc,
    js,
    jsm,
    hub,
    // retried with the same id across a restart: JetStream stores it once
    publish: async (kind, name) => {
      await eventually(() => js.publish(subjectFor(kind, NODE), Buffer.from(name), { msgID: name, timeout: 2000 }).then(() => true), 30_000, `${name} to be stored`);
    },
    feeder: async (kind, extra = {}) => {
      const startAfter = (await jsm.streams.info(STREAM)).state.last_seq;
      const feeder = new Feeder({
        js,
        stream: STREAM,
        startAfter,
        kind,
        channel: hub.channels[kind],
        delivered: { n: 0 },
        logger: pino({ level: 'silent' }),
        batch: BATCH,
        stored: { size: 0, stored: () => undefined },
        ...extra,
      });
      cleanups.push(() => feeder.close());
      return feeder;
    },
  };
}

const names = (prefix: string, from: number, to: number) => Array.from({ length: to - from }, (_, i) => `${prefix}-${from + i}`);

async function publishAll(s: Setup, kind: Kind, list: string[]): Promise<void> {
  for (const name of list) await s.publish(kind, name);
}

/** The most messages the feeder held unread at any moment while `during` ran. */
async function mostUnread(feeder: Feeder, during: () => Promise<void>): Promise<number> {
  let most = 0;
  const sampler = setInterval(() => (most = Math.max(most, feeder.unread)), 2);
  try {
    await during();
  } finally {
    clearInterval(sampler);
  }
  return Math.max(most, feeder.unread);
}

/** Stops the server gracefully and starts it again on the same port and storage. */
async function restart(server: NatsServer): Promise<void> {
  const [command, ...args] = server.proc.spawnargs;
  await server.stop('SIGTERM');
  const proc = spawn(command!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = once(proc, 'exit');
  cleanups.push(async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGKILL');
    await exited;
  });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stderr! }).on('line', (line) => line.includes('Server is ready') && resolve());
    void exited.then(() => reject(new Error('the restarted nats-server exited before it was ready')));
  });
}

describe('Feeder (JetStream into the hub)', () => {
  it('delivers every message of its kind stored after startAfter exactly once, in order', async () => {
    const s = await setup();
    await publishAll(s, 'alert', names('before', 0, 20));
    const reader = new Reader();
    s.hub.channels.alert.subscribe('reader', reader);
    const delivered = { n: 0 };
    const feeder = await s.feeder('alert', { delivered });
    const alerts = names('alert', 0, 1500);
    for (const [i, name] of alerts.entries()) {
      await s.publish('alert', name);
      if (i % 3 === 0) await s.publish('log', `log-${i}`);
    }
    await eventually(() => reader.got.length >= alerts.length, 30_000, 'every alert to reach the reader');
    await publishAll(s, 'alert', ['last']);
    await eventually(() => reader.got.at(-1) === 'last', 30_000, 'the last alert');
    expect(reader.got).toEqual([...alerts, 'last']);
    expect(delivered.n).toBe(alerts.length + 1);
    expect(feeder.pending).toBe(0);
  });

  it('holds at most one batch and loses nothing while the only consumer stops reading, then reads again within the hold', async () => {
    const s = await setup();
    const reader = new Reader(false);
    const sub: Subscriber = s.hub.channels.alert.subscribe('reader', reader);
    const feeder = await s.feeder('alert', { pauseHoldMs: 600_000 });
    const alerts = names('alert', 0, QUEUE.maxEvents * 8);
    const most = await mostUnread(feeder, async () => {
      await publishAll(s, 'alert', alerts);
      await eventually(() => s.hub.channels.alert.paused, 30_000, 'the hub to pause reads');
      // every pull the feeder sent is answered: nothing more comes until it takes what it holds
      await eventually(async () => (await s.jsm.consumers.info(STREAM, (await firstConsumer(s.jsm))!)).num_waiting === 0, 30_000, 'no pull waiting');
    });
    expect(most).toBeLessThanOrEqual(BATCH);
    expect(feeder.unread).toBeGreaterThan(0);
    reader.readAgain();
    await eventually(() => reader.got.length >= alerts.length, 30_000, 'every alert to reach the reader');
    expect(reader.got).toEqual(alerts);
    expect(sub.dropped).toBe(0);
  });

  it('stops its consumer when a pause outlasts the hold, and resumes after the last message delivered', async () => {
    const s = await setup();
    const reader = new Reader(false);
    const sub = s.hub.channels.alert.subscribe('reader', reader);
    const feeder = await s.feeder('alert', { pauseHoldMs: 0 });
    const alerts = names('alert', 0, QUEUE.maxEvents * 8);
    const most = await mostUnread(feeder, async () => {
      await publishAll(s, 'alert', alerts);
      await eventually(() => s.hub.channels.alert.paused && feeder.unread === 0, 30_000, 'the paused feeder to drop what it held');
    });
    expect(most).toBeLessThanOrEqual(BATCH);
    reader.readAgain();
    await eventually(() => reader.got.length >= alerts.length, 30_000, 'every alert to reach the reader');
    expect(reader.got).toEqual(alerts);
    expect(sub.dropped).toBe(0);
    expect(feeder.consumersStarted).toBeGreaterThan(1);
  });

  it('resumes without skipping or repeating a message after the NATS server restarts on the same storage', async () => {
    const s = await setup();
    const reader = new Reader();
    s.hub.channels.log.subscribe('reader', reader);
    await s.feeder('log');
    const before = names('log', 0, 300);
    await publishAll(s, 'log', before);
    await eventually(() => reader.got.length === before.length, 30_000, 'the logs before the restart');
    await restart(s.server);
    const after = names('log', 300, 600);
    await publishAll(s, 'log', after);
    await eventually(() => reader.got.length >= before.length + after.length, 60_000, 'the logs after the restart');
    expect(reader.got).toEqual([...before, ...after]);
  });

  it('starts a new consumer after the last message delivered when the server stops answering, and misses nothing once it answers again', async () => {
    const s = await setup();
    const reader = new Reader();
    s.hub.channels.log.subscribe('reader', reader);
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    const feeder = await s.feeder('log', { idleHeartbeatMs: 500, logger });
    const before = names('log', 0, 100);
    await publishAll(s, 'log', before);
    await eventually(() => reader.got.length === before.length, 30_000, 'the logs before the freeze');
    // frozen, not gone: the connection stays up and only the missing heartbeats tell
    s.server.proc.kill('SIGSTOP');
    cleanups.push(() => s.server.proc.kill('SIGCONT'));
    await eventually(() => warnings.some((w) => w.includes('reading events from JetStream failed')), 60_000, 'the feeder to give up on its consumer');
    s.server.proc.kill('SIGCONT');
    const after = names('log', 100, 200);
    await publishAll(s, 'log', after);
    await eventually(() => reader.got.length >= before.length + after.length, 60_000, 'the logs after the freeze');
    expect(reader.got).toEqual([...before, ...after]);
    expect(feeder.consumersStarted).toBeGreaterThan(1);
  });

  it('reports the id of each message it sees stored while sinks wait for ids, and none otherwise', async () => {
    const s = await setup();
    const reader = new Reader();
    s.hub.channels.message.subscribe('reader', reader);
    const seen: string[] = [];
    const stored = { size: 1, stored: (id: string) => void seen.push(id) };
    await s.feeder('message', { stored });
    const waited = names('msg', 0, 50);
    await publishAll(s, 'message', waited);
    await eventually(() => reader.got.length === waited.length, 30_000, 'the messages while sinks wait');
    stored.size = 0;
    const unwaited = names('msg', 50, 100);
    await publishAll(s, 'message', unwaited);
    await eventually(() => reader.got.length === waited.length + unwaited.length, 30_000, 'the messages after');
    expect(seen).toEqual(waited);
  });

  it('closes with its consumer deleted from the server', async () => {
    const s = await setup();
    const feeder = await s.feeder('alert');
    await eventually(async () => (await firstConsumer(s.jsm)) !== undefined, 30_000, 'the consumer to exist');
    await feeder.close();
    await eventually(async () => (await firstConsumer(s.jsm)) === undefined, 30_000, 'the consumer to be deleted');
  });
});

async function firstConsumer(jsm: JetStreamManager): Promise<string | undefined> {
  for await (const ci of jsm.consumers.list(STREAM)) return ci.name;
  return undefined;
}
