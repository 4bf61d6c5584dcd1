// For tools, benchmarks and tests: a port that was free a moment ago on 127.0.0.1, for a
// daemon that is started after the process that dials it.
//
// Picked at random below the kernel's ephemeral range: every `listen(0)` and every outgoing
// connection takes its port from that range, so a port handed out there could be taken by
// the next relay or client before its daemon binds it (seen as EADDRINUSE in CI). Below the
// range, only another pick like this one can collide.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const FLOOR = 10_000;

function ephemeralStart(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > FLOOR + 1000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  const ceiling = ephemeralStart();
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = FLOOR + Math.floor(Math.random() * (ceiling - FLOOR));
    if (await tryListen(port)) return port;
  }
  throw new Error(`no free port found on 127.0.0.1 between ${FLOOR} and ${ceiling} in 50 tries`);
}
