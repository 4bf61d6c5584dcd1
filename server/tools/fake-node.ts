// A KubeArmor node daemon simulator: serves feeder.LogService (and grpc.health.v1) with
// realistic events from events.ts, for tests, benchmarks and demos of the relay.
//
// Delivery model (deliberate, and what a real daemon does): one event source per node and
// kind, broadcast to every watcher of that kind. Events are made only while at least one
// watcher of the kind is attached, so a relay that connects late does not find a backlog
// and `sent` counts events that really went out. Each event is encoded once; every
// watcher gets the same bytes.
//
// Pacing: with a rate, a 10 ms timer makes as many events as the elapsed time calls for
// (no per-event sleeps). A watcher whose stream buffer is full pauses its kind instead of
// growing memory: the rate is an upper bound, a slow reader slows the node down. Rate 0
// writes as fast as the slowest watcher reads (write until write() returns false, then
// wait for 'drain').
//
// Count: after `count` events of a kind, the node goes quiet for that kind but keeps the
// streams open, as an idle daemon would; ending them would look like a node failure to
// the relay and make it resubscribe.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { KINDS, type Kind, type KindSpec } from '../kinds.js';
import { decodeNonce, decodeRequest, encodeReply, SERVICE } from '../proto.js';
import { checks, parseOrExit, type FlagTable } from '../flags.js';
import { PlaintextTransport, formatHostPort, type Listening, type Transport } from '../transport.js';
import { TOOL_TLS_FLAGS, toolTransport, type ToolTransport } from './tls.js';
import { createEventSource, encodeEvent, type EventObject } from './events.js';

export interface FakeNodeOptions {
  host?: string;
  /** 0 picks a free port */
  port?: number;
  /** events per second per kind; 0 = as fast as the slowest watcher reads */
  rate?: number;
  /** events per kind, then the node goes quiet; 0 = unlimited */
  count?: number;
  nodeName?: string;
  clusterName?: string;
  hostIP?: string;
  seed?: number;
  /** pad every event's Data (alerts, logs) or Message (messages) to about this many encoded bytes */
  eventBytes?: number;
  /** kinds this node produces (default all three); others stay silent */
  kinds?: readonly Kind[];
  /** keep every sent event (bytes and source object) for comparisons in tests */
  record?: boolean;
  /** serving credentials; plaintext by default, mutual TLS plugs in here */
  transport?: Transport;
  /** ms between server keepalive pings; real daemons (grpc-go) ping every 1 s */
  keepaliveMs?: number;
  /** test hook: what HealthCheck answers for a nonce (default: echo it) */
  healthCheckReply?: (nonce: number) => number;
}

export interface SentEvent {
  seq: number;
  bytes: Buffer;
  object: EventObject;
}

export interface FakeNode {
  readonly host: string;
  readonly port: number;
  /** "host:port" to dial */
  readonly target: string;
  readonly nodeName: string;
  /** events made and written, per kind (each counted once however many watchers) */
  readonly sent: Readonly<Record<Kind, number>>;
  /** the sent events per kind, in order; empty unless `record` was set */
  readonly recorded: Readonly<Record<Kind, readonly SentEvent[]>>;
  readonly healthChecks: number;
  /** every Watch* call received, with the Filter it asked for, in arrival order */
  readonly requests: readonly { kind: Kind; filter: string }[];
  /** currently attached watchers of a kind */
  watchers(kind: Kind): number;
  /** resolves once at least n watchers of the kind are attached */
  waitForWatchers(kind: Kind, n?: number): Promise<void>;
  /** resolves once `count` events of the kind went out (never, with count 0) */
  finished(kind: Kind): Promise<void>;
  /** stop producing and drop every connection at once, as a crashed daemon would */
  close(): Promise<void>;
}

type Watcher = grpc.ServerWritableStream<Buffer, Buffer>;

const identity = (b: Buffer): Buffer => b;

/**
 * LogService with Buffer in and Buffer out: events are encoded once by the producer, and
 * request parsing is left to the handlers that care.
 */
function rawServiceDefinition(): grpc.ServiceDefinition {
  const method = (name: string, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> => ({
    path: `/${SERVICE}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  });
  return {
    HealthCheck: method('HealthCheck', false),
    ...Object.fromEntries(KINDS.map((k) => [k.method, method(k.method, true)])),
  };
}

const TICK_MS = 10;
/** at most this many events per burst before yielding, so HealthCheck and pings get a turn */
const BURST = 256;
/** per-watcher queue depth (messages) at which producing waits for 'drain' */
const MAX_QUEUED = 128;

/** Produces one kind for one node and broadcasts it to the kind's watchers. */
class KindPump {
  readonly watchers = new Set<Watcher>();
  sent = 0;
  readonly recorded: SentEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private lastTick = 0;
  private carry = 0;
  /** watchers whose stream buffer is full; producing waits for all of them */
  private readonly blocked = new Set<Watcher>();
  private running = false;
  private closed = false;
  private waiters: { n: number; resolve: () => void }[] = [];
  private finishWaiters: (() => void)[] = [];

  constructor(
    private readonly spec: KindSpec,
    private readonly next: () => EventObject,
    private readonly rate: number,
    private readonly count: number,
    private readonly record: boolean,
  ) {}

  get exhausted(): boolean {
    return this.count > 0 && this.sent >= this.count;
  }

  attach(call: Watcher): void {
    this.watchers.add(call);
    const detach = () => {
      if (!this.watchers.delete(call)) return;
      this.unblock(call); // a reader that left must not hold the others back
      this.onProgress();
    };
    call.on('cancelled', detach);
    call.on('error', detach);
    call.on('close', detach);
    this.waiters = this.waiters.filter((w) => (this.watchers.size >= w.n ? (w.resolve(), false) : true));
    this.start();
  }

  waitForWatchers(n: number): Promise<void> {
    if (this.watchers.size >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  finished(): Promise<void> {
    if (this.exhausted) return Promise.resolve();
    return new Promise((resolve) => this.finishWaiters.push(resolve));
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private start(): void {
    if (this.closed || this.exhausted) return;
    if (this.rate > 0) {
      if (this.timer) return;
      this.lastTick = performance.now();
      this.carry = 0;
      this.timer = setInterval(() => this.tick(), TICK_MS);
    } else if (!this.running) {
      this.running = true;
      setImmediate(() => this.flood());
    }
  }

  /** Something changed (a watcher left, a buffer drained): stop or resume as needed. */
  private onProgress(): void {
    if (this.watchers.size === 0 || this.closed || this.exhausted) {
      if (this.timer) clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    const now = performance.now();
    const due = this.carry + (this.rate * (now - this.lastTick)) / 1000;
    this.lastTick = now;
    if (this.blocked.size > 0) {
      // Paused by a full buffer: the schedule slides rather than bursting later.
      this.carry = 0;
      return;
    }
    let n = Math.floor(due);
    this.carry = due - n;
    while (n-- > 0 && this.emitOne()) {
      // emitOne is false once the kind is exhausted, has no watchers, or a buffer filled
    }
  }

  private flood(): void {
    let burst = BURST;
    while (burst-- > 0) {
      if (!this.emitOne()) {
        // Waiting for 'drain' (which calls flood again) or for a new watcher.
        this.running = this.blocked.size > 0;
        return;
      }
    }
    setImmediate(() => this.flood());
  }

  /** Makes and writes one event; false when producing should pause. */
  private emitOne(): boolean {
    if (this.closed || this.exhausted || this.watchers.size === 0 || this.blocked.size > 0) return false;
    const object = this.next();
    const bytes = encodeEvent(this.spec.kind, object);
    this.sent++;
    if (this.record) this.recorded.push({ seq: this.sent, bytes, object });
    for (const call of this.watchers) {
      // grpc-js says "full" at 16 queued messages; waiting for 'drain' that early costs
      // a round trip per 16 events, so allow a slightly deeper (still bounded) queue.
      if (!call.write(bytes) && call.writableLength >= MAX_QUEUED) {
        this.blocked.add(call);
        call.once('drain', () => this.unblock(call));
      }
    }
    if (this.exhausted) {
      this.onProgress();
      for (const resolve of this.finishWaiters.splice(0)) resolve();
      return false;
    }
    return this.blocked.size === 0;
  }

  private unblock(call: Watcher): void {
    if (!this.blocked.delete(call) || this.blocked.size > 0) return;
    if (this.rate === 0 && !this.closed) {
      this.running = true;
      setImmediate(() => this.flood());
    }
  }
}

export async function startFakeNode(opts: FakeNodeOptions = {}): Promise<FakeNode> {
  const host = opts.host ?? '127.0.0.1';
  const nodeName = opts.nodeName ?? 'node-1';
  const rate = opts.rate ?? 10;
  const count = opts.count ?? 0;
  const produced = new Set<Kind>(opts.kinds ?? KINDS.map((k) => k.kind));
  const transport: Transport = opts.transport ?? new PlaintextTransport();
  const source = createEventSource({ seed: opts.seed ?? 1, nodeName, clusterName: opts.clusterName, hostIP: opts.hostIP });
  const reply = opts.healthCheckReply ?? ((nonce: number) => nonce);

  const pumps = Object.fromEntries(
    KINDS.map((spec) => [spec.kind, new KindPump(spec, () => padEvent(spec.kind, source.next(spec.kind), opts.eventBytes ?? 0), rate, count, opts.record ?? false)]),
  ) as Record<Kind, KindPump>;
  let healthChecks = 0;
  const requests: { kind: Kind; filter: string }[] = [];

  const keepaliveMs = opts.keepaliveMs ?? 1000;
  const server = new grpc.Server({
    'grpc.keepalive_time_ms': keepaliveMs,
    'grpc.keepalive_timeout_ms': 20_000, // grpc-go's default
  });
  const handlers: grpc.UntypedServiceImplementation = {
    HealthCheck: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      healthChecks++;
      callback(null, encodeReply(reply(decodeNonce(call.request))));
    },
  };
  for (const spec of KINDS) {
    handlers[spec.method] = (call: Watcher) => {
      requests.push({ kind: spec.kind, filter: decodeRequest(call.request) });
      // A real daemon accepts any filter; which events exist is the only thing that varies.
      if (produced.has(spec.kind)) pumps[spec.kind].attach(call);
      // Kinds this node does not produce: the stream stays open and silent.
    };
  }
  server.addService(rawServiceDefinition(), handlers);
  new HealthImplementation({ '': 'SERVING', [SERVICE]: 'SERVING' }).addToServer(server);

  const listening: Listening = await transport.serve(server, host, opts.port ?? 0);
  const recorded = Object.fromEntries(KINDS.map((k) => [k.kind, pumps[k.kind].recorded])) as Record<Kind, SentEvent[]>;
  const sent = {} as Record<Kind, number>;
  for (const k of KINDS) Object.defineProperty(sent, k.kind, { enumerable: true, get: () => pumps[k.kind].sent });
  let closing: Promise<void> | undefined;

  return {
    host,
    port: listening.port,
    target: formatHostPort(host, listening.port),
    nodeName,
    sent,
    recorded,
    requests,
    get healthChecks() {
      return healthChecks;
    },
    watchers: (kind) => pumps[kind].watchers.size,
    waitForWatchers: (kind, n = 1) => pumps[kind].waitForWatchers(n),
    finished: (kind) => pumps[kind].finished(),
    close() {
      closing ??= (async () => {
        for (const p of Object.values(pumps)) p.close();
        await listening.close();
        server.forceShutdown();
      })();
      return closing;
    },
  };
}

// ---- command line ---------------------------------------------------------------------

const KIND_NAMES = KINDS.map((k) => k.kind);

const FLAGS = {
  ...TOOL_TLS_FLAGS,
  host: { type: 'string', default: '127.0.0.1', help: 'address to listen on' },
  port: { type: 'port', default: 32767, help: 'gRPC port (0 picks a free one)' },
  rate: { type: 'int', default: 10, help: 'events per second per kind; 0 = as fast as the client reads', check: checks.atLeast(0) },
  count: { type: 'int', default: 0, help: 'events per kind, then stay quiet; 0 = unlimited', check: checks.atLeast(0) },
  nodeName: { type: 'string', default: 'node-1', help: 'HostName of the events', check: (v: unknown) => (v === '' ? 'must not be empty' : undefined) },
  clusterName: { type: 'string', default: 'default', help: 'ClusterName of the events' },
  hostIP: { type: 'string', default: '10.0.0.11', help: 'HostIP of the messages' },
  seed: { type: 'int', default: 1, help: 'seed of the event generator' },
  eventBytes: { type: 'int', default: 0, help: 'pad each event to about this many encoded bytes (0: natural size)', check: checks.atLeast(0) },
  kinds: { type: 'list', default: KIND_NAMES, form: 'alert,log,message', help: 'kinds to produce', check: (v: unknown) => ((v as string[]).every((k) => (KIND_NAMES as string[]).includes(k)) ? undefined : `accepted kinds: ${KIND_NAMES.join(', ')}`) },
  'json-summary': { type: 'bool', default: false, help: 'on exit, print {"sent":{...},"healthChecks":N} as one JSON line on stdout' },
} satisfies FlagTable;


export interface RunDeps {
  /** the TLS seam: main wires --tlsCertPath into a Transport here */
  transport?: Transport;
  /** ends the run as SIGTERM would (for in-process use) */
  signal?: AbortSignal;
  stdout?: (line: string) => void;
  stderr?: (line: string) => void;
}

/** Runs until SIGINT/SIGTERM (or deps.signal); resolves to the exit code. */
export async function runFakeNode(argv: string[], deps: RunDeps = {}): Promise<number> {
  const out = deps.stdout ?? ((l: string) => process.stdout.write(`${l}\n`));
  const err = deps.stderr ?? ((l: string) => process.stderr.write(`${l}\n`));
  const flags = parseOrExit(argv, FLAGS, { command: 'fake-node', summary: 'Simulates a KubeArmor node daemon (feeder.LogService) with generated events.' }, { out, err });
  if (typeof flags === 'number') return flags;

  let node: FakeNode;
  let tls: ToolTransport | undefined;
  try {
    tls = deps.transport ? undefined : await toolTransport(flags, 'server');
    node = await startFakeNode({
      host: flags.host,
      port: flags.port,
      rate: flags.rate,
      count: flags.count,
      nodeName: flags.nodeName,
      clusterName: flags.clusterName,
      hostIP: flags.hostIP,
      seed: flags.seed,
      eventBytes: flags.eventBytes,
      kinds: flags.kinds as Kind[],
      transport: deps.transport ?? tls?.transport,
    });
  } catch (e) {
    tls?.close();
    err(`fake-node: ${(e as Error).message}`);
    return 1;
  }
  err(`fake-node: ${node.nodeName} serving feeder.LogService on ${node.target} (${(deps.transport ?? tls?.transport ?? new PlaintextTransport()).name}, ${flags.rate || 'unpaced'} events/s per kind)`);

  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      deps.signal?.removeEventListener('abort', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    if (deps.signal?.aborted) stop();
    else deps.signal?.addEventListener('abort', stop);
  });
  await node.close();
  tls?.close();
  if (flags['json-summary']) out(JSON.stringify({ node: node.nodeName, sent: { ...node.sent }, healthChecks: node.healthChecks }));
  return 0;
}

/** Grows one free-text field so the encoded event reaches about `bytes` (for size tests). */
function padEvent(kind: Kind, object: EventObject, bytes: number): EventObject {
  const missing = bytes - encodeEvent(kind, object).length;
  if (missing <= 0) return object;
  const field = kind === 'message' ? 'Message' : 'Data';
  return { ...object, [field]: `${String(object[field] ?? '')}${'x'.repeat(missing)}` };
}
