// The hostile certificate corpus (test/peers/hostile_certs.py, python-cryptography) and Go's
// live verdict on it (test/peers/goverify, crypto/x509 as crypto/tls calls it).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ParityCase {
  name: string;
  roots: string;
  chain: string;
  purpose: 'client' | 'server';
  host: string;
  go: 'accept' | 'refuse';
}

export interface GoVerdict {
  name: string;
  purpose: string;
  ok: boolean;
  error?: string;
}

const PEERS = join(import.meta.dirname, '..', 'peers');

function run(command: string, args: string[], options: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  try {
    return execFileSync(command, args, { ...options, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const e = err as Error & { stderr?: string; code?: string };
    const why = e.code === 'ENOENT' ? `${command} is not installed` : (e.stderr?.trim() || e.message);
    throw new Error(`${command} ${args.join(' ')} failed: ${why}`);
  }
}

/** Writes the corpus into a temporary directory; `remove()` deletes it. */
export function hostileCorpus(): { dir: string; cases: ParityCase[]; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'hostile-certs-'));
  const out = run('/usr/bin/python3', ['-W', 'ignore', join(PEERS, 'hostile_certs.py'), dir]);
  return { dir, cases: JSON.parse(out) as ParityCase[], remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Builds the Go verifier and runs it over the cases. */
export function goVerdicts(cases: readonly ParityCase[], workDir: string): GoVerdict[] {
  const binary = join(workDir, 'goverify');
  run('go', ['build', '-o', binary, 'main.go'], { cwd: join(PEERS, 'goverify'), env: { ...process.env, GO111MODULE: 'off', GOFLAGS: '' } });
  return JSON.parse(run(binary, [], { input: JSON.stringify(cases) })) as GoVerdict[];
}

export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}
