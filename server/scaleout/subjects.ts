// The names outside consumers rely on: subjects, headers, the membership bucket.
import type { Kind } from '../kinds.js';

export const SUBJECT_PREFIX = 'kubearmor';

/**
 * A node address as one subject token: '.' separates tokens in NATS subjects, so dots
 * become '_' ("10.0.0.5:32767" -> "10_0_0_5:32767"). The exact address travels in the
 * KubeArmor-Node header.
 */
export function nodeToken(node: string): string {
  return node.replace(/[.*>\s]/g, '_');
}

export function subjectFor(kind: Kind, node: string): string {
  return `${SUBJECT_PREFIX}.${kind}.${nodeToken(node)}`;
}

/** every node's events of one kind */
export function kindFilter(kind: Kind): string {
  return `${SUBJECT_PREFIX}.${kind}.*`;
}

export const STREAM_SUBJECTS = [`${SUBJECT_PREFIX}.*.*`];

/** KV bucket names allow [A-Za-z0-9_-] */
function bucketOf(stream: string, what: string): string {
  return `${stream.replace(/[^A-Za-z0-9_-]/g, '_')}_${what}`;
}

/** who is alive (membership.ts) */
export function membersBucket(stream: string): string {
  return bucketOf(stream, 'relays');
}

/** who publishes which node and kind (lease.ts) */
export function leasesBucket(stream: string): string {
  return bucketOf(stream, 'leases');
}

/** KV keys allow [-/_=.A-Za-z0-9] */
export function memberKey(replicaId: string): string {
  return replicaId.replace(/[^-/_=.A-Za-z0-9]/g, '_');
}
