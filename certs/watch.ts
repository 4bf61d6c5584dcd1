// Notices when a set of files in one directory has new content. Kubernetes updates a
// mounted secret by swapping the `..data` symlink in the directory, so the directory is
// watched (a watch on the files would follow the old inode); editors and tools rewrite in
// place; and fs events get lost (network filesystems, overlay quirks), so a periodic
// checksum check backs the watch up. A change is reported only once two reads a debounce
// apart agree, so a half-written file or a file briefly missing mid-swap is not reported.
import { createHash } from 'node:crypto';
import { type FSWatcher, constants, watch } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';

export interface FileSnapshot {
  /** sha256 over every file's name and content (or its absence) */
  readonly checksum: string;
  /** file name → content; absent when the file could not be read */
  readonly contents: ReadonlyMap<string, string>;
  /** file name → why it could not be read */
  readonly unreadable: ReadonlyMap<string, string>;
  /** file name → permission bits of what was read */
  readonly modes: ReadonlyMap<string, number>;
}

/**
 * Largest certificate or key file read. A CA bundle of 100 certificates is ~200 KiB; a
 * bigger file is a mistake or an attack (ca.crt pointing at /dev/zero).
 */
export const MAX_CERT_FILE_BYTES = 1024 * 1024;

export async function readFileSet(dir: string, files: readonly string[]): Promise<FileSnapshot> {
  const hash = createHash('sha256');
  const contents = new Map<string, string>();
  const unreadable = new Map<string, string>();
  const modes = new Map<string, number>();
  for (const name of files) {
    try {
      const { text, mode } = await readBounded(join(dir, name));
      contents.set(name, text);
      modes.set(name, mode);
      hash.update(`${name}\0${text.length}\0${text}\0`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      unreadable.set(name, code === 'ENOENT' ? 'file not found' : (err as Error).message);
      hash.update(`${name}\0unreadable:${code}:${(err as Error).message}\0`);
    }
  }
  return { checksum: hash.digest('hex'), contents, unreadable, modes };
}

/**
 * Reads a regular file (symlinks followed, as the kubelet's `..data` links must be) of at
 * most MAX_CERT_FILE_BYTES. O_NONBLOCK makes opening a FIFO return at once instead of
 * waiting for a writer; the type is checked on the opened descriptor, so a swap between
 * check and read cannot slip a device or pipe in.
 */
export async function readBounded(path: string): Promise<{ text: string; mode: number }> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw Object.assign(new Error(`${path} is not a regular file (${fileType(stat)})`), { code: 'ENOTREG' });
    if (stat.size > MAX_CERT_FILE_BYTES) throw Object.assign(new Error(`${path} is ${stat.size} bytes, above the ${MAX_CERT_FILE_BYTES}-byte limit`), { code: 'EFBIG' });
    // the file may grow after fstat: read until EOF, never past one byte over the limit
    let buffer = Buffer.alloc(stat.size + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        if (length > MAX_CERT_FILE_BYTES) throw Object.assign(new Error(`${path} grew above the ${MAX_CERT_FILE_BYTES}-byte limit while read`), { code: 'EFBIG' });
        buffer = Buffer.concat([buffer, Buffer.alloc(Math.min(buffer.length, MAX_CERT_FILE_BYTES + 1 - buffer.length))]);
      }
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return { text: buffer.toString('utf8', 0, length), mode: stat.mode & 0o777 };
  } finally {
    await handle.close();
  }
}

function fileType(stat: { isFIFO(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isDirectory(): boolean; isSocket(): boolean }): string {
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  if (stat.isDirectory()) return 'a directory';
  if (stat.isSocket()) return 'a socket';
  return 'not a regular file';
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
