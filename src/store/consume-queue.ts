/**
 * The ConsumeQueue of one (topic, queueId): a dense array of fixed 20-byte records, so that the
 * message at queue offset N is found with one read at byte N * 20 of the queue's logical space.
 *
 * | offset | size | field                                                      |
 * |--------|------|------------------------------------------------------------|
 * | 0      | 8    | CommitLog position of the message, u64 big-endian          |
 * | 8      | 4    | message size in bytes, > 0                                 |
 * | 12     | 8    | tag hash code (Java String.hashCode, sign-extended i64); 0 = no tag |
 *
 * Files hold `entriesPerFile` records and are named by the 20-digit starting byte offset
 * (first queue offset * 20) under `<root>/<topic>/<queueId>/`. The broker appends one record per
 * message as it applies committed entries, identically on every node; appends are buffered in
 * memory and written by `flush` (one write per file, fdatasync when asked).
 *
 * Records check themselves on read: size > 0, a sign-extended tag, positions strictly
 * increasing between neighbours. A record that fails is a `CORRUPT_RECORD` naming file and byte
 * position, never data; a good neighbour of a bad record may be refused with it.
 *
 * Recovery on open keeps the longest valid prefix of the tail: it checks the last
 * `RECOVERY_SCAN_FILES` files record by record (earlier ones by size and last record only) and
 * cuts at the first record that is torn, zero (unwritten), malformed or not above its
 * predecessor; files after a gap in the names are removed. The queue is derived data: whatever
 * a cut drops, the broker dispatches again from the CommitLog (`dispatch` skips what is there).
 * Open then syncs every file it found: a process killed before it synced leaves writes that are
 * visible but not durable, and a later `flush(true)` only syncs what this incarnation wrote.
 *
 * Retention removes whole files, never the last one: its records tell a reopened queue its next
 * offset even when every record has expired. `minOffset` after `removeBefore(p)` is the first
 * offset whose record points at or past `p`; a reopened queue starts at its first file until the
 * owner applies `removeBefore` again (ConsumeQueueSet does this for every queue it opens).
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import type { FileCache } from './file-cache';
import { fileName20, parseFileName20 } from './entry-index';
import { RaftmqError, errnoCode, isRaftmqError } from '../common/errors';
import { assert } from '../common/assert';
import { Mutex } from '../common/mutex';
import { type Logger, silentLogger } from '../common/logger';
import { intInRange, resolveOptions, type OptionSpec } from '../common/options';

export const CQ_RECORD_BYTES = 20;
/** How many files at the tail recovery checks record by record. */
export const RECOVERY_SCAN_FILES = 2;
const SCAN_CHUNK_RECORDS = 4096;
const READ_ATTEMPTS_MAX = 4;
const TWO_32 = 2 ** 32;
const EMPTY = Buffer.alloc(0);

export interface ConsumeQueueOptions {
  /** Records per file (RocketMQ `mappedFileSizeConsumeQueue` / 20: 300,000, ~5.72 MB). */
  entriesPerFile: number;
  /** Appended records not yet written, per queue; beyond it `append` refuses with BUSY. */
  pendingBytesMax: number;
  /** Most records one `readRange` returns. */
  readCountMax: number;
  /** Open file descriptors shared by all queues of a ConsumeQueueSet. */
  openFilesMax: number;
  /** Queues a ConsumeQueueSet keeps open; idle ones are closed beyond it. */
  queuesOpenMax: number;
}

export const CONSUME_QUEUE_DEFAULTS: Readonly<ConsumeQueueOptions> = Object.freeze({
  entriesPerFile: 300_000,
  pendingBytesMax: 1024 * 1024,
  readCountMax: 4096,
  openFilesMax: 256,
  queuesOpenMax: 4096,
});

const SPEC: OptionSpec<ConsumeQueueOptions> = {
  entriesPerFile: intInRange(1, 1 << 26),
  pendingBytesMax: intInRange(CQ_RECORD_BYTES, 2 ** 31),
  readCountMax: intInRange(1, 1 << 20),
  openFilesMax: intInRange(2, 100_000),
  queuesOpenMax: intInRange(1, 1 << 20),
};

/** Checks and freezes ConsumeQueue options; throws INVALID_OPTION naming the field. */
export function resolveConsumeQueueOptions(
  input?: Partial<ConsumeQueueOptions>,
): Readonly<ConsumeQueueOptions> {
  return resolveOptions('consumeQueue', CONSUME_QUEUE_DEFAULTS, SPEC, input);
}

/** One record, as read back. */
export interface CqRecord {
  /** Queue offset (record number). */
  offset: number;
  /** CommitLog position of the message. */
  position: number;
  sizeBytes: number;
  /** Signed int32 tag hash; 0 when the message has no tag. */
  tagHash: number;
}

export interface ConsumeQueueDeps {
  disk: Disk;
  /** Shared by all queues; the owner closes it. */
  files: FileCache;
  logger?: Logger;
}

/** Asserts a topic and queue id are safe as path components (the broker validates names). */
export function assertQueueName(topic: string, queueId: number): void {
  assert(topic.length > 0 && topic !== '.' && topic !== '..' && !topic.includes('/')
    && !topic.includes('\0'), () => `unsafe topic name ${JSON.stringify(topic)}`);
  assert(Number.isSafeInteger(queueId) && queueId >= 0, () => `bad queue id ${queueId}`);
}

function encodeRecord(buf: Buffer, at: number, position: number, sizeBytes: number,
  tag: number): void {
  buf.writeUInt32BE(Math.floor(position / TWO_32), at);
  buf.writeUInt32BE(position >>> 0, at + 4);
  buf.writeInt32BE(sizeBytes, at + 8);
  buf.writeInt32BE(tag < 0 ? -1 : 0, at + 12);
  buf.writeInt32BE(tag, at + 16);
}

/** Why the record at `buf[at..]` is malformed (ignoring its neighbours); undefined when fine. */
function recordFault(buf: Buffer, at: number): string | undefined {
  if (buf.readUInt32BE(at) >= 2 ** 21) return 'position beyond 2^53';
  if (buf.readInt32BE(at + 8) <= 0) return 'size not positive';
  if (buf.readInt32BE(at + 12) !== (buf.readInt32BE(at + 16) < 0 ? -1 : 0)) {
    return 'tag hash not a sign-extended int32';
  }
  return undefined;
}

function positionOf(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}

/** Reads until `length` bytes or end of file; returns bytes read. */
async function readFully(disk: FileCache, file: string, buf: Buffer, offset: number,
  length: number, position: number): Promise<number> {
  return disk.use(file, false, async (f) => {
    let got = 0;
    while (got < length) {
      const n = await f.read(buf, offset + got, length - got, position + got);
      if (n <= 0) break;
      got += n;
    }
    return got;
  });
}

/** One (topic, queueId) queue. Not safe to share between processes. */
export class ConsumeQueue {
  readonly dir: string;
  readonly options: Readonly<ConsumeQueueOptions>;
  private readonly disk: Disk;
  private readonly files: FileCache;
  private readonly log: Logger;
  private readonly entries: number;
  private readonly mutex = new Mutex();
  /** First offsets of the files, ascending and contiguous. */
  private starts: number[] = [];
  private min = 0;
  /** Records below this are in files; the rest are in `pending`. */
  private written = 0;
  private lastPos = -1;
  private pending: Buffer = EMPTY;
  private pendingCount = 0;
  private readonly dirtyStarts = new Set<number>();
  private dirDirty = false;
  /** Topic and root directories may hold new names (the queue directory was just created). */
  private parentsDirty = false;
  /** Bumped when records are cut or files removed, so a racing read retries. */
  private cutGeneration = 0;
  private fatal: RaftmqError | undefined;
  private closed = false;

  private constructor(deps: ConsumeQueueDeps, readonly root: string, readonly topic: string,
    readonly queueId: number, options: Readonly<ConsumeQueueOptions>) {
    this.disk = deps.disk;
    this.files = deps.files;
    this.log = deps.logger ?? silentLogger();
    this.options = options;
    this.entries = options.entriesPerFile;
    this.dir = path.join(root, topic, String(queueId));
  }

  /** Opens (recovering the tail of) the queue; creates nothing until the first flush. */
  static async open(deps: ConsumeQueueDeps, root: string, topic: string, queueId: number,
    options?: Partial<ConsumeQueueOptions>): Promise<ConsumeQueue> {
    assertQueueName(topic, queueId);
    const q = new ConsumeQueue(deps, root, topic, queueId, resolveConsumeQueueOptions(options));
    try {
      await q.recover();
    } catch (err) {
      await q.forgetFiles();
      if (isRaftmqError(err)) throw err;
      throw new RaftmqError('STORE_FATAL', `consume queue ${q.dir}: recovery failed`,
        { cause: err, details: { dir: q.dir } });
    }
    return q;
  }

  /** The first offset a read may ask for. */
  get minOffset(): number { return this.min; }
  /** The offset the next append gets. */
  get maxOffset(): number { return this.written + this.pendingCount; }
  /** CommitLog position of the last record, or -1 when the queue holds none. */
  lastPosition(): number { return this.lastPos; }
  /** True when nothing is buffered, unsynced or in progress (safe to close without IO). */
  isClean(): boolean {
    return this.pendingCount === 0 && this.dirtyStarts.size === 0 && !this.dirDirty
      && !this.parentsDirty && !this.mutex.isBusy() && this.fatal === undefined;
  }

  private usable(): void {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new RaftmqError('STORE_CLOSED', `consume queue ${this.dir} is closed`);
  }

  private fail(err: unknown): RaftmqError {
    if (!this.fatal) {
      const code = errnoCode(err) === 'ENOSPC' ? 'DISK_FULL' : 'STORE_FATAL';
      const why = err instanceof Error ? err.message : String(err);
      this.fatal = new RaftmqError(code, `consume queue ${this.dir} stopped: ${why}`,
        { cause: err, details: { topic: this.topic, queueId: this.queueId } });
      this.log.error({ err: this.fatal, dir: this.dir },
        'consume queue failed; refusing further work');
    }
    return this.fatal;
  }

  /** Runs a write, sync, truncate or removal; any failure stops the queue for good. */
  private async io<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.fail(err);
    }
  }

  private fileStartOf(offset: number): number { return offset - (offset % this.entries); }
  private filePath(start: number): string {
    return path.join(this.dir, fileName20(start * CQ_RECORD_BYTES));
  }
  private firstStored(): number { return this.starts[0] ?? this.written; }

  /**
   * Buffers a record and returns its queue offset. Positions must increase (a programmer
   * error otherwise; see `dispatch`). Throws BUSY when `pendingBytesMax` is reached.
   */
  append(position: number, sizeBytes: number, tagHash: number): number {
    this.usable();
    assert(Number.isSafeInteger(position) && position > this.lastPos,
      () => `consume queue ${this.dir}: position ${position} not above ${this.lastPos}`);
    assert(Number.isInteger(sizeBytes) && sizeBytes > 0 && sizeBytes <= 0x7fff_ffff,
      () => `consume queue ${this.dir}: bad size ${sizeBytes}`);
    assert(Number.isInteger(tagHash) && tagHash >= -(2 ** 31) && tagHash < 2 ** 31,
      () => `consume queue ${this.dir}: tag hash ${tagHash} is not an int32`);
    const need = (this.pendingCount + 1) * CQ_RECORD_BYTES;
    if (need > this.options.pendingBytesMax) {
      throw new RaftmqError('BUSY',
        `consume queue ${this.dir}: ${this.pendingCount} records unflushed`,
        { details: { topic: this.topic, queueId: this.queueId } });
    }
    if (need > this.pending.byteLength) {
      const grown = Buffer.allocUnsafe(Math.min(this.options.pendingBytesMax,
        Math.max(need, this.pending.byteLength * 2, 64 * CQ_RECORD_BYTES)));
      this.pending.copy(grown, 0, 0, this.pendingCount * CQ_RECORD_BYTES);
      this.pending = grown;
    }
    encodeRecord(this.pending, this.pendingCount * CQ_RECORD_BYTES, position, sizeBytes, tagHash);
    this.pendingCount++;
    this.lastPos = position;
    return this.maxOffset - 1;
  }

  /** Appends unless `position` is already covered (replay from an old checkpoint). */
  dispatch(position: number, sizeBytes: number, tagHash: number): number | undefined {
    this.usable();
    if (position <= this.lastPos) return undefined;
    return this.append(position, sizeBytes, tagHash);
  }

  /** Writes buffered records (one write per file); with `sync`, makes every write durable. */
  async flush(sync: boolean): Promise<void> {
    this.usable();
    return this.mutex.run(() => this.flushLocked(sync));
  }

  private async flushLocked(sync: boolean): Promise<void> {
    if (this.fatal) throw this.fatal;
    const count = this.pendingCount;
    // Appends during the writes go after `count` or into a grown copy; these bytes stay put.
    const data = this.pending;
    const first = this.written;
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
      await this.io(() => this.files.use(this.filePath(start), create,
        (f) => f.writev([chunk], (offset - start) * CQ_RECORD_BYTES)));
      if (create) {
        this.starts.push(start);
        this.dirDirty = true;
        this.log.debug({ dir: this.dir, start }, 'consume queue file created');
      }
      this.dirtyStarts.add(start);
      done += n;
    }
    this.written = first + count;
    this.dropPending(count);
    if (sync) await this.syncDirty();
  }

  /**
   * Drops the first `count` records. Bytes handed to the disk are never changed afterwards: a
   * disk may hold on to them until it syncs (the simulated one keeps them for torn replays).
   */
  private dropPending(count: number): void {
    const left = this.pendingCount - count;
    if (left > 0) {
      const rest = Buffer.allocUnsafe(Math.min(this.options.pendingBytesMax,
        Math.max(2 * left, 64) * CQ_RECORD_BYTES));
      this.pending.copy(rest, 0, count * CQ_RECORD_BYTES, this.pendingCount * CQ_RECORD_BYTES);
      this.pending = rest;
    } else {
      this.pending = EMPTY;
    }
    this.pendingCount = Math.max(0, left);
  }

  /** Syncs written files, then the names (never a name before its data). */
  private async syncDirty(): Promise<void> {
    for (const start of [...this.dirtyStarts]) {
      await this.io(() => this.files.use(this.filePath(start), false, (f) => f.sync()));
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

  /** The record at `offset`; OUT_OF_RANGE outside [minOffset, maxOffset). */
  async get(offset: number): Promise<CqRecord> {
    const [r] = await this.readRange(offset, 1);
    assert(r !== undefined, 'readRange(1) returned nothing');
    return r;
  }

  /**
   * Up to `countMax` (and `readCountMax`) records from `offset`, buffered ones included. Stops
   * before a bad record; throws CORRUPT_RECORD when the first one is bad.
   */
  async readRange(offset: number, countMax: number): Promise<CqRecord[]> {
    assert(Number.isSafeInteger(countMax) && countMax >= 1, () => `bad countMax ${countMax}`);
    for (let attempt = 1; ; attempt++) {
      this.usable();
      if (!Number.isSafeInteger(offset) || offset < this.min || offset >= this.maxOffset) {
        throw new RaftmqError('OUT_OF_RANGE',
          `consume queue ${this.dir}: offset ${offset} outside [${this.min}, ${this.maxOffset})`,
          { details: { topic: this.topic, queueId: this.queueId, offset,
            minOffset: this.min, maxOffset: this.maxOffset } });
      }
      const count = Math.min(countMax, this.options.readCountMax, this.maxOffset - offset);
      const generation = this.cutGeneration;
      try {
        return await this.readChecked(offset, count);
      } catch (err) {
        // A cut or removal raced this read; look again at the new bounds.
        if (generation === this.cutGeneration || attempt >= READ_ATTEMPTS_MAX) throw err;
      }
    }
  }

  /** Reads [from, from+count) with one neighbour each side and checks every record. */
  private async readChecked(from: number, count: number): Promise<CqRecord[]> {
    const lo = from > this.firstStored() ? from - 1 : from;
    const hi = Math.min(from + count + 1, this.maxOffset);
    const buf = Buffer.alloc((hi - lo) * CQ_RECORD_BYTES);
    const written = this.written;
    if (hi > written) {
      const p = Math.max(lo, written);
      this.pending.copy(buf, (p - lo) * CQ_RECORD_BYTES, (p - written) * CQ_RECORD_BYTES,
        (hi - written) * CQ_RECORD_BYTES);
    }
    for (let offset = lo; offset < Math.min(hi, written);) {
      const start = this.fileStartOf(offset);
      const n = Math.min(hi, written, start + this.entries) - offset;
      await readFully(this.files, this.filePath(start), buf, (offset - lo) * CQ_RECORD_BYTES,
        n * CQ_RECORD_BYTES, (offset - start) * CQ_RECORD_BYTES);
      offset += n;
    }
    const out: CqRecord[] = [];
    for (let k = from; k < from + count; k++) {
      const at = (k - lo) * CQ_RECORD_BYTES;
      const fault = this.neighbourFault(buf, at, k > lo, k + 1 < hi);
      if (fault !== undefined) {
        if (out.length > 0) return out;
        throw this.corrupt(k, fault);
      }
      out.push({ offset: k, position: positionOf(buf, at), sizeBytes: buf.readInt32BE(at + 8),
        tagHash: buf.readInt32BE(at + 16) });
    }
    return out;
  }

  private neighbourFault(buf: Buffer, at: number, hasPrev: boolean, hasNext: boolean):
    string | undefined {
    const fault = recordFault(buf, at);
    if (fault !== undefined) return fault;
    const pos = positionOf(buf, at);
    const prev = at - CQ_RECORD_BYTES;
    if (hasPrev && recordFault(buf, prev) === undefined && positionOf(buf, prev) >= pos) {
      return 'position not above the previous record';
    }
    const next = at + CQ_RECORD_BYTES;
    if (hasNext && recordFault(buf, next) === undefined && positionOf(buf, next) <= pos) {
      return 'position not below the next record';
    }
    return undefined;
  }

  private corrupt(offset: number, why: string): RaftmqError {
    const start = this.fileStartOf(offset);
    const file = this.filePath(start);
    const position = (offset - start) * CQ_RECORD_BYTES;
    return new RaftmqError('CORRUPT_RECORD',
      `corrupt consume queue record ${offset} in ${file} at byte ${position}: ${why}`,
      { details: { file, position, offset, topic: this.topic, queueId: this.queueId } });
  }

  private async positionAt(offset: number): Promise<number> {
    const [r] = await this.readChecked(offset, 1);
    assert(r !== undefined, 'readChecked(1) returned nothing');
    return r.position;
  }

  /** The first offset in [lo, hi) whose record points at or past `position`; hi if none. */
  private async firstAtOrAbove(lo: number, hi: number, position: number): Promise<number> {
    let a = lo;
    let b = hi;
    while (a < b) {
      const mid = Math.floor((a + b) / 2);
      if (await this.positionAt(mid) >= position) b = mid;
      else a = mid + 1;
    }
    return a;
  }

  /**
   * Retention: removes files all of whose records point below `commitLogMinPosition` (never the
   * last file) and moves minOffset to the first record at or past it (maxOffset if none).
   */
  async removeBefore(commitLogMinPosition: number): Promise<void> {
    this.usable();
    assert(Number.isSafeInteger(commitLogMinPosition) && commitLogMinPosition >= 0,
      () => `bad position ${commitLogMinPosition}`);
    return this.mutex.run(async () => {
      let expired = 0;
      while (expired < this.starts.length - 1) {
        const start = this.starts[expired] as number;
        if (await this.positionAt(start + this.entries - 1) >= commitLogMinPosition) break;
        expired++;
      }
      if (expired > 0) {
        const removed = this.starts.splice(0, expired);
        this.min = Math.max(this.min, this.firstStored());
        this.cutGeneration++;
        await this.syncDirty();
        for (const start of removed) await this.removeFile(start);
        await this.io(() => this.disk.syncDir(this.dir));
        this.log.debug({ dir: this.dir, files: removed.length }, 'consume queue files removed');
      }
      if (this.lastPos < commitLogMinPosition) {
        this.min = this.maxOffset;
      } else if (this.min < this.maxOffset) {
        this.min = await this.firstAtOrAbove(this.min, this.maxOffset, commitLogMinPosition);
      }
    });
  }

  private async removeFile(start: number): Promise<void> {
    const file = this.filePath(start);
    await this.files.forget(file);
    await this.io(() => this.disk.remove(file));
    this.dirtyStarts.delete(start);
  }

  /**
   * Drops every record pointing at or beyond `commitLogPosition` (the CommitLog's recovery cut
   * its tail there); synced before it resolves. Idempotent.
   */
  async truncateAfterPosition(commitLogPosition: number): Promise<void> {
    this.usable();
    assert(Number.isSafeInteger(commitLogPosition) && commitLogPosition >= 0,
      () => `bad position ${commitLogPosition}`);
    return this.mutex.run(async () => {
      if (this.lastPos < commitLogPosition) return;
      const first = this.firstStored();
      const cut = await this.firstAtOrAbove(first, this.maxOffset, commitLogPosition);
      const newLast = cut > first ? await this.positionAt(cut - 1) : -1;
      this.cutGeneration++;
      this.lastPos = newLast;
      this.min = Math.min(this.min, cut);
      if (cut >= this.written) {
        this.pendingCount = cut - this.written;
        if (this.pendingCount === 0) this.pending = EMPTY;
        return;
      }
      this.pending = EMPTY;
      this.pendingCount = 0;
      this.written = cut;
      await this.cutFilesAt(cut);
      this.log.info({ dir: this.dir, offset: cut, commitLogPosition }, 'consume queue truncated');
    });
  }

  /** Shortens the file holding slot `cut` to end there (synced) and removes later files. */
  private async cutFilesAt(cut: number): Promise<void> {
    const keep = this.fileStartOf(cut);
    await this.io(() => this.files.use(this.filePath(keep), false, async (f) => {
      await f.truncate((cut - keep) * CQ_RECORD_BYTES);
      await f.sync();
    }));
    this.dirtyStarts.delete(keep);
    const later = this.starts.filter((s) => s > keep);
    if (later.length === 0) return;
    this.starts = this.starts.filter((s) => s <= keep);
    await this.syncDirty();
    for (const start of later) await this.removeFile(start);
    await this.io(() => this.disk.syncDir(this.dir));
  }

  /** Flushes and syncs what is buffered, then releases the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.fatal) await this.mutex.run(() => this.flushLocked(true));
    } finally {
      await this.forgetFiles();
    }
    if (this.fatal) throw this.fatal;
  }

  private async forgetFiles(): Promise<void> {
    for (const start of this.starts) await this.files.forget(this.filePath(start));
  }

  private async recover(): Promise<void> {
    const starts = await this.listStarts();
    let n = 1;
    while (n < starts.length && starts[n] === (starts[n - 1] as number) + this.entries) n++;
    const orphans = starts.splice(n);
    this.starts = starts;
    if (starts.length === 0) return;
    let j = Math.max(0, starts.length - RECOVERY_SCAN_FILES);
    let prevPos = -1;
    for (; j > 0; j--) {
      const last = await this.fullFileLastPosition(starts[j - 1] as number);
      if (last !== undefined) {
        prevPos = last;
        break;
      }
    }
    let end = starts[j] as number;
    for (let i = j; i < starts.length; i++) {
      const start = starts[i] as number;
      const scan = await this.scanFile(start, prevPos);
      prevPos = scan.lastPos;
      end = start + scan.count;
      if (scan.count < this.entries || scan.sizeBytes !== scan.count * CQ_RECORD_BYTES) {
        if (scan.sizeBytes !== scan.count * CQ_RECORD_BYTES || i < starts.length - 1) {
          this.log.warn({ dir: this.dir, offset: end, sizeBytes: scan.sizeBytes },
            'consume queue tail cut at recovery');
          this.written = end;
          await this.cutFilesAt(end);
        }
        break;
      }
    }
    for (const start of orphans) await this.removeFile(start);
    // See the file comment: what recovery keeps must be durable before anything is added.
    for (const start of this.starts) this.dirtyStarts.add(start);
    this.dirDirty = true;
    this.parentsDirty = true;
    await this.syncDirty();
    this.min = starts[0] as number;
    this.written = end;
    this.lastPos = prevPos;
  }

  private async listStarts(): Promise<number[]> {
    const starts: number[] = [];
    const fileBytes = this.entries * CQ_RECORD_BYTES;
    for (const name of await this.disk.list(this.dir)) {
      const byteOffset = parseFileName20(name);
      if (byteOffset === undefined) continue;
      if (byteOffset % fileBytes !== 0) {
        throw new RaftmqError('CORRUPT_LOG', `consume queue file ${path.join(this.dir, name)} `
          + `does not start at a multiple of ${fileBytes} bytes (was entriesPerFile changed?)`,
          { details: { file: path.join(this.dir, name) } });
      }
      starts.push(byteOffset / CQ_RECORD_BYTES);
    }
    return starts.sort((a, b) => a - b);
  }

  private async fileSize(start: number): Promise<number> {
    const file = this.filePath(start);
    const size = await this.files.use(file, false, (f) => f.size());
    if (size > this.entries * CQ_RECORD_BYTES) {
      throw new RaftmqError('CORRUPT_LOG', `consume queue file ${file} holds ${size} bytes, more `
        + `than ${this.entries} records (was entriesPerFile changed?)`, { details: { file } });
    }
    return size;
  }

  /** The last record's position of a full file whose last record is well formed. */
  private async fullFileLastPosition(start: number): Promise<number | undefined> {
    if (await this.fileSize(start) !== this.entries * CQ_RECORD_BYTES) return undefined;
    const buf = Buffer.alloc(CQ_RECORD_BYTES);
    const got = await readFully(this.files, this.filePath(start), buf, 0, CQ_RECORD_BYTES,
      (this.entries - 1) * CQ_RECORD_BYTES);
    if (got < CQ_RECORD_BYTES || recordFault(buf, 0) !== undefined) return undefined;
    return positionOf(buf, 0);
  }

  /** Counts the good records from the start of a file, each above `prevPos` and its predecessor. */
  private async scanFile(start: number, prevPos: number):
    Promise<{ count: number; lastPos: number; sizeBytes: number }> {
    const sizeBytes = await this.fileSize(start);
    const total = Math.floor(sizeBytes / CQ_RECORD_BYTES);
    let lastPos = prevPos;
    const buf = Buffer.alloc(Math.min(total, SCAN_CHUNK_RECORDS) * CQ_RECORD_BYTES);
    for (let k = 0; k < total;) {
      const n = Math.min(total - k, SCAN_CHUNK_RECORDS);
      const got = await readFully(this.files, this.filePath(start), buf, 0, n * CQ_RECORD_BYTES,
        k * CQ_RECORD_BYTES);
      for (let r = 0; r < n; r++, k++) {
        const at = r * CQ_RECORD_BYTES;
        if (at + CQ_RECORD_BYTES > got || recordFault(buf, at) !== undefined
          || positionOf(buf, at) <= lastPos) {
          return { count: k, lastPos, sizeBytes };
        }
        lastPos = positionOf(buf, at);
      }
    }
    return { count: total, lastPos, sizeBytes };
  }
}
