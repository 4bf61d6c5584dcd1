// One place that knows the wire schema. The relay itself forwards raw bytes; decoding is
// only for the parts that need it (stdout export, HealthCheck, tools and tests).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/** proto/ sits beside server/ both in the sources and in dist/ (one level up from dist). */
function findProtoFile(): string {
  for (const rel of ['../proto/kubearmor.proto', '../../proto/kubearmor.proto']) {
    const path = fileURLToPath(new URL(rel, import.meta.url));
    try {
      readFileSync(path);
      return path;
    } catch {
      // try the next layout
    }
  }
  throw new Error('proto/kubearmor.proto not found next to the relay sources');
}

export const PROTO_FILE = findProtoFile();

const root = protobuf.loadSync(PROTO_FILE);

export const types = {
  NonceMessage: root.lookupType('feeder.NonceMessage'),
  ReplyMessage: root.lookupType('feeder.ReplyMessage'),
  RequestMessage: root.lookupType('feeder.RequestMessage'),
  Message: root.lookupType('feeder.Message'),
  Alert: root.lookupType('feeder.Alert'),
  Log: root.lookupType('feeder.Log'),
} as const;

/** Plain JSON objects with the protobuf field names, the shape Go's encoding/json gives. */
export type EventObject = Record<string, unknown>;

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, defaults: false, arrays: false, objects: false };

export function decodeToObject(type: protobuf.Type, bytes: Uint8Array): EventObject {
  return type.toObject(type.decode(bytes), TO_OBJECT) as EventObject;
}

/**
 * The object with keys in .proto declaration order, as Go's encoding/json and
 * `karmor logs --json` print them (protobufjs orders by field number).
 */
export function inDeclarationOrder(type: protobuf.Type, obj: EventObject): EventObject {
  const out: EventObject = {};
  for (const field of type.fieldsArray) {
    if (field.name in obj) out[field.name] = obj[field.name];
  }
  return out;
}

/** One JSON line for stdout export and `logs --json`: declaration order, empty fields left out. */
export function toJsonLine(type: protobuf.Type, bytes: Uint8Array): string {
  return JSON.stringify(inDeclarationOrder(type, decodeToObject(type, bytes)));
}

export function encodeFromObject(type: protobuf.Type, obj: EventObject): Buffer {
  const err = type.verify(obj);
  if (err) throw new Error(`invalid ${type.name}: ${err}`);
  const bytes = type.encode(type.fromObject(obj)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export const SERVICE = 'feeder.LogService';

export function encodeNonce(nonce: number): Buffer {
  return encodeFromObject(types.NonceMessage, { nonce });
}
export function decodeNonce(bytes: Buffer): number {
  return Number((types.NonceMessage.decode(bytes) as unknown as { nonce?: number }).nonce ?? 0);
}
export function encodeReply(retval: number): Buffer {
  return encodeFromObject(types.ReplyMessage, { Retval: retval });
}
export function decodeReply(bytes: Buffer): number {
  return Number((types.ReplyMessage.decode(bytes) as unknown as { Retval?: number }).Retval ?? 0);
}
export function encodeRequest(filter: string): Buffer {
  return encodeFromObject(types.RequestMessage, { Filter: filter });
}
export function decodeRequest(bytes: Buffer): string {
  return String((types.RequestMessage.decode(bytes) as unknown as { Filter?: string }).Filter ?? '');
}
