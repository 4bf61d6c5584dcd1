import { describe, expect, it } from 'vitest';
import { Backoff } from '../server/backoff.js';

describe('Backoff', () => {
  it('retries first within the initial delay and never waits longer than the cap', () => {
    const b = new Backoff({ initialMs: 1000, maxMs: 30_000 });
    const delays = Array.from({ length: 12 }, () => b.next());
    expect(delays[0]).toBeLessThanOrEqual(1000);
    expect(delays[0]).toBeGreaterThanOrEqual(500);
    for (const d of delays) expect(d).toBeLessThanOrEqual(30_000);
    expect(delays[11]).toBeGreaterThanOrEqual(15_000);
  });

  it('starts again from the initial delay after a reset', () => {
    const b = new Backoff({ initialMs: 1000, maxMs: 30_000 });
    for (let i = 0; i < 6; i++) b.next();
    b.reset();
    expect(b.next()).toBeLessThanOrEqual(1000);
  });
});
