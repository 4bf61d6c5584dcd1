// A consumer for tests that keeps the raw bytes the relay sent, so they can be compared
// byte for byte with what the node daemon encoded.
import * as grpc from '@grpc/grpc-js';
import { KIND_BY_NAME, methodPath, type Kind } from '../../server/kinds.js';
import { decodeReply, encodeNonce, encodeRequest } from '../../server/proto.js';

const identity = (b: Buffer): Buffer => b;

export interface RawWatch {
  kind: Kind;
  events: Buffer[];
  /** the call's final status */
  status: Promise<grpc.StatusObject>;
  waitFor(n: number, timeoutMs?: number): Promise<void>;
  /** stop reading (the call stays open, as a stalled consumer) */
  pause(): void;
  resume(): void;
  close(): void;
}

export function rawWatch(target: string, kind: Kind, filter: string, credentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}): RawWatch {
  const client = new grpc.Client(target, credentials, { 'grpc.use_local_subchannel_pool': 1, ...options });
  const call = client.makeServerStreamRequest(methodPath(KIND_BY_NAME[kind]), identity, identity, encodeRequest(filter), new grpc.Metadata(), {});
  const events: Buffer[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  call.on('data', (b: Buffer) => {
    events.push(b);
    for (const w of [...waiters]) if (events.length >= w.n) (waiters.splice(waiters.indexOf(w), 1), w.resolve());
  });
  call.on('error', () => {});
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  return {
    kind,
    events,
    status,
    waitFor: (n, timeoutMs = 20_000) =>
      events.length >= n
        ? Promise.resolve()
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`${kind} watch got ${events.length} of ${n} events`)), timeoutMs);
            waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
          }),
    pause: () => call.pause(),
    resume: () => call.resume(),
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

export function rawHealthCheck(target: string, nonce: number, credentials = grpc.credentials.createInsecure()): Promise<number> {
  const client = new grpc.Client(target, credentials);
  return new Promise<number>((resolve, reject) => {
    client.makeUnaryRequest('/feeder.LogService/HealthCheck', identity, decodeReply, encodeNonce(nonce), (err, value) => {
      client.close();
      if (err) reject(err);
      else resolve(value!);
    });
  });
}
