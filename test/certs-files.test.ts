// Certificate files are input from outside the process: whatever they turn into (a FIFO,
// a device, a huge or malformed bundle), the manager keeps the material in service, says
// why, and neither hangs nor grows without bound.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CertManager } from '../certs/manager.js';
import { MAX_PEM_CERTIFICATES } from '../certs/pem.js';
import { loadTrustBundle } from '../certs/verify.js';
import { MAX_CERT_FILE_BYTES } from '../certs/watch.js';
import { type TestCa, captureLogger, leaf, metricValue, newCa, tempDir, waitFor, writeExternal } from './helpers/certs-fixtures.js';
import { MAIN } from './helpers/relay-process.js';

const RELOADS = 'kubearmor_relay_cert_reloads_total';
const cleanups: Array<() => void> = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

let ca: TestCa;
beforeAll(async () => {
  ca = await newCa('files-ca');
});

async function running() {
  const dir = tempDir();
  writeExternal(dir.path, { caPem: ca.certPem, server: await leaf(ca, 'server'), client: await leaf(ca, 'client') });
  const log = captureLogger();
  const registry = new Registry();
  const manager = new CertManager({ provider: 'external', dir: dir.path, logger: log.logger, registry, checkIntervalMs: 200 });
  cleanups.push(() => {
    manager.close();
    dir.remove();
  });
  const first = await manager.start();
  const failures = () => metricValue(registry, RELOADS, { result: 'failure' });
  const rejected = () => log.lines.filter((l) => l.msg === 'changed TLS material rejected; still using the previous material').map((l) => String(l.reason));
  return { dir: dir.path, manager, first, failures, rejected };
}

/** Replaces ca.crt with something else, then restores a good one: the repair must be applied. */
async function breakThenRepair(setup: Awaited<ReturnType<typeof running>>, breakIt: (path: string) => void, reason: RegExp) {
  const path = join(setup.dir, 'ca.crt');
  rmSync(path);
  breakIt(path);
  await waitFor(async () => (await setup.failures()) >= 1, 'the bad ca.crt to be rejected');
  expect(setup.manager.current()).toBe(setup.first);
  expect(setup.rejected().at(-1)).toMatch(reason);
  // a repair is still noticed: the watcher did not hang on the bad file
  const next = await newCa('repaired-ca');
  rmSync(path);
  writeExternal(setup.dir, { caPem: next.certPem, server: await leaf(next, 'server'), client: await leaf(next, 'client') });
  await waitFor(() => setup.manager.current().generation === 2, 'the repaired material to be loaded');
}

describe('certificate files that are not what they should be', () => {
  it('keeps the old material when ca.crt becomes a FIFO, and applies a later repair', async () => {
    const setup = await running();
    await breakThenRepair(setup, (path) => execFileSync('mkfifo', [path]), /is not a regular file \(a FIFO\)/);
  });

  it('keeps the old material when ca.crt points at /dev/zero, without reading it', async () => {
    const setup = await running();
    const before = process.memoryUsage().rss;
    await breakThenRepair(setup, (path) => symlinkSync('/dev/zero', path), /is not a regular file \(a character device\)/);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 * 1024);
  });

  it(`keeps the old material when ca.crt is larger than ${MAX_CERT_FILE_BYTES} bytes`, async () => {
    const setup = await running();
    await breakThenRepair(setup, (path) => writeFileSync(path, ca.certPem.repeat(Math.ceil((MAX_CERT_FILE_BYTES + 1) / ca.certPem.length))), /above the 1048576-byte limit/);
  });

  it('follows the kubelet symlinks to regular files (..data swap)', async () => {
    const setup = await running();
    const data = join(setup.dir, '..2026_11_30');
    execFileSync('mkdir', [data]);
    const next = await newCa('symlinked-ca');
    writeExternal(data, { caPem: next.certPem, server: await leaf(next, 'server'), client: await leaf(next, 'client') });
    symlinkSync('..2026_11_30', join(setup.dir, '..data_tmp'));
    renameSync(join(setup.dir, '..data_tmp'), join(setup.dir, '..data'));
    for (const f of ['ca.crt', 'server.crt', 'server.key', 'client.crt', 'client.key']) {
      rmSync(join(setup.dir, f));
      symlinkSync(join('..data', f), join(setup.dir, f));
    }
    await waitFor(() => setup.manager.current().generation === 2, 'the symlinked material to be loaded');
  });
});

describe('PEM bundles that are hostile', () => {
  it('refuses a megabyte of BEGIN lines without END with a one-line reason', () => {
    const text = '-----BEGIN CERTIFICATE-----\n'.repeat(Math.floor(MAX_CERT_FILE_BYTES / 28));
    expect(() => loadTrustBundle(text)).toThrow(/ca\.crt: certificate #1 has a BEGIN CERTIFICATE line and no END CERTIFICATE line/);
  });

  it(`refuses a bundle of more than ${MAX_PEM_CERTIFICATES} certificates, naming the limit`, () => {
    expect(() => loadTrustBundle(ca.certPem.repeat(MAX_PEM_CERTIFICATES + 1))).toThrow(new RegExp(`more than ${MAX_PEM_CERTIFICATES} certificates`));
    expect(loadTrustBundle(ca.certPem.repeat(MAX_PEM_CERTIFICATES)).pool.certs).toHaveLength(1);
  });

  it('refuses a bundle whose certificate Go cannot parse, naming which one', async () => {
    const other = await newCa('second');
    const broken = other.certPem.replace(/\n([A-Za-z0-9+/]{20})/, '\n$1'.replace('$1', 'AAAAAAAAAAAAAAAAAAAA'));
    expect(() => loadTrustBundle(ca.certPem + broken)).toThrow(/ca\.crt: certificate #2/);
  });
});

describe('self provider CA material', () => {
  it('refuses a ca.crt/ca.key pair whose certificate is not a CA', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const notCa = await leaf(ca, 'client');
    writeFileSync(join(dir.path, 'ca.crt'), notCa.certPem);
    writeFileSync(join(dir.path, 'ca.key'), notCa.keyPem, { mode: 0o600 });
    const manager = new CertManager({ provider: 'self', dir: dir.path, logger: captureLogger().logger });
    cleanups.push(() => manager.close());
    await expect(manager.start()).rejects.toThrow(/is not a CA/);
  });

  it('warns when ca.key can be read by every user', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    writeFileSync(join(dir.path, 'ca.crt'), ca.certPem);
    writeFileSync(join(dir.path, 'ca.key'), ca.keyPem);
    chmodSync(join(dir.path, 'ca.key'), 0o644);
    const log = captureLogger();
    const manager = new CertManager({ provider: 'self', dir: dir.path, logger: log.logger });
    cleanups.push(() => manager.close());
    await manager.start();
    expect(log.lines.find((l) => String(l.msg).startsWith('the CA private key is readable by every user'))).toMatchObject({ mode: '0644' });
  });
});

describe('certs init', () => {
  it('creates its output directory without world write access under umask 000', () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const out = join(dir.path, 'new-dir');
    const res = spawnSync('sh', ['-c', `umask 000 && exec "${process.execPath}" "${MAIN}" certs init --out "${out}"`], { encoding: 'utf8', timeout: 30_000 });
    expect(res.stderr).toBe('');
    expect(statSync(out).mode & 0o777).toBe(0o755);
    expect(statSync(join(out, 'ca.key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(out, 'ca.crt'), 'utf8')).toContain('BEGIN CERTIFICATE');
  });
});
