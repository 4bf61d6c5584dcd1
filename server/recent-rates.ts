// Events per second over the last few seconds, from counters sampled on a timer. The
// per-event path only increments integers (metrics.ts tallies); rates and "last event at"
// are derived here, off that path, from how the counts moved between samples.

export class RecentRates<K extends string> {
  private samples: { at: number; counts: Record<K, number> }[] = [];
  private changedAt: number | undefined;

  constructor(
    private readonly keys: readonly K[],
    /** how far back the rate looks */
    private readonly windowMs: number,
  ) {}

  /** Records the counts at time `at` (ms). Counts that went down start a new history. */
  add(at: number, counts: Readonly<Record<K, number>>): void {
    const last = this.samples.at(-1);
    if (last && this.keys.some((k) => counts[k] < last.counts[k])) this.samples = [];
    const before = this.samples.at(-1)?.counts;
    if (this.keys.some((k) => counts[k] !== (before ? before[k] : 0))) this.changedAt = at;
    this.samples.push({ at, counts: { ...counts } });
    // keep one sample at or before the window's start, as the rate's base
    while (this.samples.length > 2 && this.samples[1]!.at <= at - this.windowMs) this.samples.shift();
  }

  /** Per-key rate between the oldest and newest sample kept (0 with fewer than two). */
  perSecond(): Record<K, number> {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    const seconds = first && last ? (last.at - first.at) / 1000 : 0;
    const out = {} as Record<K, number>;
    for (const k of this.keys) out[k] = seconds > 0 ? Math.round(((last!.counts[k] - first!.counts[k]) / seconds) * 10) / 10 : 0;
    return out;
  }

  /** When a count was last seen to move (to the sampling period), or undefined if never. */
  get lastChangeAt(): number | undefined {
    return this.changedAt;
  }
}
