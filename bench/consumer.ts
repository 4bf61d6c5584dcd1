// Consumers for `npm run bench`: one process holds one or many consumers, each a gRPC
// client of its own (its own connection, `grpc.use_local_subchannel_pool`) opening the
// watch streams of the kinds asked for, through server/tools/logs.ts `watch()` over mutual TLS.
//
// Events are counted per kind and never decoded. With latency on, each event's stamp (see
// bench/node.ts) is found with one Buffer.indexOf and compared with CLOCK_MONOTONIC now.
//
// A stalling consumer reaches its target through a TCP proxy inside this process; `stall`
// makes the proxy stop reading from the target's socket, so the kernel buffers fill and
// the sender sees real backpressure (grpc-js's own pause() only stops handing messages
// to the application: HTTP/2 flow control would still be what stalls, per stream, after
// the window fills; a stopped socket is what a hung or overloaded consumer looks like).
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { Kind } from '../server/kinds.js';
import { parseHostPort } from '../server/flags.js';
import { toolTransport } from '../server/tools/tls.js';
import { watch, type StreamSpec, type WatchHandle } from '../server/tools/logs.js';
import { cpuSeconds, Histogram, readStamp, serveIpc, stampOffset, type HistogramData } from './ipc.js';

export interface ConsumerSetup {
  certDir: string;
  /** one entry per consumer: the targets it reads (the relay, or every node directly) */
  consumers: { targets: string[] }[];
  kinds: Kind[];
  /** measure node-to-consumer latency of every event (only while `measure` is on) */
  latency: boolean;
  /** route every connection through a proxy that `stall` stops */
  stallable: boolean;
}

export interface ConsumerStats {
  /** per consumer, events received per kind */
  received: Record<Kind, number>[];
  latency: HistogramData;
  errors: string[];
  cpuSeconds: number;
}

const FILTERS: Record<Kind, string> = { alert: 'policy', log: 'system', message: 'all' };

interface Proxy {
  target: string;
  server: Server;
  stall(): void;
  close(): void;
}

function startProxy(target: string): Promise<Proxy> {
  const hp = parseHostPort(target);
  if (!hp) throw new Error(`bad target ${target}`);
  const upstreams = new Set<Socket>();
  const sockets = new Set<Socket>();
  let stalled = false;
  const server = createServer((down) => {
    const up = connect(hp.port, hp.host);
    upstreams.add(up);
    sockets.add(up).add(down);
    const end = () => {
      up.destroy();
      down.destroy();
      upstreams.delete(up);
      sockets.delete(up);
      sockets.delete(down);
    };
    up.on('error', end).on('close', end);
    down.on('error', end).on('close', end);
    down.pipe(up);
    up.on('data', (chunk: Buffer) => {
      if (!down.write(chunk)) {
        up.pause();
        down.once('drain', () => {
          if (!stalled) up.resume();
        });
      }
    });
    if (stalled) up.pause();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      resolve({
        target: `127.0.0.1:${port}`,
        server,
        stall() {
          stalled = true;
          for (const up of upstreams) up.pause();
        },
        close() {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

async function main(): Promise<void> {
  const handles: WatchHandle[][] = [];
  const proxies: Proxy[] = [];
  const errors: string[] = [];
  let hist = new Histogram();
  let measuring = false;
  let closeTls: (() => void) | undefined;

  serveIpc({
    async start(setup: ConsumerSetup) {
      const tls = await toolTransport({ tlsCertPath: setup.certDir, tlsServerName: '' }, 'client');
      closeTls = tls.close;
      const streams: StreamSpec[] = setup.kinds.map((kind) => ({ kind, filter: FILTERS[kind] }));
      const onEvent = setup.latency
        ? (_kind: Kind, bytes: Buffer) => {
            if (!measuring) return;
            const at = stampOffset(bytes);
            if (at < 0) return;
            const [s, ns] = readStamp(bytes, at);
            const now = process.hrtime();
            hist.record((now[0] - s) * 1e3 + (now[1] - ns) / 1e6);
          }
        : () => undefined;
      for (const consumer of setup.consumers) {
        const mine: WatchHandle[] = [];
        for (const target of consumer.targets) {
          let dial = target;
          if (setup.stallable) {
            const proxy = await startProxy(target);
            proxies.push(proxy);
            dial = proxy.target;
          }
          const h = watch({
            target: dial,
            streams,
            onEvent,
            transport: tls.transport,
            reconnect: false,
            // its own connection, as a separate consumer would have
            channelOptions: { 'grpc.use_local_subchannel_pool': 1 },
          });
          h.done.catch((err: Error) => errors.push(err.message));
          mine.push(h);
        }
        handles.push(mine);
      }
      await Promise.all(handles.flat().map((h) => h.ready));
      return { consumers: handles.length };
    },

    measure(args: { on: boolean }) {
      if (args.on) hist = new Histogram();
      measuring = args.on;
    },

    stall() {
      for (const p of proxies) p.stall();
    },

    stats(): ConsumerStats {
      const received = handles.map((mine) => {
        const r = { alert: 0, log: 0, message: 0 };
        for (const h of mine) {
          r.alert += h.received.alert;
          r.log += h.received.log;
          r.message += h.received.message;
        }
        return r;
      });
      return { received, latency: hist.toJSON(), errors: errors.slice(0, 10), cpuSeconds: cpuSeconds(process.pid) };
    },

    async close() {
      await Promise.all(handles.flat().map((h) => h.close()));
      for (const p of proxies) p.close();
      closeTls?.();
      setImmediate(() => process.exit(0));
    },
  });
}

await main();
