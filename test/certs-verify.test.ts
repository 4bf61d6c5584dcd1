import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePrivateKey } from '../certs/pem.js';
import { loadIdentity, loadTrustBundle, verifyPeer } from '../certs/verify.js';
import { DAY, type TestCa, karmorLeaf, leaf, newCa, operatorCa, tempDir } from './helpers/certs-fixtures.js';

describe('verifyPeer', () => {
  let ca: TestCa;
  let other: TestCa;
  const dir = tempDir();

  beforeAll(async () => {
    ca = await newCa('verify-ca');
    other = await newCa('other-ca');
  });
  afterAll(() => dir.remove());

  const cert = (pem: string) => new X509Certificate(pem);
  const bundle = (...cas: X509Certificate[]) => loadTrustBundle(cas.map((c) => c.toString()).join(''));

  it('accepts a client certificate signed by a CA of the bundle and reports subject and serial', async () => {
    const c = await leaf(ca, 'client');
    const verdict = verifyPeer([cert(c.certPem)], bundle(other.signer.cert, ca.signer.cert), { purpose: 'client' });
    expect(verdict).toMatchObject({ ok: true, subject: 'O=kubearmor, CN=test-client', serial: cert(c.certPem).serialNumber });
  });

  it('refuses a missing certificate with no_certificate', () => {
    expect(verifyPeer(undefined, bundle(ca.signer.cert), { purpose: 'client' })).toMatchObject({ ok: false, reason: 'no_certificate' });
  });

  it('refuses a certificate from another CA with unknown_authority and names the trusted CAs', async () => {
    const c = await leaf(other, 'client');
    const verdict = verifyPeer([cert(c.certPem)], bundle(ca.signer.cert), { purpose: 'client' });
    expect(verdict).toMatchObject({ ok: false, reason: 'unknown_authority' });
    expect(!verdict.ok && verdict.detail).toContain('CN=verify-ca');
  });

  it('refuses an expired certificate and says when it expired', async () => {
    const c = await leaf(ca, 'client', { now: new Date(Date.now() - 3 * DAY), validityMs: DAY });
    const verdict = verifyPeer([cert(c.certPem)], bundle(ca.signer.cert), { purpose: 'client' });
    expect(verdict).toMatchObject({ ok: false, reason: 'expired' });
    expect(!verdict.ok && verdict.detail).toMatch(/expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  it('refuses a certificate that is valid only from tomorrow with not_yet_valid', async () => {
    const c = await leaf(ca, 'client', { now: new Date(Date.now() + DAY) });
    expect(verifyPeer([cert(c.certPem)], bundle(ca.signer.cert), { purpose: 'client' })).toMatchObject({ ok: false, reason: 'not_yet_valid' });
  });

  it('tolerates a peer clock a little ahead (NotBefore two minutes in the future)', async () => {
    const c = await leaf(ca, 'client', { now: new Date(Date.now() + 3 * 60_000) });
    expect(verifyPeer([cert(c.certPem)], bundle(ca.signer.cert), { purpose: 'client' })).toMatchObject({ ok: true });
  });

  it('refuses a server-only certificate used as a client with bad_key_usage', async () => {
    const s = await leaf(ca, 'server');
    expect(verifyPeer([cert(s.certPem)], bundle(ca.signer.cert), { purpose: 'client' })).toMatchObject({ ok: false, reason: 'bad_key_usage' });
  });

  it('checks the dialed name: DNS names with checkHost, IP addresses with checkIP', async () => {
    const s = await leaf(ca, 'server', { dnsNames: ['relay.example'], ipAddresses: ['10.1.2.3'] });
    const x = cert(s.certPem);
    expect(verifyPeer([x], bundle(ca.signer.cert), { purpose: 'server', host: 'relay.example' }).ok).toBe(true);
    expect(verifyPeer([x], bundle(ca.signer.cert), { purpose: 'server', host: '10.1.2.3' }).ok).toBe(true);
    expect(verifyPeer([x], bundle(ca.signer.cert), { purpose: 'server', host: 'other.example' })).toMatchObject({ ok: false, reason: 'name_mismatch' });
    expect(verifyPeer([x], bundle(ca.signer.cert), { purpose: 'server', host: '10.1.2.4' })).toMatchObject({ ok: false, reason: 'name_mismatch' });
  });

  it('accepts karmor-shaped leaves (subject equal to the CA subject, no AKI) under an operator CA whose self-signature does not verify', () => {
    const caPem = operatorCa(dir.path).certPem;
    const operator = cert(caPem);
    expect(operator.verify(operator.publicKey)).toBe(false);
    const client = karmorLeaf(dir.path, 'karmor', 'client');
    const node = karmorLeaf(dir.path, 'node', 'server', '10.0.0.7');
    expect(cert(client.certPem).subject).toBe(operator.subject);
    expect(verifyPeer([cert(client.certPem)], bundle(operator), { purpose: 'client' })).toMatchObject({ ok: true, serial: '01' });
    expect(verifyPeer([cert(node.certPem)], bundle(operator), { purpose: 'server', host: '10.0.0.7' })).toMatchObject({ ok: true });
  });
});

describe('loadIdentity', () => {
  it('refuses a key that belongs to another certificate, naming both files', async () => {
    const ca = await newCa();
    const a = await leaf(ca, 'server');
    const b = await leaf(ca, 'server');
    const bundle = loadTrustBundle(ca.certPem);
    expect(() => loadIdentity({ certPem: a.certPem, keyPem: b.keyPem, certName: 'server.crt', keyName: 'server.key' }, bundle, 'server')).toThrow(
      /server\.key does not match server\.crt/,
    );
  });

  it('loads RSA PKCS#1, PKCS#8 and SEC1 EC private keys', () => {
    const pkcs8 = leafKeyPem();
    const sec1 = createPrivateKey(pkcs8).export({ type: 'sec1', format: 'pem' }).toString();
    expect(sec1).toContain('BEGIN EC PRIVATE KEY');
    expect(parsePrivateKey(sec1, 'k').asymmetricKeyType).toBe('ec');
    expect(parsePrivateKey(pkcs8, 'k').asymmetricKeyType).toBe('ec');
    const dir = tempDir();
    try {
      const rsa = operatorCa(dir.path).keyPem;
      expect(rsa).toContain('BEGIN RSA PRIVATE KEY');
      expect(parsePrivateKey(rsa, 'k').asymmetricKeyType).toBe('rsa');
    } finally {
      dir.remove();
    }
  });

  it('reads every CA of a bundle with several certificates', async () => {
    const a = await newCa('a');
    const b = await newCa('b');
    expect(loadTrustBundle(a.certPem + b.certPem).certs).toHaveLength(2);
  });
});

function leafKeyPem(): string {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}
