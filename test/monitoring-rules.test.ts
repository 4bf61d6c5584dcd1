// deploy/monitoring/ checked by Prometheus's own promtool: the alert rules load, every
// alert is unit-tested and its tests pass, the PrometheusRule carries the same rules, and
// every dashboard query is valid PromQL. (test/monitoring-live.test.ts runs them against a
// real relay.)
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { PROMETHEUS_RULE_FILE, RULES_FILE, dashboardExpressions, generated } from '../scripts/monitoring.js';
import { tempDir } from './helpers/certs-fixtures.js';
import { alertsOf, promtool, shippedRules } from './helpers/promtool.js';
import { metricNames, withGrafanaVariables } from './helpers/promql.js';

const UNIT_TESTS = fileURLToPath(new URL('./monitoring/rules.test.yaml', import.meta.url));

interface UnitTests {
  rule_files: string[];
  tests: { alert_rule_test: { alertname: string; exp_alerts?: { exp_annotations?: Record<string, string> }[] }[] }[];
}

const work = tempDir('monitoring-rules-');
afterAll(() => work.remove());

describe('the shipped alert rules', () => {
  const alerts = alertsOf(shippedRules());

  it('pass promtool check rules', async () => {
    const res = await promtool(['check', 'rules', RULES_FILE]);
    expect(res.output).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(res.code, res.output).toBe(0);
  });

  it('cover node disconnection, readiness, consumer drops, certificate expiry and TLS handshake refusals', () => {
    const metrics = alerts.flatMap((a) => metricNames(a.expr));
    for (const name of ['kubearmor_relay_upstream_connected', 'kubearmor_relay_ready', 'kubearmor_relay_events_dropped_total', 'kubearmor_relay_cert_expiry_timestamp_seconds', 'kubearmor_relay_tls_handshake_failures_total']) {
      expect(metrics).toContain(name);
    }
  });

  it('give every alert a severity, a summary, a description and a runbook', () => {
    for (const alert of alerts) {
      expect(alert.labels?.severity, alert.alert).toMatch(/^(info|warning|critical)$/);
      expect(alert.annotations?.summary, alert.alert).toBeTruthy();
      expect(alert.annotations?.description, alert.alert).toBeTruthy();
      // a runbook is steps, not a sentence
      expect(alert.annotations?.runbook?.split('\n').filter((l) => /^\d+\. /.test(l)).length, alert.alert).toBeGreaterThanOrEqual(2);
    }
  });

  it('have a promtool unit test that fires each alert, and the unit tests pass', async () => {
    const tests = parse(readFileSync(UNIT_TESTS, 'utf8')) as UnitTests;
    const fired = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => (a.exp_alerts ?? []).length > 0).map((a) => a.alertname)));
    expect([...fired].sort()).toEqual(alerts.map((a) => a.alert).sort());
    // The runbook is static text kept once, in the rules: the expected alerts get it from there.
    const runbooks = new Map(alerts.map((a) => [a.alert, a.annotations!.runbook!]));
    for (const test of tests.tests) {
      for (const check of test.alert_rule_test) {
        for (const expected of check.exp_alerts ?? []) expected.exp_annotations = { ...expected.exp_annotations, runbook: runbooks.get(check.alertname)! };
      }
    }
    tests.rule_files = [RULES_FILE];
    const file = join(work.path, 'rules.test.yaml');
    writeFileSync(file, stringify(tests));
    const res = await promtool(['test', 'rules', file]);
    expect(res.output).toContain('SUCCESS');
    expect(res.code, res.output).toBe(0);
  });

  it('fail promtool test rules when an alert fires differently than its test expects', async () => {
    // the unit tests can fail: the same tests against rules whose disconnection alert waits longer
    const tests = parse(readFileSync(UNIT_TESTS, 'utf8')) as UnitTests;
    const rules = shippedRules();
    for (const rule of alertsOf(rules)) if (rule.alert === 'KubeArmorRelayNodeDisconnected') rule.for = '1h';
    writeFileSync(join(work.path, 'slower-rules.yaml'), stringify(rules));
    tests.rule_files = [join(work.path, 'slower-rules.yaml')];
    tests.tests = tests.tests.filter((t) => t.alert_rule_test.some((a) => a.alertname === 'KubeArmorRelayNodeDisconnected'));
    writeFileSync(join(work.path, 'slower.test.yaml'), stringify(tests));
    const res = await promtool(['test', 'rules', join(work.path, 'slower.test.yaml')]);
    expect(res.output).toMatch(/FAILED[\s\S]*KubeArmorRelayNodeDisconnected/);
    expect(res.code).not.toBe(0);
  });
});

describe('the generated monitoring files', () => {
  it('are what npm run monitoring makes from their sources', () => {
    for (const { file, text } of generated()) expect(readFileSync(file, 'utf8'), `${file} is stale: run npm run monitoring`).toBe(text);
  });

  it('give the Prometheus Operator exactly the rules of the plain rules file', () => {
    const resource = parse(readFileSync(PROMETHEUS_RULE_FILE, 'utf8')) as { apiVersion: string; kind: string; spec: unknown };
    expect(resource.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(resource.kind).toBe('PrometheusRule');
    expect(resource.spec).toEqual({ groups: shippedRules().groups });
  });
});

describe('the Grafana dashboard', () => {
  it('queries only valid PromQL (each expression loaded by promtool as a recording rule)', async () => {
    const exprs = dashboardExpressions();
    expect(exprs.length).toBeGreaterThanOrEqual(10);
    const rules = { groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:expr_${i}`, expr: withGrafanaVariables(expr) })) }] };
    const file = join(work.path, 'dashboard-rules.yaml');
    writeFileSync(file, stringify(rules));
    const res = await promtool(['check', 'rules', file]);
    expect(res.code, res.output).toBe(0);
    expect(res.output).toContain(`SUCCESS: ${exprs.length} rules found`);
  });

  it('is refused by the same check when an expression is not PromQL', async () => {
    const file = join(work.path, 'broken-rules.yaml');
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules: [{ record: 'dashboard:broken', expr: withGrafanaVariables('sum by (kind) (rate(kubearmor_relay_events_sent_total{instance=~"$instance"}))') }] }] }));
    const res = await promtool(['check', 'rules', file]);
    expect(res.code).not.toBe(0);
  });

  it('shows events by kind and node, drops by reason, consumers, queue bytes, node state, certificate expiry and handshake failures', () => {
    const metrics = new Set(dashboardExpressions().flatMap(metricNames));
    for (const name of [
      'kubearmor_relay_events_received_total',
      'kubearmor_relay_events_dropped_total',
      'kubearmor_relay_clients',
      'kubearmor_relay_queued_bytes',
      'kubearmor_relay_upstream_connected',
      'kubearmor_relay_cert_expiry_timestamp_seconds',
      'kubearmor_relay_tls_handshake_failures_total',
    ]) {
      expect(metrics).toContain(name);
    }
    const exprs = dashboardExpressions().join('\n');
    expect(exprs).toContain('sum by (node)');
    expect(exprs).toContain('sum by (reason');
  });
});
