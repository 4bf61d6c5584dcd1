// Chain verification done by hand, shared by the manager (before swapping material in) and
// by both ends of every handshake. Why not OpenSSL's: operator- and karmor-made leaves have
// subject == CA subject and no AKI, which OpenSSL takes for self-signed and rejects, and the
// operator's CA carries a self-signature that does not verify. Like Go and OpenSSL, the
// trust anchor's own signature is never checked; a leaf is trusted when a bundle CA whose
// subject is the leaf's issuer verifies its signature, both are within their validity
// windows, and the extended key usage (when present) allows the purpose.
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Identity, Role, TrustBundle } from './material.js';
import { certLabel, isoSeconds, keyMatchesCertificate, notAfter, notBefore, oneLineName, parseCertificate, parseCertificates, parsePrivateKey } from './pem.js';

/**
 * Allowance for a peer whose clock runs ahead of ours: karmor stamps NotBefore with the
 * client's own clock. Expiry gets no allowance.
 */
export const NOT_BEFORE_SKEW_MS = 5 * 60_000;

const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const EKU_ANY = '2.5.29.37.0';

export type PeerFailureReason = 'no_certificate' | 'unknown_authority' | 'expired' | 'not_yet_valid' | 'bad_key_usage' | 'name_mismatch';

export type PeerVerdict =
  | { ok: true; subject: string; serial: string; issuer: X509Certificate }
  | { ok: false; reason: PeerFailureReason; detail: string };

type Failure = Extract<PeerVerdict, { ok: false }>;

export interface VerifyPeerOptions {
  /** what the peer's certificate must be good for: 'client' when we serve, 'server' when we dial */
  purpose: Role;
  /** for purpose 'server': the DNS name or IP address we dialed */
  host?: string;
  now?: Date;
}

/** The bundle CA that issued `leaf`: issuer name equals its subject and its key verifies the signature. */
export function findIssuer(leaf: X509Certificate, bundle: readonly X509Certificate[]): X509Certificate | undefined {
  for (const ca of bundle) {
    if (ca.subject !== leaf.issuer) continue;
    try {
      if (leaf.verify(ca.publicKey)) return ca;
    } catch {
      // a key type this OpenSSL cannot verify with: not this CA
    }
  }
  return undefined;
}

/** Validity window check; `what` names the certificate in the detail. */
export function checkValidity(cert: X509Certificate, now: Date, what: string): Failure | undefined {
  const from = notBefore(cert);
  const until = notAfter(cert);
  if (now.getTime() > until.getTime()) {
    return { ok: false, reason: 'expired', detail: `${what} ${certLabel(cert)} expired at ${isoSeconds(until)}` };
  }
  if (now.getTime() + NOT_BEFORE_SKEW_MS < from.getTime()) {
    return { ok: false, reason: 'not_yet_valid', detail: `${what} ${certLabel(cert)} is not valid before ${isoSeconds(from)}` };
  }
  return undefined;
}

/** Extended key usage, where the extension is present (absent = any use, as in Go). */
export function checkPurpose(cert: X509Certificate, purpose: Role, what: string): Failure | undefined {
  const eku = cert.keyUsage; // Node names the EKU list "keyUsage"
  if (!eku || eku.length === 0) return undefined;
  const wanted = purpose === 'server' ? EKU_SERVER_AUTH : EKU_CLIENT_AUTH;
  if (eku.includes(wanted) || eku.includes(EKU_ANY)) return undefined;
  return {
    ok: false,
    reason: 'bad_key_usage',
    detail: `${what} ${certLabel(cert)} is not valid for ${purpose === 'server' ? 'serverAuth' : 'clientAuth'} (extended key usage: ${eku.join(', ')})`,
  };
}

function describeBundle(bundle: readonly X509Certificate[]): string {
  return bundle.map((ca) => oneLineName(ca.subject)).join(' | ');
}

/** Verifies a peer's leaf at a handshake against the current trust bundle. */
export function verifyPeer(leaf: X509Certificate | undefined, bundle: readonly X509Certificate[], options: VerifyPeerOptions): PeerVerdict {
  const now = options.now ?? new Date();
  const what = options.purpose === 'client' ? 'client certificate' : 'server certificate';
  if (!leaf) return { ok: false, reason: 'no_certificate', detail: `peer presented no ${what}` };
  const issuer = findIssuer(leaf, bundle);
  if (!issuer) {
    return {
      ok: false,
      reason: 'unknown_authority',
      detail: `${what} ${certLabel(leaf)} issued by "${oneLineName(leaf.issuer)}" is not signed by any trusted CA (${describeBundle(bundle)})`,
    };
  }
  const failure =
    checkValidity(leaf, now, what) ?? checkValidity(issuer, now, 'issuing CA') ?? checkPurpose(leaf, options.purpose, what) ?? checkName(leaf, options.host, what);
  if (failure) return failure;
  return { ok: true, subject: oneLineName(leaf.subject), serial: leaf.serialNumber, issuer };
}

function checkName(leaf: X509Certificate, host: string | undefined, what: string): Failure | undefined {
  if (host === undefined || host === '') return undefined;
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  const matched = isIP(bare) ? leaf.checkIP(bare) : leaf.checkHost(bare, { subject: 'never' }); // SANs only, as Go: never the subject CN
  if (matched !== undefined) return undefined;
  return {
    ok: false,
    reason: 'name_mismatch',
    detail: `${what} ${certLabel(leaf)} is not valid for ${bare} (names: ${leaf.subjectAltName ?? 'none'})`,
  };
}

/** Parses and checks ca.crt; throws an Error naming the exact problem. */
export function loadTrustBundle(pem: string, what = 'ca.crt'): TrustBundle {
  const certs = parseCertificates(pem, what);
  const earliest = certs.reduce((min, c) => (notAfter(c) < min ? notAfter(c) : min), notAfter(certs[0]!));
  return Object.freeze({
    pem,
    certs: Object.freeze([...certs]),
    fingerprints: Object.freeze(certs.map((c) => c.fingerprint256)),
    earliestNotAfter: earliest,
  });
}

/**
 * Checks one identity before it may be swapped in: both files parse, the key belongs to
 * the certificate, it chains to the bundle, it is within its validity window and fit for
 * `purpose`. Throws an Error naming the exact problem.
 */
export function loadIdentity(
  files: { certPem: string; keyPem: string; certName: string; keyName: string },
  bundle: TrustBundle,
  purpose: Role,
  now: Date = new Date(),
): Identity {
  const cert = parseCertificate(files.certPem, files.certName);
  const key = parsePrivateKey(files.keyPem, files.keyName);
  if (!keyMatchesCertificate(key, cert)) {
    throw new Error(`${files.keyName} does not match ${files.certName} (${certLabel(cert)}): the public keys differ`);
  }
  const verdict = verifyPeer(cert, bundle.certs, { purpose, now });
  if (!verdict.ok) throw new Error(`${files.certName}: ${verdict.reason}: ${verdict.detail}`);
  return Object.freeze({
    certPem: files.certPem,
    keyPem: files.keyPem,
    cert,
    issuer: verdict.issuer,
    serial: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    notBefore: notBefore(cert),
    notAfter: notAfter(cert),
  });
}
