// Which search-cluster sinks are on and how they connect, from the environment variables
// the KubeArmor operator sets on the relay Deployment (`spec.adapters.elasticsearch`) and
// the reference relay reads. This module is loaded always and stays small: the clients
// themselves are imported only when a sink is on (sinks/index.ts).
//
// A sink that is switched on but misconfigured is a UsageError naming the variable (exit
// 2, like a bad flag); an unreachable cluster is not an error here at all.
import { readBounded } from '../../certs/watch.js';
import { parseCertificates } from '../../certs/pem.js';
import { UsageError } from '../flags.js';
import type { Kind } from '../kinds.js';

export type SinkName = 'elasticsearch' | 'opensearch';

export interface SinkConfig {
  name: SinkName;
  /** the cluster's URL, credentials stripped (they are in `auth`) */
  url: URL;
  /** index per kind indexed; a kind absent here is not subscribed */
  indices: Partial<Record<Kind, string>>;
  auth?: { username: string; password: string };
  /** PEM CA bundle trusted for the cluster's certificate (instead of the system roots) */
  ca?: string;
  /** skip verification of the cluster's certificate */
  insecure: boolean;
}

/** Non-fatal remarks about the configuration, logged once the logger exists. */
export interface SinkConfigResult {
  sinks: SinkConfig[];
  warnings: string[];
}

interface Vars {
  enable: string;
  url: string;
  alertsIndex: string;
  logsIndex: string;
  username: string;
  password: string;
  caPath: string;
  insecure: string;
}

const ES: Vars = {
  enable: 'ENABLE_DASHBOARDS',
  url: 'ES_URL',
  alertsIndex: 'ES_ALERTS_INDEX',
  logsIndex: 'ES_LOGS_INDEX',
  username: 'ES_USERNAME',
  password: 'ES_PASSWORD',
  caPath: 'ES_CA_CERT_PATH',
  insecure: 'ES_ALLOW_INSECURE_TLS',
};

const OS: Vars = {
  enable: 'ENABLE_OPENSEARCH_DASHBOARD',
  url: 'OS_URL',
  alertsIndex: 'OS_ALERTS_INDEX',
  logsIndex: 'OS_LOGS_INDEX',
  username: 'OS_USERNAME',
  password: 'OS_PASSWORD',
  caPath: 'OS_CA_CERT_PATH',
  insecure: 'OS_ALLOW_INSECURE_TLS',
};

export const ES_DEFAULT_ALERTS_INDEX = 'kubearmor-alerts';
export const OS_DEFAULT_URL = 'http://localhost:9200';

export async function sinkConfigsFromEnv(env: NodeJS.ProcessEnv): Promise<SinkConfigResult> {
  const warnings: string[] = [];
  const sinks: SinkConfig[] = [];
  const get = (name: string): string => env[name] ?? '';
  const switchedOn = (name: string): boolean => {
    const value = get(name);
    // as the reference relay: exactly "true" turns it on; say so when a near miss does not
    if (value !== '' && value !== 'true' && value !== 'false') warnings.push(`${name}=${JSON.stringify(value)} is not "true": that export stays off`);
    return value === 'true';
  };

  if (switchedOn(ES.enable)) {
    // Elasticsearch: alerts only (ES_LOGS_INDEX, ours, adds logs); ES_URL has no default.
    const url = parseUrl(ES.url, get(ES.url), undefined);
    const indices: Partial<Record<Kind, string>> = { alert: indexName(ES.alertsIndex, get(ES.alertsIndex) || ES_DEFAULT_ALERTS_INDEX) };
    if (get(ES.logsIndex)) indices.log = indexName(ES.logsIndex, get(ES.logsIndex));
    const insecureValue = get(ES.insecure);
    // the reference skips verification for any non-empty value, "false" included
    if (/^(false|0|no)$/i.test(insecureValue)) warnings.push(`${ES.insecure}=${JSON.stringify(insecureValue)} skips certificate verification: like the reference relay, any non-empty value does; unset it to verify`);
    sinks.push(await finish('elasticsearch', ES, url, indices, insecureValue !== '', get, warnings));
  }

  if (switchedOn(OS.enable)) {
    // OpenSearch: alerts and logs into OS_ALERTS_INDEX (OS_LOGS_INDEX, ours, splits logs off).
    const url = parseUrl(OS.url, get(OS.url), OS_DEFAULT_URL);
    if (!get(OS.alertsIndex)) throw new UsageError(`${OS.alertsIndex} must be set when ${OS.enable}=true (the index OpenSearch alerts and logs go to)`);
    const alerts = indexName(OS.alertsIndex, get(OS.alertsIndex));
    const logs = get(OS.logsIndex) ? indexName(OS.logsIndex, get(OS.logsIndex)) : alerts;
    sinks.push(await finish('opensearch', OS, url, { alert: alerts, log: logs }, get(OS.insecure) === 'true', get, warnings));
  }
  return { sinks, warnings };
}

async function finish(
  name: SinkName,
  vars: Vars,
  url: URL,
  indices: Partial<Record<Kind, string>>,
  insecure: boolean,
  get: (name: string) => string,
  warnings: string[],
): Promise<SinkConfig> {
  const config: SinkConfig = { name, url, indices, insecure };
  const username = get(vars.username) || decodeURIComponent(url.username);
  const password = get(vars.password) || decodeURIComponent(url.password);
  url.username = '';
  url.password = '';
  if (username && password) config.auth = { username, password };
  else if (username || password) warnings.push(`${username ? vars.username : vars.password} is set without ${username ? vars.password : vars.username}: ${name} requests go without basic auth (both are needed)`);
  const caPath = get(vars.caPath);
  if (caPath) config.ca = await readCa(vars.caPath, caPath);
  if (config.ca && url.protocol === 'http:') warnings.push(`${vars.caPath} is set but ${vars.url} is http: the CA is not used`);
  return config;
}

function parseUrl(variable: string, value: string, fallback: string | undefined): URL {
  const text = value || fallback;
  if (!text) throw new UsageError(`${variable} must be set: the URL of the cluster, e.g. https://elasticsearch.example:9200`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${variable}=${JSON.stringify(text)} is not a URL; expected http(s)://HOST[:PORT][/PATH]`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${variable}=${JSON.stringify(text)}: the scheme must be http or https`);
  if (url.search || url.hash) throw new UsageError(`${variable}=${JSON.stringify(text)}: a query or fragment is not allowed`);
  return url;
}

/** Elasticsearch and OpenSearch index name rules: a bad name would fail every document. */
function indexName(variable: string, name: string): string {
  const problem =
    name !== name.toLowerCase()
      ? 'must be lowercase'
      : /[\\/*?"<>| ,#:]/.test(name)
        ? 'must not contain \\ / * ? " < > | space , # :'
        : /^[-_+]/.test(name)
          ? 'must not start with -, _ or +'
          : name === '.' || name === '..'
            ? 'must not be . or ..'
            : Buffer.byteLength(name) > 255
              ? 'must be at most 255 bytes'
              : undefined;
  if (problem) throw new UsageError(`${variable}=${JSON.stringify(name)} is not a valid index name: it ${problem}`);
  return name;
}

async function readCa(variable: string, path: string): Promise<string> {
  let text: string;
  try {
    ({ text } = await readBounded(path));
  } catch (err) {
    throw new UsageError(`${variable}=${path}: cannot read the CA file: ${(err as Error).message}`);
  }
  try {
    parseCertificates(text, path);
  } catch (err) {
    throw new UsageError(`${variable}=${path}: ${(err as Error).message}`);
  }
  return text;
}
