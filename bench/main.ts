// `npm run bench`: the relay under load, every party a separate process on loopback, all
// on mutual TLS (a throwaway CA from `certs init`).
//
//   bench/node.ts          simulated node daemons (many per process, pooled real events)
//   dist/server/main.js    the relay, one fresh process per run
//   bench/consumer.ts      consumers (many per process, one connection each)
//
// This file is the runner: flags, the scenarios picked, the report. One run's processes
// and accounting are in topology.ts, each scenario's runs in scenarios/, the table and
// the summary in report.ts.
//
// Scenarios (each bounded in time; --scenarios picks some; one module each in scenarios/):
//   throughput  4 nodes -> relay -> 4 consumers on all three streams, nodes flooding
//   baseline    the same consumers reading the same nodes directly (no relay), and the relay
//               forced to decode and re-encode every event (--reencode)
//   latency     the same topology at a steady 5 000 events/s: node-to-consumer time through
//               the relay and directly
//   fanout      1 node -> relay -> 1, 16, 64 consumers
//   slow        4 nodes -> relay -> 3 consumers that keep up + 1 that stops reading its socket
//   scale       200 nodes at a low rate, 500 idle consumers (+2 active ones): at rest, under load
//   sink        5 000 alerts/s to the relay and one consumer, without and with Elasticsearch
//               export into a local stand-in for the cluster (harness/search-cluster.ts)
//
// Measured: events delivered per second to consumers (a window after a warm-up), relay CPU
// (utime+stime from /proc) and peak RSS (VmHWM), latency percentiles, drops and losses
// (nodes' sent counts against every consumer's received counts once the nodes stop, and
// the relay's /metrics).
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCerts } from '../certs/cli.js';
import { HelpRequested, parseFlags, UsageError, type FlagTable } from '../server/flags.js';
import { machine, summarize, table, type BenchReport, type RunResult } from './report.js';
import { FULL, QUICK, SCENARIO_RUNS, SCENARIOS, type Scenario } from './scenarios/index.js';
import { runTopology, type Ctx } from './topology.js';

export type { BenchReport } from './report.js';
export { SCENARIOS, type Scenario } from './scenarios/index.js';

const RELAY_MAIN = fileURLToPath(new URL('../server/main.js', import.meta.url));

const FLAGS = {
  duration: { type: 'duration', default: '5s', help: 'measurement window of each run (seconds, or 1500ms, 5s...)' },
  warmup: { type: 'duration', default: '1s', help: 'time each run flows before its window opens' },
  scenarios: { type: 'list', default: [...SCENARIOS], form: SCENARIOS.join(','), help: 'scenarios to run', check: (v: unknown) => ((v as string[]).every((s) => (SCENARIOS as readonly string[]).includes(s)) ? undefined : `known scenarios: ${SCENARIOS.join(', ')}`) },
  json: { type: 'string', default: '', form: 'PATH', help: 'also write the results as JSON to PATH' },
  quick: { type: 'bool', default: false, help: 'about 1 s per run and small sizes (the smoke test)' },
  latencyRate: { type: 'int', default: 5000, help: 'events/s into the relay (all nodes, all kinds) in the latency and slow scenarios; alerts/s in the sink scenario' },
  relay: { type: 'string', default: '', form: 'PATH', help: 'relay entry point to benchmark (default: this build\'s dist/server/main.js)' },
  cpuProf: { type: 'string', default: '', form: 'DIR', help: 'run the relay with --cpu-prof, writing its profiles into DIR' },
  relayNodeArgs: { type: 'list', default: ['--max-semi-space-size=1'], form: 'ARG[,ARG...]', help: 'node options for the relay process (default: those of the container image)' },
  relayEnv: { type: 'list', default: [], form: 'K=V[,K=V...]', help: 'extra environment of the relay process, e.g. MALLOC_ARENA_MAX=2' },
} satisfies FlagTable;

export interface BenchOptions {
  durationMs: number;
  warmupMs: number;
  scenarios: Scenario[];
  quick: boolean;
  latencyRate: number;
  relayMain?: string;
  cpuProf?: string;
  /** extra node options and environment of the relay process (memory experiments) */
  relayNodeArgs?: string[];
  relayEnv?: Record<string, string>;
  log?: (line: string) => void;
}

export async function runBench(opts: BenchOptions): Promise<BenchReport> {
  const log = opts.log ?? (() => undefined);
  const sizes = opts.quick ? QUICK : FULL;
  const certDir = mkdtempSync(join(tmpdir(), 'kubearmor-bench-'));
  const m = machine();
  try {
    const quiet = { out: () => undefined, err: (t: string) => log(t.trim()) };
    if ((await runCerts(['init', `--out=${certDir}`, '--force'], quiet)) !== 0) throw new Error('certs init failed');
    const ctx: Ctx = { certDir, relayMain: opts.relayMain || RELAY_MAIN, cpuProf: opts.cpuProf ?? '', relayNodeArgs: opts.relayNodeArgs ?? [], relayEnv: opts.relayEnv ?? {}, log };
    const runs: RunResult[] = [];
    for (const scenario of SCENARIOS.filter((s) => opts.scenarios.includes(s))) {
      for (const spec of SCENARIO_RUNS[scenario]({ sizes, timing: { warmupMs: opts.warmupMs, measureMs: opts.durationMs }, latencyRate: opts.latencyRate })) {
        const t0 = Date.now();
        log(`${spec.scenario} / ${spec.variant} ...`);
        const r = await runTopology(spec, ctx);
        runs.push(r);
        const lat = r.load.latencyMs ? `, p50 ${r.load.latencyMs.p50.toFixed(2)} p99 ${r.load.latencyMs.p99.toFixed(2)} ms` : '';
        log(`  ${r.load.eventsPerSec} events/s, relay CPU ${r.load.relayCpuPct ?? '-'}%, peak RSS ${r.relayPeakRssMiB ?? '-'} MiB${lat}, lost ${r.lost} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
        if (r.errors.length > 0) log(`  errors: ${r.errors.join('; ')}`);
      }
    }
    return {
      machine: m,
      options: { durationS: opts.durationMs / 1000, warmupS: opts.warmupMs / 1000, quick: opts.quick, scenarios: opts.scenarios, latencyRate: opts.latencyRate },
      runs,
      summary: summarize(runs),
    };
  } finally {
    rmSync(certDir, { recursive: true, force: true });
  }
}

export async function main(argv: string[]): Promise<number> {
  let flags;
  try {
    flags = parseFlags(argv, FLAGS, { command: 'bench', summary: 'Benchmarks the relay: throughput, baselines, latency, fan-out, a slow consumer, scale, a search-cluster sink. Every party a process on loopback, mutual TLS.' });
    if (flags._.length > 0) throw new UsageError(`unexpected argument: ${flags._[0]}`);
  } catch (e) {
    if (e instanceof HelpRequested) {
      process.stdout.write(`${e.text}\n`);
      return 0;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const quick = flags.quick;
  const report = await runBench({
    durationMs: flags._set.has('duration') || !quick ? flags.duration : 1000,
    warmupMs: flags._set.has('warmup') || !quick ? flags.warmup : 300,
    scenarios: flags.scenarios as Scenario[],
    quick,
    latencyRate: flags.latencyRate,
    relayMain: flags.relay || undefined,
    cpuProf: flags.cpuProf || undefined,
    relayNodeArgs: flags.relayNodeArgs,
    relayEnv: Object.fromEntries(flags.relayEnv.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${table(report)}\n`);
  if (flags.json) {
    writeFileSync(flags.json, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`results written to ${flags.json}\n`);
  }
  return 0;
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
