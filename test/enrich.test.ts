import { describe, expect, it } from 'vitest';
import { enrichLog } from '../server/enrich.js';
import { IpNameMap } from '../server/discovery.js';
import { decodeToObject, types } from '../server/proto.js';

type LogFields = Record<string, unknown>;

function encodeLog(fields: LogFields): Buffer {
  const bytes = types.Log.encode(types.Log.fromObject(fields)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A network log with every kind of field set, including an empty Owner{} and a map. */
function fullLog(overrides: LogFields = {}): LogFields {
  return {
    Timestamp: 1_700_000_000,
    UpdatedTime: '2024-01-01T00:00:00.000000Z',
    ClusterName: 'default',
    HostName: 'node-a',
    NamespaceName: 'shop',
    Owner: {},
    PodName: 'cart-7d9',
    Labels: 'app=cart',
    ContainerID: 'abc123',
    ContainerName: 'cart',
    ContainerImage: 'cart:1.0',
    ParentProcessName: '/bin/sh',
    ProcessName: '/usr/bin/curl',
    HostPPID: 10,
    HostPID: 11,
    PPID: 1,
    PID: 2,
    UID: 1000,
    Type: 'ContainerLog',
    Source: '/usr/bin/curl',
    Operation: 'Network',
    Resource: 'remoteip=10.96.0.20 port=80 protocol=TCP',
    Data: 'kprobe=tcp_connect domain=AF_INET fd=3',
    EventData: { a: '1', b: '2' },
    Result: 'Passed',
    Cwd: '/',
    TTY: 'pts0',
    ExecEvent: { ExecID: '42', ExecutableName: 'curl' },
    NodeID: 'node-id',
    ProcessHash: 'p',
    ParentHash: 'pp',
    ResourceHash: 'r',
    HashAlgo: 'sha256',
    UserName: 'nobody',
    ...overrides,
  };
}

const names = new IpNameMap();
names.set('10.96.0.20', 'svc/shop/cart');
names.set('10.1.0.5', 'pod/shop/db-0');
names.set('fd00::5', 'pod/shop/db-1');

/** A tag/length/payload of one length-delimited field, for hand-built messages. */
function lenField(field: number, payload: Buffer): Buffer {
  const varint = (n: number) => {
    const out: number[] = [];
    while (n >= 0x80) {
      out.push((n & 0x7f) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(n);
    return Buffer.from(out);
  };
  return Buffer.concat([varint(field * 8 + 2), varint(payload.length), payload]);
}

describe('remote host enrichment', () => {
  it('appends remotehost to Resource and changes no other byte or field', () => {
    const input = encodeLog(fullLog());
    const out = enrichLog(input, names.lookup);
    const expected = fullLog({ Resource: 'remoteip=10.96.0.20 port=80 protocol=TCP remotehost=svc/shop/cart' });
    // byte-for-byte what an encoder produces for the enriched message
    expect(out.equals(encodeLog(expected))).toBe(true);
    const decoded = decodeToObject(types.Log, out);
    expect(decoded).toEqual(decodeToObject(types.Log, encodeLog(expected)));
    expect(decoded.Owner).toEqual({});
    expect(Object.keys(decoded)).toContain('Owner');
    expect(decoded.EventData).toEqual({ a: '1', b: '2' });
    expect(decoded.ExecEvent).toEqual({ ExecID: '42', ExecutableName: 'curl' });
  });

  it('returns the very same Buffer when the event is not a TCP log with a known remote IP', () => {
    const cases: LogFields[] = [
      fullLog({ Data: 'syscall=SYS_OPENAT', Resource: 'remoteip=10.96.0.20 port=80' }),
      fullLog({ Resource: '/etc/passwd' }),
      fullLog({ Resource: 'remoteip=10.9.9.9 port=80 protocol=TCP' }),
      // tcp_ in Resource and remoteip= in Data: the markers must be in the right fields
      fullLog({ Resource: 'tcp_thing', Data: 'remoteip=10.96.0.20' }),
      fullLog({ Resource: 'remoteip= port=80', Data: 'kprobe=tcp_connect' }),
      // already enriched upstream
      fullLog({ Resource: 'remoteip=10.96.0.20 port=80 remotehost=svc/shop/cart' }),
      fullLog({ Data: undefined }),
    ];
    for (const fields of cases) {
      const input = encodeLog(fields);
      expect(enrichLog(input, names.lookup)).toBe(input);
    }
  });

  it('does not call the lookup when the raw bytes lack either marker', () => {
    let calls = 0;
    const lookup = (ip: string) => {
      calls++;
      return names.get(ip);
    };
    enrichLog(encodeLog(fullLog({ Data: 'kprobe=udp_sendmsg' })), lookup);
    enrichLog(encodeLog(fullLog({ Resource: 'port=80' })), lookup);
    expect(calls).toBe(0);
    enrichLog(encodeLog(fullLog()), lookup);
    expect(calls).toBe(1);
  });

  it('takes the IP up to the next space, comma or the end of Resource, IPv6 included', () => {
    const at = (resource: string) => decodeToObject(types.Log, enrichLog(encodeLog(fullLog({ Resource: resource })), names.lookup)).Resource;
    expect(at('remoteip=10.1.0.5')).toBe('remoteip=10.1.0.5 remotehost=pod/shop/db-0');
    expect(at('port=5432 remoteip=10.1.0.5,protocol=TCP')).toBe('port=5432 remoteip=10.1.0.5,protocol=TCP remotehost=pod/shop/db-0');
    expect(at('remoteip=fd00::5 port=5432')).toBe('remoteip=fd00::5 port=5432 remotehost=pod/shop/db-1');
    expect(at('remoteip=10.1.0.55 port=1')).toBe('remoteip=10.1.0.55 port=1');
  });

  it('rewrites the length prefix correctly when it grows from one to two and from two to three bytes', () => {
    const suffixLength = ' remotehost=svc/shop/cart'.length;
    const base = 'remoteip=10.96.0.20 port=80 ';
    for (const total of [127 - suffixLength, 127 - suffixLength + 1, 127, 128, 300, 16383 - suffixLength, 16383 - suffixLength + 1, 16383, 16384, 70_000]) {
      const resource = base + 'x'.repeat(total - base.length);
      expect(resource.length).toBe(total);
      const fields = fullLog({ Resource: resource });
      const out = enrichLog(encodeLog(fields), names.lookup);
      const enriched = resource + ' remotehost=svc/shop/cart';
      expect(out.equals(encodeLog({ ...fields, Resource: enriched }))).toBe(true);
      expect(decodeToObject(types.Log, out).Resource).toBe(enriched);
      expect(decodeToObject(types.Log, out).UserName).toBe('nobody');
    }
  });

  it('keeps multi-byte UTF-8 in Resource and names intact', () => {
    const map = new IpNameMap();
    map.set('10.1.0.5', 'pod/ünïcode/名前');
    const out = enrichLog(encodeLog(fullLog({ Resource: 'path=/tmp/ä remoteip=10.1.0.5' })), map.lookup);
    expect(decodeToObject(types.Log, out).Resource).toBe('path=/tmp/ä remoteip=10.1.0.5 remotehost=pod/ünïcode/名前');
  });

  it('preserves unknown fields and field order, rewriting only the last Resource occurrence', () => {
    const known = encodeLog(fullLog({ Resource: undefined }));
    const unknownVarint = Buffer.from([0xa8, 0x06, 0x96, 0x01]); // field 101, varint 150
    const unknownFixed64 = Buffer.concat([Buffer.from([0xb1, 0x06]), Buffer.alloc(8, 7)]); // field 102
    const unknownFixed32 = Buffer.concat([Buffer.from([0xbd, 0x06]), Buffer.alloc(4, 9)]); // field 103
    const unknownLen = lenField(104, Buffer.from('opaque'));
    const firstResource = lenField(16, Buffer.from('remoteip=10.9.9.9'));
    const lastResource = lenField(16, Buffer.from('remoteip=10.1.0.5 port=1'));
    const input = Buffer.concat([firstResource, unknownVarint, known, unknownFixed64, lastResource, unknownFixed32, unknownLen]);
    const out = enrichLog(input, names.lookup);
    const expected = Buffer.concat([firstResource, unknownVarint, known, unknownFixed64, lenField(16, Buffer.from('remoteip=10.1.0.5 port=1 remotehost=pod/shop/db-0')), unknownFixed32, unknownLen]);
    expect(out.equals(expected)).toBe(true);
    expect(decodeToObject(types.Log, out).Resource).toBe('remoteip=10.1.0.5 port=1 remotehost=pod/shop/db-0');
  });

  it('returns malformed input untouched instead of throwing', () => {
    const good = encodeLog(fullLog());
    const cases = [
      good.subarray(0, good.length - 3), // truncated inside a field
      Buffer.concat([good, Buffer.from([0x82])]), // truncated tag
      Buffer.concat([good, Buffer.from([0x83, 0x01])]), // start-group wire type
      Buffer.concat([good, Buffer.from([0x07])]), // field 0
      Buffer.concat([good, Buffer.from([0x82, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f])]), // length past the end
      Buffer.concat([good, Buffer.from([0x80, 0x01]), Buffer.alloc(11, 0xff)]), // varint longer than 10 bytes
    ];
    for (const input of cases) expect(enrichLog(input, names.lookup)).toBe(input);
  });
});
