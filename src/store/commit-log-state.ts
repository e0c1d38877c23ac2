/**
 * The state of one CommitLog, shared by its parts: the facade (commit-log.ts), the group-commit
 * writer (commit-log-writer.ts), the read path (commit-log-reader.ts) and the structural
 * operations (commit-log-maintenance.ts). It holds where the log starts and ends, how far it is
 * written and synced, the waiters on both, and the stop rules: every public call checks
 * `usable()` first, and `fail()` stops the log for good with one typed fatal error.
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import type { MetaStore } from './meta';
import { type Clock, type Scheduler, systemClock } from '../common/clock';
import { RaftmqError, errnoCode, isRaftmqError } from '../common/errors';
import { Mutex } from '../common/mutex';
import { type Logger, silentLogger } from '../common/logger';
import type { CommitLogOptions } from './commit-log-options';
import { EntryIndex, fileName20 } from './entry-index';
import { FileCache } from './file-cache';
import { RecentPositions } from './recent-positions';
import { TermRuns } from './term-runs';
import { WaiterQueue } from './waiter-queue';
import type { SegmentInfo } from './commit-log-recovery';

/** Entries whose positions are kept in memory: several applies' worth under load. */
const RECENT_POSITIONS_COUNT = 8192;

/** What a CommitLog runs on. */
export interface CommitLogDeps {
  disk: Disk;
  meta: MetaStore;
  clock?: Clock;
  scheduler?: Scheduler;
  logger?: Logger;
}

/** The fields every part of a CommitLog reads and moves; see the file comment. */
export class CommitLogState {
  readonly options: Readonly<CommitLogOptions>;
  readonly disk: Disk;
  readonly meta: MetaStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly files: FileCache;
  readonly index: EntryIndex;
  readonly segmentDir: string;
  /** Serializes structural changes (truncation, prefix removal, checkpoint, close). */
  readonly mutex = new Mutex();
  /** Waiters for an index to be written. */
  readonly written = new WaiterQueue();
  /** Waiters for an index to be persisted under the flush mode. */
  readonly persisted = new WaiterQueue();
  /** Where the latest appended entries lie (see recent-positions.ts). */
  readonly recent = new RecentPositions(RECENT_POSITIONS_COUNT);
  readonly stopTimers: Array<() => void> = [];

  segments: SegmentInfo[] = [];
  terms = new TermRuns(0, 0);
  first = 1;
  firstPos = 0;
  last = 0;
  /** Position just after the last appended record. */
  endPos = 0;
  writtenIdx = 0;
  /** Position just after the last written (not just appended) record. */
  writtenEndPos = 0;
  durableIdx = 0;
  checkpointIdx = 0;
  truncating = false;
  fatal: RaftmqError | undefined;
  closed = false;
  closing = false;

  constructor(deps: CommitLogDeps, dir: string, options: Readonly<CommitLogOptions>) {
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
  }

  /** Throws the fatal error once the log has failed, or STORE_CLOSED once it is closed. */
  usable(): void {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new RaftmqError('STORE_CLOSED', 'commit log is closed');
  }

  /** The index callers may treat as persisted under the flush mode. */
  persistedIndex(): number {
    return this.options.flushMode === 'SYNC' ? this.durableIdx : this.writtenIdx;
  }

  /** Stops the log for good: later calls and every waiter get the same fatal error. */
  fail(err: unknown): void {
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

  /** Runs a structural change; any failure stops the log (its state may be half-changed). */
  async stopOnError(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.fail(err);
      throw this.fatal ?? err;
    }
  }

  segmentPath(start: number): string {
    return path.join(this.segmentDir, fileName20(start));
  }

  segmentStartOf(position: number): number {
    return Math.floor(position / this.options.segmentSizeBytes) * this.options.segmentSizeBytes;
  }
}

/** A typed, fatal store error for `err` (DISK_FULL for ENOSPC), keeping typed fatal errors. */
export function toStoreError(err: unknown, what: string): RaftmqError {
  if (isRaftmqError(err)) return err;
  const code = errnoCode(err) === 'ENOSPC' ? 'DISK_FULL' : 'STORE_FATAL';
  const message = err instanceof Error ? err.message : String(err);
  return new RaftmqError(code, `${what}: ${message}`, { cause: err });
}
