/**
 * The group-commit write path of a CommitLog. `append()` checks a batch, encodes its records
 * into in-memory chunks and returns at once; one flush loop at a time writes every chunk
 * gathered so far (one write per segment) and covers them with one fdatasync, while new appends
 * gather for the next round. A segment is synced before the first write to the next one, which
 * recovery relies on to tell a torn tail from corruption.
 *
 * The writer moves the shared CommitLogState (end position, last index, written and durable
 * indexes) and resolves its waiters; any write or sync error stops the log through `fail()`.
 */
import { RaftmqError } from '../common/errors';
import { assert } from '../common/assert';
import { type LogEntry, RECORD_HEADER_BYTES, encodeRecordInto, isEntryType } from './log-record';
import type { CommitLogState } from './commit-log-state';

/** Write buffers kept for reuse, at most. */
const SPARE_CHUNKS_MAX = 4;

/**
 * Page-cache releases are made once at least this much is due, or a segment's size if smaller
 * (one call per segment).
 */
const CACHE_RELEASE_STEP_BYTES = 8 * 1024 * 1024;

/**
 * Release ranges end on multiples of this within a segment (or on segment boundaries, when
 * segments are smaller): the kernel frees only folios wholly inside a range, a page-cache folio
 * may be as large as 2 MiB, and the next range starts where this one ended, so a folio across
 * that point would be in neither range. Ending ranges where no folio crosses avoids that.
 */
const CACHE_RELEASE_ALIGN_BYTES = 2 * 1024 * 1024;

/**
 * Upper bounds (ms, exclusive) of the buckets of {@link SyncStats.buckets}; the last bucket,
 * one more, holds the rounds of the last bound or longer.
 */
export const SYNC_BUCKET_BOUNDS_MS: readonly number[] = [1, 2, 5, 10, 20, 50, 100, 200];

/** A sync round this long or longer counts as slow in {@link SyncStats} (a bucket bound). */
export const SLOW_SYNC_MS = 10;

/** The first bucket whose rounds are all slow. */
const FIRST_SLOW_BUCKET = SYNC_BUCKET_BOUNDS_MS.indexOf(SLOW_SYNC_MS) + 1;

/**
 * What the writer's sync rounds took since the log was opened (a round: the fdatasync of every
 * segment written since the last one, and of the directory after a new segment). A round's time
 * runs from handing its first sync to the thread pool to seeing its last one done on the loop:
 * what an entry waiting to be durable waits for. So a slow round is the disk stalling, or the
 * process waiting for a CPU: for a pool thread to take the call or for the loop to take its
 * completion. Where the disk times its calls (the timed-sync addon, timed-sync.ts), the rounds'
 * system calls are counted apart (`timedSyncs` and the `call` fields), which tells the two apart
 * (docs/storage.md, "Sync rounds").
 */
export interface SyncStats {
  readonly syncs: number;
  readonly totalMs: number;
  readonly maxMs: number;
  /** Rounds of {@link SLOW_SYNC_MS} or longer. */
  readonly slowSyncs: number;
  /** Rounds per bucket of {@link SYNC_BUCKET_BOUNDS_MS} (one more than the bounds). */
  readonly buckets: readonly number[];
  /** Rounds whose every sync call was timed by the disk (all of them with the addon, else 0). */
  readonly timedSyncs: number;
  /** The system calls of the timed rounds, summed per round: total and longest round. */
  readonly callTotalMs: number;
  readonly callMaxMs: number;
  /**
   * Timed rounds whose system calls took {@link SLOW_SYNC_MS} or longer: the disk stalling (or,
   * on a busy machine, the pool thread waiting to run again once the disk had answered). A slow
   * round not among these waited for a CPU.
   */
  readonly slowCalls: number;
}

/** Encoded records bound for one segment, back to back from `position`. */
interface Chunk {
  segmentStart: number;
  position: number;
  buf: Buffer;
  used: number;
}

/** Encodes appended entries and writes and syncs them in rounds; see the file comment. */
export class CommitLogWriter {
  private chunks: Chunk[] = [];
  /** Written chunks' buffers, for reuse (see `newChunkBuffer`). */
  private readonly spareChunks: Buffer[] = [];
  private pendingBytes = 0;
  private readonly dirtySegments = new Set<number>();
  private dirDirty = false;
  /** Entries up to here must be fsync'd (flush(), the ASYNC interval, close). */
  private syncTarget = 0;
  private flushing: Promise<void> | undefined;
  /**
   * From here on, pages this writer wrote may still be cached (see `releaseCache`); undefined
   * until the first write. A truncation that rewinds the end moves it back.
   */
  private cacheHeldFrom: number | undefined;
  /** Set by the first failed release: releases are advisory, so they stop, and the log goes on. */
  private cacheReleaseFailed = false;

  private readonly sync = {
    syncs: 0,
    totalMs: 0,
    maxMs: 0,
    buckets: new Array<number>(SYNC_BUCKET_BOUNDS_MS.length + 1).fill(0),
    timedSyncs: 0,
    callTotalMs: 0,
    callMaxMs: 0,
    slowCalls: 0,
  };

  constructor(private readonly s: CommitLogState) {}

  /** The fdatasync rounds so far (a copy). */
  syncStats(): SyncStats {
    const buckets = [...this.sync.buckets];
    let slowSyncs = 0;
    for (let b = FIRST_SLOW_BUCKET; b < buckets.length; b++) slowSyncs += buckets[b] ?? 0;
    return { ...this.sync, slowSyncs, buckets };
  }

  /** Bytes appended but not yet written. */
  pendingWriteBytes(): number {
    return this.pendingBytes;
  }

  /** The flush round in progress, if any. */
  inFlight(): Promise<void> | undefined {
    return this.flushing;
  }

  /** Forgets a segment removed from disk, so that no later round syncs it. */
  forgetSegment(start: number): void {
    this.dirtySegments.delete(start);
  }

  /**
   * Appends entries (indexes must continue the log, terms must not decrease). Validates all of
   * them before encoding any, so a refused call writes nothing. Returns the new last index.
   */
  append(entries: readonly LogEntry[]): number {
    this.s.usable();
    if (this.s.truncating) throw new RaftmqError('BUSY', 'commit log truncation in progress');
    this.validate(entries);
    for (const e of entries) this.encode(e);
    this.kick();
    return this.s.last;
  }

  private validate(entries: readonly LogEntry[]): void {
    const options = this.s.options;
    let expected = this.s.last + 1;
    let term = this.s.terms.lastTerm();
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
      const payloadBytes = e.payload.length;
      if (payloadBytes > options.payloadMaxBytes) {
        throw new RaftmqError(
          'RECORD_TOO_LARGE',
          `entry ${e.index}: payload of ${payloadBytes} bytes exceeds ${options.payloadMaxBytes}`,
          { details: { index: e.index, sizeBytes: payloadBytes } },
        );
      }
      bytes += RECORD_HEADER_BYTES + payloadBytes;
      term = e.term;
      expected++;
    }
    if (bytes > options.pendingBytesMax) {
      throw new RaftmqError(
        'RECORD_TOO_LARGE',
        `append: a batch of ${bytes} bytes exceeds pendingBytesMax; split it`,
        { details: { sizeBytes: bytes } },
      );
    }
    if (this.pendingBytes + bytes > options.pendingBytesMax) {
      throw new RaftmqError(
        'BUSY',
        `commit log write buffer full (${this.pendingBytes} bytes pending)`,
      );
    }
  }

  private encode(e: LogEntry): void {
    const s = this.s;
    const size = RECORD_HEADER_BYTES + e.payload.length;
    const segSize = s.options.segmentSizeBytes;
    let segStart = Math.floor(s.endPos / segSize) * segSize;
    if (s.endPos - segStart + size > segSize) {
      segStart += segSize;
      s.endPos = segStart;
    }
    const lastSeg = s.segments[s.segments.length - 1];
    if (!lastSeg || lastSeg.start !== segStart) {
      s.segments.push({ start: segStart, firstIndex: e.index });
    } else if (lastSeg.firstIndex === undefined) {
      lastSeg.firstIndex = e.index;
    }
    let chunk = this.chunks[this.chunks.length - 1];
    if (
      !chunk ||
      chunk.segmentStart !== segStart ||
      chunk.position + chunk.used !== s.endPos ||
      chunk.used + size > chunk.buf.length
    ) {
      chunk = {
        segmentStart: segStart,
        position: s.endPos,
        used: 0,
        buf: this.newChunkBuffer(size),
      };
      this.chunks.push(chunk);
    }
    const crc = encodeRecordInto(e, chunk.buf, chunk.used);
    chunk.used += size;
    s.index.stage({ index: e.index, position: s.endPos, sizeBytes: size, term: e.term });
    s.recent.record(e.index, s.endPos, size, e.term, crc);
    s.terms.append(e.index, e.term);
    s.endPos += size;
    s.last = e.index;
    this.pendingBytes += size;
  }

  /**
   * A write buffer for a record of `size` bytes: a recycled one when it fits. Fresh memory costs
   * a page fault per page on first touch, which on the machines measured was several times the
   * cost of encoding the record (CRC included), so the buffers of the last rounds are reused.
   */
  private newChunkBuffer(size: number): Buffer {
    const chunkBytes = this.s.options.writeChunkBytes;
    if (size <= chunkBytes) return this.spareChunks.pop() ?? Buffer.allocUnsafe(chunkBytes);
    return Buffer.allocUnsafe(size);
  }

  /**
   * Keeps written chunks' buffers for reuse (a few, of the standard size). Safe once the write
   * resolved: the disk copied the bytes (the real one into the page cache, the simulated one
   * into its own arrays) and nothing else holds a chunk.
   */
  private recycle(chunks: readonly Chunk[]): void {
    for (const c of chunks) {
      if (this.spareChunks.length >= SPARE_CHUNKS_MAX) return;
      if (c.buf.length === this.s.options.writeChunkBytes) this.spareChunks.push(c.buf);
    }
  }

  /** Writes and fsyncs everything appended so far (in any flush mode). */
  async flush(): Promise<void> {
    const s = this.s;
    s.usable();
    if (s.truncating) await s.mutex.run(() => Promise.resolve());
    const target = s.last;
    this.syncTarget = Math.max(this.syncTarget, target);
    this.kick();
    while (this.flushing && s.durableIdx < Math.min(target, s.last)) await this.flushing;
    if (s.fatal) throw s.fatal;
  }

  private syncNeeded(): boolean {
    return this.s.durableIdx < Math.min(this.syncTarget, this.s.last);
  }

  /** The ASYNC interval: asks for an fsync of everything written so far. */
  requestSync(): void {
    const s = this.s;
    if (s.fatal || s.closed || s.truncating || s.durableIdx >= s.writtenIdx) return;
    this.syncTarget = Math.max(this.syncTarget, s.writtenIdx);
    this.kick();
  }

  /** Starts a flush loop unless one runs, the log failed, a truncation holds it, or no work. */
  kick(): void {
    if (this.flushing || this.s.fatal || this.s.truncating) return;
    if (this.chunks.length === 0 && !this.syncNeeded()) return;
    this.startFlush();
  }

  /**
   * For a truncation about to cut: writes what was appended before it began, and waits until no
   * round runs. Entries appended just as a round ended (after its loop's last look, before its
   * end was seen) wait in the writer, and the round's end, seeing the truncation, starts none:
   * they are written now, so that the cut removes them with the rest instead of a later round
   * writing them past the new end.
   */
  async drainForTruncation(): Promise<void> {
    while (!this.s.fatal && (this.flushing !== undefined || this.chunks.length > 0)) {
      if (this.flushing === undefined) this.startFlush();
      await this.flushing;
    }
  }

  private startFlush(): void {
    this.flushing = this.flushLoop().then(
      () => {
        this.flushing = undefined;
        // Waiters resolved by the last round may have appended before this callback ran,
        // while `flushing` still looked busy; their entries must not wait for the next append.
        this.kick();
      },
      (err: unknown) => {
        this.flushing = undefined;
        this.s.fail(err);
      },
    );
  }

  private async flushLoop(): Promise<void> {
    const s = this.s;
    while (!s.fatal && (this.chunks.length > 0 || this.syncNeeded())) {
      const chunks = this.chunks;
      const batchLast = s.last;
      const batchEnd = s.endPos;
      const staged = s.index.takeStaged();
      this.chunks = [];
      for (const c of chunks) this.pendingBytes -= c.used;
      await this.writeChunks(chunks);
      this.recycle(chunks);
      await s.index.writeTaken(staged);
      s.writtenIdx = Math.max(s.writtenIdx, Math.min(batchLast, s.last));
      s.writtenEndPos = Math.max(s.writtenEndPos, Math.min(batchEnd, s.endPos));
      s.written.resolveUpTo(s.writtenIdx);
      // In ASYNC mode only a pending sync target forces the fsync; the target stays set until
      // durableIdx reaches it, so entries written in a later round are synced too.
      let syncedEnd: number | undefined;
      if (s.options.flushMode === 'SYNC' || this.syncNeeded()) {
        syncedEnd = s.writtenEndPos;
        await this.syncDirty();
        s.durableIdx = Math.max(s.durableIdx, Math.min(s.writtenIdx, s.last));
      }
      s.persisted.resolveUpTo(s.persistedIndex());
      // After the waiters: a release is a system call on this thread, and nobody waits for it.
      if (syncedEnd !== undefined) await this.releaseCache(syncedEnd);
    }
  }

  /** Counts a round of `ms`, whose system calls took `callMs` when all were timed. */
  private noteSync(ms: number, callMs: number | undefined): void {
    const sync = this.sync;
    if (callMs !== undefined) {
      sync.timedSyncs += 1;
      sync.callTotalMs += callMs;
      if (callMs > sync.callMaxMs) sync.callMaxMs = callMs;
      if (callMs >= SLOW_SYNC_MS) sync.slowCalls += 1;
    }
    sync.syncs += 1;
    sync.totalMs += ms;
    if (ms > sync.maxMs) sync.maxMs = ms;
    let bucket = 0;
    while (bucket < SYNC_BUCKET_BOUNDS_MS.length && ms >= (SYNC_BUCKET_BOUNDS_MS[bucket] ?? 0)) {
      bucket++;
    }
    sync.buckets[bucket] = (sync.buckets[bucket] ?? 0) + 1;
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
      if ([...this.dirtySegments].some((x) => x !== head.segmentStart)) await this.syncDirty();
      if (this.cacheHeldFrom === undefined || head.position < this.cacheHeldFrom) {
        this.cacheHeldFrom = head.position;
      }
      const filePath = this.s.segmentPath(head.segmentStart);
      if (!this.dirtySegments.has(head.segmentStart) && head.position === head.segmentStart) {
        this.dirDirty = true;
      }
      await this.s.files.use(filePath, true, (f) =>
        f.writev(group, head.position - head.segmentStart),
      );
      this.dirtySegments.add(head.segmentStart);
      i = j;
    }
  }

  /**
   * Releases the page-cache pages of what this writer wrote before `syncedEnd` (all of it
   * synced) except the newest `pageCacheKeepBytes`. Written pages otherwise stay cached until
   * memory runs short, and every write takes a fresh page; on a virtual machine whose balloon
   * hands free memory back to the host, a fresh page costs a host fault, and writing 1 MiB cost
   * 3 ms of CPU instead of 0.4 (docs/performance.md). Released pages are taken again by the next
   * writes. Only segments whose files are open are touched (no file is opened or reopened
   * here, so none being removed is); a failure stops releasing, never the log.
   */
  private async releaseCache(syncedEnd: number): Promise<void> {
    const s = this.s;
    const keep = s.options.pageCacheKeepBytes;
    const from = this.cacheHeldFrom;
    if (keep < 0 || from === undefined || this.cacheReleaseFailed || !s.disk.releasesCache) return;
    const segmentBytes = s.options.segmentSizeBytes;
    let to = syncedEnd - keep;
    if (to > 0) to -= (to % segmentBytes) % Math.min(CACHE_RELEASE_ALIGN_BYTES, segmentBytes);
    if (to - from < Math.min(CACHE_RELEASE_STEP_BYTES, segmentBytes)) return;
    try {
      for (const seg of s.segments) {
        if (seg.start >= to) break;
        const start = Math.max(from, seg.start);
        const end = Math.min(to, seg.start + segmentBytes);
        if (end <= start) continue;
        await s.files.useIfOpen(s.segmentPath(seg.start), (f) =>
          f.releaseCache(start - seg.start, end - start),
        );
      }
      this.cacheHeldFrom = to;
    } catch (err) {
      this.cacheReleaseFailed = true;
      s.log.warn({ err }, 'commit log: releasing page-cache pages failed; no longer releasing');
    }
  }

  /** Syncs the segments written since the last sync (and the directory, after a new one). */
  private async syncDirty(): Promise<void> {
    const starts = [...this.dirtySegments];
    if (starts.length === 0 && !this.dirDirty) return;
    const startedMs = this.s.clock.monotonicMs();
    this.dirtySegments.clear();
    // The round's system calls, summed while every one of them was timed.
    let callMs: number | undefined = 0;
    for (const start of starts) {
      const timing = await this.s.files.use(this.s.segmentPath(start), false, (f) => f.sync());
      callMs = timing && callMs !== undefined ? callMs + timing.callMs : undefined;
    }
    if (this.dirDirty) {
      this.dirDirty = false;
      const timing = await this.s.disk.syncDir(this.s.segmentDir);
      callMs = timing && callMs !== undefined ? callMs + timing.callMs : undefined;
    }
    this.noteSync(this.s.clock.monotonicMs() - startedMs, callMs);
  }
}
