// For tests and benchmarks: real `nats-server` processes (Debian's package, JetStream on)
// on free loopback ports, their storage in a temporary directory that goes with them.
// One server, or a cluster of three for failover.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { eventually } from './eventually.js';
import { freePort } from './free-port.js';

export const NATS_SERVER = process.env.KUBEARMOR_TEST_NATS_SERVER ?? 'nats-server';

export interface NatsServer {
  name: string;
  port: number;
  url: string;
  proc: ChildProcess;
  log: string[];
  /** SIGKILL (a crash) or SIGTERM; resolves once the process is gone */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface NatsCluster {
  servers: NatsServer[];
  /** every client URL, comma-separated, as --natsUrl takes them */
  urls: string;
  close(): Promise<void>;
}

async function startServer(name: string, dir: string, port: number, extra: string[]): Promise<NatsServer> {
  const proc = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port), '-n', name, '-js', '-sd', join(dir, name), ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  const log: string[] = [];
  const exited = once(proc, 'exit');
  const ready = new Promise<void>((resolve, reject) => {
    proc.once('error', (err) => reject(new Error(`cannot start ${NATS_SERVER}: ${err.message} (Debian: apt-get install -y nats-server)`)));
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      log.push(line);
      if (line.includes('Server is ready')) resolve();
    });
    void exited.then(() => reject(new Error(`nats-server ${name} exited before it was ready: ${log.slice(-5).join(' | ')}`)));
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  try {
    await ready;
  } finally {
    clearTimeout(timer);
  }
  return {
    name,
    port,
    url: `nats://127.0.0.1:${port}`,
    proc,
    log,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      await exited;
    },
  };
}

/** Resolves once JetStream answers through `urls` (a cluster has elected its meta leader). */
async function jetStreamReady(urls: string[]): Promise<void> {
  await eventually(
    async () => {
      const nc = await connect({ servers: urls, timeout: 2000 });
      try {
        await (await jetstreamManager(nc, { timeout: 2000 })).getAccountInfo();
        return true;
      } finally {
        await nc.close();
      }
    },
    30_000,
    'JetStream to answer',
  );
}

/** `size` 1: a lone server; 3: a cluster with routes between all of them. `serverArgs`: more flags (TLS). */
export async function startNats(size: 1 | 3 = 1, serverArgs: string[] = [], readyCheck = true): Promise<NatsCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'kubearmor-nats-'));
  const servers: NatsServer[] = [];
  const close = async () => {
    await Promise.all(servers.map((s) => s.stop('SIGKILL')));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (size === 1) {
      servers.push(await startServer('n1', dir, await freePort(), serverArgs));
    } else {
      const ports = await Promise.all([0, 1, 2].map(() => freePort()));
      const clusterPorts = await Promise.all([0, 1, 2].map(() => freePort()));
      const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`).join(',');
      const started = await Promise.all(
        [0, 1, 2].map((i) => startServer(`n${i + 1}`, dir, ports[i]!, ['--cluster_name', 'kubearmor', '--cluster', `nats://127.0.0.1:${clusterPorts[i]}`, '--routes', routes, ...serverArgs])),
      );
      servers.push(...started);
    }
    if (readyCheck) await jetStreamReady(servers.map((s) => s.url));
  } catch (err) {
    await close();
    throw err;
  }
  return { servers, urls: servers.map((s) => s.url).join(','), close };
}
