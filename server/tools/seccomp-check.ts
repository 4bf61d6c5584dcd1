// `kubearmor-relay seccomp check`: runs the relay's own paths in this process, under whatever
// seccomp filter the process is confined by (the container's profile when run with
// `kubectl exec`, or scripts/seccomp-exec.py locally), and reports each path that fails and
// the system call that was refused, so that a new node, kernel or Node version can be
// checked without reading the kernel's audit log by hand.
//
// Naming the refused call needs the filter's help: under seccomp-exec.py --name-refused a
// refused call fails with errno 3000 + its number (3999: refused for its arguments), which
// this module turns into a name with libseccomp's tables (syscall-names.ts). Under the
// plain profile a refusal is an EPERM, reported as such with the path that hit it.
import { once } from 'node:events';
import { createSocket } from 'node:dgram';
import { Resolver, promises as dnsPromises } from 'node:dns';
import { mkdtempSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { arch, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import pino from 'pino';
import { runCerts } from '../../certs/cli.js';
import { startApp, type App } from '../app.js';
import { parseRelayFlags } from '../config.js';
import { HelpRequested, UsageError } from '../flags.js';
import { EXPLAIN_USAGE, runExplain } from './seccomp-explain.js';
import { SYSCALL_NAMES, syscallTable, type SyscallArch } from './syscall-names.js';

const USAGE = `usage: kubearmor-relay seccomp check

Runs the relay's own paths in this process (certificate issue, mutual TLS serve and dial,
the Kubernetes discovery client, certificate file watch, DNS through getaddrinfo and
c-ares, a signal) and prints, for each, ok or the error and the refused call.
Only loopback addresses are used. Exit status 0 when every path works, 1 otherwise.

Run it confined the way the relay runs:
  kubectl -n kubearmor exec deploy/kubearmor-relay -- /nodejs/bin/node /app/dist/server/main.js seccomp check
  /usr/bin/python3 scripts/seccomp-exec.py --profile deploy/seccomp/kubearmor-relay.json --name-refused -- node dist/server/main.js seccomp check`;

/** errno values of scripts/seccomp-exec.py --name-refused (3000 + syscall number; 3999). */
export const REFUSED_BASE = 3000;
export const REFUSED_FOR_ARGUMENTS = 3999;
const PATH_TIMEOUT_MS = 15_000;

export interface PathResult {
  path: string;
  ok: boolean;
  error?: string;
  /** the refused call, when the filter said which (seccomp-exec.py --name-refused) */
  refused?: string;
}

/** The errno values an error carries: its own, and "system error -N" in its message. */
function errnosOf(e: { errno?: unknown; message?: unknown }): number[] {
  const own = typeof e.errno === 'number' ? [Math.abs(e.errno)] : [];
  return [...own, ...[...String(e.message ?? '').matchAll(/system error -?(\d+)\b/g)].map((m) => Number(m[1]))];
}

/** The call a refused-call errno (3000 + number, or 3999) names, if the errno is one. */
function nameRefused(errno: number, table: SyscallArch | undefined): string | undefined {
  if (errno === REFUSED_FOR_ARGUMENTS) return 'a call refused for its arguments (clone, prctl, prlimit64 or socket)';
  if (errno < REFUSED_BASE || errno > REFUSED_FOR_ARGUMENTS) return undefined;
  const nr = errno - REFUSED_BASE;
  const name = table ? SYSCALL_NAMES[table][nr] : undefined;
  return name ? `${name} (${table} #${nr})` : `system call #${nr}`;
}

/** A refused-call errno found in an error or its causes, as a name. */
export function refusedCall(err: unknown, table = syscallTable(arch())): string | undefined {
  const seen = new Set<unknown>();
  const visit = (e: unknown): string | undefined => {
    if (!e || typeof e !== 'object' || seen.has(e)) return undefined;
    seen.add(e);
    const o = e as { errno?: unknown; message?: unknown; cause?: unknown; errors?: unknown; info?: unknown };
    for (const errno of errnosOf(o)) {
      const name = nameRefused(errno, table);
      if (name) return name;
    }
    for (const next of [o.cause, o.info, ...(Array.isArray(o.errors) ? o.errors : [])]) {
      const found = visit(next);
      if (found) return found;
    }
    return undefined;
  };
  return visit(err);
}

function withTimeout<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${PATH_TIMEOUT_MS} ms`)), PATH_TIMEOUT_MS);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function until(what: string, test: () => boolean | Promise<boolean>): Promise<void> {
  await withTimeout(
    what,
    (async () => {
      while (!(await test())) await new Promise((r) => setTimeout(r, 50));
    })(),
  );
}

/** A Kubernetes API on loopback that lists no pods and holds watches open: enough for discovery. */
async function emptyKubeApi(): Promise<{ server: Server; url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const watching = /[?&]watch=(1|true)/.test(req.url ?? '');
    res.writeHead(200, { 'content-type': 'application/json' });
    if (watching) return; // held open until the relay closes it
    const kind = req.url?.includes('/services') ? 'ServiceList' : 'PodList';
    res.end(JSON.stringify({ kind, apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

function kubeconfig(url: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'check', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'check', user: { token: 'seccomp-check' } }],
    contexts: [{ name: 'check', context: { cluster: 'check', user: 'check', namespace: 'kubearmor' } }],
    'current-context': 'check',
  });
}

/** The paths, in the order the relay takes them; each resolves when it worked. */
function relayPaths(dir: string): { path: string; run: () => Promise<void> }[] {
  // The relay's warnings say what failed inside it (a refused call shows as an errno there).
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
  const apps: App[] = [];
  const withWarnings = async (run: () => Promise<void>) => {
    try {
      await run();
    } catch (err) {
      const seen = [...new Set(warnings)].slice(-3);
      throw seen.length ? new Error(`${(err as Error).message}; the relay warned: ${seen.join(' | ')}`, { cause: err }) : err;
    }
  };
  return [
    {
      path: 'certificates: issue a CA and leaves (certs init: key generation and signing)',
      run: async () => {
        const errors: string[] = [];
        const code = await runCerts(['init', '--out', join(dir, 'tls')], { out: () => {}, err: (t) => errors.push(t) });
        if (code !== 0) throw new Error(`certs init: ${errors.join('').trim()}`);
      },
    },
    {
      path: 'mutual TLS: serve, dial a node daemon and subscribe, with Kubernetes discovery on',
      run: () => withWarnings(async () => {
        const api = await emptyKubeApi();
        try {
          writeFileSync(join(dir, 'kubeconfig'), kubeconfig(api.url));
          const common = ['--listenAddress=127.0.0.1', '--gRPCPort=0', '--httpPort=0', '--tlsEnabled', `--tlsCertPath=${join(dir, 'tls')}`, '--tlsCertProvider=external'];
          const node = await startApp(parseRelayFlags(common, {}), {}, logger);
          apps.push(node);
          const target = `127.0.0.1:${node.relay.grpcPort}`;
          const relay = await startApp(parseRelayFlags([...common, `--nodes=${target}`, `--kubeconfig=${join(dir, 'kubeconfig')}`], {}), {}, logger);
          apps.push(relay);
          await until('the relay to connect to the node daemon over mutual TLS', async () =>
            (await relay.relay.metrics.upstreamConnected.get()).values.some((v) => v.labels.node === target && v.value === 1),
          );
          await until('discovery to list pods', () => api.requests.some((u) => u.startsWith('/api/v1/') && u.includes('pods')));
          // a consumer's handshake, with the client certificate
          const tlsDir = join(dir, 'tls');
          const socket = tlsConnect({
            host: '127.0.0.1',
            port: relay.relay.grpcPort,
            ca: readFileSync(join(tlsDir, 'ca.crt')),
            cert: readFileSync(join(tlsDir, 'client.crt')),
            key: readFileSync(join(tlsDir, 'client.key')),
            ALPNProtocols: ['h2'],
          });
          try {
            await withTimeout('a consumer TLS handshake', once(socket, 'secureConnect'));
          } finally {
            socket.destroy();
          }
        } finally {
          while (apps.length) await apps.pop()!.close();
          api.server.closeAllConnections();
          api.server.close();
        }
      }),
    },
    {
      path: 'file watch: a certificate directory changes (inotify)',
      run: async () => {
        const watched = join(dir, 'watched');
        writeFileSync(watched, 'a');
        const watcher = watch(dir, { persistent: false });
        try {
          const changed = once(watcher, 'change');
          writeFileSync(watched, 'b');
          await withTimeout('a change event', changed);
        } finally {
          watcher.close();
        }
      },
    },
    {
      path: 'DNS: getaddrinfo for localhost, and a c-ares query to a stub on 127.0.0.1',
      run: async () => {
        await withTimeout('getaddrinfo(localhost)', dnsPromises.lookup('localhost'));
        const stub = createSocket('udp4');
        stub.on('message', (q, from) => {
          // the question back with RCODE 3 (NXDOMAIN): a real answer, from loopback only
          const reply = Buffer.concat([q.subarray(0, 2), Buffer.from([0x81, 0x83]), q.subarray(4, 6), Buffer.alloc(6), q.subarray(12)]);
          stub.send(reply, from.port, from.address);
        });
        stub.bind(0, '127.0.0.1');
        await once(stub, 'listening');
        try {
          const resolver = new Resolver({ timeout: 2000, tries: 1 });
          resolver.setServers([`127.0.0.1:${stub.address().port}`]);
          const answer = await withTimeout(
            'a c-ares TXT query',
            new Promise<string | undefined>((resolve) => resolver.resolveTxt('kubearmor.kubearmor.svc', (err) => resolve(err?.code))),
          );
          if (answer !== 'ENOTFOUND') throw new Error(`c-ares TXT query: expected ENOTFOUND from the stub, got ${answer ?? 'an answer'}`);
        } finally {
          stub.close();
        }
      },
    },
    {
      path: 'signal: SIGUSR2 delivered to this process and handled',
      run: async () => {
        const got = once(process, 'SIGUSR2');
        process.kill(process.pid, 'SIGUSR2');
        await withTimeout('SIGUSR2', got);
      },
    },
  ];
}

/** This process's seccomp mode, from /proc/self/status: '2' is a filter. */
function seccompMode(): string | undefined {
  try {
    return /^Seccomp:\s*(\d)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

function describeMode(mode: string | undefined): string {
  return mode === '2' ? 'confined by a seccomp filter' : mode === '0' ? 'NOT confined (no seccomp filter: every path will pass)' : `seccomp mode ${mode ?? 'unknown'}`;
}

function cpuPkeys(): string {
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    return flags.includes('pku') && flags.includes('ospke') ? 'yes' : 'no';
  } catch {
    return 'unknown';
  }
}

export async function checkPaths(): Promise<PathResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'kubearmor-relay-seccomp-check-'));
  const results: PathResult[] = [];
  try {
    for (const { path, run } of relayPaths(dir)) {
      try {
        await run();
        results.push({ path, ok: true });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        results.push({ path, ok: false, error: `${e.code ? `${e.code} ` : ''}${e.message}`, refused: refusedCall(err) });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

export function formatReport(results: PathResult[], confined = true): string {
  const lines = results.map((r) => (r.ok ? `ok      ${r.path}` : `FAILED  ${r.path}\n        ${r.error}${r.refused ? `\n        refused call: ${r.refused}` : ''}`));
  const refused = [...new Set(results.flatMap((r) => (r.refused ? [r.refused] : [])))];
  const unnamed = results.filter((r) => !r.ok && !r.refused).length;
  if (refused.length === 0 && unnamed === 0) lines.push(confined ? 'every path works under this filter' : 'every path works (unconfined: this says nothing about a profile)');
  if (refused.length > 0) lines.push(`refused calls: ${refused.join(', ')}: add them to deploy/seccomp/kubearmor-relay.json (see deploy/seccomp/README.md)`);
  if (unnamed > 0) {
    lines.push(
      `${unnamed} path(s) failed without naming a call (plain EPERM, or a library that hides the errno): run again under seccomp-exec.py --name-refused, ` +
        "or under the audit profile and pipe the kernel's type=1326 records into `kubearmor-relay seccomp explain` (deploy/seccomp/README.md)",
    );
  }
  return lines.join('\n');
}

export async function runSeccomp(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === '-h') throw new HelpRequested(`${USAGE}\n\n${EXPLAIN_USAGE}`);
  if (sub === 'explain') return runExplain(rest);
  if (sub !== 'check' || rest.length > 0) throw new UsageError(`seccomp: expected \`seccomp check\` or \`seccomp explain\` (got ${argv.join(' ') || 'nothing'})\n${USAGE}\n\n${EXPLAIN_USAGE}`);
  const mode = seccompMode();
  process.stdout.write(`kubearmor-relay seccomp check: node ${process.version} ${arch()}, ${describeMode(mode)}, CPU memory protection keys: ${cpuPkeys()}, V8 flags: ${process.execArgv.join(' ') || '(none)'}\n`);
  const results = await checkPaths();
  process.stdout.write(`${formatReport(results, mode === '2')}\n`);
  return results.every((r) => r.ok) ? 0 : 1;
}
