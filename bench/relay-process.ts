// The relay as the benchmark runs it: its own process on loopback with mutual TLS, ready
// once /readyz answers, its output kept for errors, its RSS sampled.
import { spawn, type ChildProcess } from 'node:child_process';
import { eventually } from '../harness/eventually.js';
import { freePort } from '../harness/free-port.js';
import { memory } from './ipc.js';

const MiB = 1024 * 1024;

export class RelayProcess {
  private readonly output: string[] = [];
  private exited = false;
  readonly exit: Promise<void>;

  private constructor(
    readonly proc: ChildProcess,
    readonly target: string,
    readonly httpPort: number,
  ) {
    const keep = (chunk: Buffer) => {
      this.output.push(chunk.toString('utf8'));
      if (this.output.length > 40) this.output.shift();
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    this.exit = new Promise((resolve) => proc.on('exit', () => ((this.exited = true), resolve())));
  }

  static async start(main: string, certDir: string, nodes: string[], extraArgs: string[], cpuProf: string, nodeArgs: string[] = [], extraEnv: Record<string, string> = {}): Promise<RelayProcess> {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    const args = [
      ...(cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : []),
      ...nodeArgs,
      main,
      '--listenAddress=127.0.0.1',
      `--gRPCPort=${grpcPort}`,
      `--httpPort=${httpPort}`,
      '--tlsEnabled',
      `--tlsCertPath=${certDir}`,
      `--nodes=${nodes.join(',')}`,
      '--logLevel=warn',
      ...extraArgs,
    ];
    const proc = spawn(process.execPath, args, {
      env: { ...process.env, KUBEARMOR_SERVICE: '', ENABLE_STDOUT_ALERTS: '', ENABLE_STDOUT_LOGS: '', ENABLE_STDOUT_MSGS: '', ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const relay = new RelayProcess(proc, `127.0.0.1:${grpcPort}`, httpPort);
    await eventually(async () => {
      if (relay.exited) throw new Error(`relay exited: ${relay.outputTail()}`);
      const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined);
      return res?.status === 200;
    }, 20_000, 'the relay to serve').catch((err: Error) => {
      proc.kill('SIGKILL');
      throw new Error(`${err.message}; relay output: ${relay.outputTail()}`);
    });
    return relay;
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  outputTail(): string {
    return this.output.join('').slice(-2000);
  }

  async metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`);
    return res.text();
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 8000);
    await this.exit;
    clearTimeout(timer);
  }
}

/** Highest VmRSS of a process, sampled every 100 ms until stopped. */
export function rssSampler(pid: number | undefined): { stop(): number | null } {
  if (!pid) return { stop: () => null };
  let max = memory(pid).rss;
  const timer = setInterval(() => {
    max = Math.max(max, memory(pid).rss);
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      max = Math.max(max, memory(pid).rss);
      return max / MiB;
    },
  };
}
