// `kubearmor-relay seccomp explain`: reads the kernel's seccomp audit records (type=1326,
// from `journalctl -k`, `dmesg`, /var/log/audit/audit.log or `ausearch -m SECCOMP`) and
// names each call by architecture, so that nobody turns syscall numbers into names by hand.
// With --profile it also says which of them the profile does not allow.
import { readFileSync } from 'node:fs';
import { parseFlags, type FlagTable } from '../flags.js';
import { SYSCALL_NAMES, auditArch, type SyscallArch } from './syscall-names.js';

export const EXPLAIN_USAGE = `usage: kubearmor-relay seccomp explain [--profile FILE] [--comm node] [RECORDS_FILE...]

Names the system calls in the kernel's seccomp records (type=1326 / SECCOMP) read from the
files given or from stdin, e.g.
  journalctl -k | kubearmor-relay seccomp explain --profile deploy/seccomp/kubearmor-relay.json`;

const FLAGS = {
  profile: { type: 'string', default: '', help: 'seccomp profile JSON: mark the calls it does not allow' },
  comm: { type: 'string', default: 'node', help: 'only records of processes with this comm (empty: all)' },
} satisfies FlagTable;

export interface SeccompRecord {
  arch: SyscallArch | undefined;
  archHex: string;
  nr: number;
  name: string;
  comm: string;
  exe: string;
}

function field(line: string, key: string): string | undefined {
  const m = new RegExp(`(?:^|\\s)${key}=(?:"([^"]*)"|(\\S+))`).exec(line);
  return m ? (m[1] ?? m[2]) : undefined;
}

/** The seccomp records in a text (one per line, kernel or auditd format). */
export function parseSeccompRecords(text: string): SeccompRecord[] {
  const records: SeccompRecord[] = [];
  for (const line of text.split('\n')) {
    if (!/type=1326\b|type=SECCOMP\b/.test(line)) continue;
    const archHex = field(line, 'arch') ?? '';
    const nrText = field(line, 'syscall') ?? '';
    const arch = auditArch(archHex);
    // ausearch -i writes names already (arch=x86_64 syscall=pkey_mprotect)
    const nr = Number(nrText);
    const name = Number.isInteger(nr) ? (arch ? SYSCALL_NAMES[arch][nr] : undefined) || `#${nr}` : nrText;
    records.push({ arch: arch ?? (archHex === 'x86_64' || archHex === 'aarch64' ? archHex : undefined), archHex, nr: Number.isInteger(nr) ? nr : -1, name, comm: field(line, 'comm') ?? '', exe: field(line, 'exe') ?? '' });
  }
  return records;
}

type Allowance = 'always' | 'with some arguments';

function allowedBy(profilePath: string): Map<string, Allowance> {
  const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as { syscalls?: { names: string[]; action: string; args?: unknown[] }[] };
  const allowed = new Map<string, Allowance>();
  for (const rule of (profile.syscalls ?? []).filter((r) => r.action === 'SCMP_ACT_ALLOW')) {
    for (const name of rule.names) if (allowed.get(name) !== 'always') allowed.set(name, rule.args?.length ? 'with some arguments' : 'always');
  }
  return allowed;
}

const VERDICT: Record<Allowance | 'no', string> = {
  always: '  allowed by this profile (the record came from another one)',
  'with some arguments': '  allowed by the profile only with some arguments: these were others',
  no: '  NOT in the profile',
};

export function explain(records: SeccompRecord[], allowed?: Map<string, Allowance>): string {
  const counts = new Map<string, { record: SeccompRecord; count: number }>();
  for (const r of records) {
    const key = `${r.arch ?? r.archHex} ${r.name}`;
    const entry = counts.get(key) ?? { record: r, count: 0 };
    entry.count++;
    counts.set(key, entry);
  }
  if (counts.size === 0) return 'no seccomp records (type=1326) found';
  const lines = [...counts.values()]
    .sort((a, b) => b.count - a.count)
    .map(({ record: r, count }) => {
      const where = `${r.arch ?? `arch ${r.archHex}`}${r.nr >= 0 ? ` #${r.nr}` : ''}`;
      const verdict = allowed ? VERDICT[allowed.get(r.name) ?? 'no'] : '';
      return `${r.name.padEnd(20)} ${where.padEnd(14)} ${String(count).padStart(5)}x  ${r.comm}${r.exe ? ` ${r.exe}` : ''}${verdict}`;
    });
  return lines.join('\n');
}

export async function runExplain(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS, { command: 'kubearmor-relay seccomp explain [RECORDS_FILE...]', summary: 'Names the system calls in the kernel\'s seccomp records (type=1326), read from the files or stdin.' });
  const files = flags._;
  const text = files.length > 0 ? files.map((f) => readFileSync(f, 'utf8')).join('\n') : readFileSync(0, 'utf8');
  const records = parseSeccompRecords(text).filter((r) => !flags.comm || r.comm === flags.comm);
  process.stdout.write(`${explain(records, flags.profile ? allowedBy(flags.profile) : undefined)}\n`);
  return 0;
}
