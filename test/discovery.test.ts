import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IpNameMap, startDiscovery, type Discovery, type DiscoveryOptions } from '../server/discovery.js';
import { formatHostPort } from '../server/transport.js';
import { FakeKubeApi, kubeconfigFor, pod, service } from './helpers/fake-kube-api.js';

const DAEMON = { 'kubearmor-app': 'kubearmor' };
const SELECTOR = 'kubearmor-app=kubearmor';

/** Every list onTargets was called with, and a way to wait for one that satisfies a test. */
class TargetLog {
  readonly calls: string[][] = [];
  private waiters: { predicate: (t: string[]) => boolean; resolve: (t: string[]) => void }[] = [];

  readonly onTargets = (targets: string[]): void => {
    this.calls.push(targets);
    this.waiters = this.waiters.filter((w) => {
      if (!w.predicate(targets)) return true;
      w.resolve(targets);
      return false;
    });
  };

  /** Resolves with the latest list if it already matches, else with the next one that does. */
  until(predicate: (t: string[]) => boolean): Promise<string[]> {
    const last = this.calls.at(-1);
    if (last && predicate(last)) return Promise.resolve(last);
    return new Promise((resolve) => this.waiters.push({ predicate, resolve }));
  }

  equal(expected: string[]): Promise<string[]> {
    return this.until((t) => JSON.stringify(t) === JSON.stringify(expected));
  }
}

let api: FakeKubeApi;
let dir: string;
let kubeconfig: string;
let discovery: Discovery | undefined;

beforeEach(async () => {
  api = new FakeKubeApi();
  const url = await api.start();
  dir = mkdtempSync(join(tmpdir(), 'discovery-test-'));
  kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigFor(url));
});

afterEach(async () => {
  discovery?.stop();
  discovery = undefined;
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

function start(extra: Partial<DiscoveryOptions> = {}): TargetLog {
  const log = new TargetLog();
  discovery = startDiscovery({
    kubeconfig,
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    onTargets: log.onTargets,
    // short delays keep retries quick; the logic is the same as with the defaults
    backoffInitialMs: 20,
    backoffMaxMs: 200,
    ...extra,
  });
  return log;
}

const lists = () => api.requests.filter((r) => !r.watch && r.kind === 'pods' && r.labelSelector === SELECTOR).length;
const daemonWatch = (r: { watch: boolean; kind: string; labelSelector?: string }) => r.watch && r.kind === 'pods' && r.labelSelector === SELECTOR;

describe('node daemon discovery', () => {
  it('reports Running labelled pods with an IP as podIP:32767 and ignores pending and unlabelled pods', async () => {
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    api.put('pods', pod('kubearmor', 'ka-2', { labels: DAEMON, phase: 'Pending' }));
    api.put('pods', pod('default', 'web', { ip: '10.0.0.9' }));
    const log = start();
    expect(await log.equal(['10.0.0.1:32767'])).toEqual(['10.0.0.1:32767']);
    expect(api.requests[0]).toMatchObject({ kind: 'pods', watch: false, labelSelector: SELECTOR });
  });

  it('reports an empty list after the first list when there are no node daemons yet', async () => {
    const log = start();
    await log.equal([]);
    expect(log.calls).toEqual([[]]);
  });

  it('follows pods appearing, becoming Running, changing IP, losing the label and disappearing', async () => {
    const watching = api.nextWatch(daemonWatch);
    const log = start();
    await log.equal([]);
    await watching;

    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    await log.equal(['10.0.0.1:32767']);

    api.put('pods', pod('kubearmor', 'ka-2', { labels: DAEMON, phase: 'Pending' }));
    api.put('pods', pod('kubearmor', 'ka-2', { labels: DAEMON, ip: '10.0.0.2' }));
    await log.equal(['10.0.0.1:32767', '10.0.0.2:32767']);

    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.5' }));
    await log.equal(['10.0.0.2:32767', '10.0.0.5:32767']);

    api.put('pods', pod('kubearmor', 'ka-2', { labels: {}, ip: '10.0.0.2' }));
    await log.equal(['10.0.0.5:32767']);

    api.remove('pods', 'kubearmor', 'ka-1');
    await log.equal([]);

    // every call carried a changed set: no duplicates in a row
    for (let i = 1; i < log.calls.length; i++) expect(log.calls[i]).not.toEqual(log.calls[i - 1]);
    expect(lists()).toBe(1);
  });

  it('writes IPv6 targets in brackets', async () => {
    api.put('pods', pod('kubearmor', 'ka-6', { labels: DAEMON, ip: 'fd00::17' }));
    const log = start({ port: 4000 });
    await log.equal(['[fd00::17]:4000']);
    expect(formatHostPort('10.1.2.3', 32767)).toBe('10.1.2.3:32767');
  });

  it('lists and watches only the given namespace when one is set', async () => {
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    api.put('pods', pod('elsewhere', 'ka-x', { labels: DAEMON, ip: '10.0.0.8' }));
    const watching = api.nextWatch(daemonWatch);
    const log = start({ namespace: 'kubearmor' });
    await log.equal(['10.0.0.1:32767']);
    expect((await watching).namespace).toBe('kubearmor');
    expect(api.requests.every((r) => r.namespace === 'kubearmor')).toBe(true);
  });

  it('resumes a broken watch from the last resourceVersion without listing again', async () => {
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    const firstWatch = api.nextWatch(daemonWatch);
    const log = start();
    await log.equal(['10.0.0.1:32767']);
    await firstWatch;
    api.put('pods', pod('kubearmor', 'ka-2', { labels: DAEMON, ip: '10.0.0.2' }));
    await log.equal(['10.0.0.1:32767', '10.0.0.2:32767']);
    const lastSeen = api.resourceVersion;

    const resumed = api.nextRequest(daemonWatch);
    api.breakWatches('destroy');
    // changed while the client is disconnected: it must come from the resumed watch
    api.put('pods', pod('kubearmor', 'ka-3', { labels: DAEMON, ip: '10.0.0.3' }));
    expect((await resumed).resourceVersion).toBe(lastSeen);
    await log.equal(['10.0.0.1:32767', '10.0.0.2:32767', '10.0.0.3:32767']);

    // and a watch the server ends cleanly (its timeout) is resumed the same way
    const resumedAgain = api.nextRequest(daemonWatch);
    const rvBefore = api.resourceVersion;
    api.breakWatches('end');
    expect((await resumedAgain).resourceVersion).toBe(rvBefore);
    expect(lists()).toBe(1);
  });

  it('relists when a resumed watch is answered with HTTP 410 Gone', async () => {
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    api.put('pods', pod('kubearmor', 'ka-2', { labels: DAEMON, ip: '10.0.0.2' }));
    const firstWatch = api.nextWatch(daemonWatch);
    const log = start();
    await log.equal(['10.0.0.1:32767', '10.0.0.2:32767']);
    const staleRv = (await firstWatch).resourceVersion;

    api.goneAs = 'http';
    const relisted = api.nextRequest((r) => !r.watch && r.labelSelector === SELECTOR);
    api.breakWatches('destroy');
    api.remove('pods', 'kubearmor', 'ka-2');
    api.forgetHistory();
    await relisted;
    await log.equal(['10.0.0.1:32767']);
    expect(lists()).toBe(2);
    expect(api.requests.some((r) => daemonWatch(r) && r.resourceVersion === staleRv)).toBe(true);
  });

  it('relists when a resumed watch is answered with an ERROR event of code 410', async () => {
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    api.put('pods', pod('kubearmor', 'ka-2', { labels: DAEMON, ip: '10.0.0.2' }));
    const firstWatch = api.nextWatch(daemonWatch);
    const log = start();
    await log.equal(['10.0.0.1:32767', '10.0.0.2:32767']);
    await firstWatch;

    api.goneAs = 'event';
    api.breakWatches('end');
    api.remove('pods', 'kubearmor', 'ka-1');
    api.forgetHistory();
    await log.equal(['10.0.0.2:32767']);
    expect(lists()).toBe(2);
  });

  it('relists when an open watch reports ERROR 410 Expired', async () => {
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    const firstWatch = api.nextWatch(daemonWatch);
    const log = start();
    await log.equal(['10.0.0.1:32767']);
    await firstWatch;
    const relisted = api.nextRequest((r) => !r.watch && r.labelSelector === SELECTOR);
    const rewatch = api.nextWatch(daemonWatch);
    api.sendWatchError(410, 'Expired');
    await relisted;
    const again = await rewatch;
    expect(again.resourceVersion).toBe(api.resourceVersion);
    expect(lists()).toBe(2);
  });

  it('pages through a long list with limit and continue', async () => {
    for (let i = 1; i <= 5; i++) api.put('pods', pod('kubearmor', `ka-${i}`, { labels: DAEMON, ip: `10.0.0.${i}` }));
    const log = start({ listPageSize: 2 });
    await log.equal(['10.0.0.1:32767', '10.0.0.2:32767', '10.0.0.3:32767', '10.0.0.4:32767', '10.0.0.5:32767']);
    const pages = api.requests.filter((r) => !r.watch);
    expect(pages.map((r) => [r.limit, r.continue])).toEqual([
      [2, undefined],
      [2, '2'],
      [2, '4'],
    ]);
    expect(log.calls).toHaveLength(1);
  });

  it('retries a failing list with backoff until it succeeds', async () => {
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    api.failLists(3);
    const log = start();
    await log.equal(['10.0.0.1:32767']);
    expect(lists()).toBe(4);
    expect(log.calls).toEqual([['10.0.0.1:32767']]);
  });

  it('backs off instead of looping when the server ends every watch at once', async () => {
    const lines: { msg?: string; delayMs?: number }[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    api.endWatchesAtOnce = true;
    let watches = 0;
    const fourWatches = new Promise<void>((resolve) => {
      const count = () => {
        if (++watches === 4) resolve();
        else void api.nextWatch(daemonWatch).then(count);
      };
      void api.nextWatch(daemonWatch).then(count);
    });
    start({ logger });
    await fourWatches;
    const delays = lines.filter((l) => l.msg === 'watch of kubearmor pods ended').map((l) => l.delayMs!);
    expect(delays.length).toBeGreaterThanOrEqual(3);
    for (const d of delays) expect(d).toBeGreaterThan(0);
    // equal jitter keeps each delay in the upper half of a doubling ceiling
    expect(delays[2]!).toBeGreaterThanOrEqual(delays[0]!);
    expect(lists()).toBe(1);
  });

  it('stops every request on stop() and calls onTargets no more', async () => {
    const watching = api.nextWatch(daemonWatch);
    const log = start();
    await log.equal([]);
    await watching;
    expect(api.openWatches).toBe(1);
    discovery!.stop();
    await vi.waitFor(() => expect(api.openWatches).toBe(0));
    const requestsAtStop = api.requests.length;
    api.put('pods', pod('kubearmor', 'ka-1', { labels: DAEMON, ip: '10.0.0.1' }));
    // let any stray timer or callback run
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(log.calls).toEqual([[]]);
    expect(api.requests.length).toBe(requestsAtStop);
  });

  it('throws at start when the kubeconfig file cannot be read', () => {
    expect(() => start({ kubeconfig: join(dir, 'missing') })).toThrow();
  });
});

describe('IP name map', () => {
  it('keeps only the latest claimant of an IP', () => {
    const map = new IpNameMap();
    map.set('10.0.0.1', 'pod/a/old');
    map.set('10.0.0.1', 'pod/a/new');
    expect(map.delete('10.0.0.1', 'pod/a/old')).toBe(false);
    expect(map.get('10.0.0.1')).toBe('pod/a/new');
    expect(map.lookup('10.0.0.1')).toBe('pod/a/new');
    expect(map.delete('10.0.0.1', 'pod/a/new')).toBe(true);
    expect(map.size).toBe(0);
  });

  it('follows all pods and services, skipping host-network pods, finished pods and headless services', async () => {
    const ipNames = new IpNameMap();
    api.put('pods', pod('default', 'web', { ip: '10.1.0.5', ips: ['10.1.0.5', 'fd00::5'] }));
    api.put('pods', pod('kube-system', 'node-agent', { ip: '192.168.1.10', hostNetwork: true }));
    api.put('pods', pod('default', 'job-done', { ip: '10.1.0.6', phase: 'Succeeded' }));
    api.put('services', service('default', 'web-svc', '10.96.0.20'));
    api.put('services', service('default', 'headless', 'None'));
    api.put('services', service('default', 'dual', ['10.96.0.30', 'fd00:96::30']));
    const servicesWatch = api.nextWatch((r) => r.kind === 'services');
    const podsWatch = api.nextWatch((r) => r.kind === 'pods' && !r.labelSelector);
    start({ ipNames });
    await Promise.all([servicesWatch, podsWatch]);

    expect(ipNames.get('10.1.0.5')).toBe('pod/default/web');
    expect(ipNames.get('fd00::5')).toBe('pod/default/web');
    expect(ipNames.get('10.96.0.20')).toBe('svc/default/web-svc');
    expect(ipNames.get('10.96.0.30')).toBe('svc/default/dual');
    expect(ipNames.get('fd00:96::30')).toBe('svc/default/dual');
    expect(ipNames.get('192.168.1.10')).toBeUndefined();
    expect(ipNames.get('10.1.0.6')).toBeUndefined();
    expect(ipNames.get('None')).toBeUndefined();
    expect(ipNames.size).toBe(5);

    // changes through the watches
    api.put('pods', pod('default', 'api', { ip: '10.1.0.7' }));
    api.put('services', service('default', 'web-svc', '10.96.0.21'));
    api.remove('pods', 'default', 'web');
    await vi.waitFor(() => {
      expect(ipNames.get('10.1.0.7')).toBe('pod/default/api');
      expect(ipNames.get('10.96.0.21')).toBe('svc/default/web-svc');
      expect(ipNames.get('10.96.0.20')).toBeUndefined();
      expect(ipNames.get('10.1.0.5')).toBeUndefined();
      expect(ipNames.get('fd00::5')).toBeUndefined();
    });

    // a pod that finishes gives its IP back; a new pod may take it over
    api.put('pods', pod('default', 'api', { ip: '10.1.0.7', phase: 'Succeeded' }));
    api.put('pods', pod('default', 'api-2', { ip: '10.1.0.7' }));
    await vi.waitFor(() => expect(ipNames.get('10.1.0.7')).toBe('pod/default/api-2'));

    // a relist after 410 drops what vanished while the history was lost
    api.goneAs = 'http';
    const relisted = api.nextRequest((r) => !r.watch && r.kind === 'services');
    api.breakWatches('destroy');
    api.remove('services', 'default', 'dual');
    api.forgetHistory();
    await relisted;
    await vi.waitFor(() => {
      expect(ipNames.get('10.96.0.30')).toBeUndefined();
      expect(ipNames.get('10.96.0.21')).toBe('svc/default/web-svc');
      expect(ipNames.get('10.1.0.7')).toBe('pod/default/api-2');
    });
  });

  it('does not watch pods and services at large when no map is given', async () => {
    const watching = api.nextWatch(daemonWatch);
    const log = start();
    await log.equal([]);
    await watching;
    expect(api.requests.every((r) => r.kind === 'pods' && r.labelSelector === SELECTOR)).toBe(true);
  });
});
