// Bounds what an unauthenticated peer can hold: every TCP connection that has not finished
// a verified TLS handshake counts as pending, pending connections are capped in total and
// per source address, and each one is closed when its handshake deadline passes. Without
// this, idle sockets or a ClientHello sent a byte at a time hold memory and descriptors
// for as long as the peer likes.
import type { Socket } from 'node:net';

export interface HandshakeLimits {
  /** connections without a completed handshake, all sources together */
  maxPending: number;
  /** the same, per remote address (consumers behind port-forward all come from 127.0.0.1) */
  maxPendingPerSource: number;
  /** from accept to a verified handshake */
  timeoutMs: number;
}

export const HANDSHAKE_DEFAULTS: Readonly<HandshakeLimits> = Object.freeze({ maxPending: 256, maxPendingPerSource: 128, timeoutMs: 10_000 });

export type GateRefusal = 'too_many_pending' | 'timeout';

interface Pending {
  socket: Socket;
  source: string;
  timer: NodeJS.Timeout;
}

export class HandshakeGate {
  private readonly pending = new Map<string, Pending>();
  private readonly perSource = new Map<string, number>();

  constructor(
    private readonly limits: HandshakeLimits,
    private readonly onRefused: (reason: GateRefusal, socket: Socket, detail: string) => void,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** Called for each accepted TCP connection before any TLS byte is read. */
  admit(socket: Socket): void {
    const source = socket.remoteAddress ?? '?';
    const fromSource = this.perSource.get(source) ?? 0;
    if (this.pending.size >= this.limits.maxPending || fromSource >= this.limits.maxPendingPerSource) {
      const which = this.pending.size >= this.limits.maxPending ? `${this.pending.size} pending in all` : `${fromSource} pending from ${source}`;
      this.onRefused('too_many_pending', socket, `refused before the handshake: ${which}`);
      socket.destroy();
      return;
    }
    const key = keyOf(socket);
    const timer = setTimeout(() => {
      this.settle(key);
      this.onRefused('timeout', socket, `no verified TLS handshake within ${this.limits.timeoutMs / 1000}s`);
      socket.destroy();
    }, this.limits.timeoutMs);
    timer.unref();
    this.pending.set(key, { socket, source, timer });
    this.perSource.set(source, fromSource + 1);
    socket.once('close', () => this.settle(key));
  }

  /** The handshake finished (accepted or refused): the connection is no longer pending. */
  settled(socket: Socket): void {
    this.settle(keyOf(socket));
  }

  close(): void {
    for (const key of [...this.pending.keys()]) this.settle(key);
  }

  private settle(key: string): void {
    const entry = this.pending.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.pending.delete(key);
    const left = (this.perSource.get(entry.source) ?? 1) - 1;
    if (left > 0) this.perSource.set(entry.source, left);
    else this.perSource.delete(entry.source);
  }
}

/** The TCP connection's identity, the same on the raw socket and the TLS socket wrapping it. */
function keyOf(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}
