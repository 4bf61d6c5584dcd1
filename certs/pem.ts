// PEM parsing shared by the manager, the verifier and the CLI. Node's crypto does the DER
// work; this module only splits bundles, names key types and compares public keys, so
// that every caller reports the same precise reason for a bad file.
import { KeyObject, X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { parseCertificate as parseDer } from './x509.js';

const BEGIN_CERT = '-----BEGIN CERTIFICATE-----';
const END_CERT = '-----END CERTIFICATE-----';

/**
 * Most certificates one PEM file may hold: ca.crt holds a handful during a rotation, a
 * served chain a leaf and its intermediates. Every CA's name goes into the TLS
 * CertificateRequest, and peers refuse a request of thousands.
 */
export const MAX_PEM_CERTIFICATES = 100;

/** The CERTIFICATE blocks of a PEM text, found in one linear pass (no backtracking regex). */
export function pemCertificateBlocks(pem: string, what: string): string[] {
  const blocks: string[] = [];
  let from = 0;
  for (;;) {
    const begin = pem.indexOf(BEGIN_CERT, from);
    if (begin === -1) break;
    const end = pem.indexOf(END_CERT, begin + BEGIN_CERT.length);
    if (end === -1) throw new Error(`${what}: certificate #${blocks.length + 1} has a BEGIN CERTIFICATE line and no END CERTIFICATE line`);
    if (blocks.length === MAX_PEM_CERTIFICATES) throw new Error(`${what}: more than ${MAX_PEM_CERTIFICATES} certificates; refusing a bundle this large`);
    blocks.push(pem.slice(begin, end + END_CERT.length));
    from = end + END_CERT.length;
  }
  return blocks;
}

/** Every certificate in a PEM bundle (ca.crt may hold several CAs during a rotation). */
export function parseCertificates(pem: string, what: string): X509Certificate[] {
  const blocks = pemCertificateBlocks(pem, what);
  if (blocks.length === 0) throw new Error(`${what}: no PEM certificate found`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new Error(`${what}: certificate #${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

/** The first certificate of a PEM file (a leaf; any chain after it is ignored by callers). */
export function parseCertificate(pem: string, what: string): X509Certificate {
  return parseCertificates(pem, what)[0]!;
}

/** RSA PKCS#1, PKCS#8 and SEC1 EC keys; node:crypto recognises all three PEM labels. */
export function parsePrivateKey(pem: string, what: string): KeyObject {
  if (!/-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/.test(pem)) {
    throw new Error(`${what}: no PEM private key found (expected RSA PRIVATE KEY, PRIVATE KEY or EC PRIVATE KEY)`);
  }
  if (pem.includes('BEGIN ENCRYPTED PRIVATE KEY')) throw new Error(`${what}: encrypted private keys are not supported`);
  try {
    return createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new Error(`${what}: private key does not parse: ${(err as Error).message}`);
  }
}

/** True when the private key is the one whose public half is in the certificate. */
export function keyMatchesCertificate(key: KeyObject, cert: X509Certificate): boolean {
  const fromKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const fromCert = cert.publicKey.export({ type: 'spki', format: 'der' });
  return fromKey.equals(fromCert);
}

/** e.g. "RSA 2048", "EC P-256", "Ed25519" */
export function describeKey(key: KeyObject): string {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return `${key.asymmetricKeyType === 'rsa' ? 'RSA' : 'RSA-PSS'} ${details.modulusLength ?? '?'}`;
    case 'ec':
      return `EC ${webCryptoCurve(details.namedCurve) ?? details.namedCurve ?? '?'}`;
    case 'ed25519':
      return 'Ed25519';
    default:
      return String(key.asymmetricKeyType ?? 'unknown');
  }
}

/** OpenSSL curve names to the WebCrypto names @peculiar/x509 needs. */
export function webCryptoCurve(opensslName: string | undefined): 'P-256' | 'P-384' | 'P-521' | undefined {
  switch (opensslName) {
    case 'prime256v1':
    case 'P-256':
      return 'P-256';
    case 'secp384r1':
    case 'P-384':
      return 'P-384';
    case 'secp521r1':
    case 'P-521':
      return 'P-521';
    default:
      return undefined;
  }
}

/** RFC 3339 without milliseconds, the form used in every message about validity. */
export function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function notBefore(cert: X509Certificate): Date {
  return validity(cert).notBefore;
}

export function notAfter(cert: X509Certificate): Date {
  return validity(cert).notAfter;
}

/**
 * Read from the DER as Go reads it: Node's validFrom/validTo text loses the century of
 * GeneralizedTime years before 100 (0049 reads as 2049). Node's text only for a
 * certificate Go could not parse at all (a message about it still needs dates).
 */
function validity(cert: X509Certificate): { notBefore: Date; notAfter: Date } {
  try {
    return parseDer(cert.raw);
  } catch {
    return { notBefore: new Date(cert.validFrom), notAfter: new Date(cert.validTo) };
  }
}

/** A one-line name for a certificate in logs: subject (commas) and serial. */
export function certLabel(cert: X509Certificate): string {
  return `${oneLineName(cert.subject)} serial ${cert.serialNumber}`;
}

/** Node prints names one attribute per line; logs want "CN=a, O=b". */
export function oneLineName(name: string): string {
  return name.split('\n').filter((s) => s.length > 0).join(', ');
}
