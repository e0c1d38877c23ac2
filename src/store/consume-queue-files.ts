/**
 * The files of one ConsumeQueue: which exist (named by first offset, contiguous), writing
 * records into them, reading records back, syncing (written files first, then the names: never
 * a name before its data), cutting the tail and removing whole files. Offsets, the pending
 * buffer and the record checks stay with the queue (consume-queue.ts).
 *
 * Every write, sync, truncate or removal goes through `io`, which hands a failure to the
 * queue's `fail`: the queue then stops for good and every later call throws the same error.
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import type { FileCache } from './file-cache';
import type { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { CQ_RECORD_BYTES, queueFilePath, readFully } from './consume-queue-record';

/** A queue directory and what to reach it with. */
export interface QueueFilesContext {
  disk: Disk;
  /** Shared by all queues; the owner closes it. */
  files: FileCache;
  dir: string;
  entriesPerFile: number;
  log: Logger;
}

/** The file set of one queue directory; see the file comment. */
export class ConsumeQueueFiles {
  /** First offsets of the files, ascending and contiguous. */
  private starts: number[] = [];
  private readonly dirtyStarts = new Set<number>();
  private dirDirty = false;
  /** Topic and root directories may hold new names (the queue directory was just created). */
  private parentsDirty = false;

  private readonly disk: Disk;
  private readonly cache: FileCache;
  private readonly dir: string;
  private readonly entries: number;
  private readonly log: Logger;

  /** `root` holds the topic directories; `fail` stops the queue and returns the error to throw. */
  constructor(
    readonly ctx: QueueFilesContext,
    private readonly root: string,
    private readonly fail: (err: unknown) => RaftmqError,
  ) {
    this.disk = ctx.disk;
    this.cache = ctx.files;
    this.dir = ctx.dir;
    this.entries = ctx.entriesPerFile;
    this.log = ctx.log;
  }

  /** True when nothing written is unsynced. */
  isClean(): boolean {
    return this.dirtyStarts.size === 0 && !this.dirDirty && !this.parentsDirty;
  }

  /** The first offset of the first file, if any. */
  firstStart(): number | undefined {
    return this.starts[0];
  }
  fileCount(): number {
    return this.starts.length;
  }
  /** The first offset of file `i` (0 = oldest); `i` must be below `fileCount()`. */
  startAt(i: number): number {
    return this.starts[i] as number;
  }
  fileStartOf(offset: number): number {
    return offset - (offset % this.entries);
  }
  filePath(start: number): string {
    return queueFilePath(this.dir, start);
  }

  /** Takes the files recovery found (ascending, contiguous); later cuts replace the array. */
  adopt(starts: number[]): void {
    this.starts = starts;
  }

  /** Marks every file and name unsynced: recovery makes what it keeps durable. */
  markAllDirty(): void {
    for (const start of this.starts) this.dirtyStarts.add(start);
    this.dirDirty = true;
    this.parentsDirty = true;
  }

  /** Runs a write, sync, truncate or removal; any failure stops the queue for good. */
  private async io<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.fail(err);
    }
  }

  /** Writes `count` records from `data` at offset `first` (one write per file), unsynced. */
  async write(first: number, data: Buffer, count: number): Promise<void> {
    for (let done = 0; done < count;) {
      const offset = first + done;
      const start = this.fileStartOf(offset);
      const n = Math.min(count - done, start + this.entries - offset);
      const chunk = data.subarray(done * CQ_RECORD_BYTES, (done + n) * CQ_RECORD_BYTES);
      const create = start > (this.starts[this.starts.length - 1] ?? -1);
      if (create) {
        await this.io(() => this.disk.mkdirp(this.dir));
        if (this.starts.length === 0) this.parentsDirty = true;
      }
      await this.io(() =>
        this.cache.use(this.filePath(start), create, (f) =>
          f.writev([chunk], (offset - start) * CQ_RECORD_BYTES),
        ),
      );
      if (create) {
        this.starts.push(start);
        this.dirDirty = true;
        this.log.debug({ dir: this.dir, start }, 'consume queue file created');
      }
      this.dirtyStarts.add(start);
      done += n;
    }
  }

  /** Reads the records [lo, end) from the files into `buf` from its start (zeros past EOF). */
  async read(buf: Buffer, lo: number, end: number): Promise<void> {
    for (let offset = lo; offset < end;) {
      const start = this.fileStartOf(offset);
      const n = Math.min(end, start + this.entries) - offset;
      await readFully(
        this.cache,
        this.filePath(start),
        buf,
        (offset - lo) * CQ_RECORD_BYTES,
        n * CQ_RECORD_BYTES,
        (offset - start) * CQ_RECORD_BYTES,
      );
      offset += n;
    }
  }

  /** Syncs written files, then the names (never a name before its data). */
  async syncDirty(): Promise<void> {
    for (const start of [...this.dirtyStarts]) {
      await this.io(() => this.cache.use(this.filePath(start), false, (f) => f.sync()));
      this.dirtyStarts.delete(start);
    }
    if (this.dirDirty) {
      await this.io(() => this.disk.syncDir(this.dir));
      this.dirDirty = false;
    }
    if (this.parentsDirty) {
      await this.io(() => this.disk.syncDir(path.dirname(this.dir)));
      await this.io(() => this.disk.syncDir(this.root));
      this.parentsDirty = false;
    }
  }

  /** Takes the first `count` files out of the set; `removeFiles` then deletes them. */
  dropFirst(count: number): number[] {
    return this.starts.splice(0, count);
  }

  /** Deletes files already dropped from the set (what is written is synced first). */
  async removeFiles(removed: readonly number[]): Promise<void> {
    await this.syncDirty();
    for (const start of removed) await this.removeFile(start);
    await this.io(() => this.disk.syncDir(this.dir));
    this.log.debug({ dir: this.dir, files: removed.length }, 'consume queue files removed');
  }

  /** Deletes one file (its name is synced by the caller). */
  async removeFile(start: number): Promise<void> {
    const file = this.filePath(start);
    await this.cache.forget(file);
    await this.io(() => this.disk.remove(file));
    this.dirtyStarts.delete(start);
  }

  /** Shortens the file holding slot `cut` to end there (synced) and removes later files. */
  async cutAt(cut: number): Promise<void> {
    const keep = this.fileStartOf(cut);
    await this.io(() =>
      this.cache.use(this.filePath(keep), false, async (f) => {
        await f.truncate((cut - keep) * CQ_RECORD_BYTES);
        await f.sync();
      }),
    );
    this.dirtyStarts.delete(keep);
    const later = this.starts.filter((s) => s > keep);
    if (later.length === 0) return;
    this.starts = this.starts.filter((s) => s <= keep);
    await this.syncDirty();
    for (const start of later) await this.removeFile(start);
    await this.io(() => this.disk.syncDir(this.dir));
  }

  /** Releases every file's descriptor. */
  async forgetAll(): Promise<void> {
    for (const start of this.starts) await this.cache.forget(this.filePath(start));
  }
}
