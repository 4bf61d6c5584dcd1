// `kubearmor-relay seccomp check` and `seccomp explain`: the operator's tools for a node where
// the relay's profile is not enough. The check runs the relay's paths confined for real
// (scripts/seccomp-exec.py) and must name a call the profile leaves out; explain must name
// the calls in the kernel's seccomp audit records for either architecture.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { refusedCall } from '../server/tools/seccomp-check.js';
import { explain, parseSeccompRecords } from '../server/tools/seccomp-explain.js';
import { SYSCALL_NAMES } from '../server/tools/syscall-names.js';
import { MAIN } from './helpers/relay-process.js';
import { loadProfile, nodeOptionsFromEnv, pythonJson, runConfined } from './helpers/seccomp.js';

const dir = mkdtempSync(join(tmpdir(), 'seccomp-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The relay's profile without some calls. */
function profileWithout(...names: string[]): string {
  const profile = loadProfile();
  profile.syscalls[0]!.names = profile.syscalls[0]!.names.filter((n) => !names.includes(n));
  const file = join(dir, `without-${names.join('-')}.json`);
  writeFileSync(file, JSON.stringify(profile));
  return file;
}

const check = (launcherOptions: string[], profile?: string) => runConfined([process.execPath, MAIN, 'seccomp', 'check'], [...launcherOptions, ...nodeOptionsFromEnv()], profile);

describe('kubearmor-relay seccomp check', () => {
  it('passes every relay path under the relay profile, and says the process is confined', () => {
    const res = check(['--name-refused']);
    expect(res.stderr).toBe('');
    expect(res.stdout).toMatch(/confined by a seccomp filter/);
    expect(res.stdout).not.toMatch(/FAILED/);
    expect(res.stdout.match(/^ok {6}/gm)).toHaveLength(5);
    expect(res.status).toBe(0);
  });

  it('names the call a profile lacks and the path that needs it, under --name-refused', () => {
    const res = check(['--name-refused'], profileWithout('inotify_add_watch'));
    expect(res.stdout).toMatch(/^FAILED {2}file watch: .*\n.*\n {8}refused call: inotify_add_watch \((x86_64|aarch64) #\d+\)$/m);
    expect(res.stdout).toMatch(/^refused calls: inotify_add_watch .*: add them to deploy\/seccomp\/kubearmor-relay\.json/m);
    expect(res.status).toBe(1);
  });

  it('reports the failing path with EPERM under the plain profile, and how to name the call', () => {
    const res = check([], profileWithout('inotify_add_watch'));
    expect(res.stdout).toMatch(/^FAILED {2}file watch: .*\n {8}EPERM /m);
    expect(res.stdout).toMatch(/failed without naming a call .*--name-refused.*seccomp explain/);
    expect(res.status).toBe(1);
  });

  it('turns a refused-call errno anywhere in an error chain into the call name', () => {
    const nr = SYSCALL_NAMES.x86_64.indexOf('setpriority');
    const inner = Object.assign(new Error('uv_os_setpriority returned Unknown system error -3141'), { errno: -(3000 + nr) });
    expect(refusedCall(new Error('outer', { cause: inner }), 'x86_64')).toBe(`setpriority (x86_64 #${nr})`);
    expect(refusedCall(new AggregateError([new Error('x'), Object.assign(new Error('y'), { errno: -3999 })]), 'x86_64')).toMatch(/refused for its arguments/);
    expect(refusedCall(Object.assign(new Error('EPERM'), { errno: -1 }), 'x86_64')).toBeUndefined();
  });
});

describe('kubearmor-relay seccomp explain', () => {
  const kernel = (arch: string, nr: number) =>
    `Nov 30 12:00:00 node-a kernel: audit: type=1326 audit(1796040000.123:45): auid=4294967295 uid=65532 gid=65532 ses=4294967295 subj=unconfined pid=4242 comm="node" exe="/nodejs/bin/node" sig=0 arch=${arch} syscall=${nr} compat=0 ip=0x7f0000001234 code=0x7ffc0000`;
  const auditd = (arch: string, nr: number) => `type=SECCOMP msg=audit(1796040001.5:46): auid=4294967295 uid=65532 pid=4242 comm="node" exe="/nodejs/bin/node" sig=0 arch=${arch} syscall=${nr} compat=0 ip=0x1 code=0x50000`;

  it('names each call by the architecture of its record, x86_64 and aarch64 alike', () => {
    const text = [kernel('c000003e', 329), auditd('c00000b7', 288), 'an unrelated kernel line', kernel('c000003e', 329)].join('\n');
    const records = parseSeccompRecords(text);
    expect(records.map((r) => [r.arch, r.nr, r.name, r.comm])).toEqual([
      ['x86_64', 329, 'pkey_mprotect', 'node'],
      ['aarch64', 288, 'pkey_mprotect', 'node'],
      ['x86_64', 329, 'pkey_mprotect', 'node'],
    ]);
    expect(explain(records)).toMatch(/^pkey_mprotect +x86_64 #329 +2x {2}node \/nodejs\/bin\/node$/m);
  });

  it('says which calls the profile does not allow, and which it allows only with other arguments', () => {
    const nr = (name: string) => SYSCALL_NAMES.x86_64.indexOf(name);
    const records = parseSeccompRecords([kernel('c000003e', nr('ptrace')), kernel('c000003e', nr('socket'))].join('\n'));
    const allowed = new Map([['socket', 'with some arguments' as const]]);
    const text = explain(records, allowed);
    expect(text).toMatch(/^ptrace .*NOT in the profile$/m);
    expect(text).toMatch(/^socket .*only with some arguments/m);
  });
});

describe('the syscall tables the tools use', () => {
  it('are libseccomp\'s, number for number, on x86_64 and aarch64', () => {
    const fromLibseccomp = pythonJson<Record<string, string[]>>(
      [
        'import json, seccomp',
        'def table(arch):',
        '    names = {}',
        '    for nr in range(1024):',
        '        try:',
        '            names[nr] = seccomp.resolve_syscall(arch, nr).decode()',
        '        except ValueError:',
        '            pass',
        '    return [names.get(i, "") for i in range(max(names) + 1)]',
        'print(json.dumps({"x86_64": table(seccomp.Arch.X86_64), "aarch64": table(seccomp.Arch.AARCH64)}))',
      ].join('\n'),
      null,
    );
    expect(SYSCALL_NAMES.x86_64).toEqual(fromLibseccomp.x86_64);
    expect(SYSCALL_NAMES.aarch64).toEqual(fromLibseccomp.aarch64);
  });
});
