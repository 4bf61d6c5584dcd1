// Certificate and handshake metrics. They live on the registry the caller passes (never
// prom-client's global one) and are fetched back when already registered there, because
// the manager and the transport (or several of them in one test process) share a registry.
import { Counter, Gauge, Registry } from 'prom-client';

export type CertName = 'ca' | 'server' | 'client';
export type ReloadResult = 'success' | 'failure';
export type HandshakeSide = 'server' | 'client';

export interface CertMetrics {
  /** NotAfter in Unix seconds; cert = ca (earliest-expiring CA in the bundle), server, client */
  expiry: Gauge<'cert'>;
  reloads: Counter<'result'>;
}

function registered<T>(registry: Registry | undefined, name: string, create: (registers: Registry[]) => T): T {
  if (registry) {
    const existing = registry.getSingleMetric(name);
    if (existing) return existing as unknown as T;
  }
  return create(registry ? [registry] : []);
}

export function certMetrics(registry?: Registry): CertMetrics {
  const expiry = registered(
    registry,
    'kubearmor_relay_cert_expiry_timestamp_seconds',
    (registers) =>
      new Gauge<'cert'>({
        name: 'kubearmor_relay_cert_expiry_timestamp_seconds',
        help: 'NotAfter of the certificate in use, in Unix seconds (cert=ca is the earliest-expiring CA of ca.crt)',
        labelNames: ['cert'],
        registers,
      }),
  );
  const reloads = registered(registry, 'kubearmor_relay_cert_reloads_total', (registers) => {
    const c = new Counter<'result'>({
      name: 'kubearmor_relay_cert_reloads_total',
      help: 'Attempts to swap in changed certificate material; failure = rejected, the previous material stays in use',
      labelNames: ['result'],
      registers,
    });
    c.inc({ result: 'success' }, 0);
    c.inc({ result: 'failure' }, 0);
    return c;
  });
  return { expiry, reloads };
}

export function handshakeFailureCounter(registry?: Registry): Counter<'side' | 'reason'> {
  return registered(
    registry,
    'kubearmor_relay_tls_handshake_failures_total',
    (registers) =>
      new Counter<'side' | 'reason'>({
        name: 'kubearmor_relay_tls_handshake_failures_total',
        help: 'TLS handshakes refused or failed. side=server: a peer connecting to us; side=client: a peer we dialed',
        labelNames: ['side', 'reason'],
        registers,
      }),
  );
}
