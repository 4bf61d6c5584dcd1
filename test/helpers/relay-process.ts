// Starts the relay the way a user does: `node dist/server/main.js <flags>` in its own
// process, on loopback, with ports chosen by the kernel and read back from its logs.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { freePort } from '../../harness/free-port.js';

export const MAIN = fileURLToPath(new URL('../../dist/server/main.js', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface RelayProcess {
  proc: ChildProcess;
  grpcPort: number;
  httpPort: number;
  target: string;
  logs: LogLine[];
  stdoutLines: string[];
  /** resolves with the first log line (past or future) matching; rejects after timeoutMs */
  waitForLog(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  metrics(): Promise<string>;
  /** sends the signal and resolves with the exit code */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface StartOptions {
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** where pino writes: 'stdout' (default) or 'stderr' when stdout export is on */
  logStream?: 'stdout' | 'stderr';
  /** how long the relay may take to serve (default 30 s: a loaded CI machine is slow) */
  startTimeoutMs?: number;
}

export async function startRelayProcess(opts: StartOptions = {}): Promise<RelayProcess> {
  // --httpPort=0 would disable the listener, so a free port is chosen for it.
  const args = ['--listenAddress=127.0.0.1', '--gRPCPort=0', `--httpPort=${await freePort()}`, '--logLevel=debug', ...(opts.args ?? [])];
  // RELAY_LAUNCHER prefixes the command (e.g. the seccomp launcher or strace), so the same
  // end-to-end suite can run with the relay confined or traced.
  const launcher = (process.env.RELAY_LAUNCHER ?? '').split(' ').filter(Boolean);
  const [command, ...prefix] = launcher.length > 0 ? launcher : [process.execPath];
  const proc = spawn(command!, [...prefix, ...(launcher.length > 0 ? [process.execPath] : []), MAIN, ...args], {
    env: { ...process.env, KUBEARMOR_SERVICE: '', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  const stdoutLines: string[] = [];
  const waiters = new Set<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  const onLog = (line: string) => {
    let parsed: LogLine;
    try {
      parsed = JSON.parse(line) as LogLine;
    } catch {
      return;
    }
    if (typeof parsed.msg !== 'string') return;
    logs.push(parsed);
    for (const w of waiters) {
      if (w.match(parsed)) {
        waiters.delete(w);
        w.resolve(parsed);
      }
    }
  };
  const logStream = opts.logStream ?? 'stdout';
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    if (logStream === 'stdout') onLog(line);
    else stdoutLines.push(line);
  });
  const stderrText: string[] = [];
  createInterface({ input: proc.stderr! }).on('line', (line) => {
    stderrText.push(line);
    if (logStream === 'stderr') onLog(line);
  });
  const exited = once(proc, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;

  const waitForLog = (match: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> => {
    const past = logs.find(match);
    if (past) return Promise.resolve(past);
    return new Promise((resolve, reject) => {
      const w = { match, resolve: (l: LogLine) => (clearTimeout(timer), resolve(l)) };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`relay did not log the expected line within ${timeoutMs} ms; stderr: ${stderrText.join('\n')}; last logs: ${logs.slice(-5).map((l) => JSON.stringify(l)).join('\n')}`));
      }, timeoutMs);
      waiters.add(w);
    });
  };

  let started: LogLine;
  try {
    started = await Promise.race([
      waitForLog((l) => l.msg === 'relay serving feeder.LogService', opts.startTimeoutMs ?? 30_000),
      exited.then(([code]) => {
        throw new Error(`relay exited with ${code} before serving: ${stderrText.join('\n')}`);
      }),
    ]);
  } catch (err) {
    proc.kill('SIGKILL'); // never leave a relay behind a failed start
    throw err;
  }
  const httpLine = logs.find((l) => l.msg === 'serving /metrics, /healthz and /readyz');
  const grpcPort = Number(started.port);
  const httpPort = Number(httpLine?.port ?? 0);
  return {
    proc,
    grpcPort,
    httpPort,
    target: `127.0.0.1:${grpcPort}`,
    logs,
    stdoutLines,
    waitForLog,
    metrics: async () => {
      const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
      return res.text();
    },
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill(signal);
      const [code] = await exited;
      return code;
    },
  };
}

export { metricValue } from '../../harness/prom-text.js';

export { eventually } from '../../harness/eventually.js';

export { freePort };
