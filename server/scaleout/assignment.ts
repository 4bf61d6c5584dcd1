// Which replicas dial which node daemon: rendezvous (highest-random-weight) hashing over
// the live replicas. Every replica computes the same answer from the same membership, with
// no coordination; when a replica leaves, only the nodes it dialled move, and when one
// joins, it takes over about 1/n of the nodes and nothing else moves.
import { createHash } from 'node:crypto';

function weight(node: string, replica: string): bigint {
  const digest = createHash('sha256').update(node).update('\0').update(replica).digest();
  return digest.readBigUInt64BE(0);
}

/** The `count` replicas that dial `node` (fewer when fewer are alive), highest weight first. */
export function replicasFor(node: string, replicas: readonly string[], count: number): string[] {
  return [...replicas]
    .map((replica) => ({ replica, w: weight(node, replica) }))
    .sort((a, b) => (a.w === b.w ? (a.replica < b.replica ? -1 : 1) : a.w > b.w ? -1 : 1))
    .slice(0, count)
    .map((x) => x.replica);
}

/** The nodes `self` dials, out of `nodes`, given the live replicas. */
export function nodesOf(self: string, nodes: Iterable<string>, replicas: readonly string[], count: number): string[] {
  const mine: string[] = [];
  for (const node of nodes) if (replicasFor(node, replicas, count).includes(self)) mine.push(node);
  return mine.sort();
}
