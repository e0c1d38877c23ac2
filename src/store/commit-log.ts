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
 *
 * This file is the facade; the parts share one CommitLogState (commit-log-state.ts): the write
 * path is commit-log-writer.ts, the read path commit-log-reader.ts, truncation, prefix removal,
 * retention and checkpoints commit-log-maintenance.ts, and open-time recovery
 * commit-log-recovery.ts.
 */
import type { Scheduler } from '../common/clock';
import { systemScheduler } from '../common/clock';
import { RaftmqError } from '../common/errors';
import { assert } from '../common/assert';
import { type CommitLogOptions, resolveCommitLogOptions } from './commit-log-options';
import { RECORD_HEADER_BYTES, type LogEntry } from './log-record';
import type { LocatedRecords } from './entry-index';
import { recoverLog } from './commit-log-recovery';
import { type CommitLogDeps, CommitLogState, toStoreError } from './commit-log-state';
import { CommitLogWriter, type SyncStats } from './commit-log-writer';
import {
  type ByteSpan,
  SPAN_READ_DEFAULTS,
  type SpanReadOptions,
  positionsOf,
  readBytes,
  readRange,
  readSpans,
} from './commit-log-reader';
import {
  applyRetention, checkpoint, removePrefix, retentionPoint, truncateSuffix,
} from './commit-log-maintenance';

export type { CommitLogDeps };

export class CommitLog {
  readonly options: Readonly<CommitLogOptions>;
  private readonly s: CommitLogState;
  private readonly writer: CommitLogWriter;

  private constructor(deps: CommitLogDeps, dir: string, options: Readonly<CommitLogOptions>) {
    this.options = options;
    this.s = new CommitLogState(deps, dir, options);
    this.writer = new CommitLogWriter(this.s);
  }

  /** Opens (recovering if needed) the log under `dir`. */
  static async open(
    dir: string,
    deps: CommitLogDeps,
    options?: Partial<CommitLogOptions>,
  ): Promise<CommitLog> {
    const log = new CommitLog(deps, dir, resolveCommitLogOptions(options));
    const s = log.s;
    let r: Awaited<ReturnType<typeof recoverLog>>;
    try {
      await s.disk.mkdirp(s.segmentDir);
      await s.disk.mkdirp(s.index.dir);
      r = await recoverLog({
        disk: s.disk,
        meta: s.meta,
        files: s.files,
        index: s.index,
        segmentDir: s.segmentDir,
        options: s.options,
        logger: s.log,
      });
    } catch (err) {
      // A refused open must not keep descriptors, and its error is typed like any other.
      await s.files.closeAll();
      throw toStoreError(err, 'commit log open failed');
    }
    if (s.options.pageCacheKeepBytes >= 0 && !s.disk.releasesCache) {
      s.log.info(
        { reason: s.disk.cacheReleaseUnavailable },
        'commit log: page-cache pages will not be released (no native addon; see native/build.js)',
      );
    }
    if (s.disk.syncTimingUnavailable !== undefined) {
      s.log.info(
        { reason: s.disk.syncTimingUnavailable },
        'commit log: sync calls will not be timed apart from their rounds (no native addon)',
      );
    }
    s.segments = r.segments;
    s.terms = r.terms;
    s.first = r.firstIndex;
    s.firstPos = r.firstPosition;
    s.last = r.lastIndex;
    s.endPos = r.endPosition;
    s.writtenIdx = r.lastIndex;
    s.writtenEndPos = r.endPosition;
    s.durableIdx = r.lastIndex;
    s.checkpointIdx = r.checkpointIndex;
    log.startTimers(deps.scheduler ?? systemScheduler);
    s.log.info(
      {
        firstIndex: s.first,
        lastIndex: s.last,
        scannedBytes: r.scannedBytes,
        truncatedBytes: r.truncatedBytes,
      },
      'commit log opened',
    );
    return log;
  }

  private startTimers(scheduler: Scheduler): void {
    const s = this.s;
    s.stopTimers.push(
      scheduler.every(s.options.checkpointIntervalMs, () => this.backgroundCheckpoint()),
    );
    if (s.options.flushMode === 'ASYNC') {
      s.stopTimers.push(
        scheduler.every(s.options.flushIntervalMs, () => this.writer.requestSync()),
      );
    }
  }

  firstIndex(): number {
    return this.s.first;
  }
  lastIndex(): number {
    return this.s.last;
  }
  lastTerm(): number {
    return this.s.terms.lastTerm();
  }
  /** Position of the first byte the log holds. */
  firstPosition(): number {
    return this.s.firstPos;
  }
  /** Position just after the last appended record. */
  endPosition(): number {
    return this.s.endPos;
  }
  writtenIndex(): number {
    return this.s.writtenIdx;
  }
  durableIndex(): number {
    return this.s.durableIdx;
  }
  /** The index callers may treat as persisted under the flush mode. */
  persistedIndex(): number {
    return this.s.persistedIndex();
  }
  /**
   * The CRC32C of entry `index`'s record (`recordChecksum`) while it is among the last few
   * thousand appended here and was appended with this term and payload size; undefined
   * otherwise. Synchronous.
   */
  recentRecordCrc(index: number, term: number, payloadBytes: number): number | undefined {
    return this.s.recent.crcAt(index, term, RECORD_HEADER_BYTES + payloadBytes);
  }

  /** Term of `index` for firstIndex-1 ..lastIndex; undefined outside. Synchronous. */
  termAt(index: number): number | undefined {
    return this.s.terms.termAt(index);
  }
  /** The fdatasync rounds of the write path so far: count, time, longest, slow ones. */
  syncStats(): SyncStats {
    return this.writer.syncStats();
  }

  /** Bytes appended but not yet written. */
  pendingWriteBytes(): number {
    return this.writer.pendingWriteBytes();
  }

  /**
   * Appends entries (indexes must continue the log, terms must not decrease). Validates all of
   * them before encoding any, so a refused call writes nothing. Returns the new last index.
   */
  append(entries: readonly LogEntry[]): number {
    return this.writer.append(entries);
  }

  /** Resolves when `index` is persisted under the flush mode; rejects if the log fails. */
  waitPersisted(index: number): Promise<void> {
    const s = this.s;
    try {
      s.usable();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    if (index <= s.persistedIndex()) return Promise.resolve();
    if (index > s.last) {
      return Promise.reject(
        new RaftmqError('OUT_OF_RANGE', `waitPersisted(${index}) beyond last index ${s.last}`),
      );
    }
    return s.persisted.wait(index);
  }

  /** Writes and fsyncs everything appended so far (in any flush mode). */
  flush(): Promise<void> {
    return this.writer.flush();
  }

  segmentPath(start: number): string {
    return this.s.segmentPath(start);
  }

  /** Reads one entry. */
  async read(index: number): Promise<LogEntry> {
    const [entry] = await readRange(this.s, index, 1, Number.MAX_SAFE_INTEGER);
    assert(entry !== undefined, 'readRange returned nothing');
    return entry;
  }

  /**
   * Reads entries from `from`: at most `countMax`, and at most `bytesMax` of records (but always
   * at least one). Every record is checked (magic, CRC32C, index, term) before it is returned.
   */
  readRange(from: number, countMax: number, bytesMax: number): Promise<LogEntry[]> {
    return readRange(this.s, from, countMax, bytesMax);
  }

  /** Positions, sizes and terms of entries [from, from + count), once they are written. */
  positionsOf(from: number, count: number): Promise<LocatedRecords> {
    return positionsOf(this.s, from, count);
  }

  /**
   * Reads raw bytes at a CommitLog position (a message inside an entry, found through a
   * ConsumeQueue). The bytes must lie within one written record; the message codec checks them.
   */
  readBytes(position: number, sizeBytes: number): Promise<Buffer> {
    return readBytes(this.s, position, sizeBytes);
  }

  /** Reads many spans with few reads (see commit-log-reader.ts `readSpans`), in input order. */
  readSpans(
    spans: readonly ByteSpan[],
    options: SpanReadOptions = SPAN_READ_DEFAULTS,
  ): Promise<Buffer[]> {
    return readSpans(this.s, spans, options);
  }

  /**
   * Removes entries from `fromIndex` on (Raft conflict resolution). Crash-safe: the intent is
   * recorded (synced) first and redone on open if the cut did not finish.
   */
  truncateSuffix(fromIndex: number): Promise<void> {
    return truncateSuffix(this.s, this.writer, fromIndex);
  }

  /**
   * Removes whole segments holding only entries below `keepFromIndex`. The new start is
   * recorded (synced) before files are deleted. Returns the new first index.
   */
  removePrefix(keepFromIndex: number): Promise<number> {
    return removePrefix(this.s, keepFromIndex);
  }

  /**
   * Retention: removes the oldest segments that are older than `fileReservedTimeMs`, or while
   * the log exceeds `retainedBytesMax`, never the active one and never one holding an entry at
   * or above `keepFromIndexMax` (the caller's bound: applied, and needed by followers).
   */
  applyRetention(keepFromIndexMax: number): Promise<number> {
    return applyRetention(this.s, keepFromIndexMax);
  }

  /**
   * Retention's decision alone: the first index {@link applyRetention} would keep (the current
   * first index when nothing would go). Removes nothing; see {@link removePrefix}.
   */
  retentionPoint(keepFromIndexMax: number): Promise<number> {
    return retentionPoint(this.s, keepFromIndexMax);
  }

  /** Moves the recovery checkpoint to the durable index (index files synced first). */
  checkpoint(): Promise<void> {
    return checkpoint(this.s);
  }

  private backgroundCheckpoint(): void {
    const s = this.s;
    if (s.fatal || s.closed || s.mutex.isBusy()) return;
    checkpoint(s).catch((err: unknown) => s.fail(err));
  }

  /** Flushes, checkpoints and closes every file. */
  async close(): Promise<void> {
    const s = this.s;
    if (s.closed) return;
    for (const stop of s.stopTimers) stop();
    s.closing = true;
    if (!s.fatal) {
      await this.writer.flush();
      await checkpoint(s);
    }
    s.closed = true;
    const err = new RaftmqError('STORE_CLOSED', 'commit log closed');
    s.written.rejectAll(err);
    s.persisted.rejectAll(err);
    await s.mutex.run(() => s.files.closeAll());
  }
}

