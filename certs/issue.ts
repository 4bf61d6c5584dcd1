// The one place certificates are made, shared by the `self` provider and `kubearmor-relay
// certs`. @peculiar/x509 builds the DER, WebCrypto (Node's) signs. Leaves get ECDSA P-256
// keys, a random 128-bit positive serial (never the constant 1 of the reference relay),
// SANs, EKU, KeyUsage, SKI and an AKI copied from the CA's SKI so every verifier can link them.
import { KeyObject, X509Certificate, createPublicKey, generateKeyPairSync, webcrypto } from 'node:crypto';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import type { Role } from './material.js';
import { certLabel, keyMatchesCertificate, notAfter, parseCertificates, parsePrivateKey, webCryptoCurve } from './pem.js';
import { canSign } from './chain.js';
import { parseCertificate as parseDer } from './x509.js';

// Node's WebCrypto is the provider; @peculiar/x509 is written against the same API.
const subtle = webcrypto.subtle;
x509.cryptoProvider.set(webcrypto as ReturnType<typeof x509.cryptoProvider.get>);

/** NotBefore is backdated this much so peers with a slightly slow clock accept new leaves. */
export const BACKDATE_MS = 60_000;

export const DEFAULT_ORGANIZATION = 'kubearmor';

/** A CA able to sign: its certificate (one of ca.crt's) and private key. */
export interface CaSigner {
  readonly certPem: string;
  readonly cert: X509Certificate;
  readonly key: KeyObject;
}

export interface IssuedPair {
  readonly certPem: string;
  /** PKCS#8 PEM for leaves, RSA PKCS#1 PEM for a CA made by createCa */
  readonly keyPem: string;
}

export interface LeafRequest {
  purpose: Role;
  commonName: string;
  organization?: string;
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  validityMs: number;
  now?: Date;
}

/**
 * Picks, from ca.crt (possibly several CAs), the certificate whose public key is ca.key's.
 * Throws a precise error when the key matches none of them.
 */
export function loadCaSigner(caCertPem: string, caKeyPem: string, names = { cert: 'ca.crt', key: 'ca.key' }): CaSigner {
  const key = parsePrivateKey(caKeyPem, names.key);
  const matching = parseCertificates(caCertPem, names.cert).filter((c) => keyMatchesCertificate(key, c));
  if (matching.length === 0) throw new Error(`${names.key} does not match any certificate in ${names.cert}`);
  // Leaves signed by a certificate that is not a CA are refused by every peer (Go included).
  const cas = matching.filter((c) => canSign(parseDer(c.raw)));
  if (cas.length === 0) {
    throw new Error(`${names.cert}: the certificate of ${names.key} (${certLabel(matching[0]!)}) is not a CA (needs basicConstraints cA=TRUE and, with a key usage, keyCertSign)`);
  }
  // A CA renewed with the same key sits beside its predecessor: sign with the newest one.
  const cert = cas.reduce((best, c) => (notAfter(c) > notAfter(best) ? c : best));
  signingAlgorithmFor(key); // fail now, not at the first renewal, on an unsupported key type
  return Object.freeze({ certPem: cert.toString(), cert, key });
}

/** The server SANs of the self provider and `certs init`: reachable by port-forward, Service and pod IP. */
export function serverSubjectAltNames(options: {
  namespace: string;
  podIp?: string;
  extraDnsNames?: readonly string[];
  extraIpAddresses?: readonly string[];
}): { dnsNames: string[]; ipAddresses: string[] } {
  const ns = options.namespace;
  const dnsNames = ['localhost', hostname(), `kubearmor.${ns}`, `kubearmor.${ns}.svc`, `kubearmor.${ns}.svc.cluster.local`, ...(options.extraDnsNames ?? [])];
  const ipAddresses = ['127.0.0.1', '::1', ...(options.podIp ? [options.podIp] : []), ...(options.extraIpAddresses ?? [])];
  return { dnsNames: unique(dnsNames), ipAddresses: unique(ipAddresses) };
}

function unique(list: readonly string[]): string[] {
  return [...new Set(list.map((s) => s.trim()).filter((s) => s.length > 0))];
}

type SigningAlgorithm = { importAs: webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams; sign: webcrypto.Algorithm | webcrypto.EcdsaParams };

/** The issued certificate's signature algorithm follows the CA key: RSA → sha256WithRSA, EC → ecdsa-with-SHA256. */
function signingAlgorithmFor(key: KeyObject): SigningAlgorithm {
  if (key.asymmetricKeyType === 'rsa') {
    return { importAs: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } };
  }
  if (key.asymmetricKeyType === 'ec') {
    const namedCurve = webCryptoCurve(key.asymmetricKeyDetails?.namedCurve);
    if (!namedCurve) throw new Error(`unsupported CA key curve ${key.asymmetricKeyDetails?.namedCurve ?? '?'} (P-256, P-384, P-521 are supported)`);
    return { importAs: { name: 'ECDSA', namedCurve }, sign: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams };
  }
  throw new Error(`unsupported CA key type ${key.asymmetricKeyType ?? '?'} (RSA and EC keys are supported)`);
}

async function toSigningKey(key: KeyObject): Promise<{ cryptoKey: webcrypto.CryptoKey; algorithm: webcrypto.Algorithm | webcrypto.EcdsaParams }> {
  const alg = signingAlgorithmFor(key);
  const der = key.export({ type: 'pkcs8', format: 'der' });
  const cryptoKey = await subtle.importKey('pkcs8', der, alg.importAs, false, ['sign']);
  return { cryptoKey, algorithm: alg.sign };
}

/** 16 random bytes; @peculiar/x509 prefixes 0x00 when the top bit is set, keeping it positive. */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  // first byte 0x01-0x7f: positive, never shortened by DER's minimal encoding, so every
  // serial is 16 bytes (a leading 0x00 byte would leave 15)
  bytes[0] = (bytes[0]! % 0x7f) + 1;
  return Buffer.from(bytes).toString('hex');
}

function pem(label: string, der: ArrayBuffer | Buffer): string {
  const b64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}

/** Issues a leaf signed by `ca`. The new key never leaves memory unless the caller writes it. */
export async function issueLeaf(ca: CaSigner, request: LeafRequest): Promise<IssuedPair> {
  const now = request.now ?? new Date();
  const keys = (await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const signer = await toSigningKey(ca.key);
  const caCert = new x509.X509Certificate(ca.certPem);
  const caSki = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = caSki ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId) : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey);
  const sans: x509.JsonGeneralName[] = [
    ...(request.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(request.ipAddresses ?? []).map((value) => {
      if (!isIP(value)) throw new Error(`not an IP address: ${JSON.stringify(value)}`);
      return { type: 'ip' as const, value };
    }),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([request.purpose === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    aki,
  ];
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans));
  const until = Math.min(now.getTime() + request.validityMs, notAfter(ca.cert).getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ O: [request.organization ?? DEFAULT_ORGANIZATION] }, { CN: [request.commonName] }],
    // the CA's subject DER as is: Go matches issuer to subject byte for byte
    issuer: caCert.subjectName,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(until),
    publicKey: keys.publicKey,
    signingKey: signer.cryptoKey,
    signingAlgorithm: signer.algorithm,
    extensions,
  });
  const pkcs8 = await subtle.exportKey('pkcs8', keys.privateKey);
  return Object.freeze({ certPem: cert.toString('pem') + '\n', keyPem: pem('PRIVATE KEY', pkcs8) });
}

/**
 * A new CA with an RSA 2048 key written as PKCS#1, the form karmor and the operator read
 * from the kubearmor-ca secret, so one CA can serve the relay and karmor alike.
 */
export async function createCa(options: { commonName?: string; organization?: string; validityMs: number; now?: Date }): Promise<IssuedPair> {
  const now = options.now ?? new Date();
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signer = await toSigningKey(privateKey);
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const publicKey = await subtle.importKey('spki', spki, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, true, ['verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ O: [options.organization ?? DEFAULT_ORGANIZATION] }, { CN: [options.commonName ?? 'kubearmor-relay-ca'] }],
    issuer: [{ O: [options.organization ?? DEFAULT_ORGANIZATION] }, { CN: [options.commonName ?? 'kubearmor-relay-ca'] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + options.validityMs),
    publicKey,
    signingKey: signer.cryptoKey,
    signingAlgorithm: signer.algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return Object.freeze({
    certPem: cert.toString('pem') + '\n',
    keyPem: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
  });
}
