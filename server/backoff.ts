// Exponential backoff with jitter for redialling: the first retry comes within `initialMs`,
// each later one waits up to twice as long, never more than `maxMs`. The jitter (each
// delay drawn from its upper half) keeps a fleet of clients from redialling in lockstep.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const BACKOFF_DEFAULTS: BackoffOptions = { initialMs: 1000, maxMs: 30_000 };

export class Backoff {
  private attempt = 0;

  constructor(private readonly opts: BackoffOptions = BACKOFF_DEFAULTS) {}

  /** the delay before the next attempt */
  next(): number {
    const ceiling = Math.min(this.opts.maxMs, this.opts.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
