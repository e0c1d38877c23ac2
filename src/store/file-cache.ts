/**
 * A bounded cache of open files. Segment, index and ConsumeQueue files are many; descriptors are
 * few. The least recently used handle is closed when more than `openFilesMax` are open, but
 * never while an operation is using it: closing a descriptor under an in-flight read could let
 * the number be reused and the read land in another file.
 */
import type { Disk, DiskFile } from './disk';

interface Entry {
  handle: Promise<DiskFile>;
  users: number;
  /** Set when evicted or forgotten while in use: the last user closes it. */
  closing: boolean;
}

export class FileCache {
  /** Insertion order is recency order: a hit is moved to the end. */
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly disk: Disk,
    private readonly openFilesMax: number,
  ) {}

  /** Runs `fn` with the open handle of `filePath`, opening (and creating, if asked) it. */
  async use<T>(filePath: string, create: boolean, fn: (file: DiskFile) => Promise<T>): Promise<T> {
    const entry = this.acquire(filePath, create);
    try {
      return await fn(await entry.handle);
    } finally {
      await this.release(entry);
    }
  }

  /**
   * Runs `fn` with the handle of `filePath` only if it is open now (without opening it or
   * counting as a use for recency); returns whether it ran. A handle whose open failed counts
   * as not open (its user sees the failure).
   */
  async useIfOpen(filePath: string, fn: (file: DiskFile) => void): Promise<boolean> {
    const entry = this.entries.get(filePath);
    if (!entry || entry.closing) return false;
    entry.users++;
    try {
      let file: DiskFile;
      try {
        file = await entry.handle;
      } catch {
        return false;
      }
      fn(file);
      return true;
    } finally {
      await this.release(entry);
    }
  }

  /** Ends one use of `entry`; the last user of an evicted or forgotten handle closes it. */
  private async release(entry: Entry): Promise<void> {
    entry.users--;
    if (entry.closing && entry.users === 0) await closeQuietly(entry.handle);
  }

  private acquire(filePath: string, create: boolean): Entry {
    let entry = this.entries.get(filePath);
    if (entry) {
      this.entries.delete(filePath);
    } else {
      const handle = this.disk.open(filePath, create);
      entry = { handle, users: 0, closing: false };
      const created = entry;
      // A failed open must not stay cached; the caller still sees the rejection through `use`.
      handle.catch(() => {
        if (this.entries.get(filePath) === created) this.entries.delete(filePath);
      });
    }
    this.entries.set(filePath, entry);
    entry.users++;
    this.evict();
    return entry;
  }

  /** Closes and drops the handle of a file about to be removed or truncated away. */
  async forget(filePath: string): Promise<void> {
    const entry = this.entries.get(filePath);
    if (!entry) return;
    this.entries.delete(filePath);
    entry.closing = true;
    if (entry.users === 0) await closeQuietly(entry.handle);
  }

  async closeAll(): Promise<void> {
    for (const filePath of [...this.entries.keys()]) await this.forget(filePath);
  }

  private evict(): void {
    for (const [filePath, entry] of this.entries) {
      if (this.entries.size <= this.openFilesMax) return;
      if (entry.users > 0) continue;
      this.entries.delete(filePath);
      entry.closing = true;
      // Nobody is using it, so closing cannot race a read. A close failure on a file we only
      // read or already synced loses nothing; it is reported by the disk layer's own errors.
      void closeQuietly(entry.handle);
    }
  }
}

/** Closes a handle whose open may have failed; a failed open has nothing to close. */
async function closeQuietly(handle: Promise<DiskFile>): Promise<void> {
  let file: DiskFile;
  try {
    file = await handle;
  } catch {
    // The open failed and its caller got that error; there is no descriptor to close.
    return;
  }
  try {
    await file.close();
  } catch {
    // close(2) failing after a successful fsync loses nothing; writes are synced before any
    // file is dropped from the cache by the store (sync-before-forget is the store's rule).
    return;
  }
}
