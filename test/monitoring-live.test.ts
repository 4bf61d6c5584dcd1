// Operating a real relay: the relay process on mutual TLS with two node daemon processes
// (fake-node) and a consumer process (logs), `kubearmor-relay status` and /status read from
// it, and a real Prometheus on loopback scraping it with the shipped alert rules (the
// disconnected-node alert's `for:` shortened by this test, not in the shipped file).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayStatus } from '../server/status.js';
import { dashboardExpressions } from '../scripts/monitoring.js';
import { tempDir } from './helpers/certs-fixtures.js';
import { alertsOf, shippedRules, startPrometheus, type PrometheusServer } from './helpers/promtool.js';
import { exportedNames, metricNames, withGrafanaVariables } from './helpers/promql.js';
import { MAIN, eventually, freePort, startRelayProcess, type RelayProcess } from './helpers/relay-process.js';
import { runCommand } from './helpers/tls-peers.js';

const DISCONNECTED = 'KubeArmorRelayNodeDisconnected';

/** A node daemon process serving mutual TLS; resolves once it listens. */
async function startNodeProcess(port: number, name: string, tlsDir: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [MAIN, 'fake-node', '--host', '127.0.0.1', '--port', String(port), '--nodeName', name, '--rate', '20', '--tlsCertPath', tlsDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  const said: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fake-node ${name} did not serve within 20 s: ${said.join('\n')}`)), 20_000);
    proc.once('exit', (code) => reject(new Error(`fake-node ${name} exited with ${code}: ${said.join('\n')}`)));
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      said.push(line);
      if (line.includes('serving feeder.LogService')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return proc;
}

function kill(proc: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<unknown> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  const exited = once(proc, 'exit');
  proc.kill(signal);
  return exited;
}

interface Alert {
  labels: Record<string, string>;
  state: 'pending' | 'firing';
}

describe('a relay with two node daemons, a consumer and Prometheus', () => {
  const dir = tempDir('monitoring-live-');
  const nodeNames = ['node-a', 'node-b'];
  let nodePorts: number[];
  let nodes: ChildProcess[] = [];
  let consumer: ChildProcess | undefined;
  let relay: RelayProcess;
  let prometheus: PrometheusServer;

  const status = async (): Promise<RelayStatus> => (await (await fetch(`http://127.0.0.1:${relay.httpPort}/status`)).json()) as RelayStatus;
  const statusCommand = (...args: string[]) => runCommand(process.execPath, [MAIN, 'status', '--http', `127.0.0.1:${relay.httpPort}`, ...args], '', 20_000);
  const firing = async (): Promise<Alert[]> => (await prometheus.api<{ alerts: Alert[] }>('alerts')).alerts.filter((a) => a.labels.alertname === DISCONNECTED && a.state === 'firing');

  beforeAll(async () => {
    const relayDir = join(dir.path, 'relay');
    const consumerDir = join(dir.path, 'consumer');
    for (const args of [['init', '--out', relayDir], ['client', '--ca', relayDir, '--out', consumerDir, '--cn', 'siem-adapter']]) {
      const res = await runCommand(process.execPath, [MAIN, 'certs', ...args], '', 30_000);
      expect(res.code, res.output).toBe(0);
    }
    nodePorts = [await freePort(), await freePort()];
    // the nodes serve the relay's own server certificate: it is valid for 127.0.0.1
    nodes = await Promise.all(nodePorts.map((port, i) => startNodeProcess(port, nodeNames[i]!, relayDir)));
    relay = await startRelayProcess({ args: [`--nodes=${nodePorts.map((p) => `127.0.0.1:${p}`).join(',')}`, '--tlsEnabled', `--tlsCertPath=${relayDir}`, '--logLevel=info'] });
    consumer = spawn(process.execPath, [MAIN, 'logs', '--gRPC', relay.target, '--tlsCertPath', consumerDir, '--logFilter', 'all', '--json'], { stdio: ['ignore', 'ignore', 'ignore'] });
    const rules = shippedRules();
    for (const rule of alertsOf(rules)) if (rule.alert === DISCONNECTED) rule.for = '2s';
    prometheus = await startPrometheus({ targets: [`127.0.0.1:${relay.httpPort}`], rules });
  });

  afterAll(async () => {
    await prometheus?.stop();
    await kill(consumer);
    await relay?.stop();
    await Promise.all(nodes.map((n) => kill(n)));
    dir.remove();
  });

  it('kubearmor-relay status shows both nodes connected by name, the consumer with its certificate subject and the certificates, and exits 0', async () => {
    await eventually(async () => {
      const s = await status();
      return (s.nodes.every((n) => n.connected && n.name && n.lastEventAt) && s.consumers.length === 2) || undefined;
    }, 20_000, 'both nodes connected and named, the consumer subscribed');
    const res = await statusCommand();
    expect(res.code, res.output).toBe(0);
    for (const [i, name] of nodeNames.entries()) expect(res.output).toMatch(new RegExp(`^127\\.0\\.0\\.1:${nodePorts[i]} +${name} +static +Connected `, 'm'));
    expect(res.output).toMatch(/^127\.0\.0\.1:\d+ +alert +all +.*CN=siem-adapter$/m);
    expect(res.output).toMatch(/^127\.0\.0\.1:\d+ +log +all +.*CN=siem-adapter$/m);
    expect(res.output).toMatch(/^server +\S.* +in 29d +/m);
    expect(res.output).toMatch(/^ca +\S.* +in \d+d +/m);
    expect(res.output).toContain('Nodes:         2/2 connected');
  });

  it('kubearmor-relay status --json prints the /status document', async () => {
    const res = await statusCommand('--json');
    expect(res.code, res.output).toBe(0);
    const doc = JSON.parse(res.output) as RelayStatus;
    expect(doc.nodes.map((n) => n.name).sort()).toEqual(nodeNames);
    expect(doc.certificates.map((c) => c.role)).toEqual(['ca', 'server', 'client']);
  });

  it('names in its alert rules and dashboard only metrics the relay exports', async () => {
    const exported = exportedNames(await relay.metrics());
    const named = new Set([...alertsOf(shippedRules()).map((a) => a.expr), ...dashboardExpressions()].flatMap(metricNames));
    expect(named.size).toBeGreaterThanOrEqual(12);
    for (const name of named) expect(exported, `${name} is not in the relay's /metrics`).toContain(name);
  });

  it('answers every dashboard query with data once Prometheus has scraped the relay', async () => {
    // one refused handshake (plain text on the TLS port), so the handshake failure series exists
    const socket = connect(relay.grpcPort, '127.0.0.1', () => socket.end('GET / HTTP/1.1\r\n\r\n'));
    socket.on('error', () => undefined);
    for (const expr of dashboardExpressions()) {
      const query = withGrafanaVariables(expr);
      await eventually(async () => (await prometheus.api<{ result: unknown[] }>('query', { query })).result.length > 0 || undefined, 30_000, `data for ${query}`);
    }
  });

  it('after a node is killed, shows it disconnected with the reason within 5 s, exits 1 naming it, and Prometheus fires the disconnected-node alert for it alone', async () => {
    await eventually(async () => {
      const up = await prometheus.api<{ result: unknown[] }>('query', { query: 'kubearmor_relay_upstream_connected == 1' });
      return up.result.length === 2 || undefined;
    }, 30_000, 'Prometheus to see both nodes connected');
    expect(await firing()).toEqual([]);

    await kill(nodes[0], 'SIGKILL');
    const killed = `127.0.0.1:${nodePorts[0]}`;
    // the issue's bound: the relay learns of the loss from the connection itself, not a timer
    const node = await eventually(async () => (await status()).nodes.find((n) => n.address === killed && !n.connected), 5000, 'the killed node shown disconnected');
    expect(node.name).toBe('node-a');
    expect(node.lastError).toMatch(/UNAVAILABLE|ECONNREFUSED|ECONNRESET|stream failed|health check failed/);

    const res = await statusCommand();
    expect(res.code).toBe(1);
    expect(res.output).toMatch(new RegExp(`^${killed.replaceAll('.', '\\.')} +node-a +static +Disconnected `, 'm'));
    expect(res.output).toContain(`status: node ${killed} (node-a) disconnected: `);

    const alerts = await eventually(async () => {
      const now = await firing();
      return now.length > 0 ? now : undefined;
    }, 30_000, `${DISCONNECTED} firing`);
    expect(alerts.map((a) => a.labels.node)).toEqual([killed]);
    expect(alerts[0]!.labels).toMatchObject({ severity: 'warning', job: 'kubearmor-relay' });
  });
});
