/**
 * The CommitLog: the Raft log of one broker node, as segment files of self-checking records
 * (see log-record.ts) with a fixed-width entry index beside them (entry-index.ts).
 *
 * Writes are group-committed. `append()` encodes entries into memory and returns at once; one
 * flush loop writes everything appended so far with one write per segment and covers it with
 * one fdatasync, while new appends gather for the next round. Callers learn progress through
 * `persistedIndex()` and `waitPersisted(i)`: in SYNC mode "persisted" means fsync'd, in ASYNC
 * mode it means written (fsync follows on an interval). A failed write or fsync stops the log:
 * every later call throws the same fatal error, and nothing unsynced is ever reported durable.
 *
 * Layout: `<dir>/commitlog/<20-digit start position>` segments of `segmentSizeBytes`; a record
 * never spans segments (the next one starts at the next segment boundary); `<dir>/index/`.
 * Before writing to a new segment, the previous one is synced: recovery relies on this to tell
 * a torn tail (nothing valid after it) from corruption (valid records after it).
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import type { MetaBatchOp, MetaStore } from './meta';
import { MetaKeys } from './meta';
import { type Clock, type Scheduler, systemClock, systemScheduler } from '../common/clock';
import { RaftmqError, errnoCode, isRaftmqError } from '../common/errors';
import { assert } from '../common/assert';
import { Mutex } from '../common/mutex';
import { type Logger, silentLogger } from '../common/logger';
import { type CommitLogOptions, resolveCommitLogOptions } from './commit-log-options';
import {
  EntryType,
  type LogEntry,
  RECORD_HEADER_BYTES,
  checkRecord,
  corruptRecord,
  encodeRecordInto,
  isEntryType,
} from './log-record';
import { EntryIndex, fileName20, type LocatedRecords } from './entry-index';
import { FileCache } from './file-cache';
import { TermRuns } from './term-runs';
import { WaiterQueue } from './waiter-queue';
import {
  type SegmentInfo,
  checkpointCodec,
  logStartCodec,
  truncationCodec,
  recoverLog,
} from './commit-log-recovery';

export interface CommitLogDeps {
  disk: Disk;
  meta: MetaStore;
  clock?: Clock;
  scheduler?: Scheduler;
  logger?: Logger;
}

interface Chunk {
  segmentStart: number;
  position: number;
  buf: Buffer;
  used: number;
}

export class CommitLog {
  readonly options: Readonly<CommitLogOptions>;
  private readonly disk: Disk;
  private readonly meta: MetaStore;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly files: FileCache;
  private readonly index: EntryIndex;
  private readonly segmentDir: string;
  private readonly mutex = new Mutex();
  private readonly written = new WaiterQueue();
  private readonly persisted = new WaiterQueue();
  private readonly stopTimers: Array<() => void> = [];

  private segments: SegmentInfo[];
  private terms: TermRuns;
  private first: number;
  private firstPos: number;
  private last: number;
  private endPos: number;
  private writtenIdx: number;
  private durableIdx: number;
  private checkpointIdx: number;

  private chunks: Chunk[] = [];
  /** Position just after the last written (not just appended) record. */
  private writtenEndPos = 0;
  private pendingBytes = 0;
  private dirtySegments = new Set<number>();
  private dirDirty = false;
  /** Entries up to here must be fsync'd (flush(), the ASYNC interval, close). */
  private syncTarget = 0;
  private flushing: Promise<void> | undefined;
  private truncating = false;
  private fatal: RaftmqError | undefined;
  private closed = false;
  private closing = false;

  private constructor(deps: CommitLogDeps, dir: string, options: Readonly<CommitLogOptions>) {
    this.options = options;
    this.disk = deps.disk;
    this.meta = deps.meta;
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger ?? silentLogger();
    this.files = new FileCache(this.disk, options.openFilesMax);
    this.segmentDir = path.join(dir, 'commitlog');
    this.index = new EntryIndex(
      this.disk,
      path.join(dir, 'index'),
      options.indexEntriesPerFile,
      this.files,
    );
    this.segments = [];
    this.terms = new TermRuns(0, 0);
    this.first = 1;
    this.firstPos = 0;
    this.last = 0;
    this.endPos = 0;
    this.writtenIdx = 0;
    this.durableIdx = 0;
    this.checkpointIdx = 0;
  }

  /** Opens (recovering if needed) the log under `dir`. */
  static async open(
    dir: string,
    deps: CommitLogDeps,
    options?: Partial<CommitLogOptions>,
  ): Promise<CommitLog> {
    const log = new CommitLog(deps, dir, resolveCommitLogOptions(options));
    let r: Awaited<ReturnType<typeof recoverLog>>;
    try {
      await log.disk.mkdirp(log.segmentDir);
      await log.disk.mkdirp(log.index.dir);
      r = await recoverLog({
        disk: log.disk,
        meta: log.meta,
        files: log.files,
        index: log.index,
        segmentDir: log.segmentDir,
        options: log.options,
        logger: log.log,
      });
    } catch (err) {
      // A refused open must not keep descriptors, and its error is typed like any other.
      await log.files.closeAll();
      throw toStoreError(err, 'commit log open failed');
    }
    log.segments = r.segments;
    log.terms = r.terms;
    log.first = r.firstIndex;
    log.firstPos = r.firstPosition;
    log.last = r.lastIndex;
    log.endPos = r.endPosition;
    log.writtenIdx = r.lastIndex;
    log.writtenEndPos = r.endPosition;
    log.durableIdx = r.lastIndex;
    log.checkpointIdx = r.checkpointIndex;
    const scheduler = deps.scheduler ?? systemScheduler;
    log.stopTimers.push(
      scheduler.every(log.options.checkpointIntervalMs, () => log.backgroundCheckpoint()),
    );
    if (log.options.flushMode === 'ASYNC') {
      log.stopTimers.push(scheduler.every(log.options.flushIntervalMs, () => log.requestSync()));
    }
    log.log.info(
      {
        firstIndex: log.first,
        lastIndex: log.last,
        scannedBytes: r.scannedBytes,
        truncatedBytes: r.truncatedBytes,
      },
      'commit log opened',
    );
    return log;
  }

  firstIndex(): number {
    return this.first;
  }
  lastIndex(): number {
    return this.last;
  }
  lastTerm(): number {
    return this.terms.lastTerm();
  }
  /** Position of the first byte the log holds. */
  firstPosition(): number {
    return this.firstPos;
  }
  /** Position just after the last appended record. */
  endPosition(): number {
    return this.endPos;
  }
  writtenIndex(): number {
    return this.writtenIdx;
  }
  durableIndex(): number {
    return this.durableIdx;
  }
  /** The index callers may treat as persisted under the flush mode. */
  persistedIndex(): number {
    return this.options.flushMode === 'SYNC' ? this.durableIdx : this.writtenIdx;
  }
  /** Term of `index` for firstIndex-1 ..lastIndex; undefined outside. Synchronous. */
  termAt(index: number): number | undefined {
    return this.terms.termAt(index);
  }
  /** Bytes appended but not yet written. */
  pendingWriteBytes(): number {
    return this.pendingBytes;
  }

  private usable(): void {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new RaftmqError('STORE_CLOSED', 'commit log is closed');
  }

  /**
   * Appends entries (indexes must continue the log, terms must not decrease). Validates all of
   * them before encoding any, so a refused call writes nothing. Returns the new last index.
   */
  append(entries: readonly LogEntry[]): number {
    this.usable();
    if (this.truncating) throw new RaftmqError('BUSY', 'commit log truncation in progress');
    this.validate(entries);
    for (const e of entries) this.encode(e);
    this.kick();
    return this.last;
  }

  private validate(entries: readonly LogEntry[]): void {
    let expected = this.last + 1;
    let term = this.terms.lastTerm();
    let bytes = 0;
    for (const e of entries) {
      if (e.index !== expected) {
        throw new RaftmqError(
          'INVALID_ARGUMENT',
          `append: index ${e.index}, expected ${expected}`,
          { details: { index: e.index, expected } },
        );
      }
      if (!Number.isSafeInteger(e.term) || e.term < term) {
        throw new RaftmqError(
          'INVALID_ARGUMENT',
          `append: term ${e.term} at index ${e.index} below ${term}`,
        );
      }
      if (!isEntryType(e.type))
        throw new RaftmqError('INVALID_ARGUMENT', `append: bad entry type ${String(e.type)}`);
      if (e.payload.byteLength > this.options.payloadMaxBytes) {
        throw new RaftmqError(
          'RECORD_TOO_LARGE',
          `entry ${e.index}: payload of ${e.payload.byteLength} bytes exceeds ${this.options.payloadMaxBytes}`,
          { details: { index: e.index, sizeBytes: e.payload.byteLength } },
        );
      }
      bytes += RECORD_HEADER_BYTES + e.payload.byteLength;
      term = e.term;
      expected++;
    }
    if (bytes > this.options.pendingBytesMax) {
      throw new RaftmqError(
        'RECORD_TOO_LARGE',
        `append: a batch of ${bytes} bytes exceeds pendingBytesMax; split it`,
        { details: { sizeBytes: bytes } },
      );
    }
    if (this.pendingBytes + bytes > this.options.pendingBytesMax) {
      throw new RaftmqError(
        'BUSY',
        `commit log write buffer full (${this.pendingBytes} bytes pending)`,
      );
    }
  }

  private encode(e: LogEntry): void {
    const size = RECORD_HEADER_BYTES + e.payload.byteLength;
    const segSize = this.options.segmentSizeBytes;
    let segStart = Math.floor(this.endPos / segSize) * segSize;
    if (this.endPos - segStart + size > segSize) {
      segStart += segSize;
      this.endPos = segStart;
    }
    const lastSeg = this.segments[this.segments.length - 1];
    if (!lastSeg || lastSeg.start !== segStart) {
      this.segments.push({ start: segStart, firstIndex: e.index });
    } else if (lastSeg.firstIndex === undefined) {
      lastSeg.firstIndex = e.index;
    }
    let chunk = this.chunks[this.chunks.length - 1];
    if (
      !chunk ||
      chunk.segmentStart !== segStart ||
      chunk.position + chunk.used !== this.endPos ||
      chunk.used + size > chunk.buf.byteLength
    ) {
      chunk = {
        segmentStart: segStart,
        position: this.endPos,
        used: 0,
        buf: Buffer.allocUnsafe(Math.max(this.options.writeChunkBytes, size)),
      };
      this.chunks.push(chunk);
    }
    encodeRecordInto(e, chunk.buf, chunk.used);
    chunk.used += size;
    this.index.stage({ index: e.index, position: this.endPos, sizeBytes: size, term: e.term });
    this.terms.append(e.index, e.term);
    this.endPos += size;
    this.last = e.index;
    this.pendingBytes += size;
  }

  /** Resolves when `index` is persisted under the flush mode; rejects if the log fails. */
  waitPersisted(index: number): Promise<void> {
    try {
      this.usable();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    if (index <= this.persistedIndex()) return Promise.resolve();
    if (index > this.last) {
      return Promise.reject(
        new RaftmqError('OUT_OF_RANGE', `waitPersisted(${index}) beyond last index ${this.last}`),
      );
    }
    return this.persisted.wait(index);
  }

  /** Writes and fsyncs everything appended so far (in any flush mode). */
  async flush(): Promise<void> {
    this.usable();
    if (this.truncating) await this.mutex.run(() => Promise.resolve());
    const target = this.last;
    this.syncTarget = Math.max(this.syncTarget, target);
    this.kick();
    while (this.flushing && this.durableIdx < Math.min(target, this.last)) await this.flushing;
    if (this.fatal) throw this.fatal;
  }

  private syncNeeded(): boolean {
    return this.durableIdx < Math.min(this.syncTarget, this.last);
  }

  private requestSync(): void {
    if (this.fatal || this.closed || this.truncating || this.durableIdx >= this.writtenIdx) return;
    this.syncTarget = Math.max(this.syncTarget, this.writtenIdx);
    this.kick();
  }

  private kick(): void {
    if (this.flushing || this.fatal || this.truncating) return;
    if (this.chunks.length === 0 && !this.syncNeeded()) return;
    this.flushing = this.flushLoop().then(
      () => {
        this.flushing = undefined;
        // Waiters resolved by the last round may have appended before this callback ran,
        // while `flushing` still looked busy; their entries must not wait for the next append.
        this.kick();
      },
      (err: unknown) => {
        this.flushing = undefined;
        this.fail(err);
      },
    );
  }

  private async flushLoop(): Promise<void> {
    while (!this.fatal && (this.chunks.length > 0 || this.syncNeeded())) {
      const chunks = this.chunks;
      const batchLast = this.last;
      const batchEnd = this.endPos;
      const staged = this.index.takeStaged();
      this.chunks = [];
      for (const c of chunks) this.pendingBytes -= c.used;
      await this.writeChunks(chunks);
      await this.index.writeTaken(staged);
      this.writtenIdx = Math.max(this.writtenIdx, Math.min(batchLast, this.last));
      this.writtenEndPos = Math.max(this.writtenEndPos, Math.min(batchEnd, this.endPos));
      this.written.resolveUpTo(this.writtenIdx);
      // In ASYNC mode only a pending sync target forces the fsync; the target stays set until
      // durableIdx reaches it, so entries written in a later round are synced too.
      if (this.options.flushMode === 'SYNC' || this.syncNeeded()) {
        await this.syncDirty();
        this.durableIdx = Math.max(this.durableIdx, Math.min(this.writtenIdx, this.last));
      }
      this.persisted.resolveUpTo(this.persistedIndex());
    }
  }

  /** Writes chunks in order; a segment is synced before the first write to the next one. */
  private async writeChunks(chunks: readonly Chunk[]): Promise<void> {
    let i = 0;
    while (i < chunks.length) {
      const head = chunks[i];
      assert(head !== undefined, 'chunk');
      const group: Buffer[] = [];
      let j = i;
      for (let c = chunks[j]; c && c.segmentStart === head.segmentStart; c = chunks[++j]) {
        group.push(c.buf.subarray(0, c.used));
      }
      if ([...this.dirtySegments].some((s) => s !== head.segmentStart)) await this.syncDirty();
      const filePath = this.segmentPath(head.segmentStart);
      if (!this.dirtySegments.has(head.segmentStart) && head.position === head.segmentStart) {
        this.dirDirty = true;
      }
      await this.files.use(filePath, true, (f) =>
        f.writev(group, head.position - head.segmentStart),
      );
      this.dirtySegments.add(head.segmentStart);
      i = j;
    }
  }

  private async syncDirty(): Promise<void> {
    const starts = [...this.dirtySegments];
    this.dirtySegments.clear();
    for (const s of starts) await this.files.use(this.segmentPath(s), false, (f) => f.sync());
    if (this.dirDirty) {
      this.dirDirty = false;
      await this.disk.syncDir(this.segmentDir);
    }
  }

  private fail(err: unknown): void {
    if (this.fatal) return;
    const typed = toStoreError(err, 'commit log stopped');
    this.fatal = typed.fatal
      ? typed
      : new RaftmqError('STORE_FATAL', `commit log stopped: ${typed.message}`, { cause: typed });
    this.log.error({ err: this.fatal }, 'commit log failed; refusing further work');
    this.written.rejectAll(this.fatal);
    this.persisted.rejectAll(this.fatal);
    for (const stop of this.stopTimers) stop();
  }

  segmentPath(start: number): string {
    return path.join(this.segmentDir, fileName20(start));
  }

  /** Reads one entry. */
  async read(index: number): Promise<LogEntry> {
    const [entry] = await this.readRange(index, 1, Number.MAX_SAFE_INTEGER);
    assert(entry !== undefined, 'readRange returned nothing');
    return entry;
  }

  /**
   * Reads entries from `from`: at most `countMax`, and at most `bytesMax` of records (but always
   * at least one). Every record is checked (magic, CRC32C, index, term) before it is returned.
   */
  async readRange(from: number, countMax: number, bytesMax: number): Promise<LogEntry[]> {
    this.usable();
    if (from < this.first || from > this.last) {
      throw new RaftmqError('OUT_OF_RANGE', `index ${from} outside [${this.first}, ${this.last}]`, {
        details: { index: from, firstIndex: this.first, lastIndex: this.last },
      });
    }
    const to = Math.min(this.last, from + Math.max(1, countMax) - 1);
    if (to > this.writtenIdx) await this.written.wait(to);
    const loc = await this.index.locate(from, to - from + 1);
    let bytes = 0;
    let n = 0;
    while (n < loc.sizes.length && (n === 0 || bytes + (loc.sizes[n] ?? 0) <= bytesMax)) {
      bytes += loc.sizes[n] ?? 0;
      n++;
    }
    const out: LogEntry[] = [];
    let i = 0;
    while (i < n) {
      // One read per run of records that lie back to back in one segment.
      const head = loc.positions[i] ?? 0;
      const segStart = this.segmentStartOf(head);
      let j = i;
      let end = head;
      while (j < n && loc.positions[j] === end && this.segmentStartOf(end) === segStart) {
        end += loc.sizes[j] ?? 0;
        j++;
      }
      const buf = await this.readBytes(head, end - head);
      this.decodeRun(buf, head, from + i, loc, i, j, out);
      i = j;
    }
    return out;
  }

  /** Positions, sizes and terms of entries [from, from + count), once they are written. */
  async positionsOf(from: number, count: number): Promise<LocatedRecords> {
    this.usable();
    const to = from + count - 1;
    if (from < this.first || to > this.last || count < 1) {
      throw new RaftmqError(
        'OUT_OF_RANGE',
        `entries [${from}, ${to}] outside [${this.first}, ${this.last}]`,
      );
    }
    if (to > this.writtenIdx) await this.written.wait(to);
    return this.index.locate(from, count);
  }

  /** Checks and decodes records [i, j) of `loc`, which lie back to back in `buf`. */
  private decodeRun(
    buf: Buffer,
    bufPosition: number,
    firstIndex: number,
    loc: LocatedRecords,
    i: number,
    j: number,
    out: LogEntry[],
  ): void {
    let offset = 0;
    for (let k = i; k < j; k++) {
      const index = firstIndex + (k - i);
      const size = loc.sizes[k] ?? 0;
      const r = checkRecord(buf, offset, offset + size, this.options.payloadMaxBytes);
      if (!r.ok || r.entry.index !== index || r.entry.term !== loc.terms[k]) {
        const position = bufPosition + offset;
        const source = { file: this.segmentPath(this.segmentStartOf(position)), position };
        throw corruptRecord(
          source,
          r.ok
            ? `holds index ${r.entry.index} term ${r.entry.term}, index says ${index} term ${loc.terms[k]}`
            : r.reason,
        );
      }
      r.entry.position = bufPosition + offset;
      out.push(r.entry);
      offset += size;
    }
  }

  private segmentStartOf(position: number): number {
    return Math.floor(position / this.options.segmentSizeBytes) * this.options.segmentSizeBytes;
  }

  /**
   * Reads raw bytes at a CommitLog position (a message inside an entry, found through a
   * ConsumeQueue). The bytes must lie within one written record; the message codec checks them.
   */
  async readBytes(position: number, sizeBytes: number): Promise<Buffer> {
    this.usable();
    const segStart = this.segmentStartOf(position);
    if (
      position < this.firstPos ||
      position + sizeBytes > this.endPos ||
      position + sizeBytes > segStart + this.options.segmentSizeBytes
    ) {
      throw new RaftmqError('OUT_OF_RANGE', `bytes [${position}, +${sizeBytes}) outside the log`, {
        details: { position, sizeBytes },
      });
    }
    // Appended but not yet written: wait for the write rather than read a short file.
    if (position + sizeBytes > this.writtenEndPos) await this.written.wait(this.last);
    const buf = Buffer.allocUnsafe(sizeBytes);
    const filePath = this.segmentPath(segStart);
    const got = await this.files.use(filePath, false, (f) =>
      f.read(buf, 0, sizeBytes, position - segStart),
    );
    if (got !== sizeBytes) {
      throw new RaftmqError(
        'CORRUPT_RECORD',
        `short read in ${filePath} at ${position}: ${got} of ${sizeBytes}`,
        { details: { file: filePath, position } },
      );
    }
    return buf;
  }

  /**
   * Removes entries from `fromIndex` on (Raft conflict resolution). Crash-safe: the intent is
   * recorded (synced) first and redone on open if the cut did not finish.
   */
  async truncateSuffix(fromIndex: number): Promise<void> {
    this.usable();
    if (fromIndex < this.first) {
      throw new RaftmqError(
        'OUT_OF_RANGE',
        `cannot truncate from ${fromIndex} below first index ${this.first}`,
      );
    }
    if (fromIndex > this.last) return;
    this.truncating = true;
    try {
      await this.mutex.run(() => this.truncateLocked(fromIndex));
    } catch (err) {
      this.fail(err);
      throw this.fatal ?? err;
    } finally {
      this.truncating = false;
    }
  }

  private async truncateLocked(fromIndex: number): Promise<void> {
    while (this.flushing) await this.flushing;
    this.usable();
    const rec = await this.index.lookup(fromIndex);
    const prevEnd =
      fromIndex - 1 >= this.first
        ? await this.index.lookup(fromIndex - 1).then((p) => p.position + p.sizeBytes)
        : this.firstPos;
    const ops: MetaBatchOp[] = [
      {
        type: 'put',
        key: MetaKeys.logTruncation,
        value: truncationCodec.encode({ fromIndex, position: rec.position }),
      },
    ];
    if (this.checkpointIdx >= fromIndex) {
      this.checkpointIdx = fromIndex - 1;
      ops.push({
        type: 'put',
        key: MetaKeys.logCheckpoint,
        value: checkpointCodec.encode({
          index: fromIndex - 1,
          endPosition: prevEnd,
          term: this.terms.termAt(fromIndex - 1) ?? 0,
        }),
      });
    }
    await this.meta.batch(ops, { sync: true });
    await this.cutAt(fromIndex, rec.position);
    await this.meta.batch([{ type: 'del', key: MetaKeys.logTruncation }], { sync: true });
    this.last = fromIndex - 1;
    this.endPos = rec.position;
    this.terms.truncateAfter(this.last);
    this.writtenIdx = Math.min(this.writtenIdx, this.last);
    this.writtenEndPos = Math.min(this.writtenEndPos, this.endPos);
    this.durableIdx = Math.min(this.durableIdx, this.last);
    const err = new RaftmqError('OUT_OF_RANGE', `entries from ${fromIndex} were truncated`);
    this.written.rejectFrom(fromIndex, err);
    this.persisted.rejectFrom(fromIndex, err);
    this.log.info({ fromIndex, position: rec.position }, 'commit log suffix truncated');
  }

  /** Cuts data and index files so that `fromIndex` (at `position`) and all after it are gone. */
  private async cutAt(fromIndex: number, position: number): Promise<void> {
    const keep = this.segmentStartOf(position);
    for (const s of this.segments.filter((x) => x.start > keep)) {
      await this.files.forget(this.segmentPath(s.start));
      await this.disk.remove(this.segmentPath(s.start));
      this.dirtySegments.delete(s.start);
    }
    this.segments = this.segments.filter((x) => x.start <= keep);
    const seg = this.segments[this.segments.length - 1];
    if (seg && seg.firstIndex !== undefined && seg.firstIndex >= fromIndex)
      seg.firstIndex = undefined;
    if (seg) {
      await this.files.use(this.segmentPath(keep), false, async (f) => {
        await f.truncate(position - keep);
        await f.sync();
      });
    }
    await this.disk.syncDir(this.segmentDir);
    await this.index.truncateAfter(fromIndex - 1);
  }

  /**
   * Removes whole segments holding only entries below `keepFromIndex`. The new start is
   * recorded (synced) before files are deleted. Returns the new first index.
   */
  async removePrefix(keepFromIndex: number): Promise<number> {
    this.usable();
    return this.mutex.run(async () => {
      let k = -1;
      for (let i = 0; i < this.segments.length; i++) {
        const f = this.segments[i]?.firstIndex;
        if (f !== undefined && f <= keepFromIndex && f <= this.writtenIdx) k = i;
      }
      const seg = this.segments[k];
      if (!seg || seg.firstIndex === undefined || seg.firstIndex <= this.first) return this.first;
      const newFirst = seg.firstIndex;
      const prevTerm = this.terms.termAt(newFirst - 1) ?? 0;
      const start = { firstIndex: newFirst, position: seg.start, prevTerm };
      const removed = this.segments.slice(0, k);
      await this.stopOnError(async () => {
        await this.meta.batch(
          [{ type: 'put', key: MetaKeys.logStart, value: logStartCodec.encode(start) }],
          { sync: true },
        );
        // The synced start is the commit point: from here the log starts at newFirst, and an
        // open after a crash finishes the deletions below.
        this.segments = this.segments.slice(k);
        this.terms.trimBefore(newFirst - 1);
        this.first = newFirst;
        this.firstPos = seg.start;
        for (const old of removed) {
          await this.files.forget(this.segmentPath(old.start));
          await this.disk.remove(this.segmentPath(old.start));
        }
        await this.disk.syncDir(this.segmentDir);
        await this.index.removeFilesBefore(newFirst);
      });
      this.log.info({ firstIndex: newFirst, position: seg.start }, 'commit log prefix removed');
      return newFirst;
    });
  }

  /** Runs a structural change; any failure stops the log (its state may be half-changed). */
  private async stopOnError(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.fail(err);
      throw this.fatal ?? err;
    }
  }

  /**
   * Retention: removes the oldest segments that are older than `fileReservedTimeMs`, or while
   * the log exceeds `retainedBytesMax`, never the active one and never one holding an entry at
   * or above `keepFromIndexMax` (the caller's bound: applied, and needed by followers).
   */
  async applyRetention(keepFromIndexMax: number): Promise<number> {
    this.usable();
    const now = this.clock.nowMs();
    let total = this.endPos - this.firstPos;
    let keepFrom = this.first;
    for (let i = 0; i + 1 < this.segments.length; i++) {
      const seg = this.segments[i];
      const next = this.segments[i + 1];
      if (!seg || next?.firstIndex === undefined || next.firstIndex > keepFromIndexMax) break;
      const stat = await this.disk.stat(this.segmentPath(seg.start));
      const expired = stat !== undefined && now - stat.mtimeMs > this.options.fileReservedTimeMs;
      const over = this.options.retainedBytesMax > 0 && total > this.options.retainedBytesMax;
      if (!expired && !over) break;
      keepFrom = next.firstIndex;
      total -= next.start - Math.max(seg.start, this.firstPos);
    }
    return keepFrom > this.first ? this.removePrefix(keepFrom) : this.first;
  }

  /** Moves the recovery checkpoint to the durable index (index files synced first). */
  async checkpoint(): Promise<void> {
    this.usable();
    await this.mutex.run(async () => {
      const idx = this.durableIdx;
      if (idx <= this.checkpointIdx || idx < this.first) return;
      await this.stopOnError(async () => {
        const rec = await this.index.lookup(idx);
        await this.index.sync();
        const cp = { index: idx, endPosition: rec.position + rec.sizeBytes, term: rec.term };
        // A lost checkpoint only means a longer scan at the next open, except at close, where
        // a synced one lets the next open skip the scan after a power loss too.
        await this.meta.batch(
          [{ type: 'put', key: MetaKeys.logCheckpoint, value: checkpointCodec.encode(cp) }],
          { sync: this.closing },
        );
        this.checkpointIdx = idx;
      });
    });
  }

  private backgroundCheckpoint(): void {
    if (this.fatal || this.closed || this.mutex.isBusy()) return;
    this.checkpoint().catch((err: unknown) => this.fail(err));
  }

  /** Flushes, checkpoints and closes every file. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const stop of this.stopTimers) stop();
    this.closing = true;
    if (!this.fatal) {
      await this.flush();
      await this.checkpoint();
    }
    this.closed = true;
    const err = new RaftmqError('STORE_CLOSED', 'commit log closed');
    this.written.rejectAll(err);
    this.persisted.rejectAll(err);
    await this.mutex.run(() => this.files.closeAll());
  }
}

export { EntryType };

/** A typed, fatal store error for `err` (DISK_FULL for ENOSPC), keeping typed fatal errors. */
function toStoreError(err: unknown, what: string): RaftmqError {
  if (isRaftmqError(err)) return err;
  const code = errnoCode(err) === 'ENOSPC' ? 'DISK_FULL' : 'STORE_FATAL';
  const message = err instanceof Error ? err.message : String(err);
  return new RaftmqError(code, `${what}: ${message}`, { cause: err });
}
