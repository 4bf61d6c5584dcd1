// Control channel between `npm run bench` and its child processes (simulated node daemons,
// consumers): request/response over the Node IPC channel of child_process.fork, plus the
// /proc readings the benchmark takes of every process it starts. Events never travel
// here; only commands and counters do.
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

interface Request {
  id: number;
  op: string;
  args?: unknown;
}

interface Response {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

export type Handlers = Record<string, (args: any) => unknown>;

/** Child side: answers the parent's requests; exits when the parent goes away. */
export function serveIpc(handlers: Handlers): void {
  if (!process.send) throw new Error('this program is a child of `npm run bench` (started with an IPC channel)');
  process.on('message', (msg: Request) => {
    const reply = (r: Omit<Response, 'id'>) => process.send?.({ id: msg.id, ...r });
    const handler = handlers[msg.op];
    if (!handler) return reply({ ok: false, error: `unknown op ${msg.op}` });
    Promise.resolve()
      .then(() => handler(msg.args))
      .then(
        (result) => reply({ ok: true, result }),
        (err: unknown) => reply({ ok: false, error: (err as Error)?.stack ?? String(err) }),
      );
  });
  // The parent died or closed the channel: nothing left to serve.
  process.on('disconnect', () => process.exit(0));
}

/** Parent side: one forked child and its request/response channel. */
export class Child {
  readonly proc: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly stderr: string[] = [];
  private exited = false;
  readonly exit: Promise<number | null>;

  constructor(
    readonly name: string,
    modulePath: string,
    args: string[] = [],
  ) {
    this.proc = fork(modulePath, args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], execArgv: [] });
    this.proc.stderr?.setEncoding('utf8');
    this.proc.stderr?.on('data', (chunk: string) => {
      this.stderr.push(chunk);
      if (this.stderr.length > 50) this.stderr.shift();
    });
    this.proc.on('message', (msg: Response) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new Error(`${this.name}: ${msg.error}`));
    });
    this.exit = new Promise((resolve) => {
      this.proc.on('exit', (code) => {
        this.exited = true;
        for (const p of this.pending.values()) p.reject(new Error(`${this.name} exited (${code}): ${this.stderrTail()}`));
        this.pending.clear();
        resolve(code);
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  stderrTail(): string {
    return this.stderr.join('').slice(-2000);
  }

  call<T = unknown>(op: string, args?: unknown, timeoutMs = 60_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited: ${this.stderrTail()}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: ${op} did not answer within ${timeoutMs} ms; stderr: ${this.stderrTail()}`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v as T)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.proc.send({ id, op, args } satisfies Request);
    });
  }

  /** Asks the child to close, then ends it by its pid if it has not left within graceMs. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.exited) return;
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    try {
      await this.call('close', undefined, graceMs).catch(() => undefined);
      if (!this.exited) this.proc.disconnect();
      await this.exit;
    } finally {
      clearTimeout(timer);
    }
  }
}

// ---- /proc ---------------------------------------------------------------------------

const CLK_TCK = 100; // USER_HZ: 100 on every Linux architecture Node runs on

/** CPU seconds (user + system) a process has used so far; 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the parenthesised command name (which may contain spaces)
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

export interface MemoryReading {
  /** resident set size now, bytes */
  rss: number;
  /** peak resident set size since the process started (VmHWM), bytes */
  hwm: number;
}

export function memory(pid: number): MemoryReading {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

// ---- latency stamps ------------------------------------------------------------------

export const STAMP_KEY = Buffer.from('sentAtNs');
export const STAMP_DIGITS = 19;

/** Where the 19 stamp digits start in an event made by server/tools/events.ts. */
export function stampOffset(bytes: Buffer): number {
  const at = bytes.indexOf(STAMP_KEY);
  if (at < 0) return -1;
  // alerts and logs: map value tag 0x12, length 19; messages: "="
  let i = at + STAMP_KEY.length;
  for (let skip = 0; skip < 3 && (bytes[i]! < 0x30 || bytes[i]! > 0x39); skip++) i++;
  for (let d = 0; d < STAMP_DIGITS; d++) {
    const c = bytes[i + d];
    if (c === undefined || c < 0x30 || c > 0x39) return -1;
  }
  return i;
}

/** Reads a stamp written by this module: [seconds, nanoseconds] of CLOCK_MONOTONIC. */
export function readStamp(bytes: Buffer, offset: number): [number, number] {
  let s = 0;
  for (let i = offset; i < offset + 10; i++) s = s * 10 + (bytes[i]! - 0x30);
  let ns = 0;
  for (let i = offset + 10; i < offset + STAMP_DIGITS; i++) ns = ns * 10 + (bytes[i]! - 0x30);
  return [s, ns];
}

/** Writes the CLOCK_MONOTONIC time as 10 digits of seconds and 9 of nanoseconds. */
export function writeStamp(bytes: Buffer, offset: number): void {
  const [s, ns] = process.hrtime();
  bytes.write(String(s).padStart(10, '0'), offset, 'latin1');
  bytes.write(String(ns).padStart(9, '0'), offset + 10, 'latin1');
}


// ---- latency histogram ---------------------------------------------------------------

const FINE_US = 10; // bucket width below FINE_LIMIT_MS
const FINE_LIMIT_MS = 20;
const FINE_BUCKETS = (FINE_LIMIT_MS * 1000) / FINE_US;
const COARSE_LIMIT_MS = 60_000;

/** Latencies in 10 µs buckets up to 20 ms, then 1 ms buckets; mergeable across processes. */
export class Histogram {
  counts = new Map<number, number>();
  n = 0;
  max = 0;

  record(ms: number): void {
    const v = ms < 0 ? 0 : ms;
    const bucket = v < FINE_LIMIT_MS ? Math.floor((v * 1000) / FINE_US) : FINE_BUCKETS + Math.floor(Math.min(v, COARSE_LIMIT_MS) - FINE_LIMIT_MS);
    this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + 1);
    this.n++;
    if (v > this.max) this.max = v;
  }

  toJSON(): HistogramData {
    return { n: this.n, max: this.max, buckets: [...this.counts.entries()] };
  }

  static merge(parts: readonly HistogramData[]): Histogram {
    const h = new Histogram();
    for (const p of parts) {
      h.n += p.n;
      h.max = Math.max(h.max, p.max);
      for (const [b, c] of p.buckets) h.counts.set(b, (h.counts.get(b) ?? 0) + c);
    }
    return h;
  }

  /** upper edge of the bucket holding quantile q, in ms */
  quantile(q: number): number {
    if (this.n === 0) return NaN;
    const rank = Math.ceil(q * this.n);
    let seen = 0;
    for (const b of [...this.counts.keys()].sort((x, y) => x - y)) {
      seen += this.counts.get(b)!;
      if (seen >= rank) return Math.min(this.max, b < FINE_BUCKETS ? ((b + 1) * FINE_US) / 1000 : FINE_LIMIT_MS + (b - FINE_BUCKETS) + 1);
    }
    return this.max;
  }
}

export interface HistogramData {
  n: number;
  max: number;
  buckets: [number, number][];
}
