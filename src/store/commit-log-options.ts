/**
 * Options of the CommitLog, with RocketMQ's defaults where it has one.
 */
import {
  checkOption,
  intInRange,
  isBoolean,
  oneOf,
  resolveOptions,
  type OptionSpec,
} from '../common/options';
import { RECORD_HEADER_BYTES } from './log-record';

export type FlushMode = 'SYNC' | 'ASYNC';

export interface CommitLogOptions {
  /** Capacity of one segment file (RocketMQ `mappedFileSizeCommitLog`: 1 GiB). */
  segmentSizeBytes: number;
  /** Records per entry-index file (24 bytes each). */
  indexEntriesPerFile: number;
  /** Largest payload of one entry; larger appends are refused before anything is written. */
  payloadMaxBytes: number;
  /**
   * SYNC: persisted means fsync'd (group commit). ASYNC: persisted means written, with an fsync
   * every `flushIntervalMs`.
   */
  flushMode: FlushMode;
  /** ASYNC mode: fsync interval (RocketMQ `flushIntervalCommitLog`: 500 ms). */
  flushIntervalMs: number;
  /** How often the recovery checkpoint moves forward. */
  checkpointIntervalMs: number;
  /** Appended bytes not yet written; beyond it `append` refuses with BUSY. */
  pendingBytesMax: number;
  /** Size of the write buffers that batch records into one write. */
  writeChunkBytes: number;
  /** Open file descriptors kept by the log (segments and index files). */
  openFilesMax: number;
  /** Segments older than this may be removed by retention (RocketMQ `fileReservedTime`: 72 h). */
  fileReservedTimeMs: number;
  /** Retention removes the oldest segments while the log is larger than this; 0 = no limit. */
  retainedBytesMax: number;
  /**
   * Recovery found corruption before the tail: false refuses to open (CORRUPT_LOG, naming file
   * and position); true cuts the log there. Cutting may drop entries this node acknowledged.
   */
  truncateCorruptTail: boolean;
  /**
   * How much of the newest synced data the log leaves in the page cache. Older data it wrote is
   * released (posix_fadvise DONTNEED) once synced, in steps, so the kernel takes the freed pages
   * for the next writes instead of fresh ones (docs/storage.md, "Page cache"). -1 releases
   * nothing. Without the native addon (`native/`), nothing is released either way.
   */
  pageCacheKeepBytes: number;
}

export const COMMIT_LOG_DEFAULTS: Readonly<CommitLogOptions> = Object.freeze({
  segmentSizeBytes: 1024 * 1024 * 1024,
  indexEntriesPerFile: 1024 * 1024,
  payloadMaxBytes: 16 * 1024 * 1024,
  flushMode: 'SYNC',
  flushIntervalMs: 500,
  checkpointIntervalMs: 1000,
  pendingBytesMax: 256 * 1024 * 1024,
  writeChunkBytes: 1024 * 1024,
  openFilesMax: 64,
  fileReservedTimeMs: 72 * 3600 * 1000,
  retainedBytesMax: 0,
  truncateCorruptTail: false,
  pageCacheKeepBytes: 256 * 1024 * 1024,
});

const MAX_SEGMENT_BYTES = 2 ** 40;

const SPEC: OptionSpec<CommitLogOptions> = {
  segmentSizeBytes: intInRange(4096, MAX_SEGMENT_BYTES),
  indexEntriesPerFile: intInRange(4, 1 << 26),
  payloadMaxBytes: intInRange(1, 1 << 30),
  flushMode: oneOf<FlushMode>('SYNC', 'ASYNC'),
  flushIntervalMs: intInRange(1, 60_000),
  checkpointIntervalMs: intInRange(1, 3_600_000),
  pendingBytesMax: intInRange(4096, 2 ** 40),
  writeChunkBytes: intInRange(4096, 1 << 30),
  openFilesMax: intInRange(4, 100_000),
  fileReservedTimeMs: intInRange(0, Number.MAX_SAFE_INTEGER),
  retainedBytesMax: intInRange(0, Number.MAX_SAFE_INTEGER),
  truncateCorruptTail: isBoolean,
  pageCacheKeepBytes: intInRange(-1, Number.MAX_SAFE_INTEGER),
};

/** Checks and freezes CommitLog options; throws INVALID_OPTION naming the field. */
export function resolveCommitLogOptions(
  input?: Partial<CommitLogOptions>,
): Readonly<CommitLogOptions> {
  const o = resolveOptions('commitLog', COMMIT_LOG_DEFAULTS, SPEC, input);
  checkOption(
    o.payloadMaxBytes + RECORD_HEADER_BYTES <= o.segmentSizeBytes,
    'commitLog.payloadMaxBytes',
    'a record of the largest payload must fit in one segment',
  );
  checkOption(
    o.payloadMaxBytes + RECORD_HEADER_BYTES <= o.pendingBytesMax,
    'commitLog.pendingBytesMax',
    'must hold at least one record of the largest payload',
  );
  return o;
}
