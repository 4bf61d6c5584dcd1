// Simulated KubeArmor node daemons for `npm run bench`: one process serves many nodes, each
// a gRPC server of its own (feeder.LogService over mutual TLS, on its own port).
//
// Unlike `fake-node`, which builds and encodes every event on the fly (hundreds of µs per
// event: far too slow to be the ceiling of a throughput benchmark), each node here draws
// its events once from the same realistic generator (server/tools/events.ts) into a pool of
// encoded events and cycles through it. Every event is re-stamped just before it is
// written: the 19 decimal digits of its sentAtNs (EventData["sentAtNs"] of alerts and
// logs, the "sentAtNs=" suffix of messages) are overwritten in place with the sender's
// CLOCK_MONOTONIC time (process.hrtime, the same clock in every process of the machine),
// so a consumer can measure node-to-consumer latency without decoding the event.
// Rewriting the pooled bytes is safe: grpc-js copies a message into its own frame when it
// is written, and producing stops while a watcher has MAX_QUEUED messages pending, fewer
// than a pool holds.
//
// Flow control as fake-node: one source per node and kind broadcast to every watcher of
// that kind; a watcher with MAX_QUEUED messages waiting pauses its kind until 'drain'.
// Rate 0 floods (as fast as the slowest watcher reads); otherwise a 2 ms timer emits as
// many events as the elapsed time calls for.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { KINDS, methodPath, type Kind } from '../server/kinds.js';
import { decodeNonce, encodeReply, SERVICE } from '../server/proto.js';
import { openMutualTls } from '../server/tls.js';
import { formatHostPort, type Listening } from '../server/transport.js';
import { createEventSource, encodeEvent } from '../server/tools/events.js';
import { cpuSeconds, serveIpc, stampOffset, writeStamp } from './ipc.js';

export interface NodeSetup {
  /** node servers in this process */
  nodes: number;
  /** node names are `${namePrefix}${index}` */
  namePrefix: string;
  /** directory with ca.crt, server.crt, server.key */
  certDir: string;
  /** events per second per node, all its kinds together; 0 = as fast as the readers take */
  rate: number;
  kinds: Kind[];
  /** distinct encoded events per node and kind to cycle through */
  pool: number;
  seed: number;
}

export interface NodeStats {
  sent: Record<Kind, number>;
  watchers: Record<Kind, number>;
  cpuSeconds: number;
}

type Watcher = grpc.ServerWritableStream<Buffer, Buffer>;
const identity = (b: Buffer): Buffer => b;
const MAX_QUEUED = 128;
const BURST = 256;
const TICK_MS = 2;
const RING = 2 * MAX_QUEUED;

interface PoolEntry {
  bytes: Buffer;
  stampAt: number;
}

class Pump {
  readonly watchers = new Set<Watcher>();
  private readonly blocked = new Set<Watcher>();
  sent = 0;
  private next = 0;
  private flooding = false;
  /** paced mode: events due but not yet emitted */
  carry = 0;

  constructor(
    private readonly pool: PoolEntry[],
    private readonly producing: () => boolean,
    private readonly flood: boolean,
  ) {}

  get isBlocked(): boolean {
    return this.blocked.size > 0;
  }

  attach(call: Watcher): void {
    this.watchers.add(call);
    const detach = () => {
      if (!this.watchers.delete(call)) return;
      this.blocked.delete(call);
      if (this.blocked.size === 0) this.kick();
    };
    call.on('cancelled', detach);
    call.on('error', detach);
    call.on('close', detach);
    this.kick();
  }

  /** flood mode: (re)start the loop if it can run */
  kick(): void {
    if (!this.flood || this.flooding || !this.producing() || this.watchers.size === 0 || this.blocked.size > 0) return;
    this.flooding = true;
    setImmediate(() => this.floodLoop());
  }

  private floodLoop(): void {
    for (let n = 0; n < BURST; n++) {
      if (!this.emit()) {
        this.flooding = false;
        return; // 'drain' or a new watcher kicks again
      }
    }
    setImmediate(() => this.floodLoop());
  }

  /** One event to every watcher; false when producing must wait. */
  emit(): boolean {
    if (!this.producing() || this.watchers.size === 0 || this.blocked.size > 0) return false;
    const entry = this.pool[this.next]!;
    this.next = (this.next + 1) % this.pool.length;
    if (entry.stampAt >= 0) writeStamp(entry.bytes, entry.stampAt);
    for (const call of this.watchers) {
      if (!call.write(entry.bytes) && call.writableLength >= MAX_QUEUED) {
        this.blocked.add(call);
        call.once('drain', () => {
          if (this.blocked.delete(call) && this.blocked.size === 0) this.kick();
        });
      }
    }
    this.sent++;
    return this.blocked.size === 0;
  }
}

interface NodeServer {
  name: string;
  target: string;
  pumps: Partial<Record<Kind, Pump>>;
  server: grpc.Server;
  listening: Listening;
}

async function main(): Promise<void> {
  let producing = false;
  let nodes: NodeServer[] = [];
  let setup: NodeSetup | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let closeTls: (() => void) | undefined;

  const pumpsOf = (): Pump[] => nodes.flatMap((n) => Object.values(n.pumps) as Pump[]);

  serveIpc({
    async start(args: NodeSetup) {
      setup = args;
      const flood = args.rate === 0;
      const { transport, manager } = await openMutualTls({ provider: 'external', dir: args.certDir, roles: ['server'], logger: pino({ level: 'warn' }, pino.destination(2)) });
      closeTls = () => manager.close();
      const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {
        HealthCheck: { path: `/${SERVICE}/HealthCheck`, requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
      };
      for (const k of KINDS) {
        definition[k.method] = { path: methodPath(k), requestStream: false, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity };
      }
      for (let i = 0; i < args.nodes; i++) {
        const name = `${args.namePrefix}${i}`;
        const source = createEventSource({ seed: args.seed + i, nodeName: name });
        const pumps: Partial<Record<Kind, Pump>> = {};
        for (const kind of args.kinds) {
          // Distinct events (generating one takes up to a millisecond), then copies of them
          // up to RING entries, so that a pooled buffer is never rewritten while a watcher
          // may still hold it unserialized (at most MAX_QUEUED of them).
          const distinct: PoolEntry[] = [];
          for (let p = 0; p < args.pool; p++) {
            // a 19-digit placeholder, overwritten at every send
            const bytes = encodeEvent(kind, source.next(kind, 1_000_000_000_000_000_000n));
            distinct.push({ bytes, stampAt: stampOffset(bytes) });
          }
          const pool = distinct.slice();
          while (pool.length < RING) {
            const e = distinct[pool.length % distinct.length]!;
            pool.push({ bytes: Buffer.from(e.bytes), stampAt: e.stampAt });
          }
          pumps[kind] = new Pump(pool, () => producing, flood);
        }
        const server = new grpc.Server({ 'grpc.keepalive_time_ms': 1000, 'grpc.keepalive_timeout_ms': 20_000 });
        const handlers: grpc.UntypedServiceImplementation = {
          HealthCheck: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, encodeReply(decodeNonce(call.request))),
        };
        for (const k of KINDS) {
          // kinds this node does not produce: the stream stays open and silent
          handlers[k.method] = (call: Watcher) => pumps[k.kind]?.attach(call);
        }
        server.addService(definition, handlers);
        const listening = await transport.serve(server, '127.0.0.1', 0);
        nodes.push({ name, target: formatHostPort('127.0.0.1', listening.port), pumps, server, listening });
      }
      return { targets: nodes.map((n) => n.target) };
    },

    go() {
      producing = true;
      if (!setup) return;
      if (setup.rate === 0) {
        for (const p of pumpsOf()) p.kick();
        return;
      }
      const perPump = setup.rate / setup.kinds.length;
      let last = performance.now();
      const pumps = pumpsOf();
      ticker = setInterval(() => {
        const now = performance.now();
        const add = (perPump * (now - last)) / 1000;
        last = now;
        for (const p of pumps) {
          if (p.isBlocked || p.watchers.size === 0) {
            p.carry = 0; // a paused node slides its schedule rather than bursting later
            continue;
          }
          p.carry += add;
          while (p.carry >= 1) {
            p.carry--;
            if (!p.emit()) {
              p.carry = 0;
              break;
            }
          }
        }
      }, TICK_MS);
    },

    stop() {
      producing = false;
      clearInterval(ticker);
      ticker = undefined;
    },

    stats(): NodeStats {
      const sent = { alert: 0, log: 0, message: 0 };
      const watchers = { alert: 0, log: 0, message: 0 };
      for (const n of nodes) {
        for (const [kind, pump] of Object.entries(n.pumps) as [Kind, Pump][]) {
          sent[kind] += pump.sent;
          watchers[kind] += pump.watchers.size;
        }
      }
      return { sent, watchers, cpuSeconds: cpuSeconds(process.pid) };
    },

    async close() {
      producing = false;
      clearInterval(ticker);
      for (const n of nodes) {
        await n.listening.close();
        n.server.forceShutdown();
      }
      nodes = [];
      closeTls?.();
      setImmediate(() => process.exit(0));
    },
  });
}

await main();
