// Remote-host enrichment of Log events, as the reference relay does it: a network log
// (`Data` mentions a `tcp_` kprobe) whose `Resource` carries `remoteip=<ip>` of a known
// pod or service gets ` remotehost=<pod/ns/name|svc/ns/name>` appended to `Resource`.
//
// The relay forwards raw bytes, so this works on the wire format directly: a byte scan
// rejects almost every event without parsing, and a hit rewrites only the Resource field
// (its length prefix and payload) and copies every other byte as it came. Nothing is
// decoded and re-encoded, so no field, unknown field or empty sub-message (an `Owner{}`
// that `karmor logs --json` prints) can be lost or reordered.

/** Field numbers of feeder.Log (proto/kubearmor.proto). */
const LOG_RESOURCE = 16;
const LOG_DATA = 17;

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const TCP_MARK = Buffer.from('tcp_');
const REMOTE_IP = Buffer.from('remoteip=');
const REMOTE_HOST = Buffer.from('remotehost=');

/** Lookup of a remote IP to a name such as `pod/ns/name` or `svc/ns/name`. */
export type IpLookup = (ip: string) => string | undefined;

interface Span {
  /** first byte of the length prefix (the tag before it is kept as it came) */
  lengthAt: number;
  /** first byte of the payload (after tag and length) */
  payload: number;
  /** one past the payload */
  end: number;
}

/**
 * Reads a varint at `pos`; returns [value, next position] or undefined when truncated or
 * longer than the 10 bytes a varint may take. Values above 2^53 lose precision, which is
 * harmless: they only matter as lengths, and no valid length is that large.
 */
function readVarint(buf: Buffer, pos: number): [number, number] | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) return undefined;
    const byte = buf[pos++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, pos];
    scale *= 128;
  }
  return undefined;
}

function varintBytes(value: number): Buffer {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/**
 * Walks the top-level fields and returns the last occurrence of Resource and Data (proto3
 * takes the last value of a repeated scalar field). Undefined when the bytes are not a
 * well-formed message: such an event is passed on untouched rather than guessed at.
 */
function findFields(buf: Buffer): { resource?: Span; data?: Span } | undefined {
  const found: { resource?: Span; data?: Span } = {};
  let pos = 0;
  while (pos < buf.length) {
    const tag = readVarint(buf, pos);
    if (!tag) return undefined;
    pos = tag[1];
    const field = Math.floor(tag[0] / 8);
    const wire = tag[0] % 8;
    if (field === 0) return undefined;
    switch (wire) {
      case WIRE_VARINT: {
        const v = readVarint(buf, pos);
        if (!v) return undefined;
        pos = v[1];
        break;
      }
      case WIRE_FIXED64:
        pos += 8;
        break;
      case WIRE_FIXED32:
        pos += 4;
        break;
      case WIRE_LEN: {
        const lengthAt = pos;
        const len = readVarint(buf, pos);
        if (!len) return undefined;
        const payload = len[1];
        pos = payload + len[0];
        if (pos > buf.length) return undefined;
        if (field === LOG_RESOURCE) found.resource = { lengthAt, payload, end: pos };
        else if (field === LOG_DATA) found.data = { lengthAt, payload, end: pos };
        break;
      }
      default:
        // groups (3, 4) do not occur in proto3 messages; 6 and 7 are invalid
        return undefined;
    }
    if (pos > buf.length) return undefined;
  }
  return found;
}

function contains(buf: Buffer, span: Span, needle: Buffer): boolean {
  return buf.subarray(span.payload, span.end).indexOf(needle) !== -1;
}

/** The value after `remoteip=` up to the next whitespace or comma. */
function remoteIpOf(resource: Buffer): string | undefined {
  const at = resource.indexOf(REMOTE_IP);
  if (at === -1) return undefined;
  const from = at + REMOTE_IP.length;
  let to = from;
  while (to < resource.length) {
    const c = resource[to]!;
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x2c) break;
    to++;
  }
  return to > from ? resource.toString('latin1', from, to) : undefined;
}

/**
 * Returns `bytes` itself (the same Buffer, not a copy) unless the event is a TCP log whose
 * remote IP the lookup knows; then returns new bytes that differ only in `Resource`.
 * Never throws: malformed input comes back untouched.
 */
export function enrichLog(bytes: Buffer, lookup: IpLookup): Buffer {
  // The cheap gate: both markers must appear somewhere in the raw bytes.
  if (bytes.indexOf(TCP_MARK) === -1 || bytes.indexOf(REMOTE_IP) === -1) return bytes;
  const fields = findFields(bytes);
  const resource = fields?.resource;
  const data = fields?.data;
  if (!resource || !data || !contains(bytes, data, TCP_MARK)) return bytes;
  const resourceBytes = bytes.subarray(resource.payload, resource.end);
  // Already enriched (by an upstream relay, or a node that does it itself): leave it.
  if (resourceBytes.indexOf(REMOTE_HOST) !== -1) return bytes;
  const ip = remoteIpOf(resourceBytes);
  if (ip === undefined) return bytes;
  const name = lookup(ip);
  if (!name) return bytes;
  const suffix = Buffer.from(` remotehost=${name}`, 'utf8');
  // Everything up to and including the tag stays as it came; length and payload change.
  return Buffer.concat([
    bytes.subarray(0, resource.lengthAt),
    varintBytes(resourceBytes.length + suffix.length),
    resourceBytes,
    suffix,
    bytes.subarray(resource.end),
  ]);
}
