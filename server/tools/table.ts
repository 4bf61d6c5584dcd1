// Terminal output in the manner of `kubectl get`: upper-case headers, columns padded to
// their widest cell and three spaces apart, and ages as kubectl writes them ("45s",
// "3m20s", "5h", "29d").

export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** kubectl's HumanDuration: more precision for short spans, less for long ones. */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const d = Math.floor(h / 24);
  if (s < 120) return `${s}s`;
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  if (d < 8) return h % 24 === 0 ? `${d}d` : `${d}d${h % 24}h`;
  return `${d}d`;
}

/** "in 29d" for a future time, "2h ago" for a past one. */
export function relativeTime(iso: string, now: number): string {
  const delta = new Date(iso).getTime() - now;
  return delta >= 0 ? `in ${humanDuration(delta)}` : `${humanDuration(-delta)} ago`;
}
