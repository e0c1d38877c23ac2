/**
 * The ConsumeQueue of one (topic, queueId): a dense array of fixed 20-byte records
 * (consume-queue-record.ts), so that the message at queue offset N is found with one read.
 *
 * Files hold `entriesPerFile` records and are named by the 20-digit starting byte offset
 * (first queue offset * 20) under `<root>/<topic>/<queueId>/`. The broker appends one record per
 * message as it applies committed entries, identically on every node; appends are buffered in
 * memory and written by `flush` (one write per file, fdatasync when asked).
 *
 * Records check themselves on read. A record that fails is a `CORRUPT_RECORD` naming file and
 * byte position, never data; a good neighbour of a bad record may be refused with it.
 *
 * Recovery on open keeps the longest valid prefix of the tail and syncs what it keeps
 * (consume-queue-recovery.ts). The queue is derived data: whatever a cut drops, the broker
 * dispatches again from the CommitLog (`dispatch` skips what is there).
 *
 * Retention removes whole files, never the last one: its records tell a reopened queue its next
 * offset even when every record has expired. `minOffset` after `removeBefore(p)` is the first
 * offset whose record points at or past `p`; a reopened queue starts at its first file until the
 * owner applies `removeBefore` again (ConsumeQueueSet does this for every queue it opens).
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import type { FileCache } from './file-cache';
import { RaftmqError, errnoCode, isRaftmqError } from '../common/errors';
import { assert } from '../common/assert';
import { readI32BE } from '../common/bytes';
import { Mutex } from '../common/mutex';
import { type Logger, silentLogger } from '../common/logger';
import {
  type ConsumeQueueOptions,
  assertQueueName,
  resolveConsumeQueueOptions,
} from './consume-queue-options';
import { CQ_RECORD_BYTES, type CqRecord, neighbourFault, positionOf } from './consume-queue-record';
import { ConsumeQueueFiles } from './consume-queue-files';
import { PendingRecords } from './consume-queue-pending';
import { recoverQueueFiles } from './consume-queue-recovery';


const READ_ATTEMPTS_MAX = 4;

export interface ConsumeQueueDeps {
  disk: Disk;
  /** Shared by all queues; the owner closes it. */
  files: FileCache;
  logger?: Logger;
}

/** One (topic, queueId) queue. Not safe to share between processes. */
export class ConsumeQueue {
  readonly dir: string;
  readonly options: Readonly<ConsumeQueueOptions>;
  private readonly log: Logger;
  private readonly entries: number;
  private readonly mutex = new Mutex();
  private readonly f: ConsumeQueueFiles;
  private min = 0;
  /** Records below this are in files; the rest are in `pending`. */
  private written = 0;
  private lastPos = -1;
  private readonly pending: PendingRecords;
  /** Bumped when records are cut or files removed, so a racing read retries. */
  private cutGeneration = 0;
  private fatal: RaftmqError | undefined;
  private closed = false;

  private constructor(
    deps: ConsumeQueueDeps,
    readonly root: string,
    readonly topic: string,
    readonly queueId: number,
    options: Readonly<ConsumeQueueOptions>,
  ) {
    this.log = deps.logger ?? silentLogger();
    this.options = options;
    this.entries = options.entriesPerFile;
    this.dir = path.join(root, topic, String(queueId));
    this.pending = new PendingRecords(options.pendingBytesMax);
    const { disk, files } = deps;
    const ctx = { disk, files, dir: this.dir, entriesPerFile: this.entries, log: this.log };
    this.f = new ConsumeQueueFiles(ctx, root, (err) => this.fail(err));
  }

  /** Opens (recovering the tail of) the queue; creates nothing until the first flush. */
  static async open(
    deps: ConsumeQueueDeps,
    root: string,
    topic: string,
    queueId: number,
    options?: Partial<ConsumeQueueOptions>,
  ): Promise<ConsumeQueue> {
    assertQueueName(topic, queueId);
    const q = new ConsumeQueue(deps, root, topic, queueId, resolveConsumeQueueOptions(options));
    try {
      await q.recover();
    } catch (err) {
      await q.f.forgetAll();
      if (isRaftmqError(err)) throw err;
      throw new RaftmqError('STORE_FATAL', `consume queue ${q.dir}: recovery failed`, {
        cause: err,
        details: { dir: q.dir },
      });
    }
    return q;
  }

  /** The first offset a read may ask for. */
  get minOffset(): number {
    return this.min;
  }
  /** The offset the next append gets. */
  get maxOffset(): number {
    return this.written + this.pending.count;
  }
  /** CommitLog position of the last record, or -1 when the queue holds none. */
  lastPosition(): number {
    return this.lastPos;
  }
  /** True when nothing is buffered, unsynced or in progress (safe to close without IO). */
  isClean(): boolean {
    return (
      this.pending.count === 0 &&
      this.f.isClean() &&
      !this.mutex.isBusy() &&
      this.fatal === undefined
    );
  }

  private usable(): void {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new RaftmqError('STORE_CLOSED', `consume queue ${this.dir} is closed`);
  }

  private fail(err: unknown): RaftmqError {
    if (!this.fatal) {
      const code = errnoCode(err) === 'ENOSPC' ? 'DISK_FULL' : 'STORE_FATAL';
      const why = err instanceof Error ? err.message : String(err);
      this.fatal = new RaftmqError(code, `consume queue ${this.dir} stopped: ${why}`, {
        cause: err,
        details: { topic: this.topic, queueId: this.queueId },
      });
      this.log.error(
        { err: this.fatal, dir: this.dir },
        'consume queue failed; refusing further work',
      );
    }
    return this.fatal;
  }

  private firstStored(): number {
    return this.f.firstStart() ?? this.written;
  }

  /**
   * Buffers a record and returns its queue offset. Positions must increase (a programmer
   * error otherwise; see `dispatch`). Throws BUSY when `pendingBytesMax` is reached.
   */
  append(position: number, sizeBytes: number, tagHash: number): number {
    this.usable();
    assert(
      Number.isSafeInteger(position) && position > this.lastPos,
      () => `consume queue ${this.dir}: position ${position} not above ${this.lastPos}`,
    );
    assert(
      Number.isInteger(sizeBytes) && sizeBytes > 0 && sizeBytes <= 0x7fff_ffff,
      () => `consume queue ${this.dir}: bad size ${sizeBytes}`,
    );
    assert(
      Number.isInteger(tagHash) && tagHash >= -(2 ** 31) && tagHash < 2 ** 31,
      () => `consume queue ${this.dir}: tag hash ${tagHash} is not an int32`,
    );
    if (this.pending.isFull()) {
      throw new RaftmqError(
        'BUSY',
        `consume queue ${this.dir}: ${this.pending.count} records unflushed`,
        { details: { topic: this.topic, queueId: this.queueId } },
      );
    }
    this.pending.push(position, sizeBytes, tagHash);
    this.lastPos = position;
    return this.maxOffset - 1;
  }

  /** Appends unless `position` is already covered (replay from an old checkpoint). */
  /**
   * True when the next record would not fit the buffer of unwritten records: `flush` first (the
   * dispatchers do, ConsumeQueueSet), or `append` throws BUSY. A burst to one queue fills it
   * between two checkpoints (52,428 records of 20 bytes in the default 1 MiB).
   */
  get bufferFull(): boolean {
    return this.pending.isFull();
  }

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
    const count = this.pending.count;
    // Appends during the writes go after `count` or into a grown copy; these bytes stay put.
    const data = this.pending.bytes;
    const first = this.written;
    if (count > 0) await this.f.write(first, data, count);
    this.written = first + count;
    this.pending.dropFirst(count);
    if (sync) await this.f.syncDirty();
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
        throw new RaftmqError(
          'OUT_OF_RANGE',
          `consume queue ${this.dir}: offset ${offset} outside [${this.min}, ${this.maxOffset})`,
          {
            details: {
              topic: this.topic,
              queueId: this.queueId,
              offset,
              minOffset: this.min,
              maxOffset: this.maxOffset,
            },
          },
        );
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
      this.pending.bytes.copy(
        buf,
        (p - lo) * CQ_RECORD_BYTES,
        (p - written) * CQ_RECORD_BYTES,
        (hi - written) * CQ_RECORD_BYTES,
      );
    }
    const end = Math.min(hi, written);
    if (lo < end) await this.f.read(buf, lo, end);
    const out: CqRecord[] = [];
    for (let k = from; k < from + count; k++) {
      const at = (k - lo) * CQ_RECORD_BYTES;
      const fault = neighbourFault(buf, at, k > lo, k + 1 < hi);
      if (fault !== undefined) {
        if (out.length > 0) return out;
        throw this.corrupt(k, fault);
      }
      out.push({
        offset: k,
        position: positionOf(buf, at),
        sizeBytes: readI32BE(buf, at + 8),
        tagHash: readI32BE(buf, at + 16),
      });
    }
    return out;
  }

  private corrupt(offset: number, why: string): RaftmqError {
    const start = this.f.fileStartOf(offset);
    const file = this.f.filePath(start);
    const position = (offset - start) * CQ_RECORD_BYTES;
    return new RaftmqError(
      'CORRUPT_RECORD',
      `corrupt consume queue record ${offset} in ${file} at byte ${position}: ${why}`,
      { details: { file, position, offset, topic: this.topic, queueId: this.queueId } },
    );
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
      if ((await this.positionAt(mid)) >= position) b = mid;
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
    assert(
      Number.isSafeInteger(commitLogMinPosition) && commitLogMinPosition >= 0,
      () => `bad position ${commitLogMinPosition}`,
    );
    return this.mutex.run(async () => {
      let expired = 0;
      while (expired < this.f.fileCount() - 1) {
        const start = this.f.startAt(expired);
        if ((await this.positionAt(start + this.entries - 1)) >= commitLogMinPosition) break;
        expired++;
      }
      if (expired > 0) {
        const removed = this.f.dropFirst(expired);
        this.min = Math.max(this.min, this.firstStored());
        this.cutGeneration++;
        await this.f.removeFiles(removed);
      }
      if (this.lastPos < commitLogMinPosition) {
        this.min = this.maxOffset;
      } else if (this.min < this.maxOffset) {
        this.min = await this.firstAtOrAbove(this.min, this.maxOffset, commitLogMinPosition);
      }
    });
  }

  /**
   * Drops every record pointing at or beyond `commitLogPosition` (the CommitLog's recovery cut
   * its tail there); synced before it resolves. Idempotent.
   */
  async truncateAfterPosition(commitLogPosition: number): Promise<void> {
    this.usable();
    assert(
      Number.isSafeInteger(commitLogPosition) && commitLogPosition >= 0,
      () => `bad position ${commitLogPosition}`,
    );
    return this.mutex.run(async () => {
      if (this.lastPos < commitLogPosition) return;
      const first = this.firstStored();
      const cut = await this.firstAtOrAbove(first, this.maxOffset, commitLogPosition);
      const newLast = cut > first ? await this.positionAt(cut - 1) : -1;
      this.cutGeneration++;
      this.lastPos = newLast;
      this.min = Math.min(this.min, cut);
      if (cut >= this.written) {
        this.pending.keepFirst(cut - this.written);
        return;
      }
      this.pending.clear();
      this.written = cut;
      await this.f.cutAt(cut);
      this.log.info({ dir: this.dir, offset: cut, commitLogPosition }, 'consume queue truncated');
    });
  }

  /** Flushes and syncs what is buffered, then releases the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.fatal) await this.mutex.run(() => this.flushLocked(true));
    } finally {
      await this.f.forgetAll();
    }
    if (this.fatal) throw this.fatal;
  }

  private async recover(): Promise<void> {
    const r = await recoverQueueFiles(this.f);
    if (r === undefined) return;
    this.min = r.first;
    this.written = r.end;
    this.lastPos = r.lastPos;
  }
}
