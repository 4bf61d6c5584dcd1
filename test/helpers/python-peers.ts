// Spawning the independent Python peers (test/peers/*.py) and reading their output.
// Python gRPC code is generated from proto/kubearmor.proto at test time, never committed.
// A missing python3-grpcio makes these helpers throw: interop tests fail, they never skip,
// and a peer that exits early fails its test at once with the peer's stderr.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Kind } from '../../server/kinds.js';
import type { EventObject } from '../../server/proto.js';

/** Debian's interpreter, where python3-grpcio lives (a pyenv `python3` on PATH lacks it). */
/** how long a peer may take to exit after SIGTERM before it is killed */
const STOP_GRACE_MS = 5000;

export const PYTHON = process.env.KUBEARMOR_TEST_PYTHON ?? '/usr/bin/python3';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PEERS = join(ROOT, 'test/peers');

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

let stubs: Promise<string> | undefined;

/** Generates kubearmor_pb2*.py once per test process; returns the directory for PYTHONPATH. */
export function pythonStubs(): Promise<string> {
  stubs ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kubearmor-py-'));
    const r = await run(['-m', 'grpc_tools.protoc', '-I', 'proto', `--python_out=${dir}`, `--grpc_python_out=${dir}`, 'proto/kubearmor.proto']);
    if (r.code !== 0) {
      throw new Error(`cannot generate Python gRPC code with ${PYTHON} (install python3-grpcio, python3-grpc-tools, python3-protobuf): ${r.stderr.trim()}`);
    }
    return dir;
  })();
  return stubs;
}

async function pythonEnv(): Promise<NodeJS.ProcessEnv> {
  return { ...process.env, PYTHONPATH: await pythonStubs(), PYTHONUNBUFFERED: '1' };
}

export interface PythonNode {
  readonly port: number;
  readonly target: string;
  /** SIGTERM, then wait for the exit code */
  stop(): Promise<number | null>;
}

export type EventsByKind = Partial<Record<Kind, EventObject[]>>;

/** Starts test/peers/python_node.py serving these events; resolves once it listens. */
export async function startPythonNode(events: EventsByKind, port = 0): Promise<PythonNode> {
  const env = await pythonEnv();
  const file = join(await mkdtemp(join(tmpdir(), 'kubearmor-events-')), 'events.json');
  await writeFile(file, JSON.stringify(events));
  const child: ChildProcess = spawn(PYTHON, [join(PEERS, 'python_node.py'), file, '--port', String(port)], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const bound = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      try {
        resolve((JSON.parse(line) as { listening: number }).listening);
      } catch {
        reject(new Error(`python_node said ${JSON.stringify(line)}`));
      }
    });
    child.on('error', reject);
    // 'close', not 'exit': only then has all of the node's stderr been read.
    child.on('close', (code) => reject(new Error(`python_node exited with ${code} before it listened: ${stderr.trim() || '(nothing on stderr)'}`)));
  });
  return {
    port: bound,
    target: `127.0.0.1:${bound}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      // a Python gRPC server that does not finish its shutdown must not hang the suite
      const escalate = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      try {
        return await exited;
      } finally {
        clearTimeout(escalate);
      }
    },
  };
}

export interface ConsumerOptions {
  target: string;
  /** "alert:policy", "log:system", "message:" ... */
  watch: string[];
  count?: number;
  timeoutSeconds?: number;
  healthcheck?: number;
  /** mutual TLS from tlsDir/ca.crt, client.crt, client.key (Python's own TLS stack) */
  tlsDir?: string;
  serverName?: string;
}

export interface ConsumerResult {
  code: number | null;
  events: { kind: Kind; event: Record<string, unknown> }[];
  retval?: number;
  stderr: string;
}

/** Runs test/peers/python_consumer.py to completion and parses its JSON lines. */
export async function runPythonConsumer(opts: ConsumerOptions): Promise<ConsumerResult> {
  const args = [join(PEERS, 'python_consumer.py'), opts.target];
  for (const w of opts.watch) args.push('--watch', w);
  if (opts.count !== undefined) args.push('--count', String(opts.count));
  if (opts.timeoutSeconds !== undefined) args.push('--timeout', String(opts.timeoutSeconds));
  if (opts.healthcheck !== undefined) args.push('--healthcheck', String(opts.healthcheck));
  if (opts.tlsDir !== undefined) args.push('--tls-dir', opts.tlsDir);
  if (opts.serverName !== undefined) args.push('--server-name', opts.serverName);
  const r = await run(args, await pythonEnv());
  const result: ConsumerResult = { code: r.code, events: [], stderr: r.stderr };
  for (const line of r.stdout.split('\n')) {
    if (!line) continue;
    const parsed = JSON.parse(line) as { kind?: Kind; event?: Record<string, unknown>; retval?: number };
    if (parsed.retval !== undefined) result.retval = parsed.retval;
    else result.events.push({ kind: parsed.kind!, event: parsed.event! });
  }
  return result;
}

/**
 * Waits for `condition` while the consumer runs. A consumer that exits first (or cannot
 * start) fails the wait at once with its own stderr, instead of the wait timing out on a
 * peer that is gone.
 */
export function whileConsumerRuns<T>(consumer: Promise<ConsumerResult>, condition: Promise<T>): Promise<T> {
  const exitedFirst = consumer.then((r): never => {
    throw new Error(`the Python consumer exited with ${r.code} before it was expected to: ${r.stderr.trim() || '(nothing on stderr)'}`);
  });
  return Promise.race([condition, exitedFirst]);
}

/**
 * MessageToDict writes int64 as a decimal string (proto3 JSON mapping); protobufjs with
 * `longs: Number` gives a number. Timestamp is the only int64 in the schema.
 */
export function normalizePythonEvent(event: Record<string, unknown>): EventObject {
  const out: EventObject = { ...event };
  if (typeof out.Timestamp === 'string') out.Timestamp = Number(out.Timestamp);
  return out;
}
