/**
 * {@link Disk} over `node:fs`. Raw file descriptors with the callback API: the promise-based
 * `FileHandle` costs a measurable share of the append path at hundreds of thousands of records
 * per second.
 *
 * Writes of up to SYNC_WRITE_BYTES_MAX are synchronous: `writev` copies them into the page cache
 * on the calling thread, where handing them to libuv's thread pool costs a wake-up of a pool
 * thread and then one of the loop. A CommitLog round under a paced load is a segment write, an
 * index write and an fdatasync one after the other: three hand-offs, now one (the fdatasync).
 * In two interleaved pairs of `bench:raft --rate 50000` the commit p50 was 2.1-3.7 against
 * 3.9-4.8 ms (docs/performance.md). Larger writes, a saturated leader's or a follower's that
 * gathered during an fdatasync, still go to the pool: the copy costs the loop 0.3 ms per MB on
 * an idle machine and 2 to 3 ms per MB on a loaded one, and a blocked loop sends no heartbeat.
 * A buffered write does not usually wait for the device, but it can (dirty-page throttling, a
 * page read back to be partly overwritten, a journal on other file systems).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Disk, DiskFile, FileStat, SyncTiming } from './disk';
import { errnoCode } from '../common/errors';
import { syncTimingUnavailableReason, timedSync } from './timed-sync';
import {
  canReleasePageCache,
  pageCacheUnavailableReason,
  releasePageCache,
} from './page-cache';

/** Writes up to this many bytes are made on the calling thread (see the file comment). */
const SYNC_WRITE_BYTES_MAX = 1024 * 1024;

function call<T>(
  fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => (err ? reject(err) : resolve(value)));
  });
}

function callVoid(fn: (cb: (err: NodeJS.ErrnoException | null) => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    fn((err) => (err ? reject(err) : resolve()));
  });
}

class NodeFile implements DiskFile {
  constructor(
    readonly path: string,
    private readonly fd: number,
  ) {}

  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return call<number>((cb) => fs.read(this.fd, buffer, offset, length, position, cb));
  }

  /** Synchronous when small (see the file comment); a failure rejects either way. */
  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    let pos = position;
    let pending = buffers.filter((b) => b.byteLength > 0);
    let total = 0;
    for (const b of pending) total += b.byteLength;
    const inPlace = total <= SYNC_WRITE_BYTES_MAX;
    // Each pass writes at least a byte (a short write is legal, none is not), so this ends.
    while (pending.length > 0) {
      const list = pending;
      const written = inPlace
        ? fs.writevSync(this.fd, list, pos)
        : await call<number>((cb) => fs.writev(this.fd, list, pos, cb));
      if (!(written > 0)) throw new Error(`writev to ${this.path} wrote nothing at ${pos}`);
      pos += written;
      pending = dropBytes(list, written);
    }
  }

  sync(): Promise<SyncTiming | undefined> {
    return timedSync('fdatasync', this.fd, this.path);
  }

  releaseCache(position: number, length: number): void {
    releasePageCache(this.fd, position, length);
  }

  truncate(sizeBytes: number): Promise<void> {
    return callVoid((cb) => fs.ftruncate(this.fd, sizeBytes, cb));
  }

  async size(): Promise<number> {
    const st = await call<fs.Stats>((cb) => fs.fstat(this.fd, cb));
    return st.size;
  }

  close(): Promise<void> {
    return callVoid((cb) => fs.close(this.fd, cb));
  }
}

/** What remains of `buffers` after the first `count` bytes (short writes are legal). */
function dropBytes(buffers: readonly Uint8Array[], count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = count;
  for (const b of buffers) {
    if (skip >= b.byteLength) {
      skip -= b.byteLength;
    } else {
      out.push(skip > 0 ? b.subarray(skip) : b);
      skip = 0;
    }
  }
  return out;
}

/** The real file system. */
export class NodeDisk implements Disk {
  readonly releasesCache = canReleasePageCache;
  readonly cacheReleaseUnavailable = pageCacheUnavailableReason;
  readonly syncTimingUnavailable = syncTimingUnavailableReason;

  async open(filePath: string, create: boolean): Promise<DiskFile> {
    const flags = create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDWR;
    const fd = await call<number>((cb) => fs.open(filePath, flags, 0o644, cb));
    return new NodeFile(filePath, fd);
  }

  async list(dir: string): Promise<string[]> {
    try {
      return await fs.promises.readdir(dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
  }

  async mkdirp(dir: string): Promise<void> {
    await fs.promises.mkdir(dir, { recursive: true });
  }

  async remove(filePath: string): Promise<void> {
    await fs.promises.rm(filePath, { force: true });
  }

  async removeTree(dirPath: string): Promise<void> {
    await fs.promises.rm(dirPath, { force: true, recursive: true });
  }

  async syncDir(dir: string): Promise<SyncTiming | undefined> {
    const fd = await call<number>((cb) => fs.open(dir, fs.constants.O_RDONLY, cb));
    try {
      return await timedSync('fsync', fd, dir);
    } finally {
      await callVoid((cb) => fs.close(fd, cb));
    }
  }

  async stat(filePath: string): Promise<FileStat | undefined> {
    try {
      const st = await fs.promises.stat(filePath);
      return { sizeBytes: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  async freeBytes(filePath: string): Promise<number> {
    const st = await fs.promises.statfs(path.resolve(filePath));
    return st.bavail * st.bsize;
  }
}
