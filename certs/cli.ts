// `kubearmor-relay certs init|client|inspect`: make a CA and the files of the `external`
// provider, issue consumer client certificates, and show what a certificate file holds.
// Issuing goes through certs/issue.ts, the same code the `self` provider runs.
import { X509Certificate } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { HelpRequested, type FlagTable, UsageError, parseFlags } from '../server/flags.js';
import { createCa, issueLeaf, loadCaSigner, serverSubjectAltNames } from './issue.js';
import { CERT_MANAGER_DEFAULTS } from './manager.js';
import { certLabel, describeKey, isoSeconds, notAfter, notBefore, oneLineName, parseCertificates } from './pem.js';

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const processIo: CliIo = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};

const HOUR = 3_600_000;

const checkIps = (list: unknown): string | undefined => {
  const bad = (list as string[]).find((ip) => !isIP(ip));
  return bad === undefined ? undefined : `${JSON.stringify(bad)} is not an IP address`;
};

const INIT_FLAGS = {
  out: { type: 'string', default: '', help: 'directory to write ca.crt, ca.key, server.crt/key and client.crt/key into (created if missing)', form: '--out=DIR' },
  namespace: { type: 'string', default: CERT_MANAGER_DEFAULTS.namespace, help: 'namespace of the relay Service (kubearmor.<ns>.svc names in the server certificate)' },
  extraDnsNames: { type: 'list', default: [] as string[], help: 'extra DNS names for the server certificate', form: '--extraDnsNames=a.example[,b.example]' },
  extraIpAddresses: { type: 'list', default: [] as string[], help: 'extra IP addresses for the server certificate', form: '--extraIpAddresses=10.0.0.1[,...]', check: checkIps },
  validity: { type: 'duration', default: '720h', help: 'lifetime of the server and client certificates' },
  caValidity: { type: 'duration', default: '26280h', help: 'lifetime of the CA (default 1095 days, as the KubeArmor chart)' },
  force: { type: 'bool', default: false, help: 'replace existing files' },
} satisfies FlagTable;

const CLIENT_FLAGS = {
  ca: { type: 'string', default: '', help: 'directory holding ca.crt and ca.key', form: '--ca=DIR' },
  out: { type: 'string', default: '', help: 'directory to write client.crt, client.key and ca.crt into', form: '--out=DIR' },
  cn: { type: 'string', default: 'kubearmor-client', help: 'common name of the client certificate' },
  validity: { type: 'duration', default: '720h', help: 'lifetime of the client certificate' },
  force: { type: 'bool', default: false, help: 'replace existing files' },
} satisfies FlagTable;

const USAGE = `Usage: kubearmor-relay certs <command> [flags]

Commands:
  init     make a CA and the server/client certificates of the external provider
  client   issue a client certificate (for a consumer such as karmor) from a CA directory
  inspect  show subject, SANs, serial, validity, issuer, key type and EKU of certificates

Run "kubearmor-relay certs <command> --help" for the flags of a command.
`;

/** Entry point of `kubearmor-relay certs ...`; returns the process exit code. */
export async function runCerts(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'init':
        return await init(rest, io);
      case 'client':
        return await client(rest, io);
      case 'inspect':
        return inspect(rest, io);
      case undefined:
      case 'help':
      case '-h':
      case '--help':
        io.out(USAGE);
        return command === undefined ? 2 : 0;
      default:
        io.err(`unknown certs command ${JSON.stringify(command)}\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof HelpRequested) {
      io.out(`${err.text}\n`);
      return 0;
    }
    if (err instanceof UsageError) {
      io.err(`${err.message}\n`);
      return 2;
    }
    io.err(`certs ${command}: ${(err as Error).message}\n`);
    return 1;
  }
}

function required(value: string, flag: string): string {
  if (!value) throw new UsageError(`flag --${flag} is required`);
  return value;
}

/** Writes new files only: keys are created with mode 0600 from the start, never chmod-ed later. */
function writeFiles(dir: string, files: ReadonlyArray<{ name: string; text: string; secret: boolean }>, force: boolean): void {
  // explicit mode: a umask of 000 must not leave the key directory world-writable
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const existing = files.filter((f) => existsSync(join(dir, f.name)));
  if (existing.length > 0 && !force) {
    throw new Error(`${existing.map((f) => join(dir, f.name)).join(', ')} already exist(s); use --force to replace`);
  }
  for (const f of files) {
    const path = join(dir, f.name);
    // a file that exists keeps its old mode when rewritten: replace it instead
    if (existsSync(path)) unlinkSync(path);
    const fd = openSync(path, 'wx', f.secret ? 0o600 : 0o644);
    try {
      writeSync(fd, f.text);
    } finally {
      closeSync(fd);
    }
  }
}

async function init(argv: string[], io: CliIo): Promise<number> {
  const flags = parseFlags(argv, INIT_FLAGS, { command: 'kubearmor-relay certs init', summary: 'Make a CA and the five files of --tlsCertProvider=external.' });
  const out = required(flags.out, 'out');
  const ca = await createCa({ validityMs: flags.caValidity });
  const signer = loadCaSigner(ca.certPem, ca.keyPem);
  const sans = serverSubjectAltNames({ namespace: flags.namespace, extraDnsNames: flags.extraDnsNames, extraIpAddresses: flags.extraIpAddresses });
  const server = await issueLeaf(signer, { purpose: 'server', commonName: 'kubearmor-relay', ...sans, validityMs: flags.validity });
  const clientPair = await issueLeaf(signer, { purpose: 'client', commonName: 'kubearmor-relay-client', validityMs: flags.validity });
  writeFiles(
    out,
    [
      { name: 'ca.crt', text: ca.certPem, secret: false },
      { name: 'ca.key', text: ca.keyPem, secret: true },
      { name: 'server.crt', text: server.certPem, secret: false },
      { name: 'server.key', text: server.keyPem, secret: true },
      { name: 'client.crt', text: clientPair.certPem, secret: false },
      { name: 'client.key', text: clientPair.keyPem, secret: true },
    ],
    flags.force,
  );
  io.out(
    `wrote ${out}/{ca.crt,ca.key,server.crt,server.key,client.crt,client.key}\n` +
      `  server certificate names: ${[...sans.dnsNames, ...sans.ipAddresses].join(', ')}\n` +
      `  ca.key is RSA 2048 PKCS#1 (usable by karmor); keep it secret, or delete it when using --tlsCertProvider=external\n`,
  );
  return 0;
}

async function client(argv: string[], io: CliIo): Promise<number> {
  const flags = parseFlags(argv, CLIENT_FLAGS, { command: 'kubearmor-relay certs client', summary: 'Issue a client certificate from DIR/ca.crt and DIR/ca.key.' });
  const caDir = required(flags.ca, 'ca');
  const out = required(flags.out, 'out');
  const caPem = readFileSync(join(caDir, 'ca.crt'), 'utf8');
  const signer = loadCaSigner(caPem, readFileSync(join(caDir, 'ca.key'), 'utf8'));
  const pair = await issueLeaf(signer, { purpose: 'client', commonName: flags.cn, validityMs: flags.validity });
  writeFiles(
    out,
    [
      { name: 'client.crt', text: pair.certPem, secret: false },
      { name: 'client.key', text: pair.keyPem, secret: true },
      { name: 'ca.crt', text: caPem, secret: false },
    ],
    flags.force,
  );
  io.out(`wrote ${out}/{client.crt,client.key,ca.crt}: ${certLabel(new X509Certificate(pair.certPem))}\n`);
  return 0;
}

const EKU_NAMES: Record<string, string> = {
  '1.3.6.1.5.5.7.3.1': 'serverAuth',
  '1.3.6.1.5.5.7.3.2': 'clientAuth',
  '2.5.29.37.0': 'any',
};

/** The certificate files of a directory: *.crt, *.pem, *.cer (symlinks included, `..data` internals skipped). */
function certificateFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((name) => !name.startsWith('..') && /\.(crt|pem|cer)$/.test(name))
    .sort()
    .map((name) => join(path, name));
}

export function describeCertificate(cert: X509Certificate, now = new Date()): string {
  const until = notAfter(cert);
  const days = Math.floor((until.getTime() - now.getTime()) / (24 * HOUR));
  const state = until < now ? 'EXPIRED' : notBefore(cert) > now ? 'NOT YET VALID' : `${days} days left`;
  const eku = cert.keyUsage?.map((oid) => EKU_NAMES[oid] ?? oid).join(', ') ?? '(no extension: any)';
  return [
    `  subject:  ${oneLineName(cert.subject)}`,
    `  SANs:     ${cert.subjectAltName ?? '(none)'}`,
    `  serial:   ${cert.serialNumber}`,
    `  validity: ${isoSeconds(notBefore(cert))} to ${isoSeconds(until)} (${state})`,
    `  issuer:   ${oneLineName(cert.issuer)}${cert.issuer === cert.subject ? ' (self-issued)' : ''}`,
    `  key:      ${describeKey(cert.publicKey)}`,
    `  EKU:      ${eku}`,
    `  CA:       ${cert.ca ? 'yes' : 'no'}`,
  ].join('\n');
}

function inspect(argv: string[], io: CliIo): number {
  const flags = parseFlags(argv, {}, { command: 'kubearmor-relay certs inspect PATH...', summary: 'Show the certificates in files or directories.' });
  if (flags._.length === 0) throw new UsageError('certs inspect needs at least one file or directory');
  let failed = false;
  for (const path of flags._) {
    let files: string[];
    try {
      files = certificateFiles(path);
    } catch (err) {
      io.err(`${path}: ${(err as Error).message}\n`);
      failed = true;
      continue;
    }
    for (const file of files) {
      try {
        const certs = parseCertificates(readFileSync(file, 'utf8'), file);
        certs.forEach((cert, i) => io.out(`${file}${certs.length > 1 ? ` #${i + 1}` : ''}\n${describeCertificate(cert)}\n`));
      } catch (err) {
        io.err(`${(err as Error).message}\n`);
        failed = true;
      }
    }
  }
  return failed ? 1 : 0;
}
