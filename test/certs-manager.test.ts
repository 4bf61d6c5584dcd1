import * as x509 from '@peculiar/x509';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CertManager } from '../certs/manager.js';
import type { TlsMaterial } from '../certs/material.js';
import { DAY, type TestCa, captureLogger, leaf, metricValue, newCa, tempDir, waitFor, writeExternal } from './helpers/certs-fixtures.js';

const RELOADS = 'kubearmor_relay_cert_reloads_total';
const cleanups: Array<() => void> = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

async function externalSetup(ca: TestCa, options: { checkIntervalMs?: number } = {}) {
  const dir = tempDir();
  writeExternal(dir.path, { caPem: ca.certPem, server: await leaf(ca, 'server'), client: await leaf(ca, 'client') });
  const { logger, lines } = captureLogger();
  const registry = new Registry();
  const manager = new CertManager({ provider: 'external', dir: dir.path, logger, registry, checkIntervalMs: options.checkIntervalMs ?? 10_000 });
  cleanups.push(() => {
    manager.close();
    dir.remove();
  });
  const first = await manager.start();
  return { dir: dir.path, manager, registry, lines, first };
}

describe('CertManager, external provider', () => {
  let ca: TestCa;
  let otherCa: TestCa;
  beforeAll(async () => {
    ca = await newCa('manager-ca');
    otherCa = await newCa('other-ca');
  });

  it('loads the five files and exposes parsed, frozen material with serials and fingerprints', async () => {
    const { first, dir, registry } = await externalSetup(ca);
    expect(first.generation).toBe(1);
    expect(Object.isFrozen(first)).toBe(true);
    expect(first.server!.serial).toBe(new X509Certificate(readFileSync(join(dir, 'server.crt'))).serialNumber);
    expect(first.client!.fingerprint256).toMatch(/^[0-9A-F:]+$/);
    expect(first.ca.certs).toHaveLength(1);
    expect(await metricValue(registry, 'kubearmor_relay_cert_expiry_timestamp_seconds', { cert: 'server' })).toBe(first.server!.notAfter.getTime() / 1000);
    expect(await metricValue(registry, 'kubearmor_relay_cert_expiry_timestamp_seconds', { cert: 'ca' })).toBeGreaterThan(Date.now() / 1000);
  });

  it('refuses to start on unusable material and says exactly why', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const a = await leaf(ca, 'server');
    const b = await leaf(ca, 'server');
    writeExternal(dir.path, { caPem: ca.certPem, server: { certPem: a.certPem, keyPem: b.keyPem }, client: await leaf(ca, 'client') });
    const manager = new CertManager({ provider: 'external', dir: dir.path, logger: captureLogger().logger });
    await expect(manager.start()).rejects.toThrow(/server\.key does not match server\.crt/);
    const missing = new CertManager({ provider: 'external', dir: join(dir.path, 'nope'), logger: captureLogger().logger });
    await expect(missing.start()).rejects.toThrow(/ca\.crt: file not found/);
  });

  it('reads only the files of the roles it is given (a node daemon needs no client identity)', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    writeExternal(dir.path, { caPem: ca.certPem, server: await leaf(ca, 'server') });
    const manager = new CertManager({ provider: 'external', dir: dir.path, roles: ['server'], logger: captureLogger().logger });
    cleanups.push(() => manager.close());
    const material = await manager.start();
    expect(material.server).toBeDefined();
    expect(material.client).toBeUndefined();
  });

  const badCases: Array<[string, () => Promise<{ file: 'server' | 'client'; certPem: string; keyPem: string }>, RegExp]> = [
    ['a key that does not match its certificate', async () => ({ file: 'server', certPem: (await leaf(ca, 'server')).certPem, keyPem: (await leaf(ca, 'server')).keyPem }), /does not match/],
    ['a certificate from another CA', async () => ({ file: 'client', ...(await leaf(otherCa, 'client')) }), /unknown_authority/],
    ['an expired certificate', async () => ({ file: 'server', ...(await leaf(ca, 'server', { now: new Date(Date.now() - 3 * DAY), validityMs: DAY })) }), /expired at/],
    ['a server-only certificate as the client identity', async () => ({ file: 'client', ...(await leaf(ca, 'server')) }), /bad_key_usage/],
  ];

  for (const [what, make, reason] of badCases) {
    it(`keeps the old material, counts a failure and logs the reason once on ${what}; a repair is picked up`, async () => {
      const { dir, manager, registry, lines, first } = await externalSetup(ca, { checkIntervalMs: 100 });
      const bad = await make();
      writeFileSync(join(dir, `${bad.file}.crt`), bad.certPem);
      writeFileSync(join(dir, `${bad.file}.key`), bad.keyPem);
      await waitFor(async () => (await metricValue(registry, RELOADS, { result: 'failure' })) === 1, 'the failure to be counted', 3000);
      // several periodic checks later: still one failure, one log line, old material in use
      await new Promise((r) => setTimeout(r, 600));
      expect(await metricValue(registry, RELOADS, { result: 'failure' })).toBe(1);
      const warnings = lines.filter((l) => l.msg.startsWith('changed TLS material rejected'));
      expect(warnings).toHaveLength(1);
      expect(String(warnings[0]!.reason)).toMatch(reason);
      expect(manager.current()).toBe(first);

      const good = await leaf(ca, bad.file);
      writeFileSync(join(dir, `${bad.file}.crt`), good.certPem);
      writeFileSync(join(dir, `${bad.file}.key`), good.keyPem);
      await waitFor(() => manager.current().generation === 2, 'the repaired material', 3000);
      expect(manager.current()[bad.file]!.certPem).toBe(good.certPem);
      expect(await metricValue(registry, RELOADS, { result: 'success' })).toBe(1);
    });
  }

  it('emits change with the new material and never emits error, so no error listener is needed', async () => {
    const { dir, manager, registry } = await externalSetup(ca, { checkIntervalMs: 100 });
    const seen: TlsMaterial[] = [];
    manager.on('change', (m) => seen.push(m));
    writeFileSync(join(dir, 'ca.crt'), 'garbage');
    await waitFor(async () => (await metricValue(registry, RELOADS, { result: 'failure' })) === 1, 'the garbage to be refused', 3000);
    const next = await leaf(ca, 'client');
    writeFileSync(join(dir, 'ca.crt'), ca.certPem + otherCa.certPem);
    writeFileSync(join(dir, 'client.crt'), next.certPem);
    writeFileSync(join(dir, 'client.key'), next.keyPem);
    await waitFor(() => seen.length === 1, 'a change event', 3000);
    expect(seen[0]).toBe(manager.current());
    expect(seen[0]!.ca.certs).toHaveLength(2);
    expect(seen[0]!.client!.serial).toBe(new X509Certificate(next.certPem).serialNumber);
  });
});

describe('CertManager, self provider', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await newCa('self-ca');
  });

  async function selfSetup(caFiles: { certPem: string; keyPem: string }, extra: Partial<ConstructorParameters<typeof CertManager>[0]> = {}) {
    const dir = tempDir();
    writeFileSync(join(dir.path, 'ca.crt'), caFiles.certPem);
    writeFileSync(join(dir.path, 'ca.key'), caFiles.keyPem, { mode: 0o600 });
    const registry = new Registry();
    const manager = new CertManager({ provider: 'self', dir: dir.path, logger: captureLogger().logger, registry, ...extra });
    cleanups.push(() => {
      manager.close();
      dir.remove();
    });
    return { dir: dir.path, manager, material: await manager.start(), registry };
  }

  it('issues server and client certificates in memory with SANs, EKU, random serials and P-256 keys', async () => {
    const { dir, material } = await selfSetup(ca, { namespace: 'secure', podIp: '10.9.8.7', extraDnsNames: ['relay.example'], extraIpAddresses: ['192.0.2.10'] });
    const server = material.server!.cert;
    const client = material.client!.cert;
    const sans = server.subjectAltName!;
    for (const name of ['localhost', hostname(), 'kubearmor.secure', 'kubearmor.secure.svc', 'kubearmor.secure.svc.cluster.local', 'relay.example']) {
      expect(sans).toContain(`DNS:${name}`);
    }
    for (const ip of ['127.0.0.1', '10.9.8.7', '192.0.2.10']) expect(server.checkIP(ip)).toBe(ip);
    expect(server.checkIP('::1')).toBe('::1');
    expect(server.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(client.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(server.serialNumber).not.toBe(client.serialNumber);
    expect(server.serialNumber.replace(/^00/, '').length).toBe(32);
    expect(server.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const parsed = new x509.X509Certificate(material.server!.certPem);
    expect(parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(
      new x509.X509Certificate(ca.certPem).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    expect(parsed.getExtension(x509.SubjectKeyIdentifierExtension)).toBeDefined();
    expect(readdirSync(dir).sort()).toEqual(['ca.crt', 'ca.key']);
    expect(material.server!.notAfter.getTime() - Date.now()).toBeGreaterThan(29 * DAY);
  });

  const keyShapes: Array<[string, string[], string | undefined, string]> = [
    ['an RSA PKCS#1 key', ['-newkey', 'rsa:2048'], 'rsa', 'RSASSA-PKCS1-v1_5'],
    ['an EC PKCS#8 key', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], undefined, 'ECDSA'],
    ['an EC SEC1 key', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], 'ec', 'ECDSA'],
  ];
  for (const [what, newkey, convert, algorithm] of keyShapes) {
    it(`signs with a CA holding ${what}, the signature algorithm following the key type`, async () => {
      const work = tempDir();
      cleanups.push(() => work.remove());
      execFileSync('openssl', ['req', '-x509', ...newkey, '-nodes', '-keyout', 'ca.key', '-subj', '/CN=openssl-ca', '-days', '2', '-out', 'ca.crt'], { cwd: work.path, stdio: 'ignore' });
      if (convert) execFileSync('openssl', [convert, '-in', 'ca.key', ...(convert === 'rsa' ? ['-traditional'] : []), '-out', 'ca.key'], { cwd: work.path, stdio: 'ignore' });
      const keyPem = readFileSync(join(work.path, 'ca.key'), 'utf8');
      expect(keyPem).toContain(convert === 'rsa' ? 'BEGIN RSA PRIVATE KEY' : convert === 'ec' ? 'BEGIN EC PRIVATE KEY' : 'BEGIN PRIVATE KEY');
      const { material } = await selfSetup({ certPem: readFileSync(join(work.path, 'ca.crt'), 'utf8'), keyPem });
      // @peculiar/x509 types this with DOM's Algorithm, absent from a Node-only lib
      const sig = new x509.X509Certificate(material.server!.certPem).signatureAlgorithm as unknown as { name: string; hash: { name: string } };
      expect(sig.name).toBe(algorithm);
      expect(sig.hash.name).toBe('SHA-256');
    });
  }

  it('re-issues from the new CA when ca.crt and ca.key change, and refuses a ca.key matching no CA', async () => {
    const { dir, manager, registry, material } = await selfSetup(ca, { checkIntervalMs: 100 });
    const next = await newCa('next-ca');
    writeFileSync(join(dir, 'ca.key'), next.keyPem);
    await waitFor(async () => (await metricValue(registry, RELOADS, { result: 'failure' })) === 1, 'a refused ca.key', 3000);
    expect(manager.current()).toBe(material);
    writeFileSync(join(dir, 'ca.crt'), ca.certPem + next.certPem);
    await waitFor(() => manager.current().generation === 2, 'material from the new CA', 3000);
    const now = manager.current();
    expect(now.ca.certs).toHaveLength(2);
    expect(now.server!.issuer.subject).toContain('CN=next-ca');
    expect(now.server!.serial).not.toBe(material.server!.serial);
  });

  it('renews leaves at two thirds of a short lifetime', async () => {
    const { manager, material } = await selfSetup(ca, { validityMs: 1500 });
    await waitFor(() => manager.current().generation >= 2, 'a renewal', 4000);
    const renewed = manager.current();
    expect(renewed.server!.serial).not.toBe(material.server!.serial);
    expect(renewed.loadedAt.getTime()).toBeLessThan(material.server!.notAfter.getTime());
  });
});
