/**
 * A simulated disk for the simulator and the crash tests. It keeps two images of every file:
 * what a reader sees now, and what would survive a power loss (the state at the last `sync`).
 * Names are durable only after `syncDir` of their directory, as on a POSIX file system.
 *
 * `crash()` models the faults the store claims to survive:
 * - `'lose'`: everything not synced is gone (files and names);
 * - `'tear'`: the unsynced writes of each file survive up to a random byte, in order (never a
 *   later write without every earlier one: the CommitLog's recovery reads a valid record after
 *   a bad one as corruption and refuses to start, docs/storage.md, Recovery rule 4, so it
 *   assumes unsynced bytes survive as a prefix; see docs/raft.md on why that is not simulated);
 * - `'keep'`: a process crash (kill -9): the page cache survives, nothing is lost.
 * Directories themselves are always durable (the store creates them once, at open).
 */
import * as path from 'node:path';
import type { Disk, DiskFile, FileStat } from '../store/disk';
import type { Clock } from '../common/clock';
import type { Prng } from '../common/prng';

export type CrashMode = 'lose' | 'tear' | 'keep';
export type DiskOp =
  'open' | 'write' | 'sync' | 'truncate' | 'remove' | 'syncDir' | 'read' | 'releaseCache';

/** Called before every operation; throw from it to inject a failure (EIO, ENOSPC...). */
export type DiskHook = (op: DiskOp, filePath: string) => void;

type Pending =
  { kind: 'write'; position: number; bytes: Uint8Array } | { kind: 'truncate'; size: number };

class Image {
  bytes = new Uint8Array(0);
  size = 0;

  clone(): Image {
    const copy = new Image();
    copy.bytes = this.bytes.slice(0, this.size);
    copy.size = this.size;
    return copy;
  }

  private ensureCapacity(length: number): void {
    if (length > this.bytes.byteLength) {
      const grown = new Uint8Array(Math.max(length, this.bytes.byteLength * 2, 4096));
      grown.set(this.bytes.subarray(0, this.size));
      this.bytes = grown;
    }
  }

  write(position: number, data: Uint8Array): void {
    const end = position + data.byteLength;
    this.ensureCapacity(end);
    if (position > this.size) this.bytes.fill(0, this.size, position);
    this.bytes.set(data, position);
    this.size = Math.max(this.size, end);
  }

  truncate(size: number): void {
    this.ensureCapacity(size);
    if (size < this.size) this.bytes.fill(0, size, this.size);
    else this.bytes.fill(0, this.size, size);
    this.size = size;
  }
}

class SimInode {
  current = new Image();
  durable = new Image();
  pending: Pending[] = [];
  mtimeMs: number;

  constructor(mtimeMs: number) {
    this.mtimeMs = mtimeMs;
  }
}

export class SimDiskError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'SimDiskError';
  }
}

class SimFile implements DiskFile {
  constructor(
    readonly path: string,
    private readonly disk: SimDisk,
    private readonly inode: SimInode,
    private readonly generation: number,
  ) {}

  private check(op: DiskOp): void {
    if (this.generation !== this.disk.generation) {
      throw new SimDiskError('EBADF', `${op} ${this.path}: handle from before a crash`);
    }
    this.disk.runHook(op, this.path);
  }

  async read(
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): Promise<number> {
    await this.disk.yieldTurn();
    this.check('read');
    const img = this.inode.current;
    const count = Math.max(0, Math.min(length, img.size - position));
    buffer.set(img.bytes.subarray(position, position + count), offset);
    return count;
  }

  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    await this.disk.yieldTurn();
    this.check('write');
    let pos = position;
    for (const b of buffers) {
      this.disk.chargeSpace(this.inode, pos, b.byteLength);
      // A real copy: Buffer#slice would return a view the caller may reuse.
      const copy = new Uint8Array(b);
      this.inode.current.write(pos, copy);
      this.inode.pending.push({ kind: 'write', position: pos, bytes: copy });
      pos += b.byteLength;
    }
    this.inode.mtimeMs = this.disk.clock.nowMs();
  }

  async sync(): Promise<void> {
    await this.disk.yieldTurn();
    this.check('sync');
    this.inode.durable = this.inode.current.clone();
    this.inode.pending = [];
  }

  /** Counts the bytes released, and those of them not yet synced (a caller's bug). */
  releaseCache(position: number, length: number): void {
    this.check('releaseCache');
    const end = position + length;
    // Unsynced: whatever a pending truncation may change, bytes past the synced size, and bytes
    // of pending writes; counted once each (bytes past the file's end are not cached at all).
    const { current, durable, pending } = this.inode;
    let unsynced: Array<[number, number]> = pending.some((op) => op.kind === 'truncate')
      ? [[position, end]]
      : [[durable.size, current.size]];
    for (const op of pending) {
      if (op.kind === 'write') unsynced.push([op.position, op.position + op.bytes.byteLength]);
    }
    unsynced = unsynced
      .map(([a, b]): [number, number] => [Math.max(a, position), Math.min(b, end)])
      .filter(([a, b]) => b > a)
      .sort((x, y) => x[0] - y[0]);
    let unsyncedBytes = 0;
    let covered = position;
    for (const [a, b] of unsynced) {
      unsyncedBytes += Math.max(0, b - Math.max(a, covered));
      covered = Math.max(covered, b);
    }
    this.disk.cacheReleases.releasedBytes += length;
    this.disk.cacheReleases.unsyncedBytes += unsyncedBytes;
    this.disk.cacheReleases.ranges.push({ path: this.path, position, length });
  }

  async truncate(sizeBytes: number): Promise<void> {
    await this.disk.yieldTurn();
    this.check('truncate');
    this.inode.current.truncate(sizeBytes);
    this.inode.pending.push({ kind: 'truncate', size: sizeBytes });
    this.inode.mtimeMs = this.disk.clock.nowMs();
  }

  async size(): Promise<number> {
    await this.disk.yieldTurn();
    this.check('read');
    return this.inode.current.size;
  }

  async close(): Promise<void> {
    await this.disk.yieldTurn();
  }
}

export interface SimDiskOptions {
  clock: Clock;
  prng: Prng;
  /** Total bytes the disk holds; writes past it fail with ENOSPC. */
  capacityBytes?: number;
}

/** An in-memory {@link Disk} with power-loss semantics. */
export class SimDisk implements Disk {
  /** Models a disk whose page cache the store releases, so the simulator covers that path. */
  readonly releasesCache = true;
  /**
   * What `releaseCache` was asked for: bytes, bytes of them not synced at the time, and the
   * ranges (file, position, length) in order.
   */
  readonly cacheReleases = {
    releasedBytes: 0,
    unsyncedBytes: 0,
    ranges: [] as Array<{ path: string; position: number; length: number }>,
  };
  readonly clock: Clock;
  private readonly prng: Prng;
  private readonly capacityBytes: number;
  /** Bumped by every crash; handles of an older generation fail. */
  generation = 0;
  private names = new Map<string, SimInode>();
  private durableNames = new Map<string, SimInode>();
  private readonly dirs = new Set<string>(['/']);
  private hook: DiskHook | undefined;

  constructor(options: SimDiskOptions) {
    this.clock = options.clock;
    this.prng = options.prng;
    this.capacityBytes = options.capacityBytes ?? Number.MAX_SAFE_INTEGER;
  }

  /** Installs (or clears) a hook run before every operation. */
  setHook(hook: DiskHook | undefined): void {
    this.hook = hook;
  }

  runHook(op: DiskOp, filePath: string): void {
    this.hook?.(op, filePath);
  }

  /** Every operation completes asynchronously, as on a real disk. */
  yieldTurn(): Promise<void> {
    return Promise.resolve();
  }

  usedBytes(): number {
    let total = 0;
    for (const inode of new Set(this.names.values())) total += inode.current.size;
    return total;
  }

  chargeSpace(inode: SimInode, position: number, length: number): void {
    const growth = Math.max(0, position + length - inode.current.size);
    if (growth > 0 && this.usedBytes() + growth > this.capacityBytes) {
      throw new SimDiskError('ENOSPC', 'no space left on simulated disk');
    }
  }

  /** Simulates a power loss or process crash; every open handle becomes invalid. */
  crash(mode: CrashMode): void {
    this.generation++;
    if (mode === 'keep') return;
    const survivors = new Map<string, SimInode>();
    for (const [name, inode] of this.durableNames) survivors.set(name, inode);
    for (const inode of new Set(survivors.values())) {
      const img = inode.durable.clone();
      if (mode === 'tear') this.replayTorn(img, inode.pending);
      inode.current = img;
      inode.durable = img.clone();
      inode.pending = [];
    }
    this.names = new Map(survivors);
    this.durableNames = new Map(survivors);
  }

  /** Applies unsynced operations in order, stopping at a random byte. */
  private replayTorn(img: Image, pending: readonly Pending[]): void {
    let budget = 0;
    for (const op of pending) budget += op.kind === 'write' ? op.bytes.byteLength : 1;
    let keep = this.prng.nextInt(0, budget + 1);
    for (const op of pending) {
      if (keep <= 0) return;
      if (op.kind === 'truncate') {
        img.truncate(op.size);
        keep -= 1;
      } else {
        const n = Math.min(keep, op.bytes.byteLength);
        img.write(op.position, op.bytes.subarray(0, n));
        keep -= n;
      }
    }
  }

  private requireDir(dir: string, filePath: string): void {
    if (!this.dirs.has(dir)) throw new SimDiskError('ENOENT', `no directory for ${filePath}`);
  }

  async open(filePath: string, create: boolean): Promise<DiskFile> {
    await this.yieldTurn();
    this.runHook('open', filePath);
    const p = path.resolve(filePath);
    let inode = this.names.get(p);
    if (!inode) {
      if (!create) throw new SimDiskError('ENOENT', `no such file: ${p}`);
      this.requireDir(path.dirname(p), p);
      inode = new SimInode(this.clock.nowMs());
      this.names.set(p, inode);
    }
    return new SimFile(p, this, inode, this.generation);
  }

  async list(dir: string): Promise<string[]> {
    await this.yieldTurn();
    const d = path.resolve(dir);
    const out = new Set<string>();
    for (const name of [...this.names.keys(), ...this.dirs]) {
      if (name !== d && path.dirname(name) === d) out.add(path.basename(name));
    }
    return [...out].sort();
  }

  async mkdirp(dir: string): Promise<void> {
    await this.yieldTurn();
    let d = path.resolve(dir);
    while (!this.dirs.has(d)) {
      this.dirs.add(d);
      d = path.dirname(d);
    }
  }

  async remove(filePath: string): Promise<void> {
    await this.yieldTurn();
    this.runHook('remove', filePath);
    this.names.delete(path.resolve(filePath));
  }

  async removeTree(dirPath: string): Promise<void> {
    await this.yieldTurn();
    const d = path.resolve(dirPath);
    const inside = (p: string) => p === d || p.startsWith(d + path.sep);
    for (const name of [...this.names.keys()]) if (inside(name)) this.names.delete(name);
    for (const name of [...this.durableNames.keys()])
      if (inside(name)) this.durableNames.delete(name);
    for (const name of [...this.dirs]) if (inside(name)) this.dirs.delete(name);
  }

  async syncDir(dir: string): Promise<void> {
    await this.yieldTurn();
    this.runHook('syncDir', dir);
    const d = path.resolve(dir);
    for (const name of [...this.durableNames.keys()]) {
      if (path.dirname(name) === d && !this.names.has(name)) this.durableNames.delete(name);
    }
    for (const [name, inode] of this.names) {
      if (path.dirname(name) === d) this.durableNames.set(name, inode);
    }
  }

  async stat(filePath: string): Promise<FileStat | undefined> {
    await this.yieldTurn();
    const inode = this.names.get(path.resolve(filePath));
    return inode ? { sizeBytes: inode.current.size, mtimeMs: inode.mtimeMs } : undefined;
  }

  async freeBytes(): Promise<number> {
    await this.yieldTurn();
    return Math.max(0, this.capacityBytes - this.usedBytes());
  }

  /** Test helper: overwrite bytes of a file in both images (bit rot, not a write). */
  corrupt(filePath: string, position: number, bytes: Uint8Array): void {
    const inode = this.names.get(path.resolve(filePath));
    if (!inode) throw new SimDiskError('ENOENT', `no such file: ${filePath}`);
    for (const img of [inode.current, inode.durable]) {
      const end = Math.min(img.size, position + bytes.byteLength);
      if (position < end) img.bytes.set(bytes.subarray(0, end - position), position);
    }
  }

  /** Test helper: a file's current contents (a copy). */
  contents(filePath: string): Uint8Array | undefined {
    const inode = this.names.get(path.resolve(filePath));
    return inode?.current.bytes.slice(0, inode.current.size);
  }
}

/**
 * A view of a disk that stops working when fenced. After a simulated crash, the crashed
 * process's leftover promises must not reach the disk through fresh handles; each incarnation
 * of a node gets its own view and the crash fences it.
 */
export function fencedDisk(disk: Disk): { disk: Disk; fence: () => void } {
  let fenced = false;
  const guard =
    <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> => {
      if (fenced) return Promise.reject(new SimDiskError('EIO', 'disk fenced: process crashed'));
      return fn(...args);
    };
  const guardFile = (file: DiskFile): DiskFile => ({
    path: file.path,
    read: guard(file.read.bind(file)),
    writev: guard(file.writev.bind(file)),
    sync: guard(file.sync.bind(file)),
    truncate: guard(file.truncate.bind(file)),
    size: guard(file.size.bind(file)),
    close: file.close.bind(file),
    releaseCache: (position: number, length: number) => {
      if (fenced) throw new SimDiskError('EIO', 'disk fenced: process crashed');
      file.releaseCache(position, length);
    },
  });
  const view: Disk = {
    releasesCache: disk.releasesCache,
    open: guard(async (p: string, create: boolean) => guardFile(await disk.open(p, create))),
    list: guard(disk.list.bind(disk)),
    mkdirp: guard(disk.mkdirp.bind(disk)),
    remove: guard(disk.remove.bind(disk)),
    removeTree: guard(disk.removeTree.bind(disk)),
    syncDir: guard(disk.syncDir.bind(disk)),
    stat: guard(disk.stat.bind(disk)),
    freeBytes: guard(disk.freeBytes.bind(disk)),
  };
  return {
    disk: view,
    fence: () => {
      fenced = true;
    },
  };
}
