// The relay's seccomp profile (deploy/seccomp/) as a specification: its shape as the kubelet
// reads it, the reason documented for every allowed call, its validity on x86_64 and aarch64
// (libseccomp's syscall tables), and, loaded for real by scripts/seccomp-exec.py, what it
// refuses: each dangerous call is made by a small C probe under the profile and must come
// back refused by the filter, not answered by the kernel.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { parse as parseYaml } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { eventually } from './helpers/relay-process.js';
import {
  AUDIT,
  EXEC,
  PROFILE,
  PYTHON,
  REFUSED_BASE,
  REFUSED_FOR_ARGUMENTS,
  ROOT,
  compileProbe,
  cpuHasPkeys,
  loadProfile,
  parseProbe,
  pkeysOffFlag,
  pythonJson,
  runConfined,
} from './helpers/seccomp.js';

const profile = loadProfile();
const unconditional = profile.syscalls[0]!;
const EPERM = 1;
const ENOSYS = 38;

/** Calls a relay never makes and an attacker wants, each refused outright (no rule names them). */
const DANGEROUS = [
  'ptrace', 'mount', 'umount2', 'bpf', 'perf_event_open', 'setns', 'unshare', 'keyctl', 'add_key', 'request_key',
  'kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module', 'process_vm_readv', 'process_vm_writev',
  'userfaultfd', 'personality', 'chroot', 'pivot_root', 'setpriority', 'io_uring_setup',
];
/** Calls the profile allows only with some arguments, made with others (probe name: call/arguments). */
const REFUSED_FOR_THEIR_ARGUMENTS = ['clone/CLONE_NEWUSER', 'socket/AF_PACKET', 'socket/AF_VSOCK', 'socket/AF_ALG', 'socket/NETLINK_NETFILTER', 'prctl/PR_GET_DUMPABLE', 'prlimit64/pid1'];
/** Calls the profile lets through to the kernel, whose answer must be the same confined or not. */
const REACH_THE_KERNEL = ['pkey_alloc', 'pkey_mprotect', 'pkey_free', 'socket/NETLINK_ROUTE', 'prlimit64/self'];

/** x86_64-only calls the runtime may make, and what glibc and libuv call on aarch64 instead. */
const AARCH64_REPLACEMENT: Record<string, string[]> = {
  open: ['openat'],
  stat: ['newfstatat', 'statx'],
  lstat: ['newfstatat', 'statx'],
  access: ['faccessat', 'faccessat2'],
  readlink: ['readlinkat'],
  poll: ['ppoll'],
  epoll_wait: ['epoll_pwait'],
  epoll_create: ['epoll_create1'],
  pipe: ['pipe2'],
  dup2: ['dup3'],
  eventfd: ['eventfd2'],
  inotify_init: ['inotify_init1'],
  mkdir: ['mkdirat'],
  unlink: ['unlinkat'],
  rmdir: ['unlinkat'],
  rename: ['renameat', 'renameat2'],
  time: ['clock_gettime'],
  // x86_64 sets the thread pointer (FS) with it; aarch64 writes TPIDR_EL0 without a syscall
  arch_prctl: [],
};

describe('the seccomp profile files', () => {
  it('deny by default with EPERM and cover x86_64 and aarch64, as the kubelet reads them', () => {
    expect(profile.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect([...profile.architectures].sort()).toEqual(['SCMP_ARCH_AARCH64', 'SCMP_ARCH_X86_64']);
    expect(Object.keys(profile).sort()).toEqual(['architectures', 'defaultAction', 'syscalls']);
  });

  it('allow a sorted list of calls unconditionally, each named once and never also under conditions', () => {
    expect(unconditional.action).toBe('SCMP_ACT_ALLOW');
    expect(unconditional.args).toBeUndefined();
    expect(unconditional.names).toEqual([...unconditional.names].sort());
    expect(new Set(unconditional.names).size).toBe(unconditional.names.length);
    const conditional = profile.syscalls.slice(1).flatMap((r) => r.names);
    expect(conditional.filter((n) => unconditional.names.includes(n))).toEqual([]);
    for (const n of [...unconditional.names, ...conditional]) expect(n).toMatch(/^[a-z0-9_]+$/);
  });

  it('allow clone without namespace flags, prctl only to name threads, prlimit64 on itself, sockets of four families, and answer clone3 with ENOSYS', () => {
    const eq = (index: number, value: number) => ({ index, value, op: 'SCMP_CMP_EQ' });
    const allow = (name: string, ...args: object[]) => ({ names: [name], action: 'SCMP_ACT_ALLOW', args });
    expect(profile.syscalls.slice(1)).toEqual([
      // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET all clear
      allow('clone', { index: 0, value: 0x7e020000, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }),
      allow('prctl', eq(0, 15)), // PR_SET_NAME
      allow('prlimit64', eq(0, 0)), // pid 0: the caller
      allow('socket', eq(0, 1)), // AF_UNIX
      allow('socket', eq(0, 2)), // AF_INET
      allow('socket', eq(0, 10)), // AF_INET6
      allow('socket', eq(0, 16), eq(2, 0)), // AF_NETLINK, NETLINK_ROUTE only
      // clone3's flags are behind a pointer seccomp cannot read: ENOSYS makes glibc use clone
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    ]);
  });

  it('come with an audit variant identical but for defaultAction SCMP_ACT_LOG', () => {
    const audit = loadProfile(AUDIT);
    expect(audit.defaultAction).toBe('SCMP_ACT_LOG');
    expect({ ...audit, defaultAction: profile.defaultAction }).toEqual(profile);
  });

  it('explain every allowed call in deploy/seccomp/README.md, which names no call the profile lacks', () => {
    const readme = readFileSync(join(ROOT, 'deploy/seccomp/README.md'), 'utf8');
    const section = /^### Why each call is allowed\n([\s\S]*?)^### /m.exec(readme)?.[1] ?? '';
    const rows = section.split('\n').filter((l) => /^\| [^-]/.test(l)).slice(1);
    expect(rows.length).toBeGreaterThan(5);
    const documented = rows.flatMap((r) => [...(r.split('|')[2] ?? '').matchAll(/`([a-z0-9_]+)`/g)].map((m) => m[1]!));
    expect([...new Set(documented)].sort()).toEqual([...new Set(profile.syscalls.flatMap((r) => r.names))].sort());
  });
});

describe('the profile on x86_64 and aarch64 (libseccomp syscall tables)', () => {
  const names = [...new Set(profile.syscalls.flatMap((r) => r.names))];
  const table = pythonJson<Record<string, { x86_64: number; aarch64: number }>>(
    [
      'import json, sys, seccomp',
      'def nr(arch, name):',
      '    try:',
      '        return seccomp.resolve_syscall(arch, name)',
      '    except Exception:',
      '        return -1',
      'print(json.dumps({n: {"x86_64": nr(seccomp.Arch.X86_64, n), "aarch64": nr(seccomp.Arch.AARCH64, n)} for n in json.load(sys.stdin)}))',
    ].join('\n'),
    [...names, ...Object.values(AARCH64_REPLACEMENT).flat()],
  );
  const on = (arch: 'x86_64' | 'aarch64') => (n: string) => table[n]![arch] >= 0;

  it('names only calls that exist on x86_64 or on aarch64, none that exists on aarch64 alone', () => {
    expect(names.filter((n) => !on('x86_64')(n) && !on('aarch64')(n))).toEqual([]);
    expect(names.filter((n) => on('aarch64')(n) && !on('x86_64')(n))).toEqual([]);
  });

  it('allows, for every x86_64-only call it allows, the calls aarch64 makes instead', () => {
    const x86Only = names.filter((n) => !on('aarch64')(n)).sort();
    expect(x86Only).toEqual(Object.keys(AARCH64_REPLACEMENT).filter((n) => names.includes(n)).sort());
    for (const n of x86Only) {
      for (const r of AARCH64_REPLACEMENT[n]!) {
        expect(on('aarch64')(r), `${r} (for ${n}) on aarch64`).toBe(true);
        expect(names, `${r}, aarch64's ${n}`).toContain(r);
      }
    }
  });

  it('lists each x86_64-only call the runtime may make, not only those recorded on one machine', () => {
    // glibc and libuv on older or other builds make these; their aarch64 forms alone would
    // leave an x86_64 node refusing a call that works on arm64
    for (const n of Object.keys(AARCH64_REPLACEMENT)) expect(names).toContain(n);
  });
});

describe('under the profile, a C probe', () => {
  let confined: Record<string, number> = {};
  let named: Record<string, number> = {};
  let unconfined: Record<string, number> = {};
  let numbers: Record<string, number> = {};
  const calls = [...DANGEROUS, ...REFUSED_FOR_THEIR_ARGUMENTS, ...REACH_THE_KERNEL, 'clone3'];

  beforeAll(() => {
    const probe = compileProbe();
    const run = (launcherOptions: string[] | null) => {
      const res = launcherOptions ? runConfined([probe, ...calls], launcherOptions) : spawnSync(probe, calls, { encoding: 'utf8' });
      if (res.status !== 0) throw new Error(`probe failed (${res.status}): ${res.stderr}`);
      return parseProbe(res.stdout);
    };
    confined = run([]);
    named = run(['--name-refused']);
    unconfined = run(null);
    numbers = pythonJson<Record<string, number>>('import json, sys, seccomp\nprint(json.dumps({n: seccomp.resolve_syscall(seccomp.Arch.NATIVE, n) for n in json.load(sys.stdin)}))', DANGEROUS);
  });

  it.each(DANGEROUS)('is refused %s by the filter itself (EPERM; with --name-refused, the errno that names it)', (name) => {
    expect(confined[name]).toBe(EPERM);
    expect(named[name]).toBe(REFUSED_BASE + numbers[name]!);
  });

  it.each(REFUSED_FOR_THEIR_ARGUMENTS)('is refused %s for its arguments by the filter', (name) => {
    expect(confined[name]).toBe(EPERM);
    expect(named[name]).toBe(REFUSED_FOR_ARGUMENTS);
  });

  it.each(REACH_THE_KERNEL)('gets the kernel\'s own answer to %s, the same as unconfined', (name) => {
    expect(confined[name]).toBe(unconfined[name]);
    expect(named[name]).toBe(unconfined[name]);
  });

  it('gets ENOSYS from clone3, as from a kernel older than 5.3, so that glibc falls back to clone', () => {
    expect(unconfined.clone3).not.toBe(ENOSYS);
    expect(confined.clone3).toBe(ENOSYS);
  });
});

describe('paths no suite takes on purpose, under the profile', () => {
  it('resumes a sleep that signals stopped and continued, through restart_syscall', async () => {
    const probe = compileProbe();
    const child = spawn(PYTHON, [EXEC, '--profile', PROFILE, '--', probe, 'clock_nanosleep/stopped'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    expect((await lines.next()).value).toBe('sleeping');
    const exited = once(child, 'exit');
    child.kill('SIGSTOP');
    // the stop must land before the continue: wait for the state to show it
    await eventually(() => (/^\d+ \(.*\) T /.test(readFileSync(`/proc/${child.pid}/stat`, 'utf8')) ? true : undefined), 5000, 'the probe to stop');
    child.kill('SIGCONT');
    expect((await lines.next()).value).toBe('clock_nanosleep/stopped 0');
    expect((await exited)[0]).toBe(0);
  });

  it('ends running out of memory with V8\'s fatal error and SIGABRT, as unconfined', () => {
    const argv = [process.execPath, '--max-old-space-size=16', '-e', 'const a = []; for (;;) a.push(new Array(1e5).fill(1));'];
    const free = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
    const confined = runConfined(argv);
    expect(free.signal).toBe('SIGABRT');
    expect(confined.signal).toBe('SIGABRT');
    expect(confined.stderr).toMatch(/FATAL ERROR: .*JavaScript heap out of memory/);
  });
});

// V8 protects code with memory protection keys when the CPU has them (pkey_alloc, then
// pkey_mprotect, pkey_free); Node 20 for WebAssembly code, Node 24 for all code. On a CPU
// without them V8 never gets a key and the key path is not taken: the probe above still
// proves the three calls reach the kernel.
describe(`WebAssembly under the profile on Node ${process.versions.node} (this CPU ${cpuHasPkeys() ? 'has' : 'has no'} memory protection keys)`, () => {
  // (module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
  const wasm = [0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11];
  const script = [
    `const m = new WebAssembly.Module(new Uint8Array(${JSON.stringify(wasm)}));`,
    'const sum = new WebAssembly.Instance(m).exports.add(40, 2);',
    "const keys = require('node:fs').readFileSync('/proc/self/smaps', 'utf8').match(/^ProtectionKey:\\s+[1-9]\\d*$/gm) ?? [];",
    'console.log(JSON.stringify({ sum, keyed: keys.length }));',
  ].join('\n');
  const off = pkeysOffFlag();

  it('compiles and runs a module with the protection V8 chooses', () => {
    const res = runConfined([process.execPath, '-e', script]);
    expect(res.stderr).toBe('');
    expect(JSON.parse(res.stdout).sum).toBe(42);
  });

  it(`compiles and runs a module with ${off}, and no memory carries a protection key`, () => {
    const res = runConfined([process.execPath, '-e', script], [`--node-option=${off}`]);
    expect(res.stderr).toBe('');
    expect(JSON.parse(res.stdout)).toEqual({ sum: 42, keyed: 0 });
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
