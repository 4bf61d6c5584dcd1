// The trust decisions of the relay, on both hops and before any material is swapped in:
// what a peer presents at a handshake, and what the certificate files hold. The verdict
// is Go's crypto/x509 one (certs/chain.ts says how and why); this module turns files and
// handshakes into its inputs and its answers into precise, loggable reasons.
import type { X509Certificate } from 'node:crypto';
import type { Identity, Role, TrustBundle } from './material.js';
import { CertPool, type ChainFailureReason, canSign, verifyChain } from './chain.js';
import { certLabel, isoSeconds, keyMatchesCertificate, notAfter, notBefore, oneLineName, parseCertificates, parsePrivateKey } from './pem.js';
import { type Certificate, parseCertificate as parseDer } from './x509.js';

/**
 * Allowance for a peer whose clock runs ahead of ours: karmor stamps NotBefore with the
 * client's own clock. Expiry gets no allowance. (Go allows none: this is the one
 * deliberate difference, and it only ever accepts a certificate minutes early.)
 */
export const NOT_BEFORE_SKEW_MS = 5 * 60_000;

export type PeerFailureReason = 'no_certificate' | 'malformed' | ChainFailureReason;

export type PeerVerdict =
  | { ok: true; subject: string; serial: string; issuer: X509Certificate; chain: readonly Certificate[] }
  | { ok: false; reason: PeerFailureReason; detail: string };

type Failure = Extract<PeerVerdict, { ok: false }>;

export interface VerifyPeerOptions {
  /** what the peer's certificate must be good for: 'client' when we serve, 'server' when we dial */
  purpose: Role;
  /** for purpose 'server': the DNS name or IP address we dialed */
  host?: string;
  now?: Date;
  /** where a transport keeps what it parsed already */
  cache?: ParsedCertificates;
}

/**
 * Verifies what a peer presented (its leaf first, then any intermediates) against the
 * trust bundle.
 */
export function verifyPeer(presented: readonly X509Certificate[] | undefined, bundle: TrustBundle, options: VerifyPeerOptions): PeerVerdict {
  const what = options.purpose === 'client' ? 'client certificate' : 'server certificate';
  if (!presented || presented.length === 0) return { ok: false, reason: 'no_certificate', detail: `peer presented no ${what}` };
  const parsed: Certificate[] = [];
  for (const [i, cert] of presented.entries()) {
    try {
      parsed.push(options.cache ? options.cache.parse(cert) : parseDer(cert.raw, cert));
    } catch (err) {
      const which = i === 0 ? what : `certificate #${i + 1} of the presented chain`;
      return { ok: false, reason: 'malformed', detail: `${which} ${certLabel(cert)} is refused: ${(err as Error).message}` };
    }
  }
  const [leaf, ...intermediates] = parsed as [Certificate, ...Certificate[]];
  const verdict = verifyChain(leaf, bundle.pool, {
    purpose: options.purpose,
    host: options.host,
    now: options.now,
    notBeforeSkewMs: NOT_BEFORE_SKEW_MS,
    intermediates,
    leafName: what,
  });
  if (!verdict.ok) {
    const trusted = verdict.reason === 'unknown_authority' ? ` (${describeBundle(bundle)})` : '';
    return { ok: false, reason: verdict.reason, detail: `${verdict.detail}${trusted}` };
  }
  const issuer = (verdict.chain[1] ?? verdict.chain[0]!).node;
  return { ok: true, subject: oneLineName(leaf.node.subject), serial: leaf.node.serialNumber, issuer, chain: verdict.chain };
}

/**
 * Parsed certificates by fingerprint: consumers and nodes redial with the same certificate,
 * and parsing costs more than verifying. Bounded; the oldest entry goes first.
 */
export class ParsedCertificates {
  private readonly byFingerprint = new Map<string, Certificate>();

  constructor(private readonly size = 256) {}

  parse(cert: X509Certificate): Certificate {
    const key = cert.fingerprint256;
    const hit = this.byFingerprint.get(key);
    if (hit && hit.raw.equals(cert.raw)) return hit;
    const parsed = parseDer(cert.raw, cert);
    if (this.byFingerprint.size >= this.size) this.byFingerprint.delete(this.byFingerprint.keys().next().value!);
    this.byFingerprint.set(key, parsed);
    return parsed;
  }
}

function describeBundle(bundle: TrustBundle): string {
  return bundle.certs.map((ca) => oneLineName(ca.subject)).join(' | ');
}

/** Validity window check of material we hold (a CA we sign with); `what` names it. */
export function checkValidity(cert: X509Certificate, now: Date, what: string): Failure | undefined {
  const from = notBefore(cert);
  const until = notAfter(cert);
  if (now.getTime() > until.getTime()) return { ok: false, reason: 'expired', detail: `${what} ${certLabel(cert)} expired at ${isoSeconds(until)}` };
  if (now.getTime() + NOT_BEFORE_SKEW_MS < from.getTime()) {
    return { ok: false, reason: 'not_yet_valid', detail: `${what} ${certLabel(cert)} is not valid before ${isoSeconds(from)}` };
  }
  return undefined;
}

/**
 * Parses and checks ca.crt; throws an Error naming the exact problem. Entries that are not
 * CAs are kept (Go keeps them: such a certificate is trusted only as itself) and listed in
 * `notCas` so the operator is told they can issue nothing.
 */
export function loadTrustBundle(pem: string, what = 'ca.crt'): TrustBundle {
  const certs = parseCertificates(pem, what);
  const parsed = certs.map((cert, i) => {
    try {
      return parseDer(cert.raw, cert);
    } catch (err) {
      throw new Error(`${what}: certificate #${i + 1} (${certLabel(cert)}) is refused: ${(err as Error).message}`);
    }
  });
  const earliest = parsed.reduce((min, c) => (c.notAfter < min ? c.notAfter : min), parsed[0]!.notAfter);
  return Object.freeze({
    pem,
    certs: Object.freeze([...certs]),
    pool: new CertPool(parsed),
    fingerprints: Object.freeze(certs.map((c) => c.fingerprint256)),
    earliestNotAfter: earliest,
    notCas: Object.freeze(parsed.filter((c) => !canSign(c)).map((c) => certLabel(c.node))),
  });
}

/**
 * Checks one identity before it may be swapped in: both files parse, the key belongs to
 * the leaf (the first certificate; any after it are its intermediates, served with it),
 * it chains to the bundle, it is within its validity window and fit for `purpose`.
 * Throws an Error naming the exact problem.
 */
export function loadIdentity(
  files: { certPem: string; keyPem: string; certName: string; keyName: string },
  bundle: TrustBundle,
  purpose: Role,
  now: Date = new Date(),
): Identity {
  const chain = parseCertificates(files.certPem, files.certName);
  const cert = chain[0]!;
  const key = parsePrivateKey(files.keyPem, files.keyName);
  if (!keyMatchesCertificate(key, cert)) {
    throw new Error(`${files.keyName} does not match ${files.certName} (${certLabel(cert)}): the public keys differ`);
  }
  const verdict = verifyPeer(chain, bundle, { purpose, now });
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
