// The relay's seccomp profile (deploy/seccomp/): well-formed for the kubelet, loaded for
// real by scripts/seccomp-exec.py (python3-seccomp, the same libseccomp runtimes use) to
// run the relay confined through plaintext, mutual TLS, certificate rotation, the self
// provider and Kubernetes discovery, and shown to refuse a system call it leaves out.
//
// SECCOMP_TEST_LAUNCHER replaces the confining launcher (scripts/seccomp-record.sh sets it
// to strace to record what these same scenarios call).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import pino from 'pino';
import { parse as parseYaml } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { runCerts } from '../certs/cli.js';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { openMutualTls } from '../server/tls.js';
import { FakeKubeApi, kubeconfigFor, pod, service } from './helpers/fake-kube-api.js';
import { rawHealthCheck, rawWatch, type RawWatch } from './helpers/raw-client.js';
import { eventually, freePort, metricValue, startRelayProcess, type RelayProcess, type StartOptions } from './helpers/relay-process.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PROFILE = join(ROOT, 'deploy/seccomp/kubearmor-relay.json');
const AUDIT = join(ROOT, 'deploy/seccomp/kubearmor-relay-audit.json');
const EXEC = join(ROOT, 'scripts/seccomp-exec.py');
/** Debian's interpreter, the one with python3-seccomp (a pyenv `python3` lacks it) */
const PYTHON = '/usr/bin/python3';
const CONFINED = `${PYTHON} ${EXEC} --profile ${PROFILE} --`;
const LAUNCHER = process.env.SECCOMP_TEST_LAUNCHER ?? CONFINED;
const KNOWN_ACTIONS = ['SCMP_ACT_ALLOW', 'SCMP_ACT_ERRNO', 'SCMP_ACT_LOG', 'SCMP_ACT_KILL', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_TRACE', 'SCMP_ACT_NOTIFY'];
const quiet = pino({ level: 'silent' });

interface Profile {
  defaultAction: string;
  architectures: string[];
  syscalls: { names: string[]; action: string; args?: unknown[] }[];
  [key: string]: unknown;
}
const load = (file: string): Profile => JSON.parse(readFileSync(file, 'utf8')) as Profile;

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

describe('the seccomp profile files', () => {
  const profile = load(PROFILE);
  const names = profile.syscalls.flatMap((r) => r.names);

  it('deny by default with EPERM and cover x86_64 and aarch64, as the kubelet reads them', () => {
    expect(profile.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect([...profile.architectures].sort()).toEqual(['SCMP_ARCH_AARCH64', 'SCMP_ARCH_X86_64']);
    expect(Object.keys(profile).sort()).toEqual(['architectures', 'defaultAction', 'syscalls']);
    for (const rule of profile.syscalls) {
      expect(KNOWN_ACTIONS).toContain(rule.action);
      expect(rule.names.length).toBeGreaterThan(0);
    }
  });

  it('allow a sorted list of system calls, each named once, and prctl only to name threads', () => {
    expect(profile.syscalls.every((r) => r.action === 'SCMP_ACT_ALLOW')).toBe(true);
    const [plain, ...restricted] = profile.syscalls;
    expect(plain!.args).toBeUndefined();
    expect(plain!.names).toEqual([...plain!.names].sort());
    // prctl(PR_SET_NAME = 15, ...) only: Node 24 names its threads; every other option stays refused
    expect(restricted).toEqual([{ names: ['prctl'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 15, op: 'SCMP_CMP_EQ' }] }]);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z0-9_]+$/);
    // never the calls a confined process has no business making
    for (const n of ['ptrace', 'mount', 'umount2', 'bpf', 'init_module', 'kexec_load', 'reboot', 'setuid', 'setns', 'unshare', 'io_uring_setup', 'process_vm_writev', 'clone', 'fork', 'vfork']) {
      expect(names).not.toContain(n);
    }
  });

  it('name only system calls libseccomp knows on at least one of the two architectures', () => {
    const script = [
      'import json, sys, seccomp',
      'names = json.load(sys.stdin)',
      'arches = [seccomp.Arch.X86_64, seccomp.Arch.AARCH64]',
      'def known(n, a):',
      '    try:',
      '        return seccomp.resolve_syscall(a, n) >= 0',
      '    except Exception:',
      '        return False',
      'print(json.dumps([n for n in names if not any(known(n, a) for a in arches)]))',
    ].join('\n');
    const res = spawnSync(PYTHON, ['-c', script], { input: JSON.stringify(names), encoding: 'utf8' });
    expect(res.stderr).toBe('');
    expect(JSON.parse(res.stdout)).toEqual([]);
  });

  it('come with an audit variant identical but for defaultAction SCMP_ACT_LOG', () => {
    const audit = load(AUDIT);
    expect(audit.defaultAction).toBe('SCMP_ACT_LOG');
    expect({ ...audit, defaultAction: profile.defaultAction }).toEqual(profile);
  });
});

describe('the profile installer', () => {
  const read = (f: string) => readFileSync(join(ROOT, 'deploy/seccomp', f), 'utf8');

  it('is a valid DaemonSet that mounts only <KUBELET_ROOT>/seccomp from the host, the path kustomize sets', () => {
    const ds = parseYaml(read('install-daemonset.yaml')) as ConstructorParameters<typeof DaemonSet>[0] & {
      spec: { template: { spec: { volumes: { name: string; hostPath?: { path: string } }[] } } };
    };
    expect(() => new DaemonSet(ds).validate()).not.toThrow();
    const hostPaths = ds.spec.template.spec.volumes.filter((v) => v.hostPath);
    expect(hostPaths.map((v) => v.hostPath!.path)).toEqual(['/var/lib/kubelet/seccomp']);
    const kustomization = parseYaml(read('kustomization.yaml')) as { configMapGenerator: { name: string; files: string[] }[]; patches: { patch: string }[] };
    const [op] = parseYaml(kustomization.patches[0]!.patch) as { path: string; value: string }[];
    const index = Number(/^\/spec\/template\/spec\/volumes\/(\d+)\/hostPath\/path$/.exec(op!.path)?.[1]);
    expect(ds.spec.template.spec.volumes[index]?.name).toBe('kubelet-seccomp');
    expect(op!.value).toMatch(/\/seccomp$/);
    expect(kustomization.configMapGenerator[0]!.files.sort()).toEqual(['kubearmor-relay-audit.json', 'kubearmor-relay.json']);
  });
});

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
    expect(load(PROFILE).syscalls.flatMap((r) => r.names)).not.toContain('setpriority');
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
  it('answers HealthCheck and relays a node daemon to a consumer over plaintext', async () => {
    const port = await freePort();
    const relay = await confinedRelay({ args: [`--nodes=127.0.0.1:${port}`] });
    if (LAUNCHER === CONFINED) expect(seccompStatus(relay.proc.pid!)).toEqual({ seccomp: '2', noNewPrivs: '1' });
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
