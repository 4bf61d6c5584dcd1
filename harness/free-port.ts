// For tools, benchmarks and tests: a port that was free a moment ago on 127.0.0.1, for a
// daemon that is started after the process that dials it.
//
// Picked below the kernel's ephemeral range: every `listen(0)` and every outgoing
// connection takes its port from that range, so a port handed out there could be taken by
// the next relay or client before its daemon binds it (seen as EADDRINUSE in CI). Below the
// range, only another pick like this one can collide, so each vitest worker picks in its own
// slice of it (VITEST_POOL_ID) and a process never hands out the same port twice.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const FLOOR = 10_000;
const SLICES = 16;

function ephemeralStart(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > FLOOR + SLICES * 100 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** This process's part of the range: one slice per vitest worker, any slice elsewhere. */
function slice(): { from: number; size: number } {
  const size = Math.floor((ephemeralStart() - FLOOR) / SLICES);
  const pool = Number(process.env.VITEST_POOL_ID);
  const index = Number.isInteger(pool) && pool > 0 ? pool % SLICES : process.pid % SLICES;
  return { from: FLOOR + index * size, size };
}

/** Ports this process handed out: a daemon may not have bound its port yet. */
const handedOut = new Set<number>();

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  const { from, size } = slice();
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = from + Math.floor(Math.random() * size);
    if (handedOut.has(port)) continue;
    handedOut.add(port); // reserved before the check: concurrent calls never pick it twice
    if (await tryListen(port)) return port;
    handedOut.delete(port);
  }
  throw new Error(`no free port found on 127.0.0.1 between ${from} and ${from + size} in 100 tries`);
}
