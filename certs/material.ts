// The immutable shape of "current key material", shared by the manager (which builds it)
// and the transport (which reads it at every handshake). Objects are frozen so a holder of
// an old generation can never see it change underneath it.
import type { X509Certificate } from 'node:crypto';
import type { CertPool } from './chain.js';

export type Role = 'server' | 'client';

/** One certificate + private key pair, validated against the trust bundle it came with. */
export interface Identity {
  readonly certPem: string;
  readonly keyPem: string;
  readonly cert: X509Certificate;
  /** the bundle CA that signed `cert` */
  readonly issuer: X509Certificate;
  readonly serial: string;
  readonly fingerprint256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** ca.crt: every certificate in it is a trust anchor (several during a CA rotation). */
export interface TrustBundle {
  readonly pem: string;
  readonly certs: readonly X509Certificate[];
  /** the same certificates as the verifier reads them */
  readonly pool: CertPool;
  readonly fingerprints: readonly string[];
  /** the earliest NotAfter among the CAs: what the expiry gauge reports */
  readonly earliestNotAfter: Date;
  /** entries that cannot issue (not cA=TRUE, or no keyCertSign): trusted only as themselves */
  readonly notCas: readonly string[];
}

export interface TlsMaterial {
  /** 1 for the first material, +1 at every successful swap */
  readonly generation: number;
  /** where it came from, e.g. "external /var/lib/kubearmor/tls" */
  readonly origin: string;
  readonly ca: TrustBundle;
  readonly server?: Identity;
  readonly client?: Identity;
  readonly loadedAt: Date;
}

/**
 * What the transport needs from a certificate source: the current material and a
 * 'change' event. The CertManager implements it; tests and tools may pass anything shaped so.
 */
export interface TlsMaterialSource {
  current(): TlsMaterial;
  on(event: 'change', listener: (material: TlsMaterial) => void): unknown;
  off(event: 'change', listener: (material: TlsMaterial) => void): unknown;
}
