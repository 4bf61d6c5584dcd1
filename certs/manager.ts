// The single owner of the relay's key material: the CA trust bundle, the server identity
// and the client identity. Everything else asks it for `current()` at the moment of use
// and listens for 'change'. New material is validated completely before it replaces the
// old; a bad update is logged (once per change), counted, and the old material stays.
//
// external: ca.crt + <role>.crt/.key are read from the directory and re-read when they change.
// self:     only ca.crt + ca.key are read; leaves are issued in memory and renewed at 2/3
//           of their lifetime and whenever the CA files change.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { CaSigner } from './issue.js';
import type { Identity, Role, TlsMaterial, TlsMaterialSource, TrustBundle } from './material.js';
import { type CertMetrics, certMetrics } from './metrics.js';
import { certLabel, isoSeconds, oneLineName } from './pem.js';
import { checkValidity, loadIdentity, loadTrustBundle } from './verify.js';
import { FileSetWatcher, type FileSnapshot, readFileSet } from './watch.js';
import type { Certificate } from './x509.js';

export type CertProvider = 'external' | 'self';

export interface CertManagerOptions {
  provider: CertProvider;
  dir: string;
  /** lifetime of self-issued leaves */
  validityMs: number;
  /** namespace of the relay Service, for the self-issued server SANs */
  namespace: string;
  extraDnsNames: readonly string[];
  extraIpAddresses: readonly string[];
  /** the pod's IP (env POD_IP), added to self-issued server SANs */
  podIp?: string;
  /** period of the content checksum check that backs up the directory watch */
  checkIntervalMs: number;
  /** which identities to hold: the relay needs both, a node daemon 'server', a consumer 'client' */
  roles: readonly Role[];
  logger: Logger;
  registry?: Registry;
}

/** Every default in one place. */
export const CERT_MANAGER_DEFAULTS: Readonly<Omit<CertManagerOptions, 'logger' | 'registry' | 'podIp'>> = Object.freeze({
  provider: 'external' as CertProvider,
  dir: '/var/lib/kubearmor/tls',
  validityMs: 30 * 24 * 3_600_000,
  namespace: 'kubearmor',
  extraDnsNames: [] as string[],
  extraIpAddresses: [] as string[],
  checkIntervalMs: 10_000,
  roles: ['server', 'client'] as Role[],
});

export type CertManagerInit = Partial<CertManagerOptions> & { logger: Logger };

const LEAF_NAMES: Record<Role, string> = { server: 'kubearmor-relay', client: 'kubearmor-relay-client' };
const RENEW_RETRY_MS = 30_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

export class CertManager extends EventEmitter implements TlsMaterialSource {
  readonly options: Readonly<CertManagerOptions>;
  private material: TlsMaterial | undefined;
  private watcher: FileSetWatcher | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewAt = 0;
  private signer: CaSigner | undefined;
  private bundle: TrustBundle | undefined;
  /** serialises reloads and renewals so two never interleave */
  private queue: Promise<void> = Promise.resolve();
  private readonly metrics: CertMetrics;
  private readonly log: Logger;
  private closed = false;

  constructor(init: CertManagerInit) {
    super();
    const roles = init.roles ?? CERT_MANAGER_DEFAULTS.roles;
    if (roles.length === 0 && (init.provider ?? CERT_MANAGER_DEFAULTS.provider) === 'self') throw new Error('self provider needs at least one role');
    this.options = Object.freeze({
      ...CERT_MANAGER_DEFAULTS,
      podIp: process.env.POD_IP || undefined,
      ...stripUndefined(init),
      logger: init.logger,
      roles: [...roles],
    });
    this.log = init.logger.child({ component: 'certs' });
    this.metrics = certMetrics(init.registry);
  }

  /** The files this manager reads from its directory. */
  get files(): string[] {
    if (this.options.provider === 'self') return ['ca.crt', 'ca.key'];
    return ['ca.crt', ...this.options.roles.flatMap((r) => [`${r}.crt`, `${r}.key`])];
  }

  /** Loads the initial material; rejects with a precise reason if it is unusable. */
  async start(): Promise<TlsMaterial> {
    if (this.material) return this.material;
    const snapshot = await readFileSet(this.options.dir, this.files);
    try {
      await this.install(snapshot);
    } catch (err) {
      throw new Error(`TLS material (${this.options.provider}) in ${this.options.dir} is unusable: ${(err as Error).message}`);
    }
    this.watcher = new FileSetWatcher({
      dir: this.options.dir,
      files: this.files,
      initialChecksum: snapshot.checksum,
      intervalMs: this.options.checkIntervalMs,
      logger: this.log,
      onChange: (changed) => this.enqueue(() => this.reload(changed)),
    });
    return this.material!;
  }

  current(): TlsMaterial {
    if (!this.material) throw new Error('CertManager.current() called before start() succeeded');
    return this.material;
  }

  /** Re-reads the directory now instead of waiting for the watch or the periodic check. */
  async checkNow(): Promise<void> {
    await this.watcher?.check();
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    if (this.renewTimer) clearTimeout(this.renewTimer);
  }

  override on(event: 'change', listener: (material: TlsMaterial) => void): this {
    return super.on(event, listener);
  }

  override off(event: 'change', listener: (material: TlsMaterial) => void): this {
    return super.off(event, listener);
  }

  private enqueue(task: () => Promise<void>): void {
    this.queue = this.queue.then(task, task);
  }

  private async reload(snapshot: FileSnapshot): Promise<void> {
    if (this.closed) return;
    try {
      await this.install(snapshot);
      this.metrics.reloads.inc({ result: 'success' });
    } catch (err) {
      this.metrics.reloads.inc({ result: 'failure' });
      this.log.warn(
        { dir: this.options.dir, reason: (err as Error).message, generation: this.material?.generation },
        'changed TLS material rejected; still using the previous material',
      );
    }
  }

  /** Validates a snapshot of the files and swaps it in; throws (changing nothing) if unusable. */
  private async install(snapshot: FileSnapshot): Promise<void> {
    const read = (name: string): string => {
      const text = snapshot.contents.get(name);
      if (text === undefined) throw new Error(`${join(this.options.dir, name)}: ${snapshot.unreadable.get(name) ?? 'unreadable'}`);
      return text;
    };
    const bundle = loadTrustBundle(read('ca.crt'));
    const weak = bundle.pool.certs.filter((c) => rsaBits(c) < MIN_RECOMMENDED_RSA_BITS).map((c) => `${certLabel(c.node)} (RSA ${rsaBits(c)})`);
    if (weak.length > 0) this.log.warn({ certificates: weak }, `ca.crt holds RSA keys under ${MIN_RECOMMENDED_RSA_BITS} bits: accepted (as Go accepts them), but too weak for new deployments`);
    if (bundle.notCas.length > 0) {
      this.log.warn({ certificates: bundle.notCas }, 'ca.crt holds certificates that are not CAs: they can issue nothing and are trusted only as themselves');
    }
    if (this.options.provider === 'external') {
      const identities: Partial<Record<Role, Identity>> = {};
      for (const role of this.options.roles) {
        identities[role] = loadIdentity({ certPem: read(`${role}.crt`), keyPem: read(`${role}.key`), certName: `${role}.crt`, keyName: `${role}.key` }, bundle, role);
      }
      this.swap(bundle, identities, `external ${this.options.dir}`);
      return;
    }
    const keyMode = snapshot.modes.get('ca.key') ?? 0;
    if (keyMode & 0o004) {
      this.log.warn({ file: join(this.options.dir, 'ca.key'), mode: keyMode.toString(8).padStart(4, '0') }, 'the CA private key is readable by every user of this machine; make it 0600 (or 0440 with fsGroup)');
    }
    // @peculiar/x509 costs ~8 MiB of a 128 MiB pod: loaded only by the self provider.
    const { loadCaSigner } = await import('./issue.js');
    const signer = loadCaSigner(read('ca.crt'), read('ca.key'));
    const expired = checkValidity(signer.cert, new Date(), 'CA');
    if (expired) throw new Error(`ca.key: ${expired.detail}`);
    const identities = await this.issueAll(signer, bundle);
    this.signer = signer;
    this.bundle = bundle;
    this.swap(bundle, identities, `self-issued from ${join(this.options.dir, 'ca.key')}`);
  }

  private async issueAll(signer: CaSigner, bundle: TrustBundle): Promise<Partial<Record<Role, Identity>>> {
    const o = this.options;
    const { issueLeaf, serverSubjectAltNames } = await import('./issue.js');
    const identities: Partial<Record<Role, Identity>> = {};
    for (const role of o.roles) {
      const sans = role === 'server' ? serverSubjectAltNames({ namespace: o.namespace, podIp: o.podIp, extraDnsNames: o.extraDnsNames, extraIpAddresses: o.extraIpAddresses }) : {};
      const commonName = role === 'server' ? LEAF_NAMES.server : `${LEAF_NAMES.client}@${hostname()}`;
      const pair = await issueLeaf(signer, { purpose: role, commonName, ...sans, validityMs: o.validityMs });
      // the same check as for external files: a leaf we could not verify must not be served
      identities[role] = loadIdentity({ ...pair, certName: `self-issued ${role} certificate`, keyName: `self-issued ${role} key` }, bundle, role);
    }
    return identities;
  }

  private swap(ca: TrustBundle, identities: Partial<Record<Role, Identity>>, origin: string): void {
    const material: TlsMaterial = Object.freeze({
      generation: (this.material?.generation ?? 0) + 1,
      origin,
      ca,
      ...identities,
      loadedAt: new Date(),
    });
    this.material = material;
    this.metrics.expiry.set({ cert: 'ca' }, ca.earliestNotAfter.getTime() / 1000);
    for (const role of ['server', 'client'] as const) {
      const id = material[role];
      if (id) this.metrics.expiry.set({ cert: role }, id.notAfter.getTime() / 1000);
    }
    this.log.info(
      {
        generation: material.generation,
        origin,
        cas: ca.certs.map((c) => `${oneLineName(c.subject)} (until ${isoSeconds(new Date(c.validTo))})`),
        server: material.server && { serial: material.server.serial, notAfter: isoSeconds(material.server.notAfter) },
        client: material.client && { serial: material.client.serial, notAfter: isoSeconds(material.client.notAfter) },
      },
      material.generation === 1 ? 'TLS material loaded' : 'TLS material replaced',
    );
    if (this.options.provider === 'self') this.scheduleRenewal(material);
    if (material.generation > 1) this.emit('change', material);
  }

  /** Renews self-issued leaves at 2/3 of the shortest remaining lifetime. */
  private scheduleRenewal(material: TlsMaterial): void {
    const now = Date.now();
    const due = (['server', 'client'] as const)
      .map((r) => material[r])
      .filter((id): id is Identity => id !== undefined)
      .map((id) => now + ((id.notAfter.getTime() - now) * 2) / 3);
    if (due.length === 0) return;
    this.renewAt = Math.min(...due);
    this.armRenewal(this.renewAt - now);
  }

  private armRenewal(delayMs: number): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    if (this.closed) return;
    // setTimeout cannot wait longer than ~24.8 days: wake up and re-arm for long lifetimes
    this.renewTimer = setTimeout(() => this.enqueue(() => this.renew()), Math.max(0, Math.min(delayMs, MAX_TIMER_MS)));
    this.renewTimer.unref();
  }

  private async renew(): Promise<void> {
    if (this.closed || !this.signer || !this.bundle) return;
    if (Date.now() < this.renewAt) return this.armRenewal(this.renewAt - Date.now());
    try {
      const identities = await this.issueAll(this.signer, this.bundle);
      this.swap(this.bundle, identities, this.material?.origin ?? 'self');
    } catch (err) {
      this.log.error({ reason: (err as Error).message }, `renewing self-issued certificates failed; retrying in ${RENEW_RETRY_MS / 1000}s`);
      this.armRenewal(RENEW_RETRY_MS);
    }
  }
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Below this, RSA keys are accepted (Go's floor is 1024) but warned about. */
const MIN_RECOMMENDED_RSA_BITS = 2048;

function rsaBits(cert: Certificate): number {
  return cert.publicKey?.asymmetricKeyType === 'rsa' ? (cert.publicKey.asymmetricKeyDetails?.modulusLength ?? 0) : Number.POSITIVE_INFINITY;
}
