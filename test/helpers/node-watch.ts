// Small in-process helpers over server/tools/logs.ts `watch()` for the tests.
import type { Kind } from '../../server/kinds.js';
import { watch, type StreamSpec, type WatchHandle } from '../../server/tools/logs.js';

export interface Collected {
  handle: WatchHandle;
  events: Record<Kind, Buffer[]>;
  /** resolves once `n` events of the kind arrived */
  until(kind: Kind, n: number): Promise<Buffer[]>;
  /** the reconnect lines watch() logged */
  log: string[];
}

/** Watches target and keeps every raw event, with a fast backoff so tests stay quick. */
export function collect(target: string, streams: readonly StreamSpec[]): Collected {
  const events: Record<Kind, Buffer[]> = { alert: [], log: [], message: [] };
  const waiters: { kind: Kind; n: number; resolve: (b: Buffer[]) => void }[] = [];
  const log: string[] = [];
  const handle = watch({
    target,
    streams,
    backoff: { initialMs: 50, maxMs: 200 },
    onLog: (line) => log.push(line),
    onEvent(kind, bytes) {
      events[kind].push(bytes);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!;
        if (w.kind === kind && events[kind].length >= w.n) {
          waiters.splice(i, 1);
          w.resolve(events[kind].slice(0, w.n));
        }
      }
    },
  });
  return {
    handle,
    events,
    log,
    until(kind, n) {
      if (events[kind].length >= n) return Promise.resolve(events[kind].slice(0, n));
      return new Promise((resolve) => waiters.push({ kind, n, resolve }));
    },
  };
}

export { eventually } from '../../harness/eventually.js';
