// `kubearmor-relay status`: the relay's /status as a terminal view, in the manner of
// `kubectl get` and `hubble status`, or as the JSON itself with --json. The exit code makes
// it a probe for scripts: 0 when the relay is ready and connected to every node it knows.
import { checks, parseHostPort, parseOrExit, type FlagTable } from '../flags.js';
import type { CertificateStatus, ConsumerStatus, NodeStatus, RelayStatus } from '../status.js';
import { isoSeconds } from '../../certs/pem.js';
import { humanDuration, relativeTime, renderTable } from './table.js';

const FLAGS = {
  http: {
    type: 'string',
    default: '127.0.0.1:8080',
    form: 'HOST:PORT',
    help: "the relay's HTTP listener (--httpPort), e.g. through kubectl port-forward",
    check: (v) => (typeof v === 'string' && parseHostPort(v) ? undefined : 'not HOST:PORT'),
  },
  json: { type: 'bool', default: false, help: 'print the /status JSON as the relay answered it' },
  timeout: { type: 'duration', default: '5s', help: 'give up on a relay that does not answer within this', check: checks.atLeast(1) },
} satisfies FlagTable;

export interface StatusDeps {
  stdout?: (line: string) => void;
  stderr?: (line: string) => void;
  now?: () => number;
}

/** Exit codes: 0 healthy, 1 not ready or a node disconnected (or no answer), 2 usage. */
export async function runStatus(argv: string[], deps: StatusDeps = {}): Promise<number> {
  const out = deps.stdout ?? ((l: string) => process.stdout.write(`${l}\n`));
  const err = deps.stderr ?? ((l: string) => process.stderr.write(`${l}\n`));
  const flags = parseOrExit(
    argv,
    FLAGS,
    { command: 'status', summary: 'Shows which node daemons a relay is connected to (and why not the others), its consumers and its certificates. Exits 1 when the relay is not ready or a node is disconnected.' },
    { out, err },
  );
  if (typeof flags === 'number') return flags;

  const url = `http://${flags.http}/status`;
  let body: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(flags.timeout) });
    body = await res.text();
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${body.trim().slice(0, 200)}`);
  } catch (e) {
    const cause = (e as Error & { cause?: Error }).cause?.message;
    err(`status: cannot read ${url}: ${(e as Error).message}${cause ? ` (${cause})` : ''}`);
    return 1;
  }
  let status: RelayStatus;
  try {
    status = JSON.parse(body) as RelayStatus;
  } catch (e) {
    err(`status: ${url} did not answer JSON: ${(e as Error).message}`);
    return 1;
  }

  if (flags.json) out(JSON.stringify(status, null, 2));
  else out(formatStatus(status, deps.now?.() ?? Date.now()));
  const problems = problemsOf(status);
  for (const p of problems) err(`status: ${p}`);
  return problems.length === 0 ? 0 : 1;
}

/** Why the relay is not healthy, one line each; empty when it is. */
export function problemsOf(status: RelayStatus): string[] {
  const problems: string[] = [];
  if (!status.relay.ready) problems.push('relay not ready');
  for (const n of status.nodes) {
    if (!n.connected) problems.push(`node ${n.address}${n.name ? ` (${n.name})` : ''} disconnected${n.lastError ? `: ${n.lastError}` : ''}`);
  }
  return problems;
}

export function formatStatus(status: RelayStatus, now: number): string {
  const { relay, nodes, consumers, certificates } = status;
  const connected = nodes.filter((n) => n.connected).length;
  const sections = [
    [
      `Relay:         kubearmor-relay-ts ${relay.version}, ${relay.ready ? 'ready' : 'NOT READY'}, up ${humanDuration(relay.uptimeSeconds * 1000)}`,
      `Transport:     ${relay.transport}`,
      `Nodes:         ${connected}/${nodes.length} connected`,
      `Consumers:     ${consumers.length}`,
    ].join('\n'),
    nodes.length > 0 ? nodeTable(nodes, now) : 'No node daemons known.',
    consumers.length > 0 ? consumerTable(consumers, now) : 'No consumers.',
  ];
  if (certificates.length > 0) sections.push(certificateTable(certificates, now));
  return sections.join('\n\n');
}

const rate = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(1));

function nodeTable(nodes: readonly NodeStatus[], now: number): string {
  return renderTable(
    ['NODE', 'NAME', 'SOURCE', 'STATE', 'AGE', 'ALERTS/S', 'LOGS/S', 'MSGS/S', 'LAST EVENT', 'REASON'],
    nodes.map((n) => [
      n.address,
      n.name ?? '<unknown>',
      n.source,
      n.connected ? 'Connected' : 'Disconnected',
      humanDuration(now - new Date(n.since).getTime()),
      // the window still holds the seconds before a loss: a lost node shows no rate
      ...(['alert', 'log', 'message'] as const).map((k) => (n.connected ? rate(n.eventsPerSecond[k]) : '-')),
      n.lastEventAt ? relativeTime(n.lastEventAt, now) : '<none>',
      // a connected node's past failure is history: JSON has it, the table shows current trouble
      !n.connected && n.lastError ? `${n.lastError}${n.lastErrorAt ? ` (${relativeTime(n.lastErrorAt, now)})` : ''}` : '',
    ]),
  );
}

function consumerTable(consumers: readonly ConsumerStatus[], now: number): string {
  return renderTable(
    ['CONSUMER', 'KIND', 'FILTER', 'AGE', 'QUEUED', 'QUEUED BYTES', 'DROPPED', 'STATE', 'SUBJECT'],
    consumers.map((c) => [
      c.peer,
      c.kind,
      c.filter === '' ? '""' : c.filter,
      humanDuration(now - new Date(c.since).getTime()),
      String(c.queuedEvents),
      String(c.queuedBytes),
      String(c.dropped),
      c.stalled ? 'Stalled' : c.queuedEvents > 0 ? 'Behind' : 'Keeping up',
      c.subject ?? '',
    ]),
  );
}

function certificateTable(certs: readonly CertificateStatus[], now: number): string {
  const reload = certs[0]!;
  const table = renderTable(
    ['CERTIFICATE', 'SUBJECT', 'SERIAL', 'EXPIRES', 'NOT AFTER'],
    certs.map((c) => [c.role, c.subject, c.serial, new Date(c.notAfter).getTime() > now ? relativeTime(c.notAfter, now) : `EXPIRED ${relativeTime(c.notAfter, now)}`, isoSeconds(new Date(c.notAfter))]),
  );
  const last = reload.lastReloadAt
    ? `Last reload:   ${reload.lastReloadResult} ${relativeTime(reload.lastReloadAt, now)}${reload.lastReloadError ? `: ${reload.lastReloadError}` : ''}`
    : 'Last reload:   none';
  return `${table}\n${last} (material in use loaded ${relativeTime(reload.loadedAt, now)})`;
}
