// A consumer in the manner of `karmor logs`: opens WatchAlerts/WatchLogs (and, when asked,
// WatchMessages), checks HealthCheck, filters in the client and prints events. Unlike
// karmor it reconnects (exponential backoff with jitter) when the relay goes away.
//
// `watch()` is the programmatic core, shared with tests, benchmarks and the demo: it hands
// out the RAW bytes of each event, so callers can compare them byte for byte with what a
// node sent, or decode them as they like.
import * as grpc from '@grpc/grpc-js';
import { randomInt } from 'node:crypto';
import { Backoff, BACKOFF_DEFAULTS, type BackoffOptions } from '../backoff.js';
import { checks, parseHostPort, parseOrExit, type FlagTable, type ParsedFlags } from '../flags.js';
import { KIND_BY_NAME, methodPath, type Kind } from '../kinds.js';
import { decodeReply, decodeToObject, inDeclarationOrder, encodeNonce, encodeRequest, SERVICE, type EventObject } from '../proto.js';
import { PlaintextTransport, type Transport } from '../transport.js';
import { TOOL_TLS_FLAGS, toolTransport, type ToolTransport } from './tls.js';

export interface StreamSpec {
  kind: Kind;
  /** the RequestMessage Filter, e.g. "policy" for alerts, "system" for logs, "" for messages */
  filter: string;
}

export interface WatchOptions {
  /** HOST:PORT of the relay (or of a node daemon) */
  target: string;
  streams: readonly StreamSpec[];
  onEvent(kind: Kind, bytes: Buffer): void;
  /** dialing credentials; plaintext by default */
  transport?: Transport;
  /** one line per reconnect, for stderr */
  onLog?(line: string): void;
  /** false = behave like karmor: the first lost stream ends the watch with an error */
  reconnect?: boolean;
  backoff?: BackoffOptions;
  /** extra channel options (the transport's own are applied first) */
  channelOptions?: grpc.ChannelOptions;
}

export interface WatchHandle {
  /** resolves when streams are open and the first HealthCheck answered correctly */
  readonly ready: Promise<void>;
  /** resolves after close(); rejects on a fatal error (wrong HealthCheck reply, or a lost stream without reconnect) */
  readonly done: Promise<void>;
  /** events received per kind, over all sessions */
  readonly received: Readonly<Record<Kind, number>>;
  /** how many times the watch dialed again after losing its session */
  readonly reconnects: number;
  close(): Promise<void>;
}

/** A HealthCheck answer that does not echo the nonce: the peer is not a LogService to trust. */
export class HealthCheckMismatch extends Error {}

const identity = (b: Buffer): Buffer => b;
const HEALTH_CHECK_PATH = `/${SERVICE}/HealthCheck`;
const HEALTH_CHECK_DEADLINE_MS = 10_000;
/** a session that lived this long counts as good: the next loss starts backoff afresh */
const STABLE_SESSION_MS = 10_000;
/** karmor's (and gRPC's) default receive limit */
const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Callers may await only one of ready/done; an unobserved rejection must not crash them.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

function describe(err: unknown): string {
  const e = err as Partial<grpc.StatusObject> & { message?: string };
  if (typeof e.code === 'number') return `${grpc.status[e.code] ?? e.code}: ${e.details || e.message || ''}`.trim();
  return e.message ?? String(err);
}

export function watch(opts: WatchOptions): WatchHandle {
  const transport: Transport = opts.transport ?? new PlaintextTransport();
  const backoff = new Backoff(opts.backoff ?? BACKOFF_DEFAULTS);
  const reconnect = opts.reconnect ?? true;
  const host = parseHostPort(opts.target)?.host;
  if (!host) throw new Error(`malformed target ${JSON.stringify(opts.target)}: expected HOST:PORT`);
  const received: Record<Kind, number> = { alert: 0, log: 0, message: 0 };
  const ready = deferred();
  const done = deferred();
  let reconnects = 0;
  let closed = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let endSession: (() => void) | undefined;

  function finish(err?: Error): void {
    if (closed) return;
    closed = true;
    if (retryTimer) clearTimeout(retryTimer);
    endSession?.();
    if (err) {
      ready.reject(err);
      done.reject(err);
    } else {
      ready.resolve();
      done.resolve();
    }
  }

  /** One client, its streams and its HealthCheck; any failure tears down all of them. */
  function connect(): void {
    const started = Date.now();
    let gotEvents = false;
    let over = false;
    // A new client per session, so rotated credentials are picked up on redial.
    const client = new grpc.Client(opts.target, transport.channelCredentials(host!), {
      'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
      // One connection carries every stream we watch: a 1 MiB receive window (default
      // 64 KiB for the whole connection) rides out a busy moment here without the relay
      // having to hold our events back.
      'grpc-node.flow_control_window': 1024 * 1024,
      ...transport.channelOptions?.(host!),
      ...opts.channelOptions,
    });
    const calls: grpc.ClientReadableStream<Buffer>[] = [];

    const teardown = () => {
      over = true;
      for (const call of calls) call.cancel();
      client.close();
    };
    endSession = teardown;

    const lost = (why: string) => {
      if (over || closed) return;
      teardown();
      if (!reconnect) return finish(new Error(`lost the connection to ${opts.target}: ${why}`));
      if (gotEvents || Date.now() - started >= STABLE_SESSION_MS) backoff.reset();
      const delay = backoff.next();
      reconnects++;
      opts.onLog?.(`lost ${opts.target} (${why}); reconnecting in ${(delay / 1000).toFixed(1)}s`);
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        if (!closed) connect();
      }, delay);
    };

    for (const { kind, filter } of opts.streams) {
      const spec = KIND_BY_NAME[kind];
      const call = client.makeServerStreamRequest(methodPath(spec), identity, identity, encodeRequest(filter));
      calls.push(call);
      call.on('data', (bytes: Buffer) => {
        if (over) return;
        gotEvents = true;
        received[kind]++;
        opts.onEvent(kind, bytes);
      });
      // 'status' comes for every ending, OK or not; 'error' only duplicates it.
      call.on('error', () => undefined);
      call.on('status', (s: grpc.StatusObject) => {
        lost(s.code === grpc.status.OK ? `${spec.method} ended by the server` : `${spec.method}: ${describe(s)}`);
      });
    }

    // As karmor does: HealthCheck after opening the streams, with a random non-negative nonce.
    const nonce = randomInt(0, 2 ** 31 - 1);
    client.makeUnaryRequest(HEALTH_CHECK_PATH, identity, identity, encodeNonce(nonce), { deadline: Date.now() + HEALTH_CHECK_DEADLINE_MS }, (err, reply) => {
      if (over || closed) return;
      if (err || !reply) return lost(`HealthCheck: ${describe(err)}`);
      const retval = decodeReply(reply);
      if (retval !== nonce) {
        return finish(new HealthCheckMismatch(`HealthCheck of ${opts.target} answered ${retval} to nonce ${nonce}: not a KubeArmor LogService`));
      }
      ready.resolve();
    });
  }

  connect();

  return {
    ready: ready.promise,
    done: done.promise,
    received,
    get reconnects() {
      return reconnects;
    },
    async close() {
      finish();
    },
  };
}

// ---- printing ------------------------------------------------------------------------


const TITLES: Record<Kind, string> = { alert: 'Alert', log: 'Log', message: 'Message' };

function formatValue(value: unknown): string {
  if (Array.isArray(value)) return `[${value.join(' ')}]`;
  if (value && typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ');
  }
  return String(value);
}

/** karmor's text layout: a "== Alert / <time> ==" header, then one "Field: value" per line. */
export function formatText(kind: Kind, obj: EventObject): string {
  const type = KIND_BY_NAME[kind].type;
  const lines = [`== ${TITLES[kind]} / ${String(obj.UpdatedTime ?? obj.Timestamp ?? '')} ==`];
  for (const [name, value] of Object.entries(inDeclarationOrder(type, obj))) {
    if (name === 'Timestamp' || name === 'UpdatedTime') continue;
    lines.push(`${name}: ${formatValue(value)}`);
  }
  return lines.join('\n');
}

// ---- command line ---------------------------------------------------------------------

const OPERATIONS = ['Process', 'File', 'Network'] as const;

const FLAGS = {
  ...TOOL_TLS_FLAGS,
  gRPC: { type: 'string', default: 'localhost:32767', env: 'KUBEARMOR_SERVICE', form: '--gRPC=HOST:PORT', help: 'relay address', check: (v: unknown) => (parseHostPort(String(v)) ? undefined : 'malformed address') },
  logFilter: { type: 'string', default: 'policy', form: '--logFilter=policy|system|all', help: 'policy: alerts; system: logs; all: both', check: checks.oneOf(['policy', 'system', 'all']) },
  msgPath: { type: 'string', default: 'none', form: '--msgPath=none|stdout', help: 'also print messages (WatchMessages) to stdout', check: checks.oneOf(['none', 'stdout']) },
  messages: { type: 'bool', default: false, help: 'also print messages (same as --msgPath=stdout)' },
  namespace: { type: 'string', default: '', help: 'only alerts and logs of this namespace' },
  operation: { type: 'string', default: '', form: '--operation=Process|File|Network', help: 'only alerts and logs of this operation', check: (v: unknown) => (v === '' ? undefined : checks.oneOf(OPERATIONS)(v)) },
  json: { type: 'bool', default: false, help: 'one JSON object per line' },
  limit: { type: 'int', default: 0, help: 'exit after printing this many events; 0 = no limit', check: checks.atLeast(0) },
} satisfies FlagTable;

type LogsFlags = ParsedFlags<typeof FLAGS>;

export interface LogsDeps {
  /** the TLS seam: main wires --secure / cert flags into a Transport here */
  transport?: Transport;
  /** ends the run as SIGTERM would (for in-process use) */
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  stdout?: (line: string) => void;
  stderr?: (line: string) => void;
  backoff?: BackoffOptions;
}


/** The streams karmor opens for a --logFilter (and whether messages were asked for). */
export function streamsFor(logFilter: string, messages: boolean): StreamSpec[] {
  const streams: StreamSpec[] = [];
  if (logFilter === 'policy' || logFilter === 'all') streams.push({ kind: 'alert', filter: logFilter });
  if (logFilter === 'system' || logFilter === 'all') streams.push({ kind: 'log', filter: logFilter });
  if (messages) streams.push({ kind: 'message', filter: '' });
  return streams;
}

function selected(flags: LogsFlags, kind: Kind, obj: EventObject): boolean {
  if (kind === 'message') return true;
  if (flags.namespace && obj.NamespaceName !== flags.namespace) return false;
  if (flags.operation && obj.Operation !== flags.operation) return false;
  return true;
}

/** Runs until --limit, SIGINT/SIGTERM (or deps.signal) or a fatal error; resolves to the exit code. */
export async function runLogs(argv: string[], deps: LogsDeps = {}): Promise<number> {
  const out = deps.stdout ?? ((l: string) => process.stdout.write(`${l}\n`));
  const err = deps.stderr ?? ((l: string) => process.stderr.write(`${l}\n`));
  const flags = parseOrExit(argv, FLAGS, { command: 'logs', summary: 'Prints KubeArmor alerts, logs and messages from a relay, like `karmor logs`, reconnecting when it goes away.' }, { out, err }, deps.env ?? process.env);
  if (typeof flags === 'number') return flags;

  let tls: ToolTransport | undefined;
  try {
    tls = deps.transport ? undefined : await toolTransport(flags, 'client');
  } catch (e) {
    err(`logs: ${(e as Error).message}`);
    return 1;
  }
  let printed = 0;
  let handle: WatchHandle | undefined;
  const stop = () => void handle?.close();
  handle = watch({
    target: flags.gRPC,
    streams: streamsFor(flags.logFilter, flags.messages || flags.msgPath === 'stdout'),
    transport: deps.transport ?? tls?.transport,
    backoff: deps.backoff,
    onLog: (line) => err(`logs: ${line}`),
    onEvent(kind, bytes) {
      if (flags.limit > 0 && printed >= flags.limit) return;
      const type = KIND_BY_NAME[kind].type;
      const obj = decodeToObject(type, bytes);
      if (!selected(flags, kind, obj)) return;
      out(flags.json ? JSON.stringify(inDeclarationOrder(type, obj)) : formatText(kind, obj));
      printed++;
      if (flags.limit > 0 && printed >= flags.limit) stop();
    },
  });

  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  if (deps.signal?.aborted) stop();
  else deps.signal?.addEventListener('abort', stop);
  try {
    await handle.done;
    return 0;
  } catch (e) {
    err(`logs: ${(e as Error).message}`);
    return 1;
  } finally {
    tls?.close();
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    deps.signal?.removeEventListener('abort', stop);
  }
}
