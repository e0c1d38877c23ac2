/**
 * {@link Disk} over `node:fs`. Raw file descriptors with the callback API: the promise-based
 * `FileHandle` costs a measurable share of the append path at hundreds of thousands of records
 * per second.
 *
 * Writes are synchronous (`writev` copies into the page cache on the calling thread; only
 * `sync()`, reads and the rest go to the thread pool): handing each write to a pool thread costs
 * a wake-up of that thread and one of the loop when it is done, and a CommitLog round is a
 * segment write, an index write and an fdatasync one after the other. With the writes done in
 * place a round is one hand-off instead of three: `bench:raft` at 50,000 entries/s, commit p50
 * 2.1-3.7 against 3.9-4.8 ms (docs/performance.md). A write to the page cache does not wait for
 * the device; what it costs the loop is the copy, about 0.3 ms per MB.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Disk, DiskFile, FileStat } from './disk';
import { errnoCode } from '../common/errors';

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

  /** Synchronous underneath (see the file comment); a failure rejects as before. */
  // eslint-disable-next-line @typescript-eslint/require-await
  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    let pos = position;
    let pending = buffers.filter((b) => b.byteLength > 0);
    while (pending.length > 0) {
      const written = fs.writevSync(this.fd, pending, pos);
      pos += written;
      pending = dropBytes(pending, written);
    }
  }

  sync(): Promise<void> {
    return callVoid((cb) => fs.fdatasync(this.fd, cb));
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

  async syncDir(dir: string): Promise<void> {
    const fd = await call<number>((cb) => fs.open(dir, fs.constants.O_RDONLY, cb));
    try {
      await callVoid((cb) => fs.fsync(fd, cb));
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
