// Path validation with the verdict of Go's crypto/x509 (Certificate.Verify), which node
// daemons, karmor and the reference relay use: the peers must agree with us on who is
// trusted. No library reproduces Go's rules (PKI.js's engine, OpenSSL and Node's TLS
// differ on operator-style leaves, EKU nesting, name constraint semantics, trust anchor
// checks), so this follows Go's algorithm step by step, on certificates read by
// certs/x509.ts, with Node's crypto verifying signatures:
//  - the leaf: no unhandled critical extension, inside its validity window, host name;
//  - chain building: every candidate issuer from the trust bundle, then from the peer's
//    intermediates, whose subject equals the child's issuer (raw bytes) and whose key
//    verifies the child's signature; a v3 issuer needs cA=TRUE and, when it has a key
//    usage, keyCertSign; MD5/SHA-1 signatures are refused; at most 100 signature checks;
//  - every certificate on the path: validity, unhandled critical extensions, path length,
//    name constraints (DNS, IP, email, URI) over every SAN below it;
//  - extended key usage nested through the chain (an issuer's EKU limits its leaves).
// Like Go, trust anchors' own signatures are never checked (the operator's CA carries one
// that does not verify), and a leaf whose subject equals its CA's is accepted when its
// signature verifies under that CA's key. One deliberate difference: NotBefore may be up
// to `notBeforeSkewMs` ahead of our clock (karmor stamps it with the client's clock).
import { constants, verify as verifySignature } from 'node:crypto';
import { isIP } from 'node:net';
import { certLabel, isoSeconds, oneLineName } from './pem.js';
import { type Certificate, type IpRange, KEY_USAGE_CERT_SIGN, OID, SAN_TAG, domainToReverseLabels, uriHost } from './x509.js';

export type ChainFailureReason =
  | 'unknown_authority'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_key_usage'
  | 'name_mismatch'
  | 'not_a_ca'
  | 'path_length'
  | 'name_constraints'
  | 'critical_extension'
  | 'insecure_algorithm';

export interface ChainFailure {
  ok: false;
  reason: ChainFailureReason;
  detail: string;
}

export type ChainVerdict = { ok: true; chain: readonly Certificate[] } | ChainFailure;

export type Purpose = 'server' | 'client';

export interface ChainOptions {
  /** the extended key usage the leaf must be good for: serverAuth or clientAuth */
  purpose: Purpose;
  /** the DNS name or IP address the peer must be valid for (dialing side) */
  host?: string;
  now?: Date;
  notBeforeSkewMs?: number;
  /** certificates the peer sent after its leaf */
  intermediates?: readonly Certificate[];
  /** how messages name the leaf, e.g. "client certificate" */
  leafName?: string;
}

/** Go's maxChainSignatureChecks: bounds the work a hostile set of intermediates can cause. */
const MAX_SIGNATURE_CHECKS = 100;
/** Go's default MaxConstraintComparisions */
const MAX_CONSTRAINT_COMPARISONS = 250_000;
/** Go 1.24+ refuses RSA keys below this size in signature verification */
const MIN_RSA_BITS = 1024;

/** A set of certificates looked up by subject, as Go's CertPool. */
export class CertPool {
  private readonly bySubject = new Map<string, Certificate[]>();
  private readonly byRaw = new Set<string>();
  readonly certs: readonly Certificate[];

  constructor(certs: readonly Certificate[]) {
    const kept: Certificate[] = [];
    for (const cert of certs) {
      const key = cert.raw.toString('base64');
      if (this.byRaw.has(key)) continue;
      this.byRaw.add(key);
      kept.push(cert);
      const name = cert.rawSubject.toString('base64');
      this.bySubject.set(name, [...(this.bySubject.get(name) ?? []), cert]);
    }
    this.certs = kept;
  }

  contains(cert: Certificate): boolean {
    return this.byRaw.has(cert.raw.toString('base64'));
  }

  /** Candidates whose subject is the child's issuer, likeliest first (Go's order: key ids). */
  potentialParents(child: Certificate): Certificate[] {
    const named = this.bySubject.get(child.rawIssuer.toString('base64')) ?? [];
    const rank = (c: Certificate): number => {
      if (sameBytes(c.subjectKeyId, child.authorityKeyId)) return 0;
      return (c.subjectKeyId === undefined) !== (child.authorityKeyId === undefined) ? 1 : 2;
    };
    return [...named].sort((a, b) => rank(a) - rank(b));
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return (a ?? Buffer.alloc(0)).equals(b ?? Buffer.alloc(0));
}

/** "O=kubearmor, CN=x serial 0A1B", the form every certificate message uses */
function describe(cert: Certificate): string {
  return certLabel(cert.node);
}

function failure(reason: ChainFailureReason, detail: string): ChainFailure {
  return { ok: false, reason, detail };
}

/** Go's Certificate.Verify for one leaf against a pool of trust anchors. */
export function verifyChain(leaf: Certificate, roots: CertPool, options: ChainOptions): ChainVerdict {
  const context: Context = {
    now: (options.now ?? new Date()).getTime(),
    skew: options.notBeforeSkewMs ?? 0,
    roots,
    intermediates: new CertPool(options.intermediates ?? []),
    signatureChecks: 0,
    leafName: options.leafName ?? 'certificate',
  };
  const leafProblem = isValid(leaf, 'leaf', [], context);
  if (leafProblem) return leafProblem;
  if (options.host) {
    const mismatch = verifyHostname(leaf, options.host, context.leafName);
    if (mismatch) return mismatch;
  }
  let candidates: Certificate[][];
  if (roots.contains(leaf)) {
    candidates = [[leaf]];
  } else {
    const built = buildChains(leaf, [leaf], context);
    if (!Array.isArray(built)) return built;
    candidates = built;
  }
  const wanted = options.purpose === 'server' ? OID.ekuServerAuth : OID.ekuClientAuth;
  // Go's checkChainForKeyUsage: every certificate of the chain must allow the usage
  const chain = candidates.find((c) => c.every((cert) => allowsUsage(cert, wanted)));
  if (!chain) {
    return failure(
      'bad_key_usage',
      `${context.leafName} ${describe(leaf)} is not valid for ${options.purpose === 'server' ? 'serverAuth' : 'clientAuth'}: the extended key usage of ${
        allowsUsage(leaf, wanted) ? 'an issuing CA' : 'the certificate'
      } excludes it (certificate: ${leaf.extKeyUsage.join(', ') || 'any'})`,
    );
  }
  return { ok: true, chain };
}

interface Context {
  now: number;
  skew: number;
  roots: CertPool;
  intermediates: CertPool;
  signatureChecks: number;
  leafName: string;
}

type CertType = 'leaf' | 'intermediate' | 'root';

function buildChains(cert: Certificate, current: Certificate[], context: Context): Certificate[][] | ChainFailure {
  const chains: Certificate[][] = [];
  let hint: ChainFailure | undefined;
  let error: ChainFailure | undefined;
  const consider = (type: CertType, candidate: Certificate): void => {
    if (alreadyInChain(candidate, current)) return;
    if (++context.signatureChecks > MAX_SIGNATURE_CHECKS) {
      error = failure('unknown_authority', 'signature check attempts limit reached while verifying the certificate chain');
      return;
    }
    const problem = checkSignatureFrom(cert, candidate) ?? isValid(candidate, type, current, context);
    if (problem) {
      hint ??= problem;
      return;
    }
    if (type === 'root') {
      chains.push([...current, candidate]);
      return;
    }
    const deeper = buildChains(candidate, [...current, candidate], context);
    if (Array.isArray(deeper)) chains.push(...deeper);
    else error = deeper;
  };
  for (const root of context.roots.potentialParents(cert)) consider('root', root);
  for (const intermediate of context.intermediates.potentialParents(cert)) consider('intermediate', intermediate);
  if (chains.length > 0) return chains;
  if (error) return error;
  const what = `${current.length === 1 ? context.leafName : 'intermediate CA'} ${describe(cert)} issued by "${oneLineName(cert.node.issuer)}"`;
  if (hint) return { ...hint, detail: `${what} has no usable issuer: ${hint.detail}` };
  return failure('unknown_authority', `${what} is not signed by any trusted CA`);
}

/** Go's alreadyInChain: same subject, same key and same SANs is the same CA, re-issued. */
function alreadyInChain(candidate: Certificate, chain: readonly Certificate[]): boolean {
  const candidateSan = sanExtension(candidate);
  return chain.some((c) => {
    if (!c.rawSubject.equals(candidate.rawSubject)) return false;
    if (!c.publicKey || !candidate.publicKey || !c.publicKey.equals(candidate.publicKey)) return false;
    const san = sanExtension(c);
    if (candidateSan === undefined && san === undefined) return true;
    return candidateSan !== undefined && san !== undefined && candidateSan.equals(san);
  });
}

function sanExtension(cert: Certificate): Buffer | undefined {
  return cert.san ? Buffer.concat(cert.san.map((e) => Buffer.concat([Buffer.from([e.tag & 0xff]), e.data]))) : undefined;
}

/** Why Go's CheckSignatureFrom would not let `cert` sign anything; undefined when it may. */
function signingRefusal(cert: Certificate): string | undefined {
  if ((cert.version === 3 && !cert.basicConstraintsValid) || (cert.basicConstraintsValid && !cert.isCA)) return 'is not a CA (basicConstraints cA is not TRUE)';
  if (cert.keyUsage !== 0 && (cert.keyUsage & KEY_USAGE_CERT_SIGN) === 0) return 'has a key usage without keyCertSign';
  return undefined;
}

/** Whether a certificate may issue others, as Go decides it. */
export function canSign(cert: Certificate): boolean {
  return signingRefusal(cert) === undefined;
}

/** Go's CheckSignatureFrom: may `parent` sign, and does its key verify `child`? */
function checkSignatureFrom(child: Certificate, parent: Certificate): ChainFailure | undefined {
  const refusal = signingRefusal(parent);
  if (refusal) return failure('not_a_ca', `${describe(parent)} ${refusal} and cannot sign certificates`);
  return checkSignature(child, parent);
}

function checkSignature(child: Certificate, parent: Certificate): ChainFailure | undefined {
  const alg = child.signatureAlgorithm;
  if (alg.kind === 'insecure') return failure('insecure_algorithm', `${describe(child)} is signed with ${alg.name}, an insecure algorithm`);
  if (alg.kind === 'unknown' || !parent.publicKey) {
    return failure('insecure_algorithm', `${describe(child)} is signed with an unsupported algorithm (${alg.name}${parent.publicKey ? '' : ', unknown issuer key'})`);
  }
  const key = parent.publicKey;
  const keyType = key.asymmetricKeyType;
  const mismatch = failure('unknown_authority', `${describe(child)}: its signature algorithm ${alg.name} does not fit the key of ${describe(parent)}`);
  let ok = false;
  try {
    switch (alg.kind) {
      case 'rsa-pkcs1':
      case 'rsa-pss': {
        if (parent.publicKeyAlgorithm !== 'rsa' || keyType !== 'rsa') return mismatch;
        const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
        if (bits < MIN_RSA_BITS) return failure('insecure_algorithm', `${describe(parent)} has a ${bits}-bit RSA key, below ${MIN_RSA_BITS} bits`);
        const padding =
          alg.kind === 'rsa-pss' ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } : { padding: constants.RSA_PKCS1_PADDING };
        ok = verifySignature(alg.hash, child.rawTbs, { key, ...padding }, child.signature);
        break;
      }
      case 'ecdsa':
        if (parent.publicKeyAlgorithm !== 'ec' || keyType !== 'ec') return mismatch;
        ok = verifySignature(alg.hash, child.rawTbs, key, child.signature);
        break;
      case 'ed25519':
        if (parent.publicKeyAlgorithm !== 'ed25519' || keyType !== 'ed25519') return mismatch;
        ok = verifySignature(null, child.rawTbs, key, child.signature);
        break;
    }
  } catch {
    ok = false;
  }
  return ok ? undefined : failure('unknown_authority', `the signature of ${describe(child)} does not verify with the key of ${describe(parent)}`);
}

/** Go's isValid: checks of one certificate in its place on the path being built. */
function isValid(cert: Certificate, type: CertType, current: readonly Certificate[], context: Context): ChainFailure | undefined {
  const role = type === 'leaf' ? context.leafName : type === 'root' ? 'trusted CA' : 'intermediate CA';
  if (cert.unhandledCritical.length > 0) {
    return failure('critical_extension', `${role} ${describe(cert)} has an unhandled critical extension (${cert.unhandledCritical.join(', ')})`);
  }
  if (context.now + context.skew < cert.notBefore.getTime()) {
    return failure('not_yet_valid', `${role} ${describe(cert)} is not valid before ${isoSeconds(cert.notBefore)}`);
  }
  if (context.now > cert.notAfter.getTime()) {
    return failure('expired', `${role} ${describe(cert)} expired at ${isoSeconds(cert.notAfter)}`);
  }
  if (type !== 'leaf' && cert.nameConstraints) {
    const problem = checkNameConstraints(cert, current);
    if (problem) return problem;
  }
  if (type === 'intermediate' && (!cert.basicConstraintsValid || !cert.isCA)) {
    return failure('not_a_ca', `intermediate ${describe(cert)} is not a CA (basicConstraints cA is not TRUE)`);
  }
  if (cert.basicConstraintsValid && cert.maxPathLen >= 0 && current.length - 1 > cert.maxPathLen) {
    return failure('path_length', `${role} ${describe(cert)} allows ${cert.maxPathLen} intermediate(s) below it, the path has ${current.length - 1}`);
  }
  return undefined;
}

function checkNameConstraints(ca: Certificate, current: readonly Certificate[]): ChainFailure | undefined {
  const nc = ca.nameConstraints!;
  let comparisons = 0;
  const refuse = (detail: string): ChainFailure => failure('name_constraints', `CA ${describe(ca)} is not authorized for ${detail}`);
  /** Go's checkNameConstraints: excluded first, then at least one permitted (when any) */
  function check<T, C>(type: string, name: string, parsed: T, match: (name: T, constraint: C) => boolean | string, permitted: readonly C[], excluded: readonly C[], show: (c: C) => string) {
    comparisons += excluded.length;
    if (comparisons > MAX_CONSTRAINT_COMPARISONS) return refuse('this chain: too many name constraint comparisons');
    for (const constraint of excluded) {
      const m = match(parsed, constraint);
      if (typeof m === 'string') return refuse(`${type} ${JSON.stringify(name)}: ${m}`);
      if (m) return refuse(`${type} ${JSON.stringify(name)}: excluded by constraint ${show(constraint)}`);
    }
    comparisons += permitted.length;
    if (comparisons > MAX_CONSTRAINT_COMPARISONS) return refuse('this chain: too many name constraint comparisons');
    if (permitted.length === 0) return undefined;
    for (const constraint of permitted) {
      const m = match(parsed, constraint);
      if (typeof m === 'string') return refuse(`${type} ${JSON.stringify(name)}: ${m}`);
      if (m) return undefined;
    }
    return refuse(`${type} ${JSON.stringify(name)}: not permitted by any constraint`);
  }
  const quote = (c: string): string => JSON.stringify(c);
  const cidr = (r: IpRange): string => `${formatIp(r.ip)}/${formatIp(r.mask)}`;
  for (const cert of current) {
    for (const { tag, data } of cert.san ?? []) {
      const name = data.toString('latin1');
      let problem: ChainFailure | undefined;
      switch (tag) {
        case SAN_TAG.dns:
          if (!domainToReverseLabels(name)) return refuse(`DNS name ${quote(name)}: cannot parse dnsName`);
          problem = check('DNS name', name, name, matchDomainConstraint, nc.permittedDns, nc.excludedDns, quote);
          break;
        case SAN_TAG.ip:
          problem = check('IP address', formatIp(data), data, matchIpConstraint, nc.permittedIp, nc.excludedIp, cidr);
          break;
        case SAN_TAG.email: {
          const mailbox = parseMailbox(name);
          if (!mailbox) return refuse(`email address ${quote(name)}: cannot parse rfc822Name`);
          problem = check('email address', name, mailbox, matchEmailConstraint, nc.permittedEmail, nc.excludedEmail, quote);
          break;
        }
        case SAN_TAG.uri:
          problem = check('URI', name, name, matchUriConstraint, nc.permittedUri, nc.excludedUri, quote);
          break;
        default:
      }
      if (problem) return problem;
    }
  }
  return undefined;
}

/** Go's matchDomainConstraint; a string is Go's error (which refuses the name). */
function matchDomainConstraint(domain: string, constraint: string): boolean | string {
  if (constraint.length === 0) return true;
  const domainLabels = domainToReverseLabels(domain);
  if (!domainLabels) return `cannot parse domain ${JSON.stringify(domain)}`;
  let mustHaveSubdomains = false;
  let c = constraint;
  if (c.startsWith('.')) {
    mustHaveSubdomains = true;
    c = c.slice(1);
  }
  const constraintLabels = domainToReverseLabels(c);
  if (!constraintLabels) return `cannot parse domain ${JSON.stringify(c)}`;
  if (domainLabels.length < constraintLabels.length || (mustHaveSubdomains && domainLabels.length === constraintLabels.length)) return false;
  return constraintLabels.every((label, i) => label.toLowerCase() === domainLabels[i]!.toLowerCase());
}

function matchIpConstraint(ip: Buffer, range: IpRange): boolean {
  if (ip.length !== range.ip.length) return false;
  for (let i = 0; i < ip.length; i++) if ((ip[i]! & range.mask[i]!) !== (range.ip[i]! & range.mask[i]!)) return false;
  return true;
}

interface Mailbox {
  local: string;
  domain: string;
}

/** A simplified RFC 2821 mailbox: local part and domain around the last '@'. */
function parseMailbox(text: string): Mailbox | undefined {
  const at = text.lastIndexOf('@');
  if (at <= 0 || at === text.length - 1) return undefined;
  return { local: text.slice(0, at), domain: text.slice(at + 1) };
}

function matchEmailConstraint(mailbox: Mailbox, constraint: string): boolean | string {
  if (constraint.includes('@')) {
    const exact = parseMailbox(constraint);
    if (!exact) return `cannot parse constraint ${JSON.stringify(constraint)}`;
    return mailbox.local === exact.local && mailbox.domain.toLowerCase() === exact.domain.toLowerCase();
  }
  return matchDomainConstraint(mailbox.domain, constraint);
}

function matchUriConstraint(uri: string, constraint: string): boolean | string {
  const host = uriHost(uri);
  if (!host) return `URI with empty host (${JSON.stringify(uri)}) cannot be matched against constraints`;
  if (isIP(host)) return `URI with IP (${JSON.stringify(uri)}) cannot be matched against constraints`;
  return matchDomainConstraint(host, constraint);
}

function formatIp(data: Buffer): string {
  if (data.length === 4) return [...data].join('.');
  const groups: string[] = [];
  for (let i = 0; i < data.length; i += 2) groups.push(data.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/** One certificate's part of Go's checkChainForKeyUsage: no EKU, anyExtendedKeyUsage, or the usage. */
function allowsUsage(cert: Certificate, usage: string): boolean {
  return cert.extKeyUsage.length === 0 || cert.extKeyUsage.includes(OID.ekuAny) || cert.extKeyUsage.includes(usage);
}

/** Go's VerifyHostname: IPs against IP SANs; names against DNS SANs, a whole left-most '*' label only. */
export function verifyHostname(leaf: Certificate, host: string, leafName = 'certificate'): ChainFailure | undefined {
  const bare = host.length >= 3 && host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  const names = `DNS: ${leaf.dnsNames.join(', ') || 'none'}; IP: ${leaf.ipAddresses.map(formatIp).join(', ') || 'none'}`;
  const refuse = failure('name_mismatch', `${leafName} ${describe(leaf)} is not valid for ${bare} (SANs: ${names})`);
  const version = isIP(bare);
  if (version !== 0) {
    const wanted = ipBytes(bare);
    return leaf.ipAddresses.some((ip) => sameIp(ip, wanted)) ? undefined : refuse;
  }
  const candidate = host.toLowerCase();
  const validCandidate = validHostname(candidate, false);
  for (const pattern of leaf.dnsNames) {
    if (validCandidate && validHostname(pattern, true) ? matchHostnames(pattern, candidate) : matchExactly(pattern, candidate)) return undefined;
  }
  return refuse;
}

/** An address Node's isIP accepted, as its 4 or 16 bytes. */
function ipBytes(text: string): Buffer {
  if (isIP(text) === 4) return Buffer.from(text.split('.').map(Number));
  let address = text.replace(/%.*$/, '');
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (dotted) {
    const v4 = ipBytes(dotted[1]!);
    address = `${address.slice(0, dotted.index)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const [head = '', tail] = address.split('::');
  const groups = (part: string): number[] => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const all = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** net.IP.Equal: an IPv4 address equals its IPv4-mapped IPv6 form. */
function sameIp(a: Buffer, b: Buffer): boolean {
  const v4 = (x: Buffer): Buffer => (x.length === 16 && x.subarray(0, 12).equals(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])) ? x.subarray(12) : x);
  return v4(a).equals(v4(b));
}

function validHostname(host: string, isPattern: boolean): boolean {
  const h = isPattern ? host : host.replace(/\.$/, '');
  if (h.length === 0 || h === '*') return false;
  return h.split('.').every((part, i) => {
    if (part === '') return false;
    if (isPattern && i === 0 && part === '*') return true;
    for (let j = 0; j < part.length; j++) {
      const c = part[j]!;
      if (/[a-zA-Z0-9_]/.test(c) || (c === '-' && j !== 0)) continue;
      return false;
    }
    return true;
  });
}

function matchHostnames(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase();
  const h = host.replace(/\.$/, '');
  if (p.length === 0 || h.length === 0) return false;
  const pParts = p.split('.');
  const hParts = h.split('.');
  if (pParts.length !== hParts.length) return false;
  return pParts.every((part, i) => (i === 0 && part === '*') || part === hParts[i]);
}

function matchExactly(a: string, b: string): boolean {
  if (a === '' || a === '.' || b === '' || b === '.') return false;
  return a.toLowerCase() === b.toLowerCase();
}
