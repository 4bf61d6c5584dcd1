// Which relay replicas dial which node daemon (rendezvous hashing): the same answer on every
// replica, and as little movement as possible when replicas come and go.
import { describe, expect, it } from 'vitest';
import { nodesOf, replicasFor } from '../server/scaleout/assignment.js';
import { messageId } from '../server/scaleout/publisher.js';
import { nodeToken, subjectFor } from '../server/scaleout/subjects.js';

const NODES = Array.from({ length: 200 }, (_, i) => `10.0.${Math.floor(i / 250)}.${i % 250}:32767`);
const REPLICAS = ['relay-a', 'relay-b', 'relay-c', 'relay-d'];

describe('assignment of node daemons to relay replicas', () => {
  it('gives every node exactly the requested number of distinct replicas, whatever order the replicas are listed in', () => {
    for (const node of NODES) {
      const chosen = replicasFor(node, REPLICAS, 2);
      expect(new Set(chosen).size).toBe(2);
      expect(replicasFor(node, [...REPLICAS].reverse(), 2)).toEqual(chosen);
    }
  });

  it('gives a node every live replica when fewer are alive than requested', () => {
    expect(replicasFor(NODES[0]!, ['relay-a'], 2)).toEqual(['relay-a']);
    expect(replicasFor(NODES[0]!, [], 2)).toEqual([]);
  });

  it('moves only the nodes of a replica that leaves', () => {
    const before = new Map(NODES.map((n) => [n, replicasFor(n, REPLICAS, 2)]));
    const after = new Map(NODES.map((n) => [n, replicasFor(n, REPLICAS.filter((r) => r !== 'relay-b'), 2)]));
    for (const node of NODES) {
      const kept = before.get(node)!.filter((r) => r !== 'relay-b');
      for (const r of kept) expect(after.get(node)).toContain(r);
      if (!before.get(node)!.includes('relay-b')) expect(after.get(node)).toEqual(before.get(node));
    }
  });

  it('spreads the nodes over the replicas', () => {
    const counts = REPLICAS.map((r) => nodesOf(r, NODES, REPLICAS, 2).length);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(NODES.length * 2);
    for (const c of counts) expect(c).toBeGreaterThan(NODES.length * 0.3);
  });
});

describe('names in NATS', () => {
  it('gives the same event from the same node the same message id, and any other event another', () => {
    const event = Buffer.from('an encoded alert');
    expect(messageId('10.0.0.5:32767', 'alert', event)).toBe(messageId('10.0.0.5:32767', 'alert', Buffer.from(event)));
    expect(messageId('10.0.0.5:32767', 'alert', event)).not.toBe(messageId('10.0.0.6:32767', 'alert', event));
    expect(messageId('10.0.0.5:32767', 'alert', event)).not.toBe(messageId('10.0.0.5:32767', 'log', event));
    expect(messageId('10.0.0.5:32767', 'alert', event)).not.toBe(messageId('10.0.0.5:32767', 'alert', Buffer.from('another alert')));
  });

  it('puts each node in one subject token, IPv6 included', () => {
    expect(subjectFor('alert', '10.0.0.5:32767')).toBe('kubearmor.alert.10_0_0_5:32767');
    expect(nodeToken('[fd00::5]:32767')).toBe('[fd00::5]:32767');
    expect(subjectFor('log', 'node-a.example:32767').split('.')).toHaveLength(3);
  });
});
