// Elasticsearch and OpenSearch export end to end: the relay started as a user starts it,
// with the variables the KubeArmor operator sets, simulated node daemons, and a local
// stand-in for the search cluster (harness/search-cluster.ts) that the official clients
// talk to over real HTTP(S).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startSearchCluster, type SearchCluster, type SearchClusterOptions } from '../harness/search-cluster.js';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import type { Kind } from '../server/kinds.js';
import { opensslCa, opensslLeaf } from './helpers/openssl-pki.js';
import { rawWatch } from './helpers/raw-client.js';
import { metricSum } from '../harness/prom-text.js';
import { MAIN, eventually, freePort, metricValue, startRelayProcess, type RelayProcess } from './helpers/relay-process.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function cluster(opts: SearchClusterOptions): Promise<SearchCluster> {
  const c = await startSearchCluster(opts);
  cleanups.push(() => c.close());
  return c;
}

async function relayWith(nodes: number[], env: NodeJS.ProcessEnv, args: string[] = []): Promise<RelayProcess> {
  // with stdout export on, stdout carries events and the relay logs on stderr
  const logStream = Object.keys(env).some((k) => k.startsWith('ENABLE_STDOUT_')) ? 'stderr' : 'stdout';
  const relay = await startRelayProcess({ args: [`--nodes=${nodes.map((p) => `127.0.0.1:${p}`).join(',')}`, ...args], env, logStream });
  cleanups.push(() => relay.stop());
  return relay;
}

async function node(port: number, nodeName: string, opts: Partial<Parameters<typeof startFakeNode>[0]> = {}): Promise<FakeNode> {
  const n = await startFakeNode({ port, nodeName, seed: port, rate: 0, ...opts });
  cleanups.push(() => n.close());
  return n;
}

const metric = async (relay: RelayProcess, name: string, labels: Record<string, string> = {}) => metricSum(await relay.metrics(), name, labels);

/** Every stored document's source, sorted, to compare as a multiset. */
const sources = (c: SearchCluster, index: string) => [...c.docs(index).values()].map((d) => d.source).sort();

describe('Elasticsearch export (ENABLE_DASHBOARDS=true)', () => {
  it('indexes every alert exactly once into ES_ALERTS_INDEX while the cluster answers 429 and 503 and loses acknowledgements, each document equal to the stdout export line', async () => {
    const es = await cluster({ flavour: 'elasticsearch' });
    // whole requests refused, a request written but unanswered, and single documents refused
    es.queueFaults({ status: 429 }, { status: 503 }, { ackLost: true }, { status: 502 });
    es.itemFault = (id, attempt) => (attempt === 1 && id.charCodeAt(0) % 5 === 0 ? 429 : attempt === 1 && id.charCodeAt(0) % 7 === 0 ? 503 : undefined);
    const ports = [await freePort(), await freePort()];
    // the request whose answer is lost is sent again after --sinkRequestTimeout (30 s by default)
    const relay = await relayWith(ports, { ENABLE_DASHBOARDS: 'true', ES_URL: es.url, ES_ALERTS_INDEX: 'kubearmor-alerts-test', ENABLE_STDOUT_ALERTS: 'true' }, ['--sinkRequestTimeout=3s']);
    const nodes = await Promise.all(ports.map((p, i) => node(p, `node-${i}`, { count: 300, rate: 1000 })));
    await Promise.all(nodes.map((n) => n.finished('alert')));
    await eventually(() => es.docs('kubearmor-alerts-test').size >= 600 && relay.stdoutLines.length >= 600, 60_000, 'every alert indexed and printed');
    await eventually(async () => (await metric(relay, 'kubearmor_relay_sink_queued_events')) === 0, 10_000, 'the sink to settle');

    expect(es.docs('kubearmor-alerts-test').size).toBe(600);
    expect(sources(es, 'kubearmor-alerts-test')).toEqual([...relay.stdoutLines].sort());
    expect([...es.indices.keys()]).toEqual(['kubearmor-alerts-test']); // alerts only: logs and messages are not indexed
    expect(es.stats.faultsServed).toBe(4);
    // the lost acknowledgement was sent again: its documents were overwritten, not copied
    expect([...es.docs('kubearmor-alerts-test').values()].some((d) => d.version > 1)).toBe(true);
    const text = await relay.metrics();
    expect(metricValue(text, 'kubearmor_relay_sink_indexed_total', { sink: 'elasticsearch', kind: 'alert' })).toBeGreaterThanOrEqual(600);
    expect(metricValue(text, 'kubearmor_relay_sink_retried_total', { sink: 'elasticsearch' })).toBeGreaterThan(0);
    expect(metricValue(text, 'kubearmor_relay_sink_bulk_requests_total', { sink: 'elasticsearch', outcome: 'status_429' })).toBe(1);
    expect(metricValue(text, 'kubearmor_relay_sink_bulk_requests_total', { sink: 'elasticsearch', outcome: 'status_5xx' })).toBe(2);
    expect(metricValue(text, 'kubearmor_relay_sink_bulk_requests_total', { sink: 'elasticsearch', outcome: 'partial' })).toBeGreaterThan(0);
    expect(metricValue(text, 'kubearmor_relay_sink_failed_total', { sink: 'elasticsearch', kind: 'alert' })).toBe(0);
    expect(metricSum(text, 'kubearmor_relay_events_dropped_total', { reason: 'sink_full' })).toBe(0);
    expect(metricValue(text, 'kubearmor_relay_sink_last_success_timestamp_seconds', { sink: 'elasticsearch' })).toBeGreaterThan(0);
  });

  it('creates the index with date and keyword mappings for dashboards when it does not exist', async () => {
    const es = await cluster({ flavour: 'elasticsearch' });
    const port = await freePort();
    await relayWith([port], { ENABLE_DASHBOARDS: 'true', ES_URL: es.url });
    await node(port, 'node-a', { count: 5, kinds: ['alert'] });
    await eventually(() => es.docs('kubearmor-alerts').size === 5 || undefined, 20_000, 'alerts in the default index');
    const mapping = es.indices.get('kubearmor-alerts')!.mappings as { properties: Record<string, { type: string; format?: string }> };
    expect(mapping.properties.Timestamp).toEqual({ type: 'date', format: 'epoch_second' });
    expect(mapping.properties.UpdatedTime!.type).toBe('date');
    for (const field of ['NamespaceName', 'PodName', 'Operation', 'Action', 'PolicyName', 'Severity', 'HostName']) expect(mapping.properties[field]!.type).toBe('keyword');
  });

  it('keeps the mapping of an index that already exists', async () => {
    const es = await cluster({ flavour: 'elasticsearch' });
    const own = { properties: { PodName: { type: 'text' } } };
    es.indices.set('kubearmor-alerts', { mappings: own, docs: new Map() });
    const port = await freePort();
    const relay = await relayWith([port], { ENABLE_DASHBOARDS: 'true', ES_URL: es.url });
    await node(port, 'node-a', { count: 5, kinds: ['alert'] });
    await eventually(() => es.docs('kubearmor-alerts').size === 5 || undefined, 20_000, 'alerts indexed');
    expect(es.indices.get('kubearmor-alerts')!.mappings).toEqual(own);
    // logs reach the test asynchronously: wait for the line rather than look for it
    await relay.waitForLog((l) => l.msg === 'elasticsearch index ready' && l.mapping === 'kept (index exists)');
  });

  it('loses nothing for gRPC consumers while the cluster is down, counts the sink\'s drops, and resumes indexing by itself', async () => {
    // "down for a minute", shortened to 8 real seconds of refused connections
    const es = await cluster({ flavour: 'elasticsearch' });
    const port = await freePort();
    const relay = await relayWith([port], { ENABLE_DASHBOARDS: 'true', ES_URL: es.url }, ['--sinkQueueSize=100']);
    const consumer = rawWatch(relay.target, 'alert', 'policy');
    cleanups.push(() => consumer.close());
    await eventually(async () => (await metric(relay, 'kubearmor_relay_clients', { kind: 'alert' })) === 2, 10_000, 'the consumer and the sink');
    const total = 2400;
    const n = await node(port, 'node-a', { count: total, rate: 150, kinds: ['alert'] });
    await eventually(() => es.docs('kubearmor-alerts').size >= 100 || undefined, 20_000, 'indexing before the outage');
    await es.down();
    await new Promise((r) => setTimeout(r, 8000));
    const sentBeforeUp = n.sent.alert;
    await es.up();
    await n.finished('alert');
    await consumer.waitFor(total, 30_000);
    await eventually(async () => {
      const text = await relay.metrics();
      const indexed = metricValue(text, 'kubearmor_relay_sink_indexed_total', { sink: 'elasticsearch', kind: 'alert' }) ?? 0;
      const dropped = metricValue(text, 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'sink_full' }) ?? 0;
      return indexed + dropped === total && indexed === es.docs('kubearmor-alerts').size || undefined;
    }, 30_000, 'every alert indexed or counted as dropped');

    expect(consumer.events).toHaveLength(total);
    const text = await relay.metrics();
    expect(metricValue(text, 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'sink_full' })).toBeGreaterThan(0);
    expect(metricValue(text, 'kubearmor_relay_events_dropped_total', { kind: 'alert', reason: 'queue_full' })).toBe(0);
    expect(metricValue(text, 'kubearmor_relay_sink_bulk_requests_total', { sink: 'elasticsearch', outcome: 'unreachable' })).toBeGreaterThan(0);
    // indexing resumed: alerts made after the cluster came back are in it
    const seqs = [...es.docs('kubearmor-alerts').values()].map((d) => Number((JSON.parse(d.source) as { EventData: { seq: string } }).EventData.seq));
    expect(Math.max(...seqs)).toBe(total);
    expect(seqs.filter((s) => s > sentBeforeUp + 100).length).toBeGreaterThan(0);
    await relay.waitForLog((l) => l.msg === 'elasticsearch indexing again');
    await relay.waitForLog((l) => l.msg === 'elasticsearch sink queue full: events dropped for the sink');
    expect(relay.proc.exitCode).toBeNull();
  });

  it('serves consumers and counts failures when the cluster is unreachable from the start', async () => {
    const port = await freePort();
    const relay = await relayWith([port], { ENABLE_DASHBOARDS: 'true', ES_URL: `http://127.0.0.1:${await freePort()}` });
    const consumer = rawWatch(relay.target, 'alert', 'policy');
    cleanups.push(() => consumer.close());
    await eventually(async () => (await metric(relay, 'kubearmor_relay_clients', { kind: 'alert' })) === 2, 10_000, 'the consumer and the sink');
    await node(port, 'node-a', { count: 50, kinds: ['alert'] });
    await consumer.waitFor(50);
    await eventually(async () => (await metric(relay, 'kubearmor_relay_sink_bulk_requests_total', { outcome: 'unreachable' })) > 0, 15_000, 'a counted failure');
    await relay.waitForLog((l) => l.msg.startsWith('elasticsearch bulk request failed'));
  });

  it('indexes what it holds before exiting on SIGTERM', async () => {
    const es = await cluster({ flavour: 'elasticsearch' });
    const port = await freePort();
    // a long flush interval keeps the alerts queued until the shutdown flushes them
    const relay = await relayWith([port], { ENABLE_DASHBOARDS: 'true', ES_URL: es.url }, ['--sinkFlushInterval=1h']);
    const n = await node(port, 'node-a', { count: 40, kinds: ['alert'] });
    await n.finished('alert');
    await eventually(async () => (await metric(relay, 'kubearmor_relay_sink_queued_events')) === 40, 10_000, '40 alerts queued');
    expect(es.docs('kubearmor-alerts').size).toBe(0);
    expect(await relay.stop()).toBe(0);
    expect(es.docs('kubearmor-alerts').size).toBe(40);
  });
});

describe('OpenSearch export (ENABLE_OPENSEARCH_DASHBOARD=true)', () => {
  it('indexes alerts and logs into OS_ALERTS_INDEX, each document equal to the stdout export line, and no messages', async () => {
    const os = await cluster({ flavour: 'opensearch' });
    os.queueFaults({ status: 503 }, { status: 429 });
    const port = await freePort();
    const relay = await relayWith([port], { ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_URL: os.url, OS_ALERTS_INDEX: 'kubearmor', ENABLE_STDOUT_ALERTS: 'true', ENABLE_STDOUT_LOGS: 'true' });
    const n = await node(port, 'node-a', { count: 150 });
    await Promise.all((['alert', 'log', 'message'] as Kind[]).map((k) => n.finished(k)));
    await eventually(() => os.docs('kubearmor').size >= 300 && relay.stdoutLines.length >= 300, 30_000, 'alerts and logs indexed');
    expect(os.docs('kubearmor').size).toBe(300);
    expect(sources(os, 'kubearmor')).toEqual([...relay.stdoutLines].sort());
    expect([...os.indices.keys()]).toEqual(['kubearmor']);
    const text = await relay.metrics();
    expect(metricValue(text, 'kubearmor_relay_sink_indexed_total', { sink: 'opensearch', kind: 'alert' })).toBe(150);
    expect(metricValue(text, 'kubearmor_relay_sink_indexed_total', { sink: 'opensearch', kind: 'log' })).toBe(150);
  });

  it('puts logs into OS_LOGS_INDEX when that (our extension) is set', async () => {
    const os = await cluster({ flavour: 'opensearch' });
    const port = await freePort();
    await relayWith([port], { ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_URL: os.url, OS_ALERTS_INDEX: 'ka-alerts', OS_LOGS_INDEX: 'ka-logs' });
    await node(port, 'node-a', { count: 10, kinds: ['alert', 'log'] });
    await eventually(() => os.docs('ka-alerts').size === 10 && os.docs('ka-logs').size === 10 || undefined, 20_000, 'both indices filled');
  });
});

describe('TLS and basic auth toward the cluster', () => {
  const pki = (() => {
    let made: { dir: string; ca: string; otherCa: string; server: { certPem: string; keyPem: string } } | undefined;
    return () => {
      if (made) return made;
      const dir = mkdtempSync(join(tmpdir(), 'sink-pki-'));
      opensslCa(dir, 'ca', ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign']);
      opensslCa(dir, 'other', ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign']);
      const server = opensslLeaf(dir, 'server', 'ca');
      made = { dir, ca: join(dir, 'ca.crt'), otherCa: join(dir, 'other.crt'), server };
      return made;
    };
  })();
  const auth = { username: 'elastic', password: 's3cret pass' };

  async function indexedWith(flavour: 'elasticsearch' | 'opensearch', env: (url: string) => NodeJS.ProcessEnv) {
    const c = await cluster({ flavour, tls: pki().server, basicAuth: auth });
    const port = await freePort();
    const relay = await relayWith([port], env(c.url));
    await node(port, 'node-a', { count: 10, kinds: ['alert'] });
    return { c, relay };
  }

  it('indexes over HTTPS with basic auth and the CA from ES_CA_CERT_PATH', async () => {
    const { c } = await indexedWith('elasticsearch', (url) => ({ ENABLE_DASHBOARDS: 'true', ES_URL: url, ES_USERNAME: auth.username, ES_PASSWORD: auth.password, ES_CA_CERT_PATH: pki().ca }));
    await eventually(() => c.docs('kubearmor-alerts').size === 10 || undefined, 20_000, 'alerts indexed');
    expect(c.stats.authFailures).toBe(0);
  });

  it('refuses a cluster whose certificate does not chain to ES_CA_CERT_PATH', async () => {
    const { c, relay } = await indexedWith('elasticsearch', (url) => ({ ENABLE_DASHBOARDS: 'true', ES_URL: url, ES_USERNAME: auth.username, ES_PASSWORD: auth.password, ES_CA_CERT_PATH: pki().otherCa }));
    const failed = await relay.waitForLog((l) => l.msg.startsWith('elasticsearch bulk request failed'), 20_000);
    expect(String(failed.failure)).toMatch(/certificate/i);
    expect(await metric(relay, 'kubearmor_relay_sink_bulk_requests_total', { outcome: 'unreachable' })).toBeGreaterThan(0);
    expect(c.stats.bulkRequests).toBe(0);
    expect(c.indices.size).toBe(0);
  });

  it('indexes despite a wrong CA when ES_ALLOW_INSECURE_TLS is set', async () => {
    const { c } = await indexedWith('elasticsearch', (url) => ({ ENABLE_DASHBOARDS: 'true', ES_URL: url, ES_USERNAME: auth.username, ES_PASSWORD: auth.password, ES_CA_CERT_PATH: pki().otherCa, ES_ALLOW_INSECURE_TLS: 'yes' }));
    await eventually(() => c.docs('kubearmor-alerts').size === 10 || undefined, 20_000, 'alerts indexed');
  });

  it('indexes into OpenSearch over HTTPS with basic auth and OS_CA_CERT_PATH', async () => {
    const { c } = await indexedWith('opensearch', (url) => ({ ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_URL: url, OS_ALERTS_INDEX: 'ka', OS_USERNAME: auth.username, OS_PASSWORD: auth.password, OS_CA_CERT_PATH: pki().ca }));
    await eventually(() => c.docs('ka').size === 10 || undefined, 20_000, 'alerts indexed');
  });

  it('refuses an OpenSearch certificate from another CA, and accepts it with OS_ALLOW_INSECURE_TLS=true', async () => {
    const refused = await indexedWith('opensearch', (url) => ({ ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_URL: url, OS_ALERTS_INDEX: 'ka', OS_USERNAME: auth.username, OS_PASSWORD: auth.password, OS_CA_CERT_PATH: pki().otherCa }));
    const failed = await refused.relay.waitForLog((l) => l.msg.startsWith('opensearch bulk request failed'), 20_000);
    expect(String(failed.failure)).toMatch(/certificate/i);
    expect(refused.c.stats.bulkRequests).toBe(0);
    const insecure = await indexedWith('opensearch', (url) => ({ ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_URL: url, OS_ALERTS_INDEX: 'ka', OS_USERNAME: auth.username, OS_PASSWORD: auth.password, OS_CA_CERT_PATH: pki().otherCa, OS_ALLOW_INSECURE_TLS: 'true' }));
    await eventually(() => insecure.c.docs('ka').size === 10 || undefined, 20_000, 'alerts indexed');
  });

  it('counts the documents a wrong password gets refused, and keeps serving', async () => {
    const { c, relay } = await indexedWith('elasticsearch', (url) => ({ ENABLE_DASHBOARDS: 'true', ES_URL: url, ES_USERNAME: auth.username, ES_PASSWORD: 'wrong', ES_CA_CERT_PATH: pki().ca }));
    await eventually(async () => (await metric(relay, 'kubearmor_relay_sink_failed_total', { sink: 'elasticsearch' })) === 10, 20_000, '10 failed documents');
    expect(await metric(relay, 'kubearmor_relay_events_dropped_total', { reason: 'sink_rejected' })).toBe(10);
    expect(await metric(relay, 'kubearmor_relay_sink_bulk_requests_total', { outcome: 'status_4xx' })).toBeGreaterThan(0);
    expect(c.stats.authFailures).toBeGreaterThan(0);
    expect(c.docs('kubearmor-alerts').size).toBe(0);
    expect(relay.proc.exitCode).toBeNull();
  });
});

describe('sink configuration errors', () => {
  const run = (env: NodeJS.ProcessEnv) =>
    spawnSync(process.execPath, [MAIN, '--listenAddress=127.0.0.1', '--gRPCPort=0', '--httpPort=0'], { env: { ...process.env, KUBEARMOR_SERVICE: '', ...env }, encoding: 'utf8', timeout: 20_000 });

  it('exits with code 2 naming OS_ALERTS_INDEX when OpenSearch export is on without it', () => {
    const res = run({ ENABLE_OPENSEARCH_DASHBOARD: 'true' });
    expect(res.status).toBe(2);
    expect(res.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^kubearmor-relay: OS_ALERTS_INDEX must be set/)]);
  });

  it('exits with code 2 naming ES_URL when it does not parse', () => {
    const res = run({ ENABLE_DASHBOARDS: 'true', ES_URL: 'elasticsearch:9200 ' });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/^kubearmor-relay: ES_URL=.* is not a URL|^kubearmor-relay: ES_URL=.*scheme must be http or https/);
  });

  it('exits with code 2 naming ES_URL when Elasticsearch export is on without it', () => {
    const res = run({ ENABLE_DASHBOARDS: 'true' });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/^kubearmor-relay: ES_URL must be set/);
  });

  it('exits with code 2 naming ES_CA_CERT_PATH when the CA file cannot be read', () => {
    const res = run({ ENABLE_DASHBOARDS: 'true', ES_URL: 'https://127.0.0.1:9200', ES_CA_CERT_PATH: '/nonexistent/ca.crt' });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/^kubearmor-relay: ES_CA_CERT_PATH=\/nonexistent\/ca.crt: cannot read the CA file/);
  });

  it('exits with code 2 naming OS_CA_CERT_PATH when the file holds no certificate', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sink-ca-'));
    writeFileSync(join(dir, 'ca.crt'), 'not a certificate\n');
    const res = run({ ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_ALERTS_INDEX: 'ka', OS_CA_CERT_PATH: join(dir, 'ca.crt') });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/^kubearmor-relay: OS_CA_CERT_PATH=.*no PEM certificate found/);
  });

  it('exits with code 2 naming ES_ALERTS_INDEX when it is not a valid index name', () => {
    const res = run({ ENABLE_DASHBOARDS: 'true', ES_URL: 'http://127.0.0.1:9200', ES_ALERTS_INDEX: 'KubeArmor' });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/^kubearmor-relay: ES_ALERTS_INDEX="KubeArmor" is not a valid index name: it must be lowercase/);
  });
});
