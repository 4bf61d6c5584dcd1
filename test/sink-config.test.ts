// The sinks' configuration from the environment, as the KubeArmor operator sets it: which
// sinks are on, where they send, and what is refused or warned about. In process: the
// relay-level behaviour (exit code 2, one line) is in sinks.test.ts.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../server/flags.js';
import { sinkConfigsFromEnv } from '../server/sinks/config.js';
import { newCa } from './helpers/certs-fixtures.js';

describe('sink configuration', () => {
  it('leaves both sinks off without ENABLE_DASHBOARDS or ENABLE_OPENSEARCH_DASHBOARD', async () => {
    expect(await sinkConfigsFromEnv({ ES_URL: 'http://es:9200', OS_ALERTS_INDEX: 'x' })).toEqual({ sinks: [], warnings: [] });
  });

  it('indexes alerts only into kubearmor-alerts by default for Elasticsearch', async () => {
    const { sinks } = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'https://es.example:9200' });
    expect(sinks).toHaveLength(1);
    expect(sinks[0]!.name).toBe('elasticsearch');
    expect(sinks[0]!.indices).toEqual({ alert: 'kubearmor-alerts' });
    expect(sinks[0]!.insecure).toBe(false);
    expect(sinks[0]!.auth).toBeUndefined();
  });

  it('adds logs to Elasticsearch only with ES_LOGS_INDEX', async () => {
    const { sinks } = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'http://es:9200', ES_LOGS_INDEX: 'ka-logs' });
    expect(sinks[0]!.indices).toEqual({ alert: 'kubearmor-alerts', log: 'ka-logs' });
  });

  it('sends OpenSearch alerts and logs to OS_ALERTS_INDEX at http://localhost:9200 by default', async () => {
    const { sinks } = await sinkConfigsFromEnv({ ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_ALERTS_INDEX: 'kubearmor' });
    expect(sinks[0]!.url.href).toBe('http://localhost:9200/');
    expect(sinks[0]!.indices).toEqual({ alert: 'kubearmor', log: 'kubearmor' });
  });

  it('uses basic auth only when both the user name and the password are set, and warns otherwise', async () => {
    const both = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'http://es:9200', ES_USERNAME: 'elastic', ES_PASSWORD: 'pw' });
    expect(both.sinks[0]!.auth).toEqual({ username: 'elastic', password: 'pw' });
    const one = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'http://es:9200', ES_USERNAME: 'elastic' });
    expect(one.sinks[0]!.auth).toBeUndefined();
    expect(one.warnings).toEqual([expect.stringContaining('ES_USERNAME is set without ES_PASSWORD')]);
  });

  it('takes credentials written into the URL and keeps them out of it', async () => {
    const { sinks } = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'https://elastic:p%40ss@es:9200' });
    expect(sinks[0]!.auth).toEqual({ username: 'elastic', password: 'p@ss' });
    expect(sinks[0]!.url.href).toBe('https://es:9200/');
  });

  it('skips verification for any non-empty ES_ALLOW_INSECURE_TLS, as the reference, and warns when it reads like "false"', async () => {
    const yes = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'https://es:9200', ES_ALLOW_INSECURE_TLS: 'yes' });
    expect(yes.sinks[0]!.insecure).toBe(true);
    expect(yes.warnings).toEqual([]);
    const no = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'https://es:9200', ES_ALLOW_INSECURE_TLS: 'false' });
    expect(no.sinks[0]!.insecure).toBe(true);
    expect(no.warnings).toEqual([expect.stringContaining('ES_ALLOW_INSECURE_TLS="false" skips certificate verification')]);
  });

  it('skips OpenSearch verification only for OS_ALLOW_INSECURE_TLS=true', async () => {
    const base = { ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_ALERTS_INDEX: 'x', OS_URL: 'https://os:9200' };
    expect((await sinkConfigsFromEnv({ ...base, OS_ALLOW_INSECURE_TLS: 'true' })).sinks[0]!.insecure).toBe(true);
    expect((await sinkConfigsFromEnv({ ...base, OS_ALLOW_INSECURE_TLS: 'yes' })).sinks[0]!.insecure).toBe(false);
  });

  it('warns when ENABLE_DASHBOARDS is set to something other than "true" and leaves the sink off', async () => {
    const { sinks, warnings } = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: '1', ES_URL: 'http://es:9200' });
    expect(sinks).toEqual([]);
    expect(warnings).toEqual([expect.stringContaining('ENABLE_DASHBOARDS="1" is not "true"')]);
  });

  it('reads the CA bundle from ES_CA_CERT_PATH', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sink-config-'));
    const { certPem } = await newCa();
    writeFileSync(join(dir, 'ca.crt'), certPem);
    const { sinks } = await sinkConfigsFromEnv({ ENABLE_DASHBOARDS: 'true', ES_URL: 'https://es:9200', ES_CA_CERT_PATH: join(dir, 'ca.crt') });
    expect(sinks[0]!.ca).toBe(certPem);
  });

  it.each([
    [{ ENABLE_OPENSEARCH_DASHBOARD: 'true' }, 'OS_ALERTS_INDEX'],
    [{ ENABLE_DASHBOARDS: 'true' }, 'ES_URL'],
    [{ ENABLE_DASHBOARDS: 'true', ES_URL: 'ftp://es' }, 'ES_URL'],
    [{ ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_ALERTS_INDEX: 'x', OS_URL: 'not a url' }, 'OS_URL'],
    [{ ENABLE_DASHBOARDS: 'true', ES_URL: 'http://es:9200', ES_ALERTS_INDEX: '_alerts' }, 'ES_ALERTS_INDEX'],
    [{ ENABLE_OPENSEARCH_DASHBOARD: 'true', OS_ALERTS_INDEX: 'x', OS_LOGS_INDEX: 'a b' }, 'OS_LOGS_INDEX'],
    [{ ENABLE_DASHBOARDS: 'true', ES_URL: 'http://es:9200', ES_CA_CERT_PATH: '/dev/null' }, 'ES_CA_CERT_PATH'],
  ])('refuses %o with a usage error naming %s', async (env, variable) => {
    const err = await sinkConfigsFromEnv(env).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).message.startsWith(variable)).toBe(true);
  });
});
