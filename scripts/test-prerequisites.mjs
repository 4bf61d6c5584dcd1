// @ts-check
// What the test suite needs beyond `npm ci`, and getting it. The suite talks to programs
// that are not ours on purpose (Python's gRPC as an independent node daemon and consumer,
// the openssl CLI, libseccomp's Python binding, Go's crypto/x509, strace, a C compiler), so a fresh
// machine lacks them; Debian packages provide each one.
//
//   node scripts/test-prerequisites.mjs     (first step of `npm test`) installs what is
//       missing with apt-get when it can (root, apt-get on PATH), says what it installed,
//       and otherwise exits 1 with one line per missing piece and the command that installs it;
//   globalSetup of vitest.config.ts          checks only: a suite started without the
//       first step stops at once with the same lines instead of timing out in a test.
//
// Plain JavaScript: it runs before the build, with nothing but Node.
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The interpreter the tests run Python peers with (test/helpers/python-peers.ts). */
const PYTHON = process.env.KUBEARMOR_TEST_PYTHON ?? '/usr/bin/python3';
/** Debian's interpreter, the one python3-seccomp installs into (test/seccomp.test.ts). */
const DEBIAN_PYTHON = '/usr/bin/python3';

/**
 * @typedef {{ pkg: string, python: string, module: string }} PythonModule  a module the
 *   tests import with `python`, from Debian package `pkg`
 * @typedef {{ pkg: string, command: string }} Command  a program the tests run, from `pkg`
 * @typedef {{ pkg: string, why: string }} Missing
 */

/** @type {PythonModule[]} */
const PYTHON_MODULES = [
  { pkg: 'python3-grpcio', python: PYTHON, module: 'grpc' },
  { pkg: 'python3-grpc-tools', python: PYTHON, module: 'grpc_tools.protoc' },
  { pkg: 'python3-protobuf', python: PYTHON, module: 'google.protobuf' },
  { pkg: 'python3-seccomp', python: DEBIAN_PYTHON, module: 'seccomp' },
  // makes the hostile certificates of test/certs-go-parity.test.ts (test/peers/hostile_certs.py)
  { pkg: 'python3-cryptography', python: DEBIAN_PYTHON, module: 'cryptography.x509' },
];

/** @type {Command[]} */
const COMMANDS = [
  { pkg: 'openssl', command: 'openssl' },
  { pkg: 'golang-go', command: 'go' },
  { pkg: 'strace', command: 'strace' },
  // compiles the probe that calls dangerous system calls under the seccomp profile
  { pkg: 'gcc', command: 'cc' },
];

export const PACKAGES = [...PYTHON_MODULES, ...COMMANDS].map((p) => p.pkg);

/** @param {string} name */
function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * The modules `python` cannot import, in one interpreter start per interpreter (the check
 * must stay well under a second when everything is there).
 * @param {string} python
 * @param {string[]} modules
 * @returns {Set<string>}
 */
function unimportable(python, modules) {
  const script = 'import importlib, sys\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n    except Exception:\n        print(m)\n';
  const res = spawnSync(python, ['-c', script, ...modules], { encoding: 'utf8', timeout: 20_000 });
  if (res.error || res.status !== 0) return new Set(modules); // no such interpreter, or it cannot start
  return new Set(res.stdout.split('\n').filter(Boolean));
}

/** @returns {Missing[]} every prerequisite absent on this machine, in a stable order */
export function missingPrerequisites() {
  /** @type {Missing[]} */
  const missing = [];
  const byPython = new Map(/** @type {[string, PythonModule[]][]} */ ([]));
  for (const m of PYTHON_MODULES) byPython.set(m.python, [...(byPython.get(m.python) ?? []), m]);
  for (const [python, mods] of byPython) {
    const failed = unimportable(python, mods.map((m) => m.module));
    for (const m of mods) if (failed.has(m.module)) missing.push({ pkg: m.pkg, why: `${python} cannot import ${m.module}` });
  }
  for (const c of COMMANDS) if (!onPath(c.command)) missing.push({ pkg: c.pkg, why: `no ${c.command} on PATH` });
  return missing;
}

const isRoot = () => process.getuid?.() === 0;

/**
 * One line per missing piece: what, why, and the command that installs it.
 * @param {Missing[]} missing
 */
export function explain(missing) {
  const sudo = isRoot() ? '' : 'sudo ';
  return missing.map((m) => `test prerequisite missing: ${m.pkg} (${m.why}); install it with: ${sudo}apt-get install -y ${m.pkg}`);
}

/** Why apt-get cannot be used here, or undefined when it can. */
function cannotInstall() {
  if (!isRoot()) return `not root (uid ${process.getuid?.()}), so they cannot be installed here`;
  if (!onPath('apt-get')) return 'no apt-get on PATH, so they cannot be installed here';
  return undefined;
}

/**
 * apt-get, quiet and non-interactive; waits for a dpkg lock held by another install rather
 * than failing, and gives up on an unreachable registry within seconds.
 * @param {string[]} args
 */
function aptGet(args) {
  const options = ['-q', '-o', 'DPkg::Lock::Timeout=300', '-o', 'Acquire::Retries=1', '-o', 'Acquire::http::Timeout=15', '-o', 'Acquire::https::Timeout=15'];
  const res = spawnSync('apt-get', [...options, ...args], { encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 15 * 60_000 });
  const lines = `${res.stderr ?? ''}${res.stdout ?? ''}`.split('\n');
  // `apt-get update` exits 0 when no registry answers; its first failed fetch says why.
  const problem = lines.filter((l) => l.startsWith('E:')).pop() ?? lines.find((l) => l.startsWith('W: Failed to fetch'));
  return { ok: !res.error && res.status === 0, error: res.error?.message ?? problem ?? `exit ${res.status}`, problem };
}

/**
 * Installs the missing packages; the package lists are refreshed only when an install
 * from the current ones fails (a fresh image has none).
 * @param {string[]} pkgs
 */
function install(pkgs) {
  const first = aptGet(['install', '-y', ...pkgs]);
  if (first.ok) return first;
  const update = aptGet(['update']);
  if (!update.ok) return { ok: false, error: `apt-get update failed: ${update.error}` };
  const again = aptGet(['install', '-y', ...pkgs]);
  return update.problem && !again.ok ? { ok: false, error: `${again.error} (apt-get update: ${update.problem})` } : again;
}

/** @returns {number} the exit code of the test command's first step */
export function provision() {
  const t0 = performance.now();
  const seconds = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
  const missing = missingPrerequisites();
  if (missing.length === 0) {
    console.log(`test prerequisites: all present (${PACKAGES.join(', ')}), checked in ${seconds()}`);
    return 0;
  }
  const pkgs = missing.map((m) => m.pkg);
  const reason = cannotInstall();
  if (reason) {
    for (const line of explain(missing)) console.error(line);
    console.error(`test prerequisites: ${pkgs.length} missing and ${reason}`);
    return 1;
  }
  console.log(`test prerequisites: installing ${pkgs.join(' ')} with apt-get ...`);
  const result = install(pkgs);
  const still = missingPrerequisites();
  if (still.length > 0) {
    for (const line of explain(still)) console.error(line);
    console.error(`test prerequisites: apt-get could not provide them${result.ok ? '' : `: ${result.error}`}`);
    return 1;
  }
  console.log(`test prerequisites: installed ${pkgs.join(' ')} in ${seconds()}`);
  return 0;
}

/**
 * vitest globalSetup: a suite run without `npm test`'s first step stops here, at once. It
 * exits rather than throws: vitest would bury these lines under its own stack trace.
 */
export function setup() {
  const missing = missingPrerequisites();
  if (missing.length === 0) return;
  for (const line of explain(missing)) console.error(line);
  console.error('test prerequisites: `npm test` installs them first; `npm run test:unit` needs none of them');
  process.exit(1);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exitCode = provision();
