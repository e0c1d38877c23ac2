/**
 * Recovery of a ConsumeQueue on open: which files the queue holds and how much of its tail is
 * valid. It keeps the longest valid prefix of the tail: it checks the last
 * `RECOVERY_SCAN_FILES` files record by record (earlier ones by size and last record only) and
 * cuts at the first record that is torn, zero (unwritten), malformed or not above its
 * predecessor; files after a gap in the names are orphans, to be removed. The queue is derived
 * data: whatever a cut drops, the broker dispatches again from the CommitLog.
 *
 * Open then syncs every file it keeps: a process killed before it synced leaves writes that
 * are visible but not durable, and a later `flush(true)` only syncs what this incarnation wrote.
 */
import * as path from 'node:path';
import { parseFileName20 } from './entry-index';
import { RaftmqError } from '../common/errors';
import type { ConsumeQueueFiles, QueueFilesContext } from './consume-queue-files';
import {
  CQ_RECORD_BYTES,
  positionOf,
  queueFilePath,
  readFully,
  recordFault,
} from './consume-queue-record';

/** How many files at the tail recovery checks record by record. */
export const RECOVERY_SCAN_FILES = 2;
const SCAN_CHUNK_RECORDS = 4096;

/** What the scan keeps of the tail. */
interface RecoveredTail {
  /** The offset after the last record kept. */
  end: number;
  /** CommitLog position of the last record kept, or -1 when none. */
  lastPos: number;
  /** Whether the files must be cut at `end` (a bad record, or short files before the last). */
  cut: boolean;
}

/**
 * Recovers a queue's files: adopts the contiguous ones, cuts the tail where the scan says,
 * removes the orphans and syncs what it keeps. Returns the first offset, the offset after the
 * last record and that record's position; undefined when the queue has no files.
 */
export async function recoverQueueFiles(
  files: ConsumeQueueFiles,
): Promise<{ first: number; end: number; lastPos: number } | undefined> {
  const ctx = files.ctx;
  const starts = await listFileStarts(ctx);
  const orphans = splitOrphans(starts, ctx.entriesPerFile);
  files.adopt(starts);
  if (starts.length === 0) return undefined;
  const tail = await scanTail(ctx, starts);
  if (tail.cut) await files.cutAt(tail.end);
  for (const start of orphans) await files.removeFile(start);
  // See the file comment: what recovery keeps must be durable before anything is added.
  files.markAllDirty();
  await files.syncDirty();
  return { first: starts[0] as number, end: tail.end, lastPos: tail.lastPos };
}

/** The first offsets of the queue's files, ascending; CORRUPT_LOG for a misaligned name. */
async function listFileStarts(ctx: QueueFilesContext): Promise<number[]> {
  const starts: number[] = [];
  const fileBytes = ctx.entriesPerFile * CQ_RECORD_BYTES;
  for (const name of await ctx.disk.list(ctx.dir)) {
    const byteOffset = parseFileName20(name);
    if (byteOffset === undefined) continue;
    if (byteOffset % fileBytes !== 0) {
      throw new RaftmqError(
        'CORRUPT_LOG',
        `consume queue file ${path.join(ctx.dir, name)} ` +
          `does not start at a multiple of ${fileBytes} bytes (was entriesPerFile changed?)`,
        { details: { file: path.join(ctx.dir, name) } },
      );
    }
    starts.push(byteOffset / CQ_RECORD_BYTES);
  }
  return starts.sort((a, b) => a - b);
}

/** Removes from `starts` and returns the files after the first gap in the names (orphans). */
function splitOrphans(starts: number[], entriesPerFile: number): number[] {
  let n = 1;
  while (n < starts.length && starts[n] === (starts[n - 1] as number) + entriesPerFile) n++;
  return starts.splice(n);
}

/** Scans the tail of the (non-empty, contiguous) files `starts`; see the file comment. */
async function scanTail(ctx: QueueFilesContext, starts: readonly number[]): Promise<RecoveredTail> {
  let j = Math.max(0, starts.length - RECOVERY_SCAN_FILES);
  let prevPos = -1;
  for (; j > 0; j--) {
    const last = await fullFileLastPosition(ctx, starts[j - 1] as number);
    if (last !== undefined) {
      prevPos = last;
      break;
    }
  }
  let end = starts[j] as number;
  for (let i = j; i < starts.length; i++) {
    const start = starts[i] as number;
    const scan = await scanFile(ctx, start, prevPos);
    prevPos = scan.lastPos;
    end = start + scan.count;
    if (scan.count < ctx.entriesPerFile || scan.sizeBytes !== scan.count * CQ_RECORD_BYTES) {
      if (scan.sizeBytes !== scan.count * CQ_RECORD_BYTES || i < starts.length - 1) {
        ctx.log.warn(
          { dir: ctx.dir, offset: end, sizeBytes: scan.sizeBytes },
          'consume queue tail cut at recovery',
        );
        return { end, lastPos: prevPos, cut: true };
      }
      break;
    }
  }
  return { end, lastPos: prevPos, cut: false };
}

async function fileSize(ctx: QueueFilesContext, start: number): Promise<number> {
  const file = queueFilePath(ctx.dir, start);
  const size = await ctx.files.use(file, false, (f) => f.size());
  if (size > ctx.entriesPerFile * CQ_RECORD_BYTES) {
    throw new RaftmqError(
      'CORRUPT_LOG',
      `consume queue file ${file} holds ${size} bytes, more ` +
        `than ${ctx.entriesPerFile} records (was entriesPerFile changed?)`,
      { details: { file } },
    );
  }
  return size;
}

/** The last record's position of a full file whose last record is well formed. */
async function fullFileLastPosition(
  ctx: QueueFilesContext,
  start: number,
): Promise<number | undefined> {
  const entries = ctx.entriesPerFile;
  if ((await fileSize(ctx, start)) !== entries * CQ_RECORD_BYTES) return undefined;
  const buf = Buffer.alloc(CQ_RECORD_BYTES);
  const got = await readFully(
    ctx.files,
    queueFilePath(ctx.dir, start),
    buf,
    0,
    CQ_RECORD_BYTES,
    (entries - 1) * CQ_RECORD_BYTES,
  );
  if (got < CQ_RECORD_BYTES || recordFault(buf, 0) !== undefined) return undefined;
  return positionOf(buf, 0);
}

/** Counts the good records from the start of a file, each above `prevPos` and its predecessor. */
async function scanFile(
  ctx: QueueFilesContext,
  start: number,
  prevPos: number,
): Promise<{ count: number; lastPos: number; sizeBytes: number }> {
  const sizeBytes = await fileSize(ctx, start);
  const total = Math.floor(sizeBytes / CQ_RECORD_BYTES);
  let lastPos = prevPos;
  const buf = Buffer.alloc(Math.min(total, SCAN_CHUNK_RECORDS) * CQ_RECORD_BYTES);
  for (let k = 0; k < total;) {
    const n = Math.min(total - k, SCAN_CHUNK_RECORDS);
    const got = await readFully(
      ctx.files,
      queueFilePath(ctx.dir, start),
      buf,
      0,
      n * CQ_RECORD_BYTES,
      k * CQ_RECORD_BYTES,
    );
    for (let r = 0; r < n; r++, k++) {
      const at = r * CQ_RECORD_BYTES;
      if (
        at + CQ_RECORD_BYTES > got ||
        recordFault(buf, at) !== undefined ||
        positionOf(buf, at) <= lastPos
      ) {
        return { count: k, lastPos, sizeBytes };
      }
      lastPos = positionOf(buf, at);
    }
  }
  return { count: total, lastPos, sizeBytes };
}
