// An X.509 certificate read the way Go's crypto/x509 reads it, so that certs/chain.ts can
// give Go's verdict. asn1js (PKI.js's parser) does the BER/DER work; this module maps its
// tree onto the fields Go's verifier uses, with Go's parse-time refusals: duplicate
// extensions, malformed known extensions, inner and outer signature algorithms that
// differ, unsupported elliptic curves, times that do not round-trip. Extensions Go does
// not handle are kept in `unhandledCritical` when critical, for the verifier to refuse.
//
// Why not @peculiar/asn1-x509's typed schemas: they convert IP addresses and names to
// strings and re-encode Names, and Go compares raw bytes (issuer to subject, IP masks).
import { type KeyObject, X509Certificate, createPublicKey } from 'node:crypto';
import * as asn1js from 'asn1js';

export type PublicKeyAlgorithm = 'rsa' | 'ec' | 'ed25519' | 'unknown';

export interface IpRange {
  readonly ip: Buffer;
  readonly mask: Buffer;
}

export interface NameConstraints {
  readonly permittedDns: readonly string[];
  readonly excludedDns: readonly string[];
  readonly permittedIp: readonly IpRange[];
  readonly excludedIp: readonly IpRange[];
  readonly permittedEmail: readonly string[];
  readonly excludedEmail: readonly string[];
  readonly permittedUri: readonly string[];
  readonly excludedUri: readonly string[];
}

/** One SAN entry as it is on the wire: context tag and content bytes. */
export interface SanEntry {
  readonly tag: number;
  readonly data: Buffer;
}

export interface Certificate {
  readonly raw: Buffer;
  readonly rawTbs: Buffer;
  readonly rawSubject: Buffer;
  readonly rawIssuer: Buffer;
  /** 1, 2 or 3 */
  readonly version: number;
  readonly serialHex: string;
  readonly signatureAlgorithm: SignatureAlgorithm;
  readonly signature: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly publicKeyAlgorithm: PublicKeyAlgorithm;
  /** undefined when Go would not know the key either */
  readonly publicKey: KeyObject | undefined;
  readonly basicConstraintsValid: boolean;
  readonly isCA: boolean;
  /** -1 when absent */
  readonly maxPathLen: number;
  /** Go's bit order: bit 0 digitalSignature … bit 5 keyCertSign; 0 when absent */
  readonly keyUsage: number;
  /** OIDs; empty when the extension is absent (or empty, which Go treats alike) */
  readonly extKeyUsage: readonly string[];
  readonly subjectKeyId: Buffer | undefined;
  readonly authorityKeyId: Buffer | undefined;
  /** the SAN extension's entries, undefined when the certificate has none */
  readonly san: readonly SanEntry[] | undefined;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly Buffer[];
  readonly nameConstraints: NameConstraints | undefined;
  readonly unhandledCritical: readonly string[];
  /** Node's view of the same bytes: names and serial for messages, fingerprints */
  readonly node: X509Certificate;
}

/** Signature algorithms Go's crypto/x509 recognises, by what its verifier does with them. */
export type SignatureAlgorithm =
  | { name: string; kind: 'rsa-pkcs1' | 'ecdsa'; hash: 'sha256' | 'sha384' | 'sha512' }
  | { name: string; kind: 'rsa-pss'; hash: 'sha256' | 'sha384' | 'sha512' }
  | { name: 'Ed25519'; kind: 'ed25519' }
  | { name: string; kind: 'insecure' }
  | { name: string; kind: 'unknown' };

export const KEY_USAGE_CERT_SIGN = 1 << 5;

export const OID = {
  keyUsage: '2.5.29.15',
  basicConstraints: '2.5.29.19',
  subjectAltName: '2.5.29.17',
  nameConstraints: '2.5.29.30',
  crlDistributionPoints: '2.5.29.31',
  authorityKeyId: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  subjectKeyId: '2.5.29.14',
  certificatePolicies: '2.5.29.32',
  authorityInfoAccess: '1.3.6.1.5.5.7.1.1',
  ekuAny: '2.5.29.37.0',
  ekuServerAuth: '1.3.6.1.5.5.7.3.1',
  ekuClientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/** GeneralName tags (context-specific, primitive) Go reads in SANs and name constraints. */
export const SAN_TAG = { email: 1, dns: 2, uri: 6, ip: 7 } as const;

const HASHES: Record<string, 'sha256' | 'sha384' | 'sha512'> = {
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
const HASH_SIZE = { sha256: 32, sha384: 48, sha512: 64 } as const;

const SIGNATURE_ALGORITHMS: Record<string, SignatureAlgorithm> = {
  '1.2.840.113549.1.1.2': { name: 'MD2-RSA', kind: 'insecure' },
  '1.2.840.113549.1.1.4': { name: 'MD5-RSA', kind: 'insecure' },
  '1.2.840.113549.1.1.5': { name: 'SHA1-RSA', kind: 'insecure' },
  '1.3.14.3.2.29': { name: 'SHA1-RSA', kind: 'insecure' },
  '1.2.840.113549.1.1.11': { name: 'SHA256-RSA', kind: 'rsa-pkcs1', hash: 'sha256' },
  '1.2.840.113549.1.1.12': { name: 'SHA384-RSA', kind: 'rsa-pkcs1', hash: 'sha384' },
  '1.2.840.113549.1.1.13': { name: 'SHA512-RSA', kind: 'rsa-pkcs1', hash: 'sha512' },
  '1.2.840.10040.4.3': { name: 'DSA-SHA1', kind: 'insecure' },
  '2.16.840.1.101.3.4.3.2': { name: 'DSA-SHA256', kind: 'unknown' },
  '1.2.840.10045.4.1': { name: 'ECDSA-SHA1', kind: 'insecure' },
  '1.2.840.10045.4.3.2': { name: 'ECDSA-SHA256', kind: 'ecdsa', hash: 'sha256' },
  '1.2.840.10045.4.3.3': { name: 'ECDSA-SHA384', kind: 'ecdsa', hash: 'sha384' },
  '1.2.840.10045.4.3.4': { name: 'ECDSA-SHA512', kind: 'ecdsa', hash: 'sha512' },
  '1.3.101.112': { name: 'Ed25519', kind: 'ed25519' },
};
const OID_RSA_PSS = '1.2.840.113549.1.1.10';
const OID_MGF1 = '1.2.840.113549.1.1.8';

const PUBLIC_KEY_ALGORITHMS: Record<string, PublicKeyAlgorithm> = {
  '1.2.840.113549.1.1.1': 'rsa',
  '1.2.840.10045.2.1': 'ec',
  '1.3.101.112': 'ed25519',
};
/** Go's namedCurveFromOID: any other curve fails the parse */
const CURVES = new Set(['1.3.132.0.33', '1.2.840.10045.3.1.7', '1.3.132.0.34', '1.3.132.0.35']);

type Block = asn1js.AsnType & {
  idBlock: { tagClass: number; tagNumber: number; isConstructed: boolean };
  valueBeforeDecodeView: Uint8Array;
  valueBlock: { value?: unknown; valueHexView?: Uint8Array; unusedBits?: number };
};

const UNIVERSAL = 1;
const CONTEXT = 3;

class ParseError extends Error {}

function fail(message: string): never {
  throw new ParseError(`x509: ${message}`);
}

function decode(bytes: Uint8Array, what: string): Block {
  // a plain Uint8Array: asn1js takes a slower conversion path for Node's Buffer
  const parsed = asn1js.fromBER(bytes instanceof Buffer ? new Uint8Array(bytes) : bytes);
  if (parsed.offset === -1 || parsed.offset !== bytes.byteLength) fail(`malformed ${what}`);
  return parsed.result as Block;
}

function children(block: Block, what: string): Block[] {
  if (!block.idBlock.isConstructed || !Array.isArray(block.valueBlock.value)) fail(`malformed ${what}`);
  return block.valueBlock.value as Block[];
}

function isUniversal(block: Block | undefined, tag: number): block is Block {
  return block !== undefined && block.idBlock.tagClass === UNIVERSAL && block.idBlock.tagNumber === tag;
}

function isContext(block: Block | undefined, tag: number): block is Block {
  return block !== undefined && block.idBlock.tagClass === CONTEXT && block.idBlock.tagNumber === tag;
}

function expect(block: Block | undefined, tag: number, what: string): Block {
  if (!isUniversal(block, tag)) fail(`malformed ${what}`);
  return block;
}

function raw(block: Block): Buffer {
  return Buffer.from(block.valueBeforeDecodeView);
}

function content(block: Block): Buffer {
  return Buffer.from(block.valueBlock.valueHexView ?? new Uint8Array());
}

function oid(block: Block | undefined, what: string): string {
  const b = expect(block, 6, what) as unknown as asn1js.ObjectIdentifier;
  return b.valueBlock.toString();
}

const TAG = { boolean: 1, integer: 2, bitString: 3, octetString: 4, null: 5, oid: 6, sequence: 16, utcTime: 23, generalizedTime: 24 } as const;

/**
 * Parses one DER certificate as Go's x509.ParseCertificate does; throws "x509: …" otherwise.
 * `node` is Node's view of the same bytes when the caller has it already (a handshake does).
 */
export function parseCertificate(der: Uint8Array, node?: X509Certificate): Certificate {
  if (!node) {
    try {
      node = new X509Certificate(der);
    } catch (err) {
      fail(`malformed certificate: ${(err as Error).message}`);
    }
  }
  const top = children(expect(decode(der, 'certificate'), TAG.sequence, 'certificate'), 'certificate');
  if (top.length !== 3) fail('malformed certificate');
  const [tbsBlock, outerAlg, sigBlock] = top as [Block, Block, Block];
  const tbs = children(expect(tbsBlock, TAG.sequence, 'tbs certificate'), 'tbs certificate');
  let i = 0;
  let version = 1;
  if (isContext(tbs[0], 0)) {
    const v = children(tbs[0]!, 'version')[0];
    const n = (expect(v, TAG.integer, 'version') as unknown as asn1js.Integer).valueBlock.valueDec;
    if (n < 0 || n > 2) fail('invalid version');
    version = n + 1;
    i++;
  }
  const serial = expect(tbs[i++], TAG.integer, 'serial number');
  const innerAlg = expect(tbs[i++], TAG.sequence, 'tbs signature algorithm');
  if (!raw(innerAlg).equals(raw(expect(outerAlg, TAG.sequence, 'signature algorithm')))) {
    fail("inner and outer signature algorithm identifiers don't match");
  }
  const issuer = expect(tbs[i++], TAG.sequence, 'issuer');
  const validity = children(expect(tbs[i++], TAG.sequence, 'validity'), 'validity');
  const subject = expect(tbs[i++], TAG.sequence, 'subject');
  const spki = expect(tbs[i++], TAG.sequence, 'public key info');
  if (validity.length !== 2) fail('malformed validity');
  const notBefore = parseTime(validity[0]!);
  const notAfter = parseTime(validity[1]!);
  while (isContext(tbs[i], 1) || isContext(tbs[i], 2)) i++; // unique identifiers: ignored, as Go does
  let extensions: Block[] = [];
  if (isContext(tbs[i], 3)) {
    if (version !== 3) fail('extensions in a non-v3 certificate');
    extensions = children(expect(children(tbs[i]!, 'extensions')[0], TAG.sequence, 'extensions'), 'extensions');
    i++;
  }
  if (i !== tbs.length) fail('trailing data in tbs certificate');
  if (!isUniversal(sigBlock, TAG.bitString)) fail('malformed signature');
  const { publicKeyAlgorithm, publicKey } = parsePublicKey(spki);
  const fields = parseExtensions(extensions);
  return Object.freeze({
    raw: Buffer.from(der),
    rawTbs: raw(tbsBlock),
    rawSubject: raw(subject),
    rawIssuer: raw(issuer),
    version,
    serialHex: content(serial).toString('hex').toUpperCase(),
    signatureAlgorithm: signatureAlgorithm(innerAlg),
    signature: content(sigBlock),
    notBefore,
    notAfter,
    publicKeyAlgorithm,
    publicKey,
    ...fields,
    node,
  });
}

/** Go's cryptobyte time readers: exact formats that must round-trip; UTCTime 50–99 is 19xx. */
export function parseTime(block: Block): Date {
  const text = content(block).toString('latin1');
  if (isUniversal(block, TAG.utcTime)) {
    const m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?(Z|[+-]\d{4})$/.exec(text);
    if (!m) fail(`malformed UTCTime ${JSON.stringify(text)}`);
    const yy = Number(m[1]);
    return fromParts(yy >= 50 ? 1900 + yy : 2000 + yy, m[2]!, m[3]!, m[4]!, m[5]!, m[6] ?? '00', '', m[7]!, text);
  }
  if (isUniversal(block, TAG.generalizedTime)) {
    const m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\.\d*[1-9])?(Z|[+-]\d{4})$/.exec(text);
    if (!m) fail(`malformed GeneralizedTime ${JSON.stringify(text)}`);
    return fromParts(Number(m[1]), m[2]!, m[3]!, m[4]!, m[5]!, m[6]!, m[7] ?? '', m[8]!, text);
  }
  fail('malformed validity time');
}

function fromParts(year: number, mo: string, d: string, h: string, mi: string, s: string, frac: string, zone: string, text: string): Date {
  const date = new Date(0);
  // setUTCFullYear, not Date.UTC: Date.UTC maps years 0–99 to 1900–1999
  date.setUTCFullYear(year, Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(s), frac ? Math.floor(Number(`0${frac}`) * 1000) : 0);
  // Go's time.Parse refuses out-of-range fields; a Date would roll them over instead
  if (date.getUTCMonth() !== Number(mo) - 1 || date.getUTCDate() !== Number(d) || Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) {
    fail(`invalid time ${JSON.stringify(text)}`);
  }
  if (zone !== 'Z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(3, 5));
    if (oh > 23 || om > 59) fail(`invalid time zone in ${JSON.stringify(text)}`);
    date.setTime(date.getTime() - sign * (oh * 60 + om) * 60_000);
  }
  return date;
}

function signatureAlgorithm(alg: Block): SignatureAlgorithm {
  const parts = children(alg, 'signature algorithm');
  const id = oid(parts[0], 'signature algorithm');
  if (id !== OID_RSA_PSS) return SIGNATURE_ALGORITHMS[id] ?? { name: id, kind: 'unknown' };
  // Go accepts only the three PSS parameter sets where the MGF1 hash is the message hash,
  // the salt is as long as the hash and the trailer field is the default.
  const unknown: SignatureAlgorithm = { name: 'RSA-PSS (non-standard parameters)', kind: 'unknown' };
  try {
    const params = parts[1] ? children(expect(parts[1], TAG.sequence, 'PSS parameters'), 'PSS parameters') : [];
    const field = (tag: number): Block | undefined => {
      const f = params.find((p) => isContext(p, tag));
      return f ? children(f, 'PSS parameter')[0] : undefined;
    };
    const hashAlg = field(0);
    const mgf = field(1);
    if (!hashAlg || !mgf) return unknown;
    const hashParts = children(hashAlg, 'PSS hash');
    const hash = HASHES[oid(hashParts[0], 'PSS hash')];
    if (!hash || (hashParts[1] && !isUniversal(hashParts[1], TAG.null))) return unknown;
    const mgfParts = children(mgf, 'PSS MGF');
    if (oid(mgfParts[0], 'PSS MGF') !== OID_MGF1 || !mgfParts[1]) return unknown;
    const mgfHash = children(mgfParts[1], 'MGF1 hash');
    if (HASHES[oid(mgfHash[0], 'MGF1 hash')] !== hash || (mgfHash[1] && !isUniversal(mgfHash[1], TAG.null))) return unknown;
    const salt = field(2);
    const saltLength = salt ? (expect(salt, TAG.integer, 'PSS salt') as unknown as asn1js.Integer).valueBlock.valueDec : 20;
    const trailer = field(3);
    const trailerField = trailer ? (expect(trailer, TAG.integer, 'PSS trailer') as unknown as asn1js.Integer).valueBlock.valueDec : 1;
    if (saltLength !== HASH_SIZE[hash] || trailerField !== 1) return unknown;
    return { name: `${hash.toUpperCase()}-RSAPSS`, kind: 'rsa-pss', hash };
  } catch {
    return unknown;
  }
}

function parsePublicKey(spki: Block): { publicKeyAlgorithm: PublicKeyAlgorithm; publicKey: KeyObject | undefined } {
  const parts = children(spki, 'public key info');
  const algParts = children(expect(parts[0], TAG.sequence, 'public key algorithm'), 'public key algorithm');
  const algorithm = PUBLIC_KEY_ALGORITHMS[oid(algParts[0], 'public key algorithm')] ?? 'unknown';
  if (algorithm === 'unknown') return { publicKeyAlgorithm: 'unknown', publicKey: undefined };
  if (algorithm === 'ec') {
    const curve = algParts[1] && isUniversal(algParts[1], TAG.oid) ? oid(algParts[1], 'curve') : '';
    if (!CURVES.has(curve)) fail('unsupported elliptic curve');
  }
  try {
    return { publicKeyAlgorithm: algorithm, publicKey: createPublicKey({ key: raw(spki), format: 'der', type: 'spki' }) };
  } catch (err) {
    fail(`failed to parse public key: ${(err as Error).message}`);
  }
}

type ExtensionFields = Pick<
  Certificate,
  | 'basicConstraintsValid'
  | 'isCA'
  | 'maxPathLen'
  | 'keyUsage'
  | 'extKeyUsage'
  | 'subjectKeyId'
  | 'authorityKeyId'
  | 'san'
  | 'dnsNames'
  | 'ipAddresses'
  | 'nameConstraints'
  | 'unhandledCritical'
>;

function parseExtensions(extensions: Block[]): ExtensionFields {
  const out: { -readonly [K in keyof ExtensionFields]: ExtensionFields[K] } = {
    basicConstraintsValid: false,
    isCA: false,
    maxPathLen: -1,
    keyUsage: 0,
    extKeyUsage: [],
    subjectKeyId: undefined,
    authorityKeyId: undefined,
    san: undefined,
    dnsNames: [],
    ipAddresses: [],
    nameConstraints: undefined,
    unhandledCritical: [],
  };
  const seen = new Set<string>();
  const unhandledCritical: string[] = [];
  for (const extension of extensions) {
    const parts = children(expect(extension, TAG.sequence, 'extension'), 'extension');
    const id = oid(parts[0], 'extension');
    let at = 1;
    let critical = false;
    if (isUniversal(parts[at], TAG.boolean)) critical = (parts[at++] as unknown as asn1js.Boolean).valueBlock.value;
    const value = content(expect(parts[at], TAG.octetString, `extension ${id}`));
    if (seen.has(id)) fail('certificate contains duplicate extensions');
    seen.add(id);
    let unhandled = false;
    switch (id) {
      case OID.keyUsage:
        out.keyUsage = keyUsage(value);
        break;
      case OID.basicConstraints:
        Object.assign(out, basicConstraints(value));
        out.basicConstraintsValid = true;
        break;
      case OID.subjectAltName: {
        out.san = sanEntries(value);
        const names = checkedSanNames(out.san);
        out.dnsNames = names.dns;
        out.ipAddresses = names.ip;
        // Go: a SAN with nothing it understands is left for the critical check
        unhandled = names.dns.length + names.ip.length + names.email + names.uri === 0;
        break;
      }
      case OID.nameConstraints: {
        const parsed = nameConstraints(value);
        out.nameConstraints = parsed.constraints;
        unhandled = parsed.unhandled;
        break;
      }
      case OID.extKeyUsage:
        out.extKeyUsage = sequenceOf(value, 'extended key usage').map((b) => oid(b, 'extended key usage'));
        break;
      case OID.subjectKeyId:
        out.subjectKeyId = content(expect(decode(value, 'subject key identifier'), TAG.octetString, 'subject key identifier'));
        break;
      case OID.authorityKeyId: {
        const keyId = sequenceOf(value, 'authority key identifier').find((b) => isContext(b, 0));
        out.authorityKeyId = keyId ? content(keyId) : undefined;
        break;
      }
      case OID.crlDistributionPoints:
      case OID.certificatePolicies:
      case OID.authorityInfoAccess:
        sequenceOf(value, id); // parsed by Go for other fields; malformed ones fail its parse
        break;
      default:
        unhandled = true;
    }
    if (critical && unhandled) unhandledCritical.push(id);
  }
  out.unhandledCritical = unhandledCritical;
  return out;
}

function sequenceOf(value: Buffer, what: string): Block[] {
  return children(expect(decode(value, what), TAG.sequence, what), what);
}

function keyUsage(value: Buffer): number {
  const bits = expect(decode(value, 'key usage'), TAG.bitString, 'key usage');
  const bytes = content(bits);
  let usage = 0;
  for (let bit = 0; bit < 9; bit++) {
    const byte = bytes[bit >> 3];
    if (byte !== undefined && byte & (0x80 >> (bit & 7))) usage |= 1 << bit;
  }
  return usage;
}

function basicConstraints(value: Buffer): { isCA: boolean; maxPathLen: number } {
  const parts = sequenceOf(value, 'basic constraints');
  let at = 0;
  let isCA = false;
  if (isUniversal(parts[at], TAG.boolean)) isCA = (parts[at++] as unknown as asn1js.Boolean).valueBlock.value;
  let maxPathLen = -1;
  if (isUniversal(parts[at], TAG.integer)) {
    const n = (parts[at++] as unknown as asn1js.Integer).valueBlock.valueDec;
    if (!Number.isSafeInteger(n) || n < 0) fail('invalid basic constraints');
    maxPathLen = n;
  }
  return { isCA, maxPathLen };
}

function sanEntries(value: Buffer): SanEntry[] {
  return sequenceOf(value, 'subject alternative names').map((b) => ({
    // Go reads the raw tag byte and xors 0x80: constructed entries (directoryName) never match
    tag: b.idBlock.tagClass === CONTEXT && !b.idBlock.isConstructed ? b.idBlock.tagNumber : -1,
    data: b.idBlock.isConstructed ? raw(b) : content(b),
  }));
}

function isIa5(data: Buffer): boolean {
  return data.every((c) => c < 0x80);
}

function checkedSanNames(entries: readonly SanEntry[]): { dns: string[]; ip: Buffer[]; email: number; uri: number } {
  const dns: string[] = [];
  const ip: Buffer[] = [];
  let email = 0;
  let uri = 0;
  for (const { tag, data } of entries) {
    switch (tag) {
      case SAN_TAG.email:
        if (!isIa5(data)) fail('SAN rfc822Name is malformed');
        email++;
        break;
      case SAN_TAG.dns:
        if (!isIa5(data)) fail('SAN dNSName is malformed');
        dns.push(data.toString('latin1'));
        break;
      case SAN_TAG.uri: {
        if (!isIa5(data)) fail('SAN uniformResourceIdentifier is malformed');
        const host = uriHost(data.toString('latin1'));
        if (host === undefined) fail(`cannot parse URI ${JSON.stringify(data.toString('latin1'))}`);
        if (host !== '' && !domainToReverseLabels(host)) fail(`cannot parse URI ${JSON.stringify(data.toString('latin1'))}: invalid domain`);
        uri++;
        break;
      }
      case SAN_TAG.ip:
        if (data.length !== 4 && data.length !== 16) fail(`cannot parse IP address of length ${data.length}`);
        ip.push(data);
        break;
      default:
    }
  }
  return { dns, ip, email, uri };
}

/** The host of an absolute URI (without port or brackets), '' when it has none, undefined when unparsable. */
export function uriHost(text: string): string | undefined {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:(?:\/\/([^/?#]*))?/.exec(text);
  if (!m) return /^[^:/?#]*([/?#]|$)/.test(text) ? '' : undefined;
  const authority = (m[1] ?? '').replace(/^.*@/, '');
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']');
    return end === -1 ? undefined : authority.slice(1, end);
  }
  return authority.replace(/:\d*$/, '');
}

function nameConstraints(value: Buffer): { constraints: NameConstraints; unhandled: boolean } {
  const parts = sequenceOf(value, 'NameConstraints extension');
  const permitted = parts.find((p) => isContext(p, 0));
  const excluded = parts.find((p) => isContext(p, 1));
  if (parts.some((p) => !isContext(p, 0) && !isContext(p, 1))) fail('invalid NameConstraints extension');
  const subtrees = (b: Block | undefined): Block[] => (b ? children(b, 'NameConstraints subtrees') : []);
  if (subtrees(permitted).length === 0 && subtrees(excluded).length === 0) fail('empty name constraints extension');
  let unhandled = false;
  const read = (block: Block | undefined) => {
    const lists = { dns: [] as string[], ip: [] as IpRange[], email: [] as string[], uri: [] as string[] };
    for (const subtree of subtrees(block)) {
      const base = children(expect(subtree, TAG.sequence, 'NameConstraints subtree'), 'NameConstraints subtree')[0];
      if (!base) fail('invalid NameConstraints extension');
      const primitive = base.idBlock.tagClass === CONTEXT && !base.idBlock.isConstructed;
      const data = content(base);
      const tag = primitive ? base.idBlock.tagNumber : -1;
      if (tag === SAN_TAG.dns || tag === SAN_TAG.email || tag === SAN_TAG.uri) {
        if (!isIa5(data)) fail('invalid constraint value: non-IA5 string');
      }
      const text = data.toString('latin1');
      switch (tag) {
        case SAN_TAG.dns: {
          const trimmed = text.startsWith('.') ? text.slice(1) : text;
          if (!domainToReverseLabels(trimmed)) fail(`failed to parse dnsName constraint ${JSON.stringify(text)}`);
          lists.dns.push(text);
          break;
        }
        case SAN_TAG.ip: {
          if (data.length !== 8 && data.length !== 32) fail(`IP constraint contained value of length ${data.length}`);
          const half = data.length / 2;
          const mask = data.subarray(half);
          if (!isValidMask(mask)) fail(`IP constraint contained invalid mask ${mask.toString('hex')}`);
          lists.ip.push({ ip: data.subarray(0, half), mask });
          break;
        }
        case SAN_TAG.email:
          lists.email.push(text);
          break;
        case SAN_TAG.uri:
          lists.uri.push(text);
          break;
        default:
          unhandled = true;
      }
    }
    return lists;
  };
  const p = read(permitted);
  const e = read(excluded);
  return {
    constraints: {
      permittedDns: p.dns,
      excludedDns: e.dns,
      permittedIp: p.ip,
      excludedIp: e.ip,
      permittedEmail: p.email,
      excludedEmail: e.email,
      permittedUri: p.uri,
      excludedUri: e.uri,
    },
    unhandled,
  };
}

const MASK_BYTES_WITH_ZEROS = new Set([0x00, 0x80, 0xc0, 0xe0, 0xf0, 0xf8, 0xfc, 0xfe]);

/** Go's isValidIPMask: ones, then zeros. */
function isValidMask(mask: Buffer): boolean {
  let seenZero = false;
  for (const byte of mask) {
    if (seenZero) {
      if (byte !== 0) return false;
    } else if (MASK_BYTES_WITH_ZEROS.has(byte)) {
      seenZero = true;
    } else if (byte !== 0xff) {
      return false;
    }
  }
  return true;
}

/** Go's domainToReverseLabels: undefined for names it cannot take apart. */
export function domainToReverseLabels(domain: string): string[] | undefined {
  const labels: string[] = [];
  let rest = domain;
  while (rest.length > 0) {
    const dot = rest.lastIndexOf('.');
    if (dot === -1) {
      labels.push(rest);
      rest = '';
    } else {
      labels.push(rest.slice(dot + 1));
      rest = rest.slice(0, dot);
      if (dot === 0) labels.push('');
    }
  }
  if (labels.length > 0 && labels[0]!.length === 0) return undefined; // trailing dot: absolute name
  for (const label of labels) {
    if (label.length === 0) return undefined;
    for (let i = 0; i < label.length; i++) {
      const c = label.charCodeAt(i);
      if (c < 33 || c > 126) return undefined;
    }
  }
  return labels;
}

export function isParseError(err: unknown): boolean {
  return err instanceof ParseError;
}
