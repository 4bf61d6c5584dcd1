// Prometheus's own tools on the monitoring files: promtool (checks, unit tests) and a real
// Prometheus server on loopback with its storage in a temporary directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { eventually } from '../../harness/eventually.js';
import { freePort } from '../../harness/free-port.js';
import { RULES_FILE } from '../../scripts/monitoring.js';
import { tempDir } from './certs-fixtures.js';
import { runCommand } from './tls-peers.js';

export interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RuleFile {
  groups: { name: string; rules: Rule[] }[];
}

export function shippedRules(): RuleFile {
  return parse(readFileSync(RULES_FILE, 'utf8')) as RuleFile;
}

export function alertsOf(rules: RuleFile): Rule[] {
  return rules.groups.flatMap((g) => g.rules);
}

export function promtool(args: string[]): Promise<{ code: number; output: string }> {
  return runCommand('promtool', args, '', 60_000);
}

export interface PrometheusServer {
  url: string;
  /** GET /api/v1/<path>; rejects on an error status */
  api<T>(path: string, params?: Record<string, string>): Promise<T>;
  stop(): Promise<void>;
}

/**
 * Prometheus scraping `targets` every second and evaluating `rules` every second, on a free
 * loopback port, storage in a temporary directory removed on stop().
 */
export async function startPrometheus(opts: { targets: string[]; rules: RuleFile }): Promise<PrometheusServer> {
  const dir = tempDir('prometheus-');
  const port = await freePort();
  writeFileSync(join(dir.path, 'rules.yaml'), stringify(opts.rules));
  writeFileSync(
    join(dir.path, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [join(dir.path, 'rules.yaml')],
      scrape_configs: [{ job_name: 'kubearmor-relay', static_configs: [{ targets: opts.targets }] }],
    }),
  );
  const proc: ChildProcess = spawn(
    'prometheus',
    [`--config.file=${join(dir.path, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir.path, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  proc.on('error', (err) => (stderr += `cannot run prometheus: ${err.message}`));
  proc.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const exited = once(proc, 'exit');
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
    dir.remove();
  };
  try {
    await eventually(async () => {
      if (proc.exitCode !== null || proc.pid === undefined) throw new Error(`prometheus exited with ${proc.exitCode}: ${stderr}`);
      return (await fetch(`${url}/-/ready`)).ok || undefined;
    }, 30_000, `prometheus ready on ${url}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    async api<T>(path: string, params: Record<string, string> = {}): Promise<T> {
      const res = await fetch(`${url}/api/v1/${path}?${new URLSearchParams(params)}`);
      const body = (await res.json()) as { status: string; data: T; error?: string };
      if (body.status !== 'success') throw new Error(`prometheus /api/v1/${path} ${JSON.stringify(params)}: ${body.error}`);
      return body.data;
    },
    stop,
  };
}
