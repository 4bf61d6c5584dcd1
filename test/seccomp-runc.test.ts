// The profile as a container runtime applies it: runc (the runtime under containerd, hence
// k3s, RKE2 and most managed clusters) runs `node dist/server/main.js seccomp check` in a
// container whose OCI config carries deploy/seccomp/kubearmor-relay.json unchanged, as
// uid 65532 with no capabilities and no_new_privs, like the Deployment. runc makes calls of
// its own between loading the filter and exec-ing node (it checks /proc/self/fd with
// fstatfs, then closes leaked descriptors), which only a real runtime shows.
//
// SECCOMP_RUNC_NODES lists the node binaries to run (colon-separated); .ci/run sets it and
// installs runc. Needs root.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, loadProfile } from './helpers/seccomp.js';

const NODES = (process.env.SECCOMP_RUNC_NODES ?? '').split(':').filter(Boolean);

/** An OCI bundle: an empty read-only root with the host's system directories, the checkout and node bound in. */
function bundle(dir: string, node: string): string {
  const rootfs = join(dir, 'rootfs');
  const scratch = join(dir, 'tmp');
  mkdirSync(rootfs);
  mkdirSync(scratch);
  chmodSync(scratch, 0o1777);
  const bind = (source: string, destination: string, mode: 'ro' | 'rw' = 'ro') => ({ destination, type: 'bind', source, options: ['rbind', mode] });
  const config = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 65532, gid: 65532 },
      args: ['/opt/node/bin/node', '/app/dist/server/main.js', 'seccomp', 'check'],
      env: ['PATH=/usr/bin:/bin', 'HOME=/tmp'],
      cwd: '/tmp',
      capabilities: { bounding: [], effective: [], permitted: [], inheritable: [], ambient: [] },
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: true },
    hostname: 'kubearmor-relay',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ...['/usr', '/lib', '/lib64', '/bin', '/etc'].filter((p) => existsSync(p)).map((p) => bind(p, p)),
      bind(ROOT, '/app'),
      bind(dirname(node), '/opt/node/bin'),
      bind(scratch, '/tmp', 'rw'),
    ],
    // the host's network namespace: the check uses loopback only
    linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }], seccomp: loadProfile(), maskedPaths: ['/proc/kcore'], readonlyPaths: ['/proc/sys'] },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 1));
  return dir;
}

describe.skipIf(NODES.length === 0)('the relay in a runc container confined by the profile (set SECCOMP_RUNC_NODES, as .ci/run does)', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it.each(NODES)('passes every relay path with %s', (node) => {
    expect(process.getuid?.(), 'runc needs root').toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'relay-runc-'));
    dirs.push(dir);
    const id = `kubearmor-relay-seccomp-${process.pid}-${dirs.length}`;
    const res = spawnSync('runc', ['run', '--bundle', bundle(dir, node), id], { encoding: 'utf8', timeout: 120_000 });
    expect(res.error).toBeUndefined();
    expect(res.stderr).toBe('');
    expect(res.stdout).toMatch(/^kubearmor-relay seccomp check: node v\d+\.\d+\.\d+ (x64|arm64), confined by a seccomp filter,/);
    expect(res.stdout).not.toMatch(/FAILED/);
    expect(res.stdout).toMatch(/^every path works under this filter$/m);
    expect(res.status).toBe(0);
  });
});
