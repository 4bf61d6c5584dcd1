// Go `flag`-style command-line parsing, shared by the relay and every subcommand so they
// accept the spellings the KubeArmor Helm chart and users type: `-f=v`, `--f=v`,
// `-f v`, `--f v`, and a bare `--f` for booleans (which, as in Go, take a value only after `=`).
import { isIP } from 'node:net';

export type FlagType = 'string' | 'int' | 'bool' | 'port' | 'list' | 'duration';

export interface FlagSpec {
  type: FlagType;
  default: string | number | boolean | readonly string[];
  help: string;
  /** accepted form shown in errors, e.g. "HOST:PORT[,HOST:PORT...]" */
  form?: string;
  /** extra check after type conversion; return an error message or undefined */
  check?: (value: unknown) => string | undefined;
  /** environment variable used when the flag is absent */
  env?: string;
  /** how --help shows a default that depends on the environment, e.g. "on in a cluster" */
  defaultText?: string;
}

export type FlagTable = Record<string, FlagSpec>;

type ValueOf<S extends FlagSpec> = S['type'] extends 'bool'
  ? boolean
  : S['type'] extends 'int' | 'port' | 'duration'
    ? number
    : S['type'] extends 'list'
      ? string[]
      : string;

/** `_` holds positional arguments; `_set` the flags given explicitly (not from defaults). */
export type ParsedFlags<T extends FlagTable> = { [K in keyof T]: ValueOf<T[K]> } & { _: string[]; _set: ReadonlySet<string> };

/** A usage error: the caller prints `message` (one line) and exits with code 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export class HelpRequested extends Error {
  constructor(readonly text: string) {
    super('help requested');
  }
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Durations as Go writes them ("30s", "720h", "1h30m") or a bare number of seconds; result in ms. */
export function parseDuration(text: string): number | undefined {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  return matched === text.length && text.length > 0 ? total : undefined;
}

function formOf(name: string, spec: FlagSpec): string {
  if (spec.form) return spec.form;
  switch (spec.type) {
    case 'bool':
      return `--${name} or --${name}=true|false`;
    case 'port':
      return `--${name}=PORT (0-65535)`;
    case 'int':
      return `--${name}=INTEGER`;
    case 'duration':
      return `--${name}=DURATION (e.g. 30s, 720h)`;
    case 'list':
      return `--${name}=A[,B...]`;
    default:
      return `--${name}=VALUE`;
  }
}

function convert(name: string, spec: FlagSpec, raw: string): ValueOf<FlagSpec> {
  const bad = (why: string) => new UsageError(`invalid value ${JSON.stringify(raw)} for flag --${name}: ${why}; expected ${formOf(name, spec)}`);
  let value: unknown;
  switch (spec.type) {
    case 'bool': {
      const v = raw.toLowerCase();
      if (['1', 't', 'true'].includes(v)) value = true;
      else if (['0', 'f', 'false'].includes(v)) value = false;
      else throw bad('not a boolean');
      break;
    }
    case 'int':
    case 'port': {
      if (!/^-?\d+$/.test(raw)) throw bad('not an integer');
      const n = Number(raw);
      if (spec.type === 'port' && (n < 0 || n > 65535)) throw bad('port out of range');
      value = n;
      break;
    }
    case 'duration': {
      const ms = parseDuration(raw);
      if (ms === undefined) throw bad('not a duration');
      value = ms;
      break;
    }
    case 'list':
      value = raw === '' ? [] : raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
      break;
    default:
      value = raw;
  }
  const problem = spec.check?.(value);
  if (problem) throw bad(problem);
  return value as ValueOf<FlagSpec>;
}

export function usage(command: string, summary: string, table: FlagTable): string {
  const lines = [`Usage: ${command} [flags]`, '', summary, '', 'Flags:'];
  for (const [name, spec] of Object.entries(table)) {
    const def = spec.defaultText ?? JSON.stringify(Array.isArray(spec.default) ? spec.default.join(',') : String(spec.default));
    const env = spec.env ? ` (env ${spec.env})` : '';
    lines.push(`  --${name}  ${spec.type === 'bool' ? '' : `${spec.form ?? spec.type.toUpperCase()}  `}${spec.help} (default ${def})${env}`);
  }
  lines.push('  --help  show this help');
  return lines.join('\n');
}

/**
 * Parses argv against the table. Unknown flags, missing values and bad values throw a
 * UsageError naming the flag; `--help`/`-h` throws HelpRequested.
 */
export function parseFlags<T extends FlagTable>(
  argv: readonly string[],
  table: T,
  help: { command: string; summary: string },
  env: NodeJS.ProcessEnv = process.env,
): ParsedFlags<T> {
  const seen = new Set<string>();
  const out: Record<string, unknown> = { _: [] as string[], _set: seen };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      (out._ as string[]).push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      (out._ as string[]).push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    if (name === 'help' || name === 'h') throw new HelpRequested(usage(help.command, help.summary, table));
    const spec = Object.prototype.hasOwnProperty.call(table, name) ? table[name] : undefined;
    if (!spec) throw new UsageError(`unknown flag: ${arg.split('=')[0]} (see --help for the accepted flags)`);
    let raw: string;
    if (eq !== -1) raw = body.slice(eq + 1);
    else if (spec.type === 'bool') raw = 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`flag needs a value: --${name}; expected ${formOf(name, spec)}`);
      raw = next;
      i++;
    }
    out[name] = convert(name, spec, raw);
    seen.add(name);
  }
  for (const [name, spec] of Object.entries(table)) {
    if (seen.has(name)) continue;
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') {
      try {
        out[name] = convert(name, spec, fromEnv);
        seen.add(name);
      } catch (err) {
        throw new UsageError(`${(err as Error).message} (from environment variable ${spec.env})`);
      }
    } else {
      // Defaults written as text ("2s", "720h") go through the same conversion as a flag.
      if (typeof spec.default === 'string' && spec.type !== 'string') out[name] = convert(name, spec, spec.default);
      else out[name] = Array.isArray(spec.default) ? [...spec.default] : spec.default;
    }
  }
  return out as ParsedFlags<T>;
}

/** HOST:PORT with an optional [v6] host, e.g. "127.0.0.1:32767", "[::1]:32767", "node-a:32767". */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9_.-]+)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1] ?? m[2]!, port };
}

/** Checks for FlagSpec.check. */
export const checks = {
  atLeast:
    (min: number) =>
    (v: unknown): string | undefined =>
      typeof v === 'number' && v >= min ? undefined : `must be at least ${min}`,
  oneOf:
    (values: readonly string[]) =>
    (v: unknown): string | undefined =>
      typeof v === 'string' && values.includes(v) ? undefined : `must be one of ${values.join(', ')}`,
  between:
    (min: number, max: number) =>
    (v: unknown): string | undefined =>
      typeof v === 'number' && v >= min && v <= max ? undefined : `must be between ${min} and ${max}`,
  natsUrls: (v: unknown): string | undefined => {
    const bad = (v as string[]).find((e) => !/^(nats|tls):\/\/([^@/\s]+@)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$/.test(e));
    return bad === undefined ? undefined : `malformed NATS URL ${JSON.stringify(bad)}`;
  },
  natsName: (v: unknown): string | undefined => (typeof v === 'string' && /^[A-Za-z0-9_-]+$/.test(v) ? undefined : 'letters, digits, _ and - only'),
  ipList: (v: unknown): string | undefined => {
    const bad = (v as string[]).find((e) => isIP(e) === 0);
    return bad === undefined ? undefined : `not an IP address: ${JSON.stringify(bad)}`;
  },
  hostPortList: (v: unknown): string | undefined => {
    const badEntry = (v as string[]).find((e) => !parseHostPort(e));
    return badEntry === undefined ? undefined : `malformed entry ${JSON.stringify(badEntry)}`;
  },
};

/**
 * For subcommands: the parsed flags, or the exit code when parsing ended the run (help
 * printed: 0; usage error printed as one line naming the flag: 2). Positional arguments
 * are usage errors.
 */
export function parseOrExit<T extends FlagTable>(
  argv: readonly string[],
  table: T,
  help: { command: string; summary: string },
  io: { out: (line: string) => void; err: (line: string) => void },
  env: NodeJS.ProcessEnv = process.env,
): ParsedFlags<T> | number {
  try {
    const flags = parseFlags(argv, table, help, env);
    if (flags._.length > 0) throw new UsageError(`unexpected argument: ${flags._[0]}`);
    return flags;
  } catch (e) {
    if (e instanceof HelpRequested) {
      io.out(e.text);
      return 0;
    }
    if (e instanceof UsageError) {
      io.err(`${help.command}: ${e.message}`);
      return 2;
    }
    throw e;
  }
}
