/**
 * The store's only door to the file system. Production uses {@link NodeDisk}; the simulator and
 * the crash tests use a simulated disk that can lose whatever was not synced. Every store
 * component takes a `Disk`, never `node:fs`.
 */

/** How long a sync (a file's fdatasync, a directory's fsync) spent in its system call. */
export interface SyncTiming {
  /**
   * The system call from entry to return on its thread: the kernel's writeback of the file's
   * pages and the device, and on a busy machine the wait for a CPU once the device answered.
   */
  readonly callMs: number;
}

/** An open file. Positions and sizes are in bytes. */
export interface DiskFile {
  readonly path: string;
  /** Reads up to `length` bytes at `position` into `buffer[offset..]`; returns bytes read. */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Writes all of `buffers`, back to back, starting at `position`. */
  writev(buffers: readonly Uint8Array[], position: number): Promise<void>;
  /**
   * Makes every completed write durable (fdatasync). Resolves with the call's own time when the
   * disk measures it (the real one with the timed-sync addon), else with nothing.
   */
  sync(): Promise<SyncTiming | void>;
  /** Sets the file's length; shortening drops the tail. Durable only after `sync()`. */
  truncate(sizeBytes: number): Promise<void>;
  /** The current length. */
  size(): Promise<number>;
  /**
   * Advises that the cached pages of `length` bytes from `position` will not be read soon
   * (posix_fadvise DONTNEED): clean ones are freed, contents never change. Callers release only
   * ranges they have synced. Synchronous; a no-op unless the disk's `releasesCache` is true.
   */
  releaseCache(position: number, length: number): void;
  close(): Promise<void>;
}

export interface FileStat {
  sizeBytes: number;
  /** Last modification, wall-clock milliseconds. */
  mtimeMs: number;
}

export interface Disk {
  /** Whether `DiskFile.releaseCache` does anything here (see page-cache.ts). */
  readonly releasesCache: boolean;
  /** Why it does not, when known (logged once by each CommitLog that would release). */
  readonly cacheReleaseUnavailable?: string;
  /**
   * Why this disk does not time its sync calls though it could (the real one without its
   * timed-sync addon); undefined otherwise. Logged once by each CommitLog.
   */
  readonly syncTimingUnavailable?: string;
  /** Opens a file for reading and writing, creating it when `create` is set. */
  open(path: string, create: boolean): Promise<DiskFile>;
  /** Names (not paths) of the entries of a directory; [] when it does not exist. */
  list(dir: string): Promise<string[]>;
  /** Creates a directory and its parents. */
  mkdirp(dir: string): Promise<void>;
  /** Removes a file; no error when it does not exist. */
  remove(path: string): Promise<void>;
  /** Removes a directory tree; no error when it does not exist. */
  removeTree(path: string): Promise<void>;
  /**
   * Makes creations, removals and renames in `dir` durable (fsync of the directory); resolves
   * like `DiskFile.sync`.
   */
  syncDir(dir: string): Promise<SyncTiming | void>;
  stat(path: string): Promise<FileStat | undefined>;
  /** Free bytes on the file system holding `path` (for retention by disk usage). */
  freeBytes(path: string): Promise<number>;
}
