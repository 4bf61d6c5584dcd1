import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type CliIo, runCerts } from '../certs/cli.js';
import { CertManager } from '../certs/manager.js';
import { captureLogger, tempDir } from './helpers/certs-fixtures.js';

function capture(): CliIo & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    out: (t: string) => void (io.stdout += t),
    err: (t: string) => void (io.stderr += t),
  };
  return io;
}

const dirs: Array<{ remove(): void }> = [];
afterEach(() => {
  while (dirs.length) dirs.pop()!.remove();
});
function dir(): string {
  const d = tempDir('certs-cli-');
  dirs.push(d);
  return d.path;
}

describe('kubearmor-relay certs', () => {
  it('init writes a CA and the five external files, keys created with mode 0600, and the relay loads them', async () => {
    const out = join(dir(), 'tls');
    const io = capture();
    expect(await runCerts(['init', '--out', out, '--extraDnsNames=relay.example,other.example', '--extraIpAddresses', '192.0.2.7', '--namespace=sec', '--validity=48h'], io)).toBe(0);
    for (const key of ['ca.key', 'server.key', 'client.key']) expect(statSync(join(out, key)).mode & 0o777).toBe(0o600);
    for (const crt of ['ca.crt', 'server.crt', 'client.crt']) expect(statSync(join(out, crt)).mode & 0o077).not.toBe(0o077);
    expect(readFileSync(join(out, 'ca.key'), 'utf8')).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
    const ca = new X509Certificate(readFileSync(join(out, 'ca.crt')));
    expect(ca.ca).toBe(true);
    expect(ca.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    const server = new X509Certificate(readFileSync(join(out, 'server.crt')));
    expect(server.subjectAltName).toContain('DNS:relay.example');
    expect(server.subjectAltName).toContain('DNS:kubearmor.sec.svc.cluster.local');
    expect(server.checkIP('192.0.2.7')).toBe('192.0.2.7');
    expect(server.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(new Date(server.validTo).getTime() - Date.now()).toBeLessThan(49 * 3_600_000);
    // OpenSSL, an independent verifier, accepts the chain
    expect(execFileSync('openssl', ['verify', '-CAfile', join(out, 'ca.crt'), join(out, 'server.crt'), join(out, 'client.crt')]).toString()).toMatch(/server\.crt: OK\n.*client\.crt: OK/);
    const manager = new CertManager({ provider: 'external', dir: out, logger: captureLogger().logger });
    try {
      expect((await manager.start()).generation).toBe(1);
    } finally {
      manager.close();
    }
  });

  it('init refuses to overwrite existing files unless --force, which recreates keys with mode 0600', async () => {
    const out = dir();
    writeFileSync(join(out, 'server.key'), 'old', { mode: 0o644 });
    const io = capture();
    expect(await runCerts(['init', `--out=${out}`], io)).toBe(1);
    expect(io.stderr).toMatch(/server\.key already exist/);
    expect(await runCerts(['init', `--out=${out}`, '--force'], capture())).toBe(0);
    expect(statSync(join(out, 'server.key')).mode & 0o777).toBe(0o600);
  });

  it('client issues a client certificate from a CA directory and copies ca.crt', async () => {
    const caDir = dir();
    await runCerts(['init', '--out', caDir], capture());
    const out = join(dir(), 'consumer');
    const io = capture();
    expect(await runCerts(['client', '--ca', caDir, '--out', out, '--cn', 'alice'], io)).toBe(0);
    const cert = new X509Certificate(readFileSync(join(out, 'client.crt')));
    expect(cert.subject).toContain('CN=alice');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(statSync(join(out, 'client.key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(out, 'ca.crt'), 'utf8')).toBe(readFileSync(join(caDir, 'ca.crt'), 'utf8'));
    const manager = new CertManager({ provider: 'external', dir: out, roles: ['client'], logger: captureLogger().logger });
    try {
      expect((await manager.start()).client!.cert.subject).toContain('CN=alice');
    } finally {
      manager.close();
    }
  });

  it('inspect prints subject, SANs, serial, validity, issuer, key type and EKU for files and directories', async () => {
    const out = dir();
    await runCerts(['init', '--out', out], capture());
    const io = capture();
    expect(await runCerts(['inspect', out], io)).toBe(0);
    expect(io.stdout).toContain(`${join(out, 'ca.crt')}\n  subject:  O=kubearmor, CN=kubearmor-relay-ca`);
    expect(io.stdout).toMatch(/server\.crt\n {2}subject: {2}O=kubearmor, CN=kubearmor-relay\n {2}SANs: {5}DNS:localhost/);
    expect(io.stdout).toMatch(/serial: {3}[0-9A-F]{32,34}/);
    expect(io.stdout).toMatch(/validity: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ to \d{4}-.*\(\d+ days left\)/);
    expect(io.stdout).toContain('key:      EC P-256');
    expect(io.stdout).toContain('key:      RSA 2048');
    expect(io.stdout).toContain('EKU:      serverAuth');
    expect(io.stdout).toContain('EKU:      clientAuth');
    const single = capture();
    expect(await runCerts(['inspect', join(out, 'client.crt')], single)).toBe(0);
    expect(single.stdout).toContain('issuer:   O=kubearmor, CN=kubearmor-relay-ca');
  });

  it('reports usage errors with exit code 2 and unreadable input with exit code 1', async () => {
    const io = capture();
    expect(await runCerts(['init'], io)).toBe(2);
    expect(io.stderr).toContain('flag --out is required');
    expect(await runCerts(['init', '--out=/tmp/x', '--extraIpAddresses=not-an-ip'], io)).toBe(2);
    expect(await runCerts(['bogus'], io)).toBe(2);
    expect(await runCerts(['inspect', join(dir(), 'missing.crt')], io)).toBe(1);
    expect(await runCerts(['init', '--help'], io)).toBe(0);
    expect(io.stdout).toContain('--extraDnsNames');
  });
});
