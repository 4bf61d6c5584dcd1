// The NATS side of scale-out: the connection (servers, credentials, TLS from the relay's
// certificate manager), the event stream and the membership bucket, created when missing.
import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection, type TlsOptions } from '@nats-io/transport-node';
import { DiscardPolicy, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { TlsMaterial, TlsMaterialSource } from '../../certs/material.js';
import type { Logger } from '../logger.js';
import { leasesBucket, membersBucket, STREAM_SUBJECTS } from './subjects.js';

export interface EngineOptions {
  servers: readonly string[];
  user?: string;
  password?: string;
  /** a NATS credentials file (JWT + nkey seed) */
  credsFile?: string;
  /** present the relay's client certificate and trust its CA (the --tlsEnabled material) */
  tls?: TlsMaterialSource;
  name: string;
  stream: string;
  streamReplicas: number;
  maxAgeMs: number;
  maxBytes: number;
  duplicateWindowMs: number;
  membershipTtlMs: number;
  logger: Logger;
}

const nanos = (ms: number): number => ms * 1_000_000;

/**
 * TLS options the client reads at every (re)connect; a certificate rotation updates them in
 * place, so the next connection presents the new client certificate.
 */
function tlsFrom(source: TlsMaterialSource): { tls: TlsOptions; stop(): void } {
  const tls: TlsOptions = {};
  const apply = (m: TlsMaterial) => {
    tls.ca = m.ca.pem;
    if (m.client) {
      tls.cert = m.client.certPem;
      tls.key = m.client.keyPem;
    }
  };
  apply(source.current());
  source.on('change', apply);
  return { tls, stop: () => source.off('change', apply) };
}

export interface Engine {
  nc: NatsConnection;
  jsm: JetStreamManager;
  kv: KV;
  /** one key per node and kind: who publishes it (max age = the membership TTL) */
  leases: KV;
  close(): Promise<void>;
}

export async function connectEngine(opts: EngineOptions): Promise<Engine> {
  const tls = opts.tls ? tlsFrom(opts.tls) : undefined;
  const options: ConnectionOptions = {
    servers: [...opts.servers],
    name: opts.name,
    // keep trying for ever: the relay serves (not ready) meanwhile
    waitOnFirstConnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    pingInterval: 5000,
    maxPingOut: 2,
    // every publish is a request; an async stack trace captured for each costs more than the publish
    noAsyncTraces: true,
    ...(opts.user ? { user: opts.user, pass: opts.password ?? '' } : {}),
    ...(opts.credsFile ? { authenticator: credsAuthenticator(readFileSync(opts.credsFile)) } : {}),
    ...(tls ? { tls: tls.tls } : {}),
  };
  const nc = await connect(options);
  try {
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm, opts);
    const kvm = new Kvm(nc);
    const bucket = { ttl: opts.membershipTtlMs, history: 1, replicas: opts.streamReplicas };
    const kv = await kvm.create(membersBucket(opts.stream), bucket);
    const leases = await kvm.create(leasesBucket(opts.stream), bucket);
    return {
      nc,
      jsm,
      kv,
      leases,
      close: async () => {
        tls?.stop();
        await nc.drain().catch(() => nc.close());
      },
    };
  } catch (err) {
    tls?.stop();
    await nc.close();
    throw err;
  }
}

/** Creates the stream, or keeps the one that exists (saying so when its limits differ from the flags). */
async function ensureStream(jsm: JetStreamManager, opts: EngineOptions): Promise<void> {
  const wanted: Partial<StreamConfig> & { name: string } = {
    name: opts.stream,
    subjects: STREAM_SUBJECTS,
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(opts.maxAgeMs),
    max_bytes: opts.maxBytes,
    num_replicas: opts.streamReplicas,
    duplicate_window: nanos(opts.duplicateWindowMs),
  };
  let existing;
  try {
    existing = await jsm.streams.info(opts.stream);
  } catch {
    try {
      await jsm.streams.add(wanted);
      opts.logger.info({ stream: opts.stream, replicas: opts.streamReplicas }, 'created the JetStream stream');
      return;
    } catch (err) {
      // another replica created it at the same moment
      existing = await jsm.streams.info(opts.stream).catch(() => {
        throw new Error(`cannot create JetStream stream ${opts.stream}: ${(err as Error).message}`);
      });
    }
  }
  const c = existing.config;
  const differs = c.max_age !== wanted.max_age || c.max_bytes !== wanted.max_bytes || c.num_replicas !== wanted.num_replicas || c.duplicate_window !== wanted.duplicate_window;
  if (differs) {
    opts.logger.warn(
      { stream: opts.stream, existing: { max_age: c.max_age, max_bytes: c.max_bytes, num_replicas: c.num_replicas, duplicate_window: c.duplicate_window } },
      'the JetStream stream exists with other limits than the flags; keeping it as it is (change it with the nats CLI)',
    );
  }
}
