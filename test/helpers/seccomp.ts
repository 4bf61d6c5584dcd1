// The relay's seccomp profile and the tools that load it, shared by the seccomp tests:
// where the files are, how a command runs confined (scripts/seccomp-exec.py, Debian's
// python3-seccomp), and what this machine's CPU and Node offer (memory protection keys).
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const PROFILE = join(ROOT, 'deploy/seccomp/kubearmor-relay.json');
export const AUDIT = join(ROOT, 'deploy/seccomp/kubearmor-relay-audit.json');
export const EXEC = join(ROOT, 'scripts/seccomp-exec.py');
/** Debian's interpreter, the one with python3-seccomp (a pyenv `python3` lacks it) */
export const PYTHON = '/usr/bin/python3';

export { REFUSED_BASE, REFUSED_FOR_ARGUMENTS } from '../../server/tools/seccomp-check.js';

export interface ProfileArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}
export interface ProfileRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: ProfileArg[];
}
export interface Profile {
  defaultAction: string;
  architectures: string[];
  syscalls: ProfileRule[];
  [key: string]: unknown;
}

export const loadProfile = (file = PROFILE): Profile => JSON.parse(readFileSync(file, 'utf8')) as Profile;

/** Every name the profile allows, with or without conditions on the arguments. */
export const allowedNames = (profile: Profile): string[] => [...new Set(profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW').flatMap((r) => r.names))].sort();

/** Runs a Python snippet with the seccomp module; its stdout is JSON. */
export function pythonJson<T>(script: string, input: unknown): T {
  const res = spawnSync(PYTHON, ['-c', script], { input: JSON.stringify(input), encoding: 'utf8' });
  if (/No module named 'seccomp'/.test(res.stderr) || res.error) throw new Error(`${PYTHON} with python3-seccomp is needed: apt-get install -y python3-seccomp`);
  if (res.status !== 0) throw new Error(`python failed (${res.status}): ${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

/** Runs argv under the profile; `--name-refused` and `--node-option=` go in launcherOptions. */
export function runConfined(argv: string[], launcherOptions: string[] = [], profile = PROFILE): SpawnSyncReturns<string> {
  return spawnSync(PYTHON, [EXEC, '--profile', profile, ...launcherOptions, '--', ...argv], { encoding: 'utf8' });
}

/** The CPU has memory protection keys and the kernel enabled them (x86 `pku` and `ospke`). */
export function cpuHasPkeys(): boolean {
  const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
  return flags.includes('pku') && flags.includes('ospke');
}

/**
 * The V8 flag that turns memory protection keys off for this node: Node 20 (V8 11) has
 * --wasm-memory-protection-keys (WebAssembly code), Node 24 (V8 13) --memory-protection-keys
 * (all code); each rejects the other's name.
 */
export function pkeysOffFlag(node = process.execPath): string {
  const options = execFileSync(node, ['--v8-options'], { encoding: 'utf8', maxBuffer: 16 << 20 });
  const name = /^\s*--((?:wasm-)?memory-protection-keys)\s/m.exec(options)?.[1];
  if (!name) throw new Error(`${node} --v8-options names no memory-protection-keys flag`);
  return `--no-${name}`;
}

/** Compiles test/helpers/seccomp-probe.c with the system's C compiler into a temp dir. */
export function compileProbe(): string {
  const out = join(mkdtempSync(join(tmpdir(), 'seccomp-probe-')), 'seccomp-probe');
  const res = spawnSync('cc', ['-O1', '-Wall', '-o', out, join(ROOT, 'test/helpers/seccomp-probe.c')], { encoding: 'utf8' });
  if (res.error) throw new Error('a C compiler (cc) is needed to build the seccomp probe: apt-get install -y gcc libc6-dev');
  if (res.status !== 0) throw new Error(`cc failed on test/helpers/seccomp-probe.c: ${res.stderr}`);
  return out;
}

/** Output of the probe: name -> errno (0 when the call succeeded). */
export function parseProbe(stdout: string): Record<string, number> {
  return Object.fromEntries(stdout.trim().split('\n').map((l) => {
    const [name, errno] = l.split(' ');
    return [name!, Number(errno)];
  }));
}

/** The --node-option=... of RELAY_LAUNCHER (CI's V8 flag variants), to confine other commands alike. */
export function nodeOptionsFromEnv(env = process.env): string[] {
  return (env.RELAY_LAUNCHER ?? '').split(' ').filter((a) => a.startsWith('--node-option='));
}
