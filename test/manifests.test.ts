// The deploy/ manifests, checked offline: every document against the Kubernetes OpenAPI
// schemas (kubernetes-models), every field name against client-node's generated models
// (the schemas accept unknown fields, which would hide a typo such as `readOnlyRootFileSystem`),
// and the properties the relay's deployment promises.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

const DEPLOY = fileURLToPath(new URL('../deploy/', import.meta.url));

interface Doc {
  file: string;
  obj: Record<string, unknown> & { kind: string; apiVersion: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } };
}

function loadDocs(): Doc[] {
  const docs: Doc[] = [];
  for (const file of readdirSync(DEPLOY).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'))) {
      expect(doc.errors, `${file}: YAML errors`).toEqual([]);
      const obj = doc.toJS() as Doc['obj'] | null;
      if (obj) docs.push({ file, obj });
    }
  }
  return docs;
}

const docs = loadDocs();
const objects = docs.filter((d) => d.file !== 'kustomization.yaml');
const one = (kind: string) => {
  const found = objects.filter((d) => d.obj.kind === kind);
  expect(found, kind).toHaveLength(1);
  return found[0]!.obj;
};

const VALIDATORS: Record<string, { apiVersion: string; validate: (o: Record<string, unknown>) => void; model: string }> = {
  Namespace: { apiVersion: 'v1', validate: (o) => new Namespace(o).validate(), model: 'V1Namespace' },
  ServiceAccount: { apiVersion: 'v1', validate: (o) => new ServiceAccount(o).validate(), model: 'V1ServiceAccount' },
  Service: { apiVersion: 'v1', validate: (o) => new Service(o).validate(), model: 'V1Service' },
  Deployment: { apiVersion: 'apps/v1', validate: (o) => new Deployment(o).validate(), model: 'V1Deployment' },
  ClusterRole: { apiVersion: 'rbac.authorization.k8s.io/v1', validate: (o) => new ClusterRole(o).validate(), model: 'V1ClusterRole' },
  ClusterRoleBinding: { apiVersion: 'rbac.authorization.k8s.io/v1', validate: (o) => new ClusterRoleBinding(o as unknown as ConstructorParameters<typeof ClusterRoleBinding>[0]).validate(), model: 'V1ClusterRoleBinding' },
};

type AttributeMap = { baseName: string; type: string }[];
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttributeMap } | undefined>;

/** Paths of fields that the generated model of `type` does not know, recursively. */
function unknownFields(value: unknown, type: string, path: string): string[] {
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`)) : [];
  const attributes = models[type]?.getAttributeTypeMap?.();
  if (!attributes || typeof value !== 'object' || value === null) return []; // scalars, maps, IntOrString
  const known = new Map(attributes.map((a) => [a.baseName, a.type]));
  return Object.entries(value).flatMap(([key, v]) => {
    const t = known.get(key);
    return t === undefined ? [`${path}.${key}`] : unknownFields(v, t, `${path}.${key}`);
  });
}

/** "500m" → 0.5, "1" → 1; "128Mi" → bytes. */
function cpu(q: string): number {
  return q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q);
}
function bytes(q: string): number {
  const units: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, K: 1e3, M: 1e6, G: 1e9 };
  const m = /^(\d+(?:\.\d+)?)([KMG]i?)?$/.exec(q);
  if (!m) throw new Error(`unparsed quantity ${q}`);
  return Number(m[1]) * (m[2] ? units[m[2]]! : 1);
}

interface Container {
  name: string;
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { containerPort: number; name?: string }[];
  livenessProbe?: { httpGet?: { path: string; port: number | string } };
  readinessProbe?: { httpGet?: { path: string; port: number | string } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}

interface PodSpec {
  serviceAccountName?: string;
  securityContext?: Record<string, unknown>;
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; projected?: { sources: { secret?: { name: string; items?: { key: string; path: string }[] } }[] } }[];
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
}

const deployment = one('Deployment') as unknown as {
  metadata: { name: string; namespace: string; labels: Record<string, string> };
  spec: { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
};
const pod = deployment.spec.template.spec;
const containers = [...pod.containers, ...(pod.initContainers ?? [])];
const relay = pod.containers[0]!;

describe('deploy/ manifests', () => {
  it('are all valid against the Kubernetes OpenAPI schemas', () => {
    expect(objects.length).toBeGreaterThanOrEqual(6);
    for (const { file, obj } of objects) {
      const v = VALIDATORS[obj.kind];
      expect(v, `${file}: unexpected kind ${obj.kind}`).toBeDefined();
      expect(obj.apiVersion, `${file}: ${obj.kind}`).toBe(v!.apiVersion);
      expect(() => v!.validate(obj), `${file}: ${obj.kind}/${obj.metadata.name}`).not.toThrow();
    }
  });

  it('use no field names that Kubernetes does not know', () => {
    for (const { file, obj } of objects) {
      expect(unknownFields(obj, VALIDATORS[obj.kind]!.model, `${file}:${obj.kind}`)).toEqual([]);
    }
  });

  it('are all listed in kustomization.yaml, and it lists nothing else', () => {
    const kustomization = docs.find((d) => d.file === 'kustomization.yaml')?.obj as unknown as { kind: string; resources: string[] } | undefined;
    expect(kustomization?.kind).toBe('Kustomization');
    const files = [...new Set(objects.map((d) => d.file))].sort();
    expect([...kustomization!.resources].sort()).toEqual(files);
  });

  it('put every namespaced object in the kubearmor namespace', () => {
    expect(one('Namespace').metadata.name).toBe('kubearmor');
    for (const { obj } of objects) {
      if (['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(obj.kind)) expect(obj.metadata.namespace).toBeUndefined();
      else expect(obj.metadata.namespace, `${obj.kind}/${obj.metadata.name}`).toBe('kubearmor');
    }
  });

  it('name and label the relay as the Helm chart does', () => {
    expect(deployment.metadata.name).toBe('kubearmor-relay');
    expect(deployment.metadata.labels['kubearmor-app']).toBe('kubearmor-relay');
    expect(deployment.spec.selector.matchLabels).toEqual({ 'kubearmor-app': 'kubearmor-relay' });
    expect(deployment.spec.template.metadata.labels['kubearmor-app']).toBe('kubearmor-relay');
    expect(relay.name).toBe('kubearmor-relay-server');
    expect(relay.args).toEqual(['--tlsEnabled=true', '--tlsCertPath=/var/lib/kubearmor/tls', '--tlsCertProvider=external']);
    expect(relay.ports?.map((p) => p.containerPort)).toContain(32767);
    expect(pod.serviceAccountName).toBe('kubearmor-relay');
    expect(one('ServiceAccount').metadata.name).toBe('kubearmor-relay');
  });

  it('expose the relay as Service kubearmor on port 32767, selecting the relay pods', () => {
    const svc = one('Service') as unknown as { metadata: { name: string }; spec: { selector: Record<string, string>; ports: { port: number; targetPort: number | string }[] } };
    expect(svc.metadata.name).toBe('kubearmor');
    expect(svc.spec.selector).toEqual({ 'kubearmor-app': 'kubearmor-relay' });
    expect(svc.spec.ports).toEqual([expect.objectContaining({ port: 32767, targetPort: 32767 })]);
    for (const [k, v] of Object.entries(svc.spec.selector)) expect(deployment.spec.template.metadata.labels[k]).toBe(v);
  });

  it('grant only get, list and watch on pods and services, bound to the relay service account', () => {
    const role = one('ClusterRole') as unknown as { metadata: { name: string }; rules: { apiGroups?: string[]; resources?: string[]; verbs: string[]; nonResourceURLs?: string[] }[] };
    for (const rule of role.rules) {
      expect(rule.apiGroups).toEqual(['']);
      expect(rule.nonResourceURLs).toBeUndefined();
      expect(['pods', 'services']).toEqual(expect.arrayContaining(rule.resources ?? ['(none)']));
      for (const verb of rule.verbs) expect(['get', 'list', 'watch']).toContain(verb);
    }
    const granted = role.rules.flatMap((r) => (r.resources ?? []).flatMap((res) => r.verbs.map((v) => `${v} ${res}`))).sort();
    expect(granted).toEqual(['get pods', 'get services', 'list pods', 'list services', 'watch pods', 'watch services']);
    const binding = one('ClusterRoleBinding') as unknown as { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string; namespace: string }[] };
    expect(binding.roleRef).toMatchObject({ kind: 'ClusterRole', name: role.metadata.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'kubearmor-relay', namespace: 'kubearmor' }]);
    expect(objects.some((d) => d.obj.kind === 'Role' || d.obj.kind === 'RoleBinding')).toBe(false);
  });

  it('run every container as a non-root numeric user with a read-only root, no privilege escalation and no capabilities', () => {
    expect(pod.hostNetwork ?? false).toBe(false);
    expect(pod.hostPID ?? false).toBe(false);
    expect(pod.hostIPC ?? false).toBe(false);
    for (const c of containers) {
      const effective = { ...pod.securityContext, ...c.securityContext };
      expect(effective.runAsNonRoot, c.name).toBe(true);
      expect(typeof effective.runAsUser).toBe('number');
      expect(effective.runAsUser).toBeGreaterThan(0);
      expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
      expect(c.securityContext?.allowPrivilegeEscalation).toBe(false);
      expect(c.securityContext?.privileged ?? false).toBe(false);
      expect(c.securityContext?.capabilities?.drop).toEqual(['ALL']);
      expect(c.securityContext?.capabilities?.add).toBeUndefined();
      expect(effective.seccompProfile).toEqual({ type: 'Localhost', localhostProfile: 'kubearmor-relay.json' });
    }
  });

  it('limit every container to at most 500m CPU and 128Mi memory, with requests no higher', () => {
    for (const c of containers) {
      const { requests, limits } = c.resources ?? {};
      expect(limits?.cpu, c.name).toBeDefined();
      expect(limits?.memory, c.name).toBeDefined();
      expect(cpu(limits!.cpu!)).toBeLessThanOrEqual(0.5);
      expect(bytes(limits!.memory!)).toBeLessThanOrEqual(128 * 2 ** 20);
      expect(cpu(requests!.cpu!)).toBeLessThanOrEqual(cpu(limits!.cpu!));
      expect(bytes(requests!.memory!)).toBeLessThanOrEqual(bytes(limits!.memory!));
    }
  });

  it('probe liveness on /healthz and readiness on /readyz at port 8080', () => {
    expect(relay.livenessProbe?.httpGet).toMatchObject({ path: '/healthz', port: 8080 });
    expect(relay.readinessProbe?.httpGet).toMatchObject({ path: '/readyz', port: 8080 });
    expect(relay.ports?.map((p) => p.containerPort)).toContain(8080);
  });

  it('pass the pod IP in POD_IP and never KUBEARMOR_SERVICE', () => {
    const env = relay.env ?? [];
    expect(env.find((e) => e.name === 'POD_IP')?.valueFrom?.fieldRef?.fieldPath).toBe('status.podIP');
    expect(env.some((e) => e.name === 'KUBEARMOR_SERVICE')).toBe(false);
  });

  it('mount the chart secrets read-only at /var/lib/kubearmor/tls under the file names the relay reads', () => {
    const mount = relay.volumeMounts?.find((m) => m.mountPath === '/var/lib/kubearmor/tls');
    expect(mount?.readOnly).toBe(true);
    const volume = pod.volumes?.find((v) => v.name === mount!.name);
    const files = Object.fromEntries(
      (volume?.projected?.sources ?? []).flatMap((s) => (s.secret?.items ?? []).map((i) => [i.path, `${s.secret!.name}:${i.key}`])),
    );
    expect(files).toEqual({
      'ca.crt': 'kubearmor-ca:tls.crt',
      'server.crt': 'kubearmor-relay-server-certs:tls.crt',
      'server.key': 'kubearmor-relay-server-certs:tls.key',
      'client.crt': 'kubearmor-client-certs:tls.crt',
      'client.key': 'kubearmor-client-certs:tls.key',
    });
    // every other mount is a scratch directory, not a host path
    for (const m of relay.volumeMounts ?? []) {
      const v = pod.volumes?.find((x) => x.name === m.name) as Record<string, unknown> | undefined;
      expect(v?.hostPath, m.name).toBeUndefined();
    }
  });
});

describe('deploy/scale-out/ manifests', () => {
  const DIR = join(DEPLOY, 'scale-out');
  const scaleOut = readdirSync(DIR)
    .filter((f) => /\.ya?ml$/.test(f))
    .flatMap((file) => parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((d) => ({ file, obj: d.toJS() as Doc['obj'] })));
  const find = (file: string, kind: string) => scaleOut.find((d) => d.file === file && d.obj.kind === kind)!.obj as unknown as Record<string, never>;

  it('build on deploy/ and list every file of their own in kustomization.yaml', () => {
    const k = find('kustomization.yaml', 'Kustomization') as unknown as { resources: string[]; patches: { path: string }[] };
    expect(k.resources).toContain('../');
    const own = [...k.resources.filter((r) => r !== '../'), ...k.patches.map((p) => p.path)].sort();
    expect(own).toEqual([...new Set(scaleOut.filter((d) => d.file !== 'kustomization.yaml').map((d) => d.file))].sort());
  });

  it('run NATS as three JetStream servers in one cluster, valid against the Kubernetes schemas', () => {
    const sts = find('nats.yaml', 'StatefulSet') as unknown as { spec: { replicas: number; template: { spec: PodSpec } } };
    expect(() => new StatefulSet(sts as never).validate()).not.toThrow();
    expect(unknownFields(sts, 'V1StatefulSet', 'StatefulSet')).toEqual([]);
    expect(sts.spec.replicas).toBe(3);
    const config = find('nats.yaml', 'ConfigMap') as unknown as { data: Record<string, string> };
    expect(() => new ConfigMap(config as never).validate()).not.toThrow();
    expect(config.data['nats.conf']).toMatch(/jetstream \{/);
    expect(config.data['nats.conf']!.match(/nats:\/\/nats-\d\.nats\.kubearmor\.svc:6222/g)).toHaveLength(3);
    expect(() => new Service(find('nats.yaml', 'Service') as never).validate()).not.toThrow();
  });

  it('run the relay as several replicas that reach every NATS server, keep the stream on all three and share each node between two', () => {
    const patch = find('relay-replicas.yaml', 'Deployment') as unknown as { metadata: { name: string }; spec: { replicas: number; template: { spec: PodSpec } } };
    expect(unknownFields(patch, 'V1Deployment', 'Deployment')).toEqual([]);
    expect(patch.metadata.name).toBe(deployment.metadata.name);
    expect(patch.spec.replicas).toBeGreaterThanOrEqual(2);
    const args = patch.spec.template.spec.containers[0]!.args!;
    expect(args.slice(0, 3)).toEqual(relay.args);
    const urls = args.find((a) => a.startsWith('--natsUrl='))!.slice('--natsUrl='.length).split(',');
    expect(urls).toHaveLength(3);
    expect(args).toContain('--natsStreamReplicas=3');
    expect(args).toContain('--upstreamReplicas=2');
  });
});
