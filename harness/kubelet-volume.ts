// Certificate directories as the relay meets them (used by tests and bench:tls): a Kubernetes
// projected secret volume (updated by kubelet's atomic writer) or a plain directory rewritten in place.
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IssuedPair } from '../certs/issue.js';

/** The five files of the `external` provider. */
export const EXTERNAL_FILES = ['ca.crt', 'server.crt', 'server.key', 'client.crt', 'client.key'] as const;

export interface ExternalGeneration {
  caPem: string;
  server: IssuedPair;
  client: IssuedPair;
}

export function externalContents(g: ExternalGeneration): Record<string, string> {
  return { 'ca.crt': g.caPem, 'server.crt': g.server.certPem, 'server.key': g.server.keyPem, 'client.crt': g.client.certPem, 'client.key': g.client.keyPem };
}

/**
 * The layout kubelet gives a projected secret volume:
 *   ..2026_01_02_03_04_05.000000001/{ca.crt,...}   the timestamped payload directory
 *   ..data -> ..2026_01_02_03_04_05.000000001      swapped atomically at every update
 *   ca.crt -> ..data/ca.crt  (one symlink per file, created once)
 * publish() updates it the way kubelet's atomic writer does: write a new timestamped dir,
 * symlink `..data_tmp` to it, rename `..data_tmp` over `..data`, remove the old dir.
 */
export class KubeletVolume {
  private current = '';
  private n = 0;
  constructor(readonly dir: string) {}

  /** The timestamped directory `..data` points to now. */
  get payloadDir(): string {
    return this.current;
  }

  publish(files: Record<string, string>): void {
    const stamped = `..2026_01_02_03_04_05.${String(++this.n).padStart(9, '0')}`;
    mkdirSync(join(this.dir, stamped), { mode: 0o755 });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(this.dir, stamped, name), text, { mode: 0o644 });
    symlinkSync(stamped, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (!this.current) for (const name of Object.keys(files)) symlinkSync(join('..data', name), join(this.dir, name));
    else rmSync(join(this.dir, this.current), { recursive: true, force: true });
    this.current = stamped;
  }
}
