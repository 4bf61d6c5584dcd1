// The first step of `npm test` (scripts/test-prerequisites.mjs): what it says when the
// suite's prerequisites are there, and when they are missing and cannot be installed.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../scripts/test-prerequisites.mjs', import.meta.url));
const PACKAGES = ['python3-grpcio', 'python3-grpc-tools', 'python3-protobuf', 'python3-seccomp', 'openssl', 'golang-go', 'strace', 'gcc'];

function provision(env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [SCRIPT], { encoding: 'utf8', env, timeout: 60_000 });
}

describe('the test prerequisites step', () => {
  it('says every prerequisite is present and succeeds on a machine that has them all', () => {
    const res = provision();
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^test prerequisites: all present \(/);
    for (const pkg of PACKAGES) expect(res.stdout).toContain(pkg);
  });

  it('fails with one line per missing piece, naming it and the command that installs it, when apt-get is out of reach', () => {
    // No PATH (so no apt-get, openssl, go, strace or cc) and a Python without any module.
    const res = provision({ PATH: '/nonexistent', KUBEARMOR_TEST_PYTHON: '/nonexistent/python3' });
    expect(res.status).toBe(1);
    const lines = res.stderr.trim().split('\n');
    const missing = ['python3-grpcio', 'python3-grpc-tools', 'python3-protobuf', 'openssl', 'golang-go', 'strace', 'gcc'];
    for (const pkg of missing) {
      expect(lines.filter((l) => l.startsWith(`test prerequisite missing: ${pkg} (`) && l.endsWith(`apt-get install -y ${pkg}`))).toHaveLength(1);
    }
    expect(lines.at(-1)).toMatch(/^test prerequisites: 7 missing and (no apt-get on PATH|not root)/);
  });
});
