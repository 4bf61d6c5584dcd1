// Reading the relay's /metrics (Prometheus text format) in tools, benchmarks and tests.

/** The values of every series of `name` whose labels include `labels`. */
export function metricSeries(text: string, name: string, labels: Record<string, string> = {}): number[] {
  const values: number[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[pair[1]!] = pair[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) values.push(Number(m[3]));
  }
  return values;
}

/** The value of the first matching series, or undefined when there is none. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return metricSeries(text, name, labels)[0];
}

/** The sum of every matching series (0 when there is none). */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  return metricSeries(text, name, labels).reduce((a, b) => a + b, 0);
}
