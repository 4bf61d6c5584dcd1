// The relay confined by its seccomp profile (deploy/seccomp/kubearmor-relay.json), loaded
// for real by scripts/seccomp-exec.py (python3-seccomp, the same libseccomp runtimes use):
// plaintext, mutual TLS, certificate rotation, the self provider and Kubernetes discovery.
// The profile itself is specified by test/seccomp-profile.test.ts.
//
// The relay runs under RELAY_LAUNCHER when it is a seccomp-exec.py command line (CI sets it
// with --node-option to run these suites with and without memory protection keys), else
// under the plain launcher. SECCOMP_TEST_LAUNCHER replaces both (scripts/seccomp-record.sh
// sets it to strace to record what these same scenarios call).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { runCerts } from '../certs/cli.js';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { openMutualTls } from '../server/tls.js';
import { FakeKubeApi, kubeconfigFor, pod, service } from './helpers/fake-kube-api.js';
import { rawHealthCheck, rawWatch, type RawWatch } from './helpers/raw-client.js';
import { eventually, freePort, metricValue, startRelayProcess, type RelayProcess, type StartOptions } from './helpers/relay-process.js';

import { AUDIT, EXEC, PROFILE, PYTHON, allowedNames, loadProfile, nodeOptionsFromEnv } from './helpers/seccomp.js';

const CONFINED = process.env.RELAY_LAUNCHER?.includes('seccomp-exec.py') ? process.env.RELAY_LAUNCHER : `${PYTHON} ${EXEC} --profile ${PROFILE} --`;
const LAUNCHER = process.env.SECCOMP_TEST_LAUNCHER ?? CONFINED;
const quiet = pino({ level: 'silent' });

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** startRelayProcess with RELAY_LAUNCHER set to the confining launcher for this one start. */
async function confinedRelay(opts: StartOptions = {}): Promise<RelayProcess> {
  const saved = process.env.RELAY_LAUNCHER;
  process.env.RELAY_LAUNCHER = LAUNCHER;
  try {
    const relay = await startRelayProcess(opts);
    cleanups.push(() => relay.stop());
    return relay;
  } finally {
    if (saved === undefined) delete process.env.RELAY_LAUNCHER;
    else process.env.RELAY_LAUNCHER = saved;
  }
}

async function fakeNode(opts: Parameters<typeof startFakeNode>[0]): Promise<FakeNode> {
  const node = await startFakeNode(opts);
  cleanups.push(() => node.close());
  return node;
}

function watchAlerts(target: string, creds?: Parameters<typeof rawWatch>[3]): RawWatch {
  const w = creds ? rawWatch(target, 'alert', 'policy', creds) : rawWatch(target, 'alert', 'policy');
  cleanups.push(() => w.close());
  return w;
}

/** The node daemons start once the consumer is subscribed, so that it sees every event. */
async function subscribed(relay: RelayProcess): Promise<void> {
  await eventually(async () => metricValue(await relay.metrics(), 'kubearmor_relay_clients', { kind: 'alert' }) === 1 || undefined, 10_000, 'the consumer to subscribe');
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'relay-seccomp-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function certsInit(out: string): Promise<void> {
  const errors: string[] = [];
  const code = await runCerts(['init', '--out', out], { out: () => {}, err: (t) => errors.push(t) });
  if (code !== 0) throw new Error(`certs init failed: ${errors.join('')}`);
}

const TLS_FILES = ['ca.crt', 'server.crt', 'server.key', 'client.crt', 'client.key'];

/** A directory laid out as the kubelet mounts a secret: files link through `..data`. */
async function projectedDir(): Promise<{ dir: string; rotate(): Promise<string> }> {
  const dir = tempDir();
  let generation = 0;
  const next = async (): Promise<string> => {
    const gen = join(dir, `..gen${++generation}`);
    await certsInit(gen);
    symlinkSync(`..gen${generation}`, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    return gen;
  };
  await next();
  for (const f of TLS_FILES) symlinkSync(join('..data', f), join(dir, f));
  return { dir, rotate: next };
}

function seccompStatus(pid: number): { seccomp: string; noNewPrivs: string } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { seccomp: /^Seccomp:\s*(\d+)/m.exec(status)?.[1] ?? '?', noNewPrivs: /^NoNewPrivs:\s*(\d+)/m.exec(status)?.[1] ?? '?' };
}

describe('the seccomp launcher', () => {
  it('runs on an interpreter that has the seccomp module (Debian python3-seccomp)', () => {
    const res = spawnSync(PYTHON, ['-c', 'import seccomp; print(seccomp.get_api())'], { encoding: 'utf8' });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
  });

  // os.setPriority(0, 19) lowers this process's own priority, which any user may do: it
  // only fails when seccomp refuses setpriority(2), a call the relay never makes.
  const probe = `try { require('node:os').setPriority(0, 19); console.log('allowed'); } catch (e) { console.log('refused ' + (e.info?.code ?? e.code)); }`;

  it('refuses, with EPERM, a system call the profile leaves out, which succeeds unconfined', () => {
    expect(allowedNames(loadProfile())).not.toContain('setpriority');
    const free = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
    expect(free.stdout.trim()).toBe('allowed');
    const confined = spawnSync(PYTHON, [EXEC, '--profile', PROFILE, '--', process.execPath, '-e', probe], { encoding: 'utf8' });
    expect(confined.stderr).toBe('');
    expect(confined.stdout.trim()).toBe('refused EPERM');
    expect(confined.status).toBe(0);
  });

  it('lets the same call through under the audit variant, which only logs', () => {
    const audited = spawnSync(PYTHON, [EXEC, '--profile', AUDIT, '--', process.execPath, '-e', probe], { encoding: 'utf8' });
    expect(audited.stderr).toBe('');
    expect(audited.stdout.trim()).toBe('allowed');
  });

  it('confines the command it runs, with no_new_privs set, in the same process', () => {
    const confined = spawnSync(PYTHON, [EXEC, '--profile', PROFILE, '--', process.execPath, '-e', `process.stdout.write(require('node:fs').readFileSync('/proc/self/status', 'utf8'))`], {
      encoding: 'utf8',
    });
    expect(confined.stdout).toMatch(/^Seccomp:\s+2$/m);
    expect(confined.stdout).toMatch(/^NoNewPrivs:\s+1$/m);
  });
});

describe('the relay confined by the profile', () => {
  it('runs confined with no_new_privs and the V8 flags the launcher gives node', async () => {
    const relay = await confinedRelay();
    if (LAUNCHER !== CONFINED) return; // recording with strace: nothing to assert about confinement
    expect(seccompStatus(relay.proc.pid!)).toEqual({ seccomp: '2', noNewPrivs: '1' });
    const cmdline = readFileSync(`/proc/${relay.proc.pid}/cmdline`, 'utf8').split('\0');
    const flags = nodeOptionsFromEnv().map((o) => o.slice('--node-option='.length));
    expect(cmdline.slice(1, 1 + flags.length)).toEqual(flags);
  });

  it('shuts down cleanly on SIGTERM, with exit status 0', async () => {
    const relay = await confinedRelay();
    expect(await rawHealthCheck(relay.target, 5)).toBe(5);
    expect(await relay.stop('SIGTERM')).toBe(0);
  });

  it('answers HealthCheck and relays a node daemon to a consumer over plaintext', async () => {
    const port = await freePort();
    const relay = await confinedRelay({ args: [`--nodes=127.0.0.1:${port}`] });
    expect(await rawHealthCheck(relay.target, 424242)).toBe(424242);
    const w = watchAlerts(relay.target);
    await subscribed(relay);
    const node = await fakeNode({ port, rate: 0, count: 20, nodeName: 'node-plain' });
    await w.waitFor(20);
    const text = await eventually(async () => {
      const t = await relay.metrics();
      return metricValue(t, 'kubearmor_relay_events_received_total', { node: node.target, kind: 'alert' }) === 20 ? t : undefined;
    }, 10_000, 'the relay to count the alerts');
    expect(text).toContain('kubearmor_relay_events_received_total');
  });

  it('serves consumers and dials node daemons over mutual TLS, then serves rotated certificates to new connections', async () => {
    const secret = await projectedDir();
    const nodeTls = await openMutualTls({ provider: 'external', dir: secret.dir, roles: ['server'], logger: quiet });
    cleanups.push(() => nodeTls.manager.close());
    const port = await freePort();
    const relay = await confinedRelay({ args: ['--tlsEnabled', `--tlsCertPath=${secret.dir}`, '--tlsCertProvider=external', `--nodes=127.0.0.1:${port}`] });
    const consumer = await openMutualTls({ provider: 'external', dir: secret.dir, roles: ['client'], logger: quiet });
    cleanups.push(() => consumer.manager.close());
    expect(await rawHealthCheck(relay.target, 7, consumer.transport.channelCredentials('127.0.0.1'))).toBe(7);
    const w = watchAlerts(relay.target, consumer.transport.channelCredentials('127.0.0.1'));
    await subscribed(relay);
    await fakeNode({ port, rate: 0, count: 10, nodeName: 'node-tls', transport: nodeTls.transport });
    await w.waitFor(10);

    // A new generation (new CA and leaves), swapped in the way the kubelet updates a secret.
    const gen2 = await secret.rotate();
    await relay.waitForLog((l) => l.msg === 'serving new TLS material to new connections' && l.generation === 2, 20_000);
    const fresh = await openMutualTls({ provider: 'external', dir: gen2, roles: ['client'], logger: quiet });
    cleanups.push(() => fresh.manager.close());
    expect(await rawHealthCheck(relay.target, 8, fresh.transport.channelCredentials('127.0.0.1'))).toBe(8);
  });

  it('issues its own certificates from a CA with the self provider and serves a consumer with them', async () => {
    const dir = tempDir();
    await certsInit(dir);
    const caOnly = tempDir();
    for (const f of ['ca.crt', 'ca.key']) symlinkSync(join(dir, f), join(caOnly, f));
    const relay = await confinedRelay({ args: ['--tlsEnabled', `--tlsCertPath=${caOnly}`, '--tlsCertProvider=self', '--extraIpAddresses=127.0.0.1'] });
    const consumer = await openMutualTls({ provider: 'external', dir, roles: ['client'], logger: quiet });
    cleanups.push(() => consumer.manager.close());
    expect(await rawHealthCheck(relay.target, 9, consumer.transport.channelCredentials('127.0.0.1'))).toBe(9);
  });

  it('finds node daemons through the Kubernetes API with --kubeconfig and relays them', async () => {
    const api = new FakeKubeApi();
    const url = await api.start();
    cleanups.push(() => api.close());
    const dir = tempDir();
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, kubeconfigFor(url));
    // Discovery dials pods on the relay's own gRPC port: the node listens on another
    // loopback address with that port.
    const port = await freePort();
    api.put('pods', pod('kubearmor', 'kubearmor-abcde', { labels: { 'kubearmor-app': 'kubearmor' }, ip: '127.0.0.2' }));
    api.put('services', service('default', 'web', '10.96.0.10'));
    const relay = await confinedRelay({ args: [`--kubeconfig=${kubeconfig}`, `--nodePort=${port}`] });
    await relay.waitForLog((l) => l.msg === 'kubearmor node targets changed' && JSON.stringify(l.targets).includes(`127.0.0.2:${port}`), 20_000);
    const w = watchAlerts(relay.target);
    await subscribed(relay);
    await fakeNode({ host: '127.0.0.2', port, rate: 0, count: 5, nodeName: 'node-discovered' });
    await w.waitFor(5);
  });
});
