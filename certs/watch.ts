// Notices when a set of files in one directory has new content. Kubernetes updates a
// mounted secret by swapping the `..data` symlink in the directory, so the directory is
// watched (a watch on the files would follow the old inode); editors and tools rewrite in
// place; and fs events get lost (network filesystems, overlay quirks), so a periodic
// checksum check backs the watch up. A change is reported only once two reads a debounce
// apart agree, so a half-written file or a file briefly missing mid-swap is not reported.
import { createHash } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';

export interface FileSnapshot {
  /** sha256 over every file's name and content (or its absence) */
  readonly checksum: string;
  /** file name → content; absent when the file could not be read */
  readonly contents: ReadonlyMap<string, string>;
  /** file name → why it could not be read */
  readonly unreadable: ReadonlyMap<string, string>;
}

export async function readFileSet(dir: string, files: readonly string[]): Promise<FileSnapshot> {
  const hash = createHash('sha256');
  const contents = new Map<string, string>();
  const unreadable = new Map<string, string>();
  for (const name of files) {
    try {
      const text = await readFile(join(dir, name), 'utf8');
      contents.set(name, text);
      hash.update(`${name}\0${text.length}\0${text}\0`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      unreadable.set(name, code === 'ENOENT' ? 'file not found' : (err as Error).message);
      hash.update(`${name}\0unreadable:${code}\0`);
    }
  }
  return { checksum: hash.digest('hex'), contents, unreadable };
}

export interface FileSetWatcherOptions {
  dir: string;
  files: readonly string[];
  /** checksum of the content already in use: no change is reported until it differs */
  initialChecksum: string;
  intervalMs: number;
  debounceMs?: number;
  logger: Logger;
  onChange: (snapshot: FileSnapshot) => void;
}

export class FileSetWatcher {
  private fsWatcher: FSWatcher | undefined;
  private readonly interval: NodeJS.Timeout;
  private debounce: NodeJS.Timeout | undefined;
  private lastReported: string;
  private pending: string | undefined;
  private running = false;
  private again = false;
  private closed = false;
  private readonly debounceMs: number;

  constructor(private readonly options: FileSetWatcherOptions) {
    this.lastReported = options.initialChecksum;
    this.debounceMs = options.debounceMs ?? 150;
    this.interval = setInterval(() => void this.check(), options.intervalMs);
    this.interval.unref();
    try {
      this.fsWatcher = watch(options.dir, { persistent: false }, () => this.schedule());
      this.fsWatcher.on('error', (err) => {
        options.logger.warn({ dir: options.dir, err: err.message }, 'watching the certificate directory failed; relying on the periodic check');
        this.fsWatcher?.close();
        this.fsWatcher = undefined;
      });
    } catch (err) {
      options.logger.warn({ dir: options.dir, err: (err as Error).message }, 'cannot watch the certificate directory; relying on the periodic check');
    }
  }

  /** Checks soon (coalescing bursts of fs events into one read). */
  schedule(): void {
    if (this.closed || this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.check();
    }, this.debounceMs);
    this.debounce.unref();
  }

  /** Reads the files now; reports when the content changed and has settled. */
  async check(): Promise<void> {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      const snapshot = await readFileSet(this.options.dir, this.options.files);
      if (this.closed) return;
      if (snapshot.checksum === this.lastReported) {
        this.pending = undefined;
      } else if (snapshot.checksum !== this.pending) {
        // first sight of this content: confirm it after a debounce before reporting
        this.pending = snapshot.checksum;
        this.schedule();
      } else {
        this.pending = undefined;
        this.lastReported = snapshot.checksum;
        this.options.onChange(snapshot);
      }
    } catch (err) {
      this.options.logger.warn({ dir: this.options.dir, err: (err as Error).message }, 'reading certificate files failed');
    } finally {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.interval);
    if (this.debounce) clearTimeout(this.debounce);
    this.fsWatcher?.close();
    this.fsWatcher = undefined;
  }
}
