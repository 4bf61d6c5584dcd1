// A sink's queue: bounded in events and bytes, in-flight events included until released.
import { describe, expect, it } from 'vitest';
import { SinkQueue } from '../server/sinks/queue.js';

const b = (n: number) => Buffer.alloc(n);

describe('SinkQueue', () => {
  it('refuses an event beyond the event bound', () => {
    const q = new SinkQueue({ maxEvents: 2, maxBytes: 1000 });
    expect([q.push('alert', b(1), 0), q.push('alert', b(1), 0), q.push('alert', b(1), 0)]).toEqual([true, true, false]);
  });

  it('refuses an event that would pass the byte bound', () => {
    const q = new SinkQueue({ maxEvents: 10, maxBytes: 100 });
    expect(q.push('log', b(60), 0)).toBe(true);
    expect(q.push('log', b(41), 0)).toBe(false);
    expect(q.push('log', b(40), 0)).toBe(true);
  });

  it('keeps taken events counted against the bounds until they are released', () => {
    const q = new SinkQueue({ maxEvents: 2, maxBytes: 1000 });
    q.push('alert', b(10), 0);
    q.push('alert', b(20), 0);
    const taken = q.take(10, 1000, 0);
    expect(taken).toHaveLength(2);
    expect(q.length).toBe(0);
    expect([q.events, q.bytes]).toEqual([2, 30]);
    expect(q.push('alert', b(1), 0)).toBe(false);
    q.release(2, 30);
    expect(q.push('alert', b(1), 0)).toBe(true);
  });

  it('takes in arrival order, up to the count and about the bytes asked, and at least one event', () => {
    const q = new SinkQueue({ maxEvents: 10, maxBytes: 10_000 });
    for (let i = 1; i <= 5; i++) q.push('alert', b(i * 100), 0);
    expect(q.take(2, 10_000, 0).map((e) => e.bytes.length)).toEqual([100, 200]);
    expect(q.take(10, 350, 0).map((e) => e.bytes.length)).toEqual([300]);
    expect(q.take(10, 1, 0).map((e) => e.bytes.length)).toEqual([400]);
    expect(q.queuedBytes).toBe(500);
  });

  it('remembers when the oldest waiting event arrived', () => {
    const q = new SinkQueue({ maxEvents: 10, maxBytes: 10_000 });
    q.push('alert', b(1), 100);
    q.push('alert', b(1), 150);
    expect(q.oldestAt).toBe(100);
  });
});
