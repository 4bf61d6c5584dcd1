// The set of node daemons the relay dials. Several sources feed it (static --nodes,
// Kubernetes discovery); the union is dialled, and an address that leaves every source
// is closed.
import { Upstream, type UpstreamOptions } from './upstream.js';

export class UpstreamSet {
  private readonly bySource = new Map<string, ReadonlySet<string>>();
  private readonly upstreams = new Map<string, Upstream>();
  private closed = false;

  constructor(private readonly opts: UpstreamOptions) {}

  /** Replaces the addresses one source wants dialled. */
  setTargets(source: string, addresses: readonly string[]): void {
    if (this.closed) return;
    this.bySource.set(source, new Set(addresses));
    const wanted = new Set<string>();
    for (const set of this.bySource.values()) for (const a of set) wanted.add(a);
    for (const [address, upstream] of this.upstreams) {
      if (wanted.has(address)) continue;
      this.opts.logger.info({ node: address }, 'node removed');
      upstream.close();
      this.upstreams.delete(address);
    }
    for (const address of wanted) {
      if (this.upstreams.has(address)) continue;
      const upstream = new Upstream(address, this.opts);
      this.upstreams.set(address, upstream);
      upstream.start();
    }
  }

  addresses(): string[] {
    return [...this.upstreams.keys()].sort();
  }

  close(): void {
    this.closed = true;
    for (const upstream of this.upstreams.values()) upstream.close();
    this.upstreams.clear();
  }
}
