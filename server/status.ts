// What `GET /status` answers and `kubearmor-relay status` prints: the node daemons the relay
// knows and why it is not connected to some, its consumers and whether they keep up, its
// certificates and when they expire. Each part comes from the component that owns it
// (upstreams, the hub, the certificate manager); this module only samples and assembles.
// Nothing secret goes in: subjects, serials and dates, never key material or certificates.
import type { ReloadRecord } from '../certs/manager.js';
import type { TlsMaterial } from '../certs/material.js';
import { notAfter, notBefore, oneLineName } from '../certs/pem.js';
import type { Hub } from './hub.js';
import { KINDS, type Kind } from './kinds.js';
import { RecentRates } from './recent-rates.js';
import type { NodeSource, UpstreamSet } from './upstreams.js';
import { VERSION } from './version.js';

export interface NodeStatus {
  address: string;
  /** HostName of its events, once one was seen */
  name: string | null;
  source: NodeSource;
  connected: boolean;
  /** ISO time it connected, or was last lost */
  since: string;
  lastEventAt: string | null;
  /** events per second over the last ~10 s, per kind */
  eventsPerSecond: Record<Kind, number>;
  lastError: string | null;
  lastErrorAt: string | null;
}

export interface ConsumerStatus {
  peer: string;
  kind: Kind;
  filter: string;
  since: string;
  queuedEvents: number;
  queuedBytes: number;
  dropped: number;
  /** full for longer than --stallTimeout without reading: events for it are dropped */
  stalled: boolean;
  /** its client certificate's subject, when the relay serves mutual TLS */
  subject: string | null;
}

export type CertificateRole = 'ca' | 'server' | 'client';

export interface CertificateStatus {
  role: CertificateRole;
  subject: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  /** when the material holding it was loaded */
  loadedAt: string;
  /** the last load, reload or renewal of the material, successful or not */
  lastReloadAt: string | null;
  lastReloadResult: ReloadRecord['result'] | null;
  lastReloadError: string | null;
}

export interface RelayStatus {
  relay: {
    version: string;
    startedAt: string;
    uptimeSeconds: number;
    transport: string;
    ready: boolean;
  };
  nodes: NodeStatus[];
  consumers: ConsumerStatus[];
  certificates: CertificateStatus[];
}

/** What the certificate manager offers; absent for a plaintext relay. */
export interface CertificateSource {
  current(): TlsMaterial;
  readonly lastReload: ReloadRecord | undefined;
}

export interface StatusParts {
  upstreams: UpstreamSet;
  hub: Hub;
  transport: { readonly name: string };
  certificates?: CertificateSource;
  ready(): boolean;
}

const KIND_NAMES = KINDS.map((k) => k.kind);
const iso = (d: Date | number | undefined): string | null => (d === undefined ? null : new Date(d).toISOString());

export class StatusBoard {
  private readonly startedAt = new Date();
  private readonly rates = new Map<string, RecentRates<Kind>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly parts: StatusParts,
    private readonly opts: { sampleMs: number; windowMs: number } = { sampleMs: 1000, windowMs: 10_000 },
  ) {}

  /** Starts sampling node counters (rates and last-event times need a history). */
  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.opts.sampleMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  snapshot(now = new Date()): RelayStatus {
    this.sample(now.getTime());
    const nodes = this.parts.upstreams.states().map((s): NodeStatus => {
      const rates = this.rates.get(s.address);
      return {
        address: s.address,
        name: s.name ?? null,
        source: s.source,
        connected: s.connected,
        since: s.since.toISOString(),
        lastEventAt: iso(rates?.lastChangeAt),
        eventsPerSecond: rates?.perSecond() ?? { alert: 0, log: 0, message: 0 },
        lastError: s.lastError ?? null,
        lastErrorAt: iso(s.lastErrorAt),
      };
    });
    return {
      relay: {
        version: VERSION,
        startedAt: this.startedAt.toISOString(),
        uptimeSeconds: Math.floor((now.getTime() - this.startedAt.getTime()) / 1000),
        transport: this.parts.transport.name,
        ready: this.parts.ready(),
      },
      nodes: nodes.sort((a, b) => a.address.localeCompare(b.address)),
      consumers: this.consumers(),
      certificates: this.parts.certificates ? certificateStatus(this.parts.certificates) : [],
    };
  }

  private sample(at = Date.now()): void {
    const seen = new Set<string>();
    for (const state of this.parts.upstreams.states()) {
      seen.add(state.address);
      let rates = this.rates.get(state.address);
      if (!rates) this.rates.set(state.address, (rates = new RecentRates(KIND_NAMES, this.opts.windowMs)));
      rates.add(at, state.received);
    }
    for (const address of this.rates.keys()) if (!seen.has(address)) this.rates.delete(address);
  }

  private consumers(): ConsumerStatus[] {
    return Object.values(this.parts.hub.channels).flatMap((channel) =>
      [...channel.subscribers].map((sub) => ({
        peer: sub.info.peer,
        kind: channel.kind,
        filter: sub.info.filter,
        since: sub.since.toISOString(),
        queuedEvents: sub.queuedEvents,
        queuedBytes: sub.queuedBytes,
        dropped: sub.dropped,
        stalled: sub.stalled,
        subject: sub.info.subject ?? null,
      })),
    );
  }
}

function certificateStatus(source: CertificateSource): CertificateStatus[] {
  const material = source.current();
  const reload = source.lastReload;
  const common = {
    loadedAt: material.loadedAt.toISOString(),
    lastReloadAt: iso(reload?.at),
    lastReloadResult: reload?.result ?? null,
    lastReloadError: reload?.reason ?? null,
  };
  const out: CertificateStatus[] = material.ca.certs.map((cert) => ({
    role: 'ca',
    subject: oneLineName(cert.subject),
    serial: cert.serialNumber,
    notBefore: notBefore(cert).toISOString(),
    notAfter: notAfter(cert).toISOString(),
    ...common,
  }));
  for (const role of ['server', 'client'] as const) {
    const id = material[role];
    if (!id) continue;
    out.push({ role, subject: oneLineName(id.cert.subject), serial: id.serial, notBefore: id.notBefore.toISOString(), notAfter: id.notAfter.toISOString(), ...common });
  }
  return out;
}
