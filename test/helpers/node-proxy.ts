// A TCP proxy whose upstream side can stop reading, to simulate a consumer that falls
// behind at the network level. (A paused grpc-js client call does not do this: grpc-js
// keeps reading and buffers in memory, so the sender never feels backpressure.)
import { createServer, connect, type Socket } from 'node:net';

export interface PausableProxy {
  readonly target: string;
  /** stop reading from the upstream server (its send buffers and HTTP/2 windows fill up) */
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

export async function startPausableProxy(upstreamHost: string, upstreamPort: number): Promise<PausableProxy> {
  const upstreams = new Set<Socket>();
  const sockets = new Set<Socket>();
  let paused = false;
  const server = createServer((downstream) => {
    const upstream = connect(upstreamPort, upstreamHost);
    upstreams.add(upstream);
    sockets.add(upstream).add(downstream);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    if (paused) upstream.pause(); // after pipe(), which resumes its source
    const drop = () => {
      upstream.destroy();
      downstream.destroy();
      upstreams.delete(upstream);
    };
    upstream.on('error', drop).on('close', drop);
    downstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    target: `127.0.0.1:${port}`,
    pause() {
      paused = true;
      for (const u of upstreams) u.pause();
    },
    resume() {
      paused = false;
      for (const u of upstreams) u.resume();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
