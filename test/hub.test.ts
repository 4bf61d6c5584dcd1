import { afterEach, describe, expect, it, vi } from 'vitest';
import pino from 'pino';
import { Hub, type EventWriter } from '../server/hub.js';
import { createMetrics } from '../server/metrics.js';

/** A consumer stream that accepts `room` events, then reports busy until drained. */
class FakeWriter implements EventWriter {
  written: Buffer[] = [];
  private drain: (() => void) | undefined;
  constructor(private room: number) {}
  write(bytes: Buffer): boolean {
    this.written.push(bytes);
    this.room--;
    return this.room > 0;
  }
  onDrain(cb: () => void): void {
    this.drain = cb;
  }
  release(room: number): void {
    this.room = room;
    this.drain?.();
  }
}

function makeHub(maxEvents = 4, maxBytes = 1 << 20, stallMs = 60_000) {
  const metrics = createMetrics();
  const hub = new Hub({ queue: { maxEvents, maxBytes }, stallMs, dropReportMs: 60_000, logger: pino({ level: 'silent' }), metrics });
  return { hub, metrics };
}

const ev = (i: number) => Buffer.from(`event-${i}`);

describe('Hub', () => {
  it('writes an event straight through when the consumer stream has room', () => {
    const { hub } = makeHub();
    const w = new FakeWriter(100);
    hub.channels.alert.subscribe('a', w);
    hub.channels.alert.publish(ev(1));
    expect(w.written.map(String)).toEqual(['event-1']);
  });

  it('queues while a consumer is busy and delivers in order after drain', () => {
    const { hub } = makeHub(10);
    const w = new FakeWriter(1);
    hub.channels.log.subscribe('a', w);
    for (let i = 0; i < 5; i++) hub.channels.log.publish(ev(i));
    expect(w.written).toHaveLength(1);
    w.release(100);
    expect(w.written.map(String)).toEqual(['event-0', 'event-1', 'event-2', 'event-3', 'event-4']);
  });

  it('drops only for the consumer whose queue is full and counts each drop', async () => {
    const { hub, metrics } = makeHub(3);
    const slow = new FakeWriter(1);
    const fast = new FakeWriter(1_000_000);
    hub.channels.message.subscribe('slow', slow);
    hub.channels.message.subscribe('fast', fast);
    for (let i = 0; i < 10; i++) hub.channels.message.publish(ev(i));
    expect(fast.written).toHaveLength(10);
    expect(slow.written).toHaveLength(1);
    const text = await metrics.registry.metrics();
    expect(text).toContain('kubearmor_relay_events_dropped_total{kind="message",reason="queue_full"} 6');
  });

  it('bounds the bytes a consumer may have queued', () => {
    const { hub } = makeHub(1000, 100);
    const w = new FakeWriter(1);
    hub.channels.alert.subscribe('a', w);
    for (let i = 0; i < 50; i++) hub.channels.alert.publish(Buffer.alloc(30));
    expect(hub.queuedBytes('alert')).toBeLessThanOrEqual(100);
  });

  it('pauses upstream reads only while every consumer is full, and resumes when one drains', () => {
    const { hub } = makeHub(2);
    const flow: boolean[] = [];
    hub.channels.alert.onFlow((paused) => flow.push(paused));
    const a = new FakeWriter(1);
    const b = new FakeWriter(1);
    hub.channels.alert.subscribe('a', a);
    hub.channels.alert.subscribe('b', b);
    for (let i = 0; i < 3; i++) hub.channels.alert.publish(ev(i));
    expect(flow).toEqual([true]);
    a.release(100);
    expect(flow).toEqual([true, false]);
  });

  it('pauses reads for a full consumer even while a consumer that does not pace reads (a sink) takes everything', () => {
    const { hub } = makeHub(2);
    const flow: boolean[] = [];
    hub.channels.alert.onFlow((paused) => flow.push(paused));
    const grpc = new FakeWriter(1);
    const sink = new FakeWriter(1_000_000);
    hub.channels.alert.subscribe('grpc', grpc);
    hub.channels.alert.subscribe('sink', sink, { pacesReads: false });
    for (let i = 0; i < 3; i++) hub.channels.alert.publish(ev(i));
    expect(flow).toEqual([true]);
    expect(sink.written).toHaveLength(3);
  });

  it('never pauses reads for a consumer that does not pace them, alone on its kind', () => {
    const { hub } = makeHub(2);
    const flow: boolean[] = [];
    hub.channels.alert.onFlow((paused) => flow.push(paused));
    hub.channels.alert.subscribe('sink', new FakeWriter(1), { pacesReads: false });
    for (let i = 0; i < 5; i++) hub.channels.alert.publish(ev(i));
    expect(flow).toEqual([]);
  });

  it('counts events that arrive while nobody is subscribed', async () => {
    const { hub, metrics } = makeHub();
    hub.channels.log.publish(ev(1));
    const text = await metrics.registry.metrics();
    expect(text).toContain('kubearmor_relay_events_dropped_total{kind="log",reason="no_consumer"} 1');
  });

  describe('stall detection', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('treats a consumer that took nothing for the stall time as stalled and resumes reads for the others', () => {
      vi.useFakeTimers();
      const { hub } = makeHub(4, 1 << 20, 1000);
      const flow: boolean[] = [];
      hub.channels.alert.onFlow((paused) => flow.push(paused));
      const stuck = new FakeWriter(1);
      const sub = hub.channels.alert.subscribe('stuck', stuck);
      for (let i = 0; i < 4; i++) hub.channels.alert.publish(ev(i));
      expect(flow).toEqual([true]);
      vi.advanceTimersByTime(1000);
      expect(sub.stalled).toBe(true);
      expect(flow).toEqual([true, false]);
    });

    it('never treats a slow consumer that keeps draining as stalled', () => {
      vi.useFakeTimers();
      const { hub } = makeHub(4, 1 << 20, 1000);
      const slow = new FakeWriter(1);
      const sub = hub.channels.alert.subscribe('slow', slow);
      for (let i = 0; i < 4; i++) hub.channels.alert.publish(ev(i));
      for (let t = 0; t < 5; t++) {
        vi.advanceTimersByTime(600);
        slow.release(1); // takes one event, then is busy again
        hub.channels.alert.publish(ev(100 + t));
      }
      expect(sub.stalled).toBe(false);
      expect(sub.dropped).toBe(0);
    });
  });
});
