// The set of node daemons the relay dials. Several sources feed it (static --nodes,
// Kubernetes discovery); the union is dialled, and an address that leaves every source
// is closed.
import { Upstream, type UpstreamOptions, type UpstreamState } from './upstream.js';

export type NodeSource = 'static' | 'kubernetes';

export class UpstreamSet {
  private readonly bySource = new Map<NodeSource, ReadonlySet<string>>();
  private readonly upstreams = new Map<string, Upstream>();
  private closed = false;

  constructor(private readonly opts: UpstreamOptions) {}

  /** Replaces the addresses one source wants dialled. */
  setTargets(source: NodeSource, addresses: readonly string[]): void {
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

  /** Each node's state and the first source that lists it. */
  states(): (UpstreamState & { source: NodeSource })[] {
    return [...this.upstreams.values()].map((u) => {
      const state = u.state();
      const source = [...this.bySource].find(([, set]) => set.has(u.address))?.[0] ?? 'static';
      return { ...state, source };
    });
  }

  close(): void {
    this.closed = true;
    for (const upstream of this.upstreams.values()) upstream.close();
    this.upstreams.clear();
  }
}
