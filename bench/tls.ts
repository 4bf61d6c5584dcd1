// `npm run bench:tls`: what mutual TLS costs and how fast rotation lands, on the relay
// started as its own process on loopback.
//   handshakes: full mutual-TLS handshakes per second the relay accepts (new connections,
//               no session resumption), from a few concurrent dialers, for a fixed time;
//   rotation:   time from the kubelet-style `..data` swap of server.crt/key to the first
//               new handshake that sees the new serial, over several swaps.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect, createSecureContext, type SecureContext } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { createCa, issueLeaf, loadCaSigner, serverSubjectAltNames } from '../certs/issue.js';
import { checks, parseOrExit } from '../server/flags.js';
import { cpuSeconds } from './ipc.js';
import { KubeletVolume, externalContents } from '../harness/kubelet-volume.js';

const FLAGS = {
  seconds: { type: 'int', default: 5, help: 'length of the handshake run', check: checks.atLeast(1) },
  dialers: { type: 'int', default: 8, help: 'concurrent dialers', check: checks.atLeast(1) },
  swaps: { type: 'int', default: 10, help: 'rotations to time', check: checks.atLeast(1) },
  json: { type: 'string', default: '', form: 'PATH', help: 'also write the results as JSON' },
} as const;

const MAIN = fileURLToPath(new URL('../server/main.js', import.meta.url));
const DAY = 86_400_000;

interface Identity {
  context: SecureContext;
}

/** One full handshake with the client identity; resolves with the server certificate's serial. */
function handshake(port: number, id: Identity): Promise<string> {
  return new Promise((resolve, reject) => {
    // One secure context for all dials: building it per connection would measure the dialer.
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', secureContext: id.context, ALPNProtocols: ['h2'], minVersion: 'TLSv1.2', rejectUnauthorized: false });
    socket.once('secureConnect', () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.once('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('handshake timed out')));
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function runTlsBench(argv: string[]): Promise<number> {
  const flags = parseOrExit(argv, FLAGS, { command: 'bench:tls', summary: 'Handshake rate and rotation latency of the relay over mutual TLS.' }, { out: (l) => process.stdout.write(`${l}\n`), err: (l) => process.stderr.write(`${l}\n`) });
  if (typeof flags === 'number') return flags;
  const dir = mkdtempSync(join(tmpdir(), 'kubearmor-relay-bench-tls-'));
  const volume = new KubeletVolume(dir);
  const caPair = await createCa({ validityMs: 30 * DAY });
  const ca = loadCaSigner(caPair.certPem, caPair.keyPem);
  const serverLeaf = () => issueLeaf(ca, { purpose: 'server', commonName: 'kubearmor-relay', ...serverSubjectAltNames({ namespace: 'kubearmor' }), validityMs: DAY });
  const client = await issueLeaf(ca, { purpose: 'client', commonName: 'bench', validityMs: DAY });
  let server = await serverLeaf();
  const files = () => externalContents({ caPem: caPair.certPem, server, client });
  volume.publish(files());
  const id: Identity = { context: createSecureContext({ ca: caPair.certPem, cert: client.certPem, key: client.keyPem, minVersion: 'TLSv1.2' }) };

  const relay = spawn(process.execPath, [MAIN, '--listenAddress=127.0.0.1', '--gRPCPort=0', '--httpPort=0', '--tlsEnabled', `--tlsCertPath=${dir}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, KUBEARMOR_SERVICE: '' },
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      relay.once('exit', (code) => reject(new Error(`relay exited with ${code}`)));
      createInterface({ input: relay.stdout! }).on('line', (line) => {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === 'relay serving feeder.LogService') resolve(entry.port!);
      });
    });

    // Handshakes: each dialer opens, completes and closes connections back to back.
    await handshake(port, id); // warm-up
    let done = 0;
    let failed = 0;
    const cpuBefore = cpuSeconds(relay.pid!);
    const started = performance.now();
    const until = started + flags.seconds * 1000;
    await Promise.all(
      Array.from({ length: flags.dialers }, async () => {
        while (performance.now() < until) {
          try {
            await handshake(port, id);
            done++;
          } catch {
            failed++;
          }
        }
      }),
    );
    const elapsed = (performance.now() - started) / 1000;
    const relayCpu = ((cpuSeconds(relay.pid!) - cpuBefore) / elapsed) * 100;
    const rate = done / elapsed;

    // Rotation: swap, then handshake every 10 ms until the new serial shows.
    const delays: number[] = [];
    for (let i = 0; i < flags.swaps; i++) {
      server = await serverLeaf();
      const want = new (await import('node:crypto')).X509Certificate(server.certPem).serialNumber;
      const t0 = performance.now();
      volume.publish(files());
      const deadline = t0 + 15_000;
      for (;;) {
        if ((await handshake(port, id).catch(() => '')) === want) break;
        if (performance.now() > deadline) throw new Error(`swap ${i + 1}: new certificate not served after 15 s`);
        await new Promise((r) => setTimeout(r, 10));
      }
      delays.push(performance.now() - t0);
    }
    const sorted = [...delays].sort((a, b) => a - b);
    const results = {
      machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version },
      handshakes: { perSecond: Math.round(rate), completed: done, failed, dialers: flags.dialers, seconds: Math.round(elapsed * 10) / 10, relayCpuPercent: Math.round(relayCpu) },
      rotation: { swaps: delays.length, p50Ms: Math.round(percentile(sorted, 50)), maxMs: Math.round(sorted.at(-1)!), minMs: Math.round(sorted[0]!) },
    };
    process.stdout.write(
      [
        `machine: ${results.machine.cpu}, ${results.machine.cores} cores, Node ${results.machine.node}`,
        `mutual-TLS handshakes accepted: ${results.handshakes.perSecond}/s (${done} in ${results.handshakes.seconds} s, ${flags.dialers} dialers, ${failed} failed, relay CPU ${results.handshakes.relayCpuPercent}%)`,
        `file swap -> new certificate served: median ${results.rotation.p50Ms} ms, min ${results.rotation.minMs} ms, max ${results.rotation.maxMs} ms over ${delays.length} ..data swaps`,
        '',
      ].join('\n'),
    );
    if (flags.json) writeFileSync(flags.json, `${JSON.stringify(results, null, 2)}\n`);
    return 0;
  } finally {
    relay.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}



const code = await runTlsBench(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`bench:tls: ${err.stack ?? err.message}\n`);
  return 1;
});
process.exit(code);
