// `npm run demo`: two simulated node daemons, the relay (its own process, started as a
// user would) and a consumer, all on loopback and all on mutual TLS from a throwaway CA.
// Events from both nodes flow through the relay to the consumer; after a short run each
// node gets a one-line summary: sent, received by the relay, delivered, lost.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { runCerts } from '../certs/cli.js';
import { checks, parseOrExit } from '../server/flags.js';
import { KINDS, KIND_BY_NAME, type Kind } from '../server/kinds.js';
import { decodeToObject } from '../server/proto.js';
import { openMutualTls } from '../server/tls.js';
import { PlaintextTransport, type Transport } from '../server/transport.js';
import { startFakeNode, type FakeNode } from '../server/tools/fake-node.js';
import { freePort } from '../harness/free-port.js';
import { watch } from '../server/tools/logs.js';
import { metricSum } from '../harness/prom-text.js';

const FLAGS = {
  seconds: { type: 'int', default: 8, help: 'how long the nodes produce events', check: checks.atLeast(1) },
  rate: { type: 'int', default: 2, help: 'events per second per kind per node', check: checks.atLeast(1) },
  insecure: { type: 'bool', default: false, help: 'plaintext instead of mutual TLS' },
} as const;

const MAIN = fileURLToPath(new URL('../server/main.js', import.meta.url));
const quiet = pino({ level: 'silent' });


process.stdout.on('error', () => process.exit(0)); // `npm run demo | head`

function say(who: string, text: string): void {
  process.stdout.write(`${`[${who}]`.padEnd(11)}${text}\n`);
}

/** One line per event: kind, node, and what happened. */
function oneLine(kind: Kind, bytes: Buffer): { node: string; line: string } {
  const e = decodeToObject(KIND_BY_NAME[kind].type, bytes);
  const node = String(e.HostName ?? '?');
  if (kind === 'message') return { node, line: `message ${node}  ${String(e.Level)}: ${String(e.Message)}` };
  const where = e.NamespaceName ? `${String(e.NamespaceName)}/${String(e.PodName)}` : 'host';
  const what = `${String(e.Operation)} ${String(e.ProcessName ?? '')} -> ${String(e.Resource ?? '').slice(0, 48)}`;
  const verdict = kind === 'alert' ? `${String(e.Action)} by ${String(e.PolicyName)}` : String(e.Result ?? '');
  return { node, line: `${kind.padEnd(7)} ${node}  ${where}  ${what}  [${verdict}]` };
}

async function metricsText(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return res.text();
}


export async function runDemo(argv: string[]): Promise<number> {
  const flags = parseOrExit(argv, FLAGS, { command: 'demo', summary: 'Two simulated nodes, the relay and a consumer on loopback.' }, { out: (l) => process.stdout.write(`${l}\n`), err: (l) => process.stderr.write(`${l}\n`) });
  if (typeof flags === 'number') return flags;
  const dir = mkdtempSync(join(tmpdir(), 'kubearmor-relay-demo-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true })); // the CA key must not outlive the demo
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  let interrupted = false;
  const interrupt = new Promise<void>((resolve) =>
    process.once('SIGINT', () => {
      interrupted = true;
      resolve();
    }),
  );

  try {
    let nodeTransport: Transport = new PlaintextTransport();
    let consumerTransport: Transport = new PlaintextTransport();
    const tlsArgs: string[] = [];
    if (!flags.insecure) {
      const silentIo = { out: () => {}, err: (t: string) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`) };
      if ((await runCerts(['init', '--out', dir], silentIo)) !== 0) throw new Error('could not create the demo CA');
      const node = await openMutualTls({ provider: 'external', dir, roles: ['server'], logger: quiet });
      const consumer = await openMutualTls({ provider: 'external', dir, roles: ['client'], logger: quiet });
      cleanups.push(() => node.manager.close(), () => consumer.manager.close());
      nodeTransport = node.transport;
      consumerTransport = consumer.transport;
      tlsArgs.push('--tlsEnabled', `--tlsCertPath=${dir}`, '--tlsCertProvider=external');
      say('demo', `throwaway CA and certificates in ${dir}; every hop is mutual TLS`);
    } else {
      say('demo', 'plaintext (--insecure)');
    }

    const count = flags.rate * flags.seconds;
    const nodes: FakeNode[] = [];
    for (const [i, nodeName] of ['node-a', 'node-b'].entries()) {
      const node = await startFakeNode({ nodeName, seed: i + 1, rate: flags.rate, count, transport: nodeTransport, hostIP: `10.0.0.${i + 11}` });
      nodes.push(node);
      cleanups.push(() => node.close());
      say(nodeName, `node daemon simulator on ${node.target}, ${flags.rate} events/s per kind, ${count} per kind`);
    }

    const grpcPort = await freePort();
    const httpPort = await freePort();
    const relay = spawn(
      process.execPath,
      [MAIN, '--listenAddress=127.0.0.1', `--gRPCPort=${grpcPort}`, `--httpPort=${httpPort}`, `--nodes=${nodes.map((n) => n.target).join(',')}`, ...tlsArgs],
      { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, KUBEARMOR_SERVICE: '' } },
    );
    const relayExit = new Promise<number | null>((resolve) => relay.once('exit', (code) => resolve(code)));
    // However the demo ends (Ctrl-C, `| head` closing stdout, a crash), the relay goes too.
    process.once('exit', () => relay.kill('SIGTERM'));
    cleanups.push(async () => {
      if (relay.exitCode === null) relay.kill('SIGTERM');
      await relayExit;
    });
    const relayReady = new Promise<void>((resolve, reject) => {
      relayExit.then((code) => reject(new Error(`relay exited with ${code}`)));
      createInterface({ input: relay.stdout! }).on('line', (line) => {
        let entry: { msg?: string; node?: string; port?: number; client?: string };
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          return;
        }
        if (entry.msg === 'relay serving feeder.LogService') {
          say('relay', `serving feeder.LogService on 127.0.0.1:${entry.port}, metrics on http://127.0.0.1:${httpPort}/metrics`);
          resolve();
        } else if (entry.msg === 'node connected' || entry.msg === 'node lost') {
          say('relay', `${entry.msg}: ${entry.node}`);
        }
      });
    });
    await relayReady;

    const delivered = new Map<string, number>();
    const expected = count * KINDS.length * nodes.length;
    let total = 0;
    let allDelivered!: () => void;
    const everythingDelivered = new Promise<void>((resolve) => (allDelivered = resolve));
    const consumer = watch({
      target: `127.0.0.1:${grpcPort}`,
      streams: KINDS.map((k) => ({ kind: k.kind, filter: k.acceptedFilters?.[0] ?? '' })),
      transport: consumerTransport,
      onEvent: (kind, bytes) => {
        const { node, line } = oneLine(kind, bytes);
        delivered.set(node, (delivered.get(node) ?? 0) + 1);
        say('consumer', line);
        if (++total >= expected) allDelivered();
      },
    });
    cleanups.push(() => consumer.close());
    await consumer.ready;
    say('consumer', `watching alerts, logs and messages through the relay`);

    const allSent = Promise.all(nodes.flatMap((n) => KINDS.map((k) => n.finished(k.kind))));
    await Promise.race([allSent, interrupt]);
    // The last events may still be crossing the relay: wait for them, a little.
    if (!interrupted) await Promise.race([everythingDelivered, interrupt, new Promise((r) => setTimeout(r, 3000))]);

    const text = await metricsText(httpPort);
    process.stdout.write('\n');
    say('summary', 'node      sent  received by relay  delivered  lost');
    for (const node of nodes) {
      const sent = KINDS.reduce((s, k) => s + node.sent[k.kind], 0);
      const received = metricSum(text, 'kubearmor_relay_events_received_total', { node: node.target });
      const got = delivered.get(node.nodeName) ?? 0;
      say('summary', `${node.nodeName.padEnd(8)}${String(sent).padStart(6)}${String(received).padStart(19)}${String(got).padStart(11)}${String(sent - got).padStart(6)}`);
    }
    const dropped = metricSum(text, 'kubearmor_relay_events_dropped_total', { reason: 'queue_full' });
    say('summary', `relay drops for slow consumers: ${dropped}`);
    return 0;
  } finally {
    await cleanup();
  }
}

const code = await runDemo(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`demo: ${err.message}\n`);
  return 1;
});
process.exit(code);
