// How status is derived and shown: rates from sampled counters, kubectl-style ages and
// tables, and when `kubearmor-relay status` reports a problem.
import { describe, expect, it } from 'vitest';
import { RecentRates } from '../server/recent-rates.js';
import { tidyDetails } from '../server/upstream.js';
import type { RelayStatus } from '../server/status.js';
import { formatStatus, problemsOf, runStatus } from '../server/tools/status.js';
import { freePort } from '../harness/free-port.js';
import { humanDuration, relativeTime, renderTable } from '../server/tools/table.js';

describe('recent rates from sampled counters', () => {
  it('gives events per second over the window and when a count last moved', () => {
    const r = new RecentRates(['a', 'b'] as const, 10_000);
    r.add(0, { a: 0, b: 0 });
    r.add(1000, { a: 10, b: 0 });
    r.add(2000, { a: 20, b: 0 });
    expect(r.perSecond()).toEqual({ a: 10, b: 0 });
    expect(r.lastChangeAt).toBe(2000);
    r.add(3000, { a: 20, b: 0 });
    expect(r.lastChangeAt).toBe(2000);
  });

  it('forgets samples older than the window', () => {
    const r = new RecentRates(['a'] as const, 2000);
    r.add(0, { a: 0 });
    r.add(1000, { a: 100 });
    for (let t = 2000; t <= 5000; t += 1000) r.add(t, { a: 100 + (t - 1000) / 1000 });
    expect(r.perSecond()).toEqual({ a: 1 });
  });

  it('starts afresh when counts go down (the node left and came back)', () => {
    const r = new RecentRates(['a'] as const, 10_000);
    r.add(0, { a: 500 });
    r.add(1000, { a: 3 });
    r.add(2000, { a: 5 });
    expect(r.perSecond()).toEqual({ a: 2 });
  });

  it('reports no rate and no last change for a node that never sent', () => {
    const r = new RecentRates(['a'] as const, 10_000);
    r.add(0, { a: 0 });
    r.add(1000, { a: 0 });
    expect(r.perSecond()).toEqual({ a: 0 });
    expect(r.lastChangeAt).toBeUndefined();
  });
});

describe('kubectl-style output', () => {
  it('writes ages as kubectl does', () => {
    expect([5_000, 119_000, 200_000, 3_600_000, 5 * 3_600_000 + 60_000, 30 * 3_600_000, 3 * 86_400_000 + 3_600_000, 29 * 86_400_000].map(humanDuration)).toEqual([
      '5s',
      '119s',
      '3m20s',
      '60m',
      '5h1m',
      '30h',
      '3d1h',
      '29d',
    ]);
  });

  it('says "in" for the future and "ago" for the past', () => {
    expect(relativeTime(new Date(29 * 86_400_000).toISOString(), 0)).toBe('in 29d');
    expect(relativeTime(new Date(0).toISOString(), 90_000)).toBe('90s ago');
  });

  it('pads columns to their widest cell, three spaces apart', () => {
    expect(renderTable(['A', 'LONGER'], [['xx', 'y'], ['x', 'zz']])).toBe('A    LONGER\nxx   y\nx    zz');
  });
});

const NOW = Date.parse('2026-11-30T12:00:00Z');
const base: RelayStatus = {
  relay: { version: '0.1.0', startedAt: '2026-11-30T11:00:00Z', uptimeSeconds: 3600, transport: 'plaintext', ready: true },
  nodes: [
    {
      address: '10.0.0.5:32767',
      name: 'worker-1',
      source: 'kubernetes',
      connected: true,
      since: '2026-11-30T11:00:05Z',
      lastEventAt: '2026-11-30T11:59:59Z',
      eventsPerSecond: { alert: 12.5, log: 3, message: 0 },
      lastError: null,
      lastErrorAt: null,
    },
  ],
  consumers: [
    { peer: '10.1.0.9:40122', kind: 'alert', filter: 'policy', since: '2026-11-30T11:30:00Z', queuedEvents: 0, queuedBytes: 0, dropped: 0, stalled: false, subject: 'CN=siem' },
  ],
  certificates: [],
};

describe('the status view', () => {
  it('shows the relay, a table of nodes with state and age, and a table of consumers', () => {
    const text = formatStatus(base, NOW);
    expect(text).toContain('kubearmor-relay-ts 0.1.0, ready, up 60m');
    expect(text).toMatch(/^NODE +NAME +SOURCE +STATE +AGE /m);
    expect(text).toMatch(/^10\.0\.0\.5:32767 +worker-1 +kubernetes +Connected +59m +12\.5 +3 +0 +1s ago$/m);
    expect(text).toMatch(/^10\.1\.0\.9:40122 +alert +policy +30m +0 +0 +0 +Keeping up +CN=siem$/m);
  });

  it('shows certificate expiry as a countdown and the last reload', () => {
    const cert = {
      role: 'server' as const,
      subject: 'CN=kubearmor-relay',
      serial: '0A',
      notBefore: '2026-11-01T00:00:00Z',
      notAfter: '2026-12-29T12:00:00Z',
      loadedAt: '2026-11-30T11:00:00Z',
      lastReloadAt: '2026-11-30T11:50:00Z',
      lastReloadResult: 'failure' as const,
      lastReloadError: 'server.key does not match server.crt',
    };
    const text = formatStatus({ ...base, certificates: [cert] }, NOW);
    expect(text).toMatch(/^server +CN=kubearmor-relay +0A +in 29d +2026-12-29T12:00:00Z$/m);
    expect(text).toContain('Last reload:   failure 10m ago: server.key does not match server.crt');
  });

  it('finds nothing wrong with a ready relay connected to every node', () => {
    expect(problemsOf(base)).toEqual([]);
  });

  it('names a disconnected node with its reason, and a relay that is not ready', () => {
    const down = { ...base.nodes[0]!, connected: false, lastError: 'connect ECONNREFUSED 10.0.0.5:32767' };
    expect(problemsOf({ ...base, relay: { ...base.relay, ready: false }, nodes: [down] })).toEqual([
      'relay not ready',
      'node 10.0.0.5:32767 (worker-1) disconnected: connect ECONNREFUSED 10.0.0.5:32767',
    ]);
  });
});

describe('the reason a node is shown disconnected', () => {
  it("is grpc-js's dial failure without its wrapping", () => {
    expect(tidyDetails('No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:42002. Resolution note: ')).toBe('cannot connect: connect ECONNREFUSED 127.0.0.1:42002');
    expect(tidyDetails('Deadline exceeded after 5.001s')).toBe('Deadline exceeded after 5.001s');
  });
});

describe('kubearmor-relay status without a relay', () => {
  it('exits 1 with one line naming the address it could not read', async () => {
    const port = await freePort();
    const out: string[] = [];
    const err: string[] = [];
    const code = await runStatus(['--http', `127.0.0.1:${port}`], { stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
    expect(code).toBe(1);
    expect(out).toEqual([]);
    expect(err).toHaveLength(1);
    expect(err[0]).toMatch(new RegExp(`^status: cannot read http://127\\.0\\.0\\.1:${port}/status: .*ECONNREFUSED`));
  });

  it('exits 2 naming the flag when --http is not HOST:PORT', async () => {
    const err: string[] = [];
    expect(await runStatus(['--http', 'localhost'], { stderr: (l) => err.push(l) })).toBe(2);
    expect(err.join('\n')).toContain('--http');
  });
});
