/**
 * CommitLog recovery, run by `CommitLog.open`:
 *
 * 1. Finish an interrupted prefix removal (segments wholly before the recorded log start) and
 *    redo an interrupted suffix truncation (its intent is in the metadata).
 * 2. Load the entry index, checking every record's CRC and that positions and terms only grow;
 *    this also rebuilds the in-memory term runs. The index is trusted up to the first bad record.
 * 3. Re-read the data from the trusted point: the checkpoint, or the end of the good index if
 *    that is earlier. Each record must check (magic, CRC32C) and continue the index sequence;
 *    its index record is rewritten.
 * 4. At the first bad record: if it lies before the checkpoint's durable end, or any valid
 *    later record exists, it is corruption: CORRUPT_LOG naming file and position (unless
 *    `truncateCorruptTail`). Otherwise it is a torn or unsynced tail and is cut off.
 * 5. Everything kept is synced, and a new checkpoint is written.
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import { type MetaStore, MetaKeys, getMeta, jsonCodec } from './meta';
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { CommitLogOptions } from './commit-log-options';
import { RECORD_HEADER_BYTES, RECORD_MAGIC, checkRecord, peekHeader } from './log-record';
import { type EntryIndex, type IndexRecord, fileName20, parseFileName20 } from './entry-index';
import type { FileCache } from './file-cache';
import { TermRuns } from './term-runs';

export interface SegmentInfo {
  start: number;
  /** Index of the segment's first record; undefined while it holds none. */
  firstIndex: number | undefined;
}

export interface LogStart {
  firstIndex: number;
  position: number;
  prevTerm: number;
}
export interface Checkpoint {
  index: number;
  endPosition: number;
  term: number;
}
export interface Truncation {
  fromIndex: number;
  position: number;
}

function nonNegInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new TypeError(`bad ${what}`);
  return v;
}
function obj(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null) throw new TypeError('not an object');
  return v as Record<string, unknown>;
}

export const logStartCodec = jsonCodec<LogStart>((v) => {
  const o = obj(v);
  return {
    firstIndex: nonNegInt(o.firstIndex, 'firstIndex'),
    position: nonNegInt(o.position, 'position'),
    prevTerm: nonNegInt(o.prevTerm, 'prevTerm'),
  };
});
export const checkpointCodec = jsonCodec<Checkpoint>((v) => {
  const o = obj(v);
  return {
    index: nonNegInt(o.index, 'index'),
    endPosition: nonNegInt(o.endPosition, 'endPosition'),
    term: nonNegInt(o.term, 'term'),
  };
});
export const truncationCodec = jsonCodec<Truncation>((v) => {
  const o = obj(v);
  return {
    fromIndex: nonNegInt(o.fromIndex, 'fromIndex'),
    position: nonNegInt(o.position, 'position'),
  };
});

export interface RecoveryContext {
  disk: Disk;
  meta: MetaStore;
  files: FileCache;
  index: EntryIndex;
  segmentDir: string;
  options: Readonly<CommitLogOptions>;
  logger: Logger;
}

export interface RecoveredLog {
  segments: SegmentInfo[];
  terms: TermRuns;
  firstIndex: number;
  firstPosition: number;
  lastIndex: number;
  endPosition: number;
  checkpointIndex: number;
  scannedBytes: number;
  truncatedBytes: number;
}

const READ_WINDOW_BYTES = 4 * 1024 * 1024;

class Recovery {
  private readonly segSize: number;
  starts: number[] = [];
  readonly sizes = new Map<number, number>();

  constructor(private readonly c: RecoveryContext) {
    this.segSize = c.options.segmentSizeBytes;
  }

  segPath(start: number): string {
    return path.join(this.c.segmentDir, fileName20(start));
  }

  segOf(position: number): number {
    return Math.floor(position / this.segSize) * this.segSize;
  }

  corrupt(position: number, reason: string): RaftmqError {
    const file = this.segPath(this.segOf(position));
    return new RaftmqError(
      'CORRUPT_LOG',
      `commit log corrupt in ${file} at position ${position}: ${reason}; refusing to start ` +
        '(set commitLog.truncateCorruptTail to cut the log there)',
      { details: { file, position } },
    );
  }

  async listSegments(): Promise<void> {
    const starts: number[] = [];
    for (const name of await this.c.disk.list(this.c.segmentDir)) {
      const n = parseFileName20(name);
      if (n !== undefined && n % this.segSize === 0) starts.push(n);
    }
    this.starts = starts.sort((a, b) => a - b);
    for (const s of this.starts)
      this.sizes.set(s, (await this.c.disk.stat(this.segPath(s)))?.sizeBytes ?? 0);
  }

  async removeSegment(start: number): Promise<void> {
    await this.c.files.forget(this.segPath(start));
    await this.c.disk.remove(this.segPath(start));
    this.starts = this.starts.filter((s) => s !== start);
    this.sizes.delete(start);
  }

  /** Cuts the data at `position`: later segments removed, the one holding it shortened. */
  async cutData(position: number): Promise<number> {
    const keep = this.segOf(position);
    let cut = 0;
    for (const s of [...this.starts]) {
      if (s > keep) {
        cut += this.sizes.get(s) ?? 0;
        await this.removeSegment(s);
      }
    }
    const size = this.sizes.get(keep);
    if (size !== undefined && size > position - keep) {
      cut += size - (position - keep);
      await this.c.files.use(this.segPath(keep), false, async (f) => {
        await f.truncate(position - keep);
        await f.sync();
      });
      this.sizes.set(keep, position - keep);
    }
    await this.c.disk.syncDir(this.c.segmentDir);
    return cut;
  }

  async read(position: number, length: number): Promise<Buffer> {
    const seg = this.segOf(position);
    const avail = Math.max(0, Math.min(length, (this.sizes.get(seg) ?? 0) - (position - seg)));
    const buf = Buffer.allocUnsafe(avail);
    if (avail === 0) return buf;
    const got = await this.c.files.use(this.segPath(seg), false, (f) =>
      f.read(buf, 0, avail, position - seg),
    );
    return buf.subarray(0, got);
  }

  /** True when some record that checks, with index >= `minIndex`, starts at or after `from`. */
  async validRecordFrom(from: number, minIndex: number): Promise<boolean> {
    const magic = Buffer.alloc(4);
    magic.writeUInt32BE(RECORD_MAGIC);
    for (const seg of this.starts.filter((s) => s + this.segSize > from)) {
      let at = Math.max(seg, from);
      const end = seg + (this.sizes.get(seg) ?? 0);
      while (at < end) {
        const window = await this.read(at, READ_WINDOW_BYTES + RECORD_HEADER_BYTES);
        let k = window.indexOf(magic);
        while (k >= 0 && k < READ_WINDOW_BYTES) {
          if (await this.recordChecks(at + k, minIndex)) return true;
          k = window.indexOf(magic, k + 1);
        }
        at += READ_WINDOW_BYTES;
      }
    }
    return false;
  }

  private async recordChecks(position: number, minIndex: number): Promise<boolean> {
    const index = await this.checkedIndexAt(position);
    return index !== undefined && index >= minIndex;
  }

  /** The index of the record at `position` if it checks (magic, length, CRC32C), else undefined. */
  async checkedIndexAt(position: number): Promise<number | undefined> {
    const head = await this.read(position, RECORD_HEADER_BYTES);
    if (head.byteLength < RECORD_HEADER_BYTES) return undefined;
    const { length } = peekHeader(head, 0);
    if (length > this.c.options.payloadMaxBytes) return undefined;
    const whole = await this.read(position, RECORD_HEADER_BYTES + length);
    const r = checkRecord(whole, 0, whole.byteLength, this.c.options.payloadMaxBytes);
    return r.ok ? r.entry.index : undefined;
  }
}

/** Recovers the log; see the file comment for the rules. */
export async function recoverLog(c: RecoveryContext, fullScan = false): Promise<RecoveredLog> {
  const r = new Recovery(c);
  const start = (await getMeta(c.meta, MetaKeys.logStart, logStartCodec)) ?? {
    firstIndex: 1,
    position: 0,
    prevTerm: 0,
  };
  let cp = await getMeta(c.meta, MetaKeys.logCheckpoint, checkpointCodec);
  if (cp && cp.index < start.firstIndex - 1) cp = undefined;
  await r.listSegments();
  for (const s of [...r.starts])
    if (s + c.options.segmentSizeBytes <= start.position) await r.removeSegment(s);
  await c.index.removeFilesBefore(start.firstIndex);
  const trunc = await getMeta(c.meta, MetaKeys.logTruncation, truncationCodec);
  if (trunc) {
    await r.cutData(trunc.position);
    await c.index.truncateAfter(trunc.fromIndex - 1);
    await c.meta.batch([{ type: 'del', key: MetaKeys.logTruncation }], { sync: true });
    c.logger.info({ fromIndex: trunc.fromIndex }, 'redid interrupted commit log truncation');
  }

  // Step 2: the entry index.
  const terms = new TermRuns(start.firstIndex - 1, start.prevTerm);
  let prev: IndexRecord | undefined;
  let cpRecord: IndexRecord | undefined;
  const indexGood = await c.index.scan(start.firstIndex, Number.MAX_SAFE_INTEGER, (rec) => {
    const minPos = prev ? prev.position + prev.sizeBytes : start.position;
    if (
      rec.position < minPos ||
      rec.term < terms.lastTerm() ||
      rec.sizeBytes < RECORD_HEADER_BYTES ||
      r.segOf(rec.position) !== r.segOf(rec.position + rec.sizeBytes - 1)
    )
      return false;
    terms.append(rec.index, rec.term);
    prev = rec;
    if (cp && rec.index === cp.index) cpRecord = rec;
    return true;
  });
  const cpIndex = cp?.index ?? start.firstIndex - 1;
  const mustValidUntil = cp?.endPosition ?? start.position;
  let trustedIndex = fullScan ? start.firstIndex - 1 : Math.min(cpIndex, indexGood);
  let trustedEnd = start.position;
  if (trustedIndex >= start.firstIndex) {
    const rec = trustedIndex === cpIndex ? cpRecord : prev;
    if (!rec || (trustedIndex === cpIndex && rec.position + rec.sizeBytes !== cp?.endPosition)) {
      trustedIndex = start.firstIndex - 1;
    } else {
      trustedEnd = rec.position + rec.sizeBytes;
    }
  }
  terms.truncateAfter(trustedIndex);
  c.index.dropStagedFrom(0);

  // Step 3: the data after the trusted point.
  const trustedSeg = r.segOf(trustedEnd);
  if (trustedEnd > trustedSeg && (r.sizes.get(trustedSeg) ?? 0) < trustedEnd - trustedSeg) {
    if (!c.options.truncateCorruptTail)
      throw r.corrupt(trustedEnd, 'data ends before the checkpoint');
    if (!fullScan) return recoverLog(c, true);
  }
  let pos = trustedEnd;
  let expected = trustedIndex + 1;
  let scannedBytes = 0;
  let window: Buffer = Buffer.alloc(0);
  let windowPos = pos;
  for (;;) {
    const seg = r.segOf(pos);
    const segEnd = seg + (r.sizes.get(seg) ?? 0);
    if (pos >= segEnd) {
      const next = r.starts.find((s) => s > seg);
      if (next === undefined) break;
      pos = next;
      continue;
    }
    if (
      pos < windowPos ||
      pos + RECORD_HEADER_BYTES > windowPos + window.byteLength ||
      pos + RECORD_HEADER_BYTES + peekHeader(window, pos - windowPos).length >
        windowPos + window.byteLength
    ) {
      const want = Math.max(READ_WINDOW_BYTES, RECORD_HEADER_BYTES + c.options.payloadMaxBytes);
      window = await r.read(pos, Math.min(want, segEnd - pos));
      windowPos = pos;
    }
    const rec = checkRecord(window, pos - windowPos, window.byteLength, c.options.payloadMaxBytes);
    const good = rec.ok && rec.entry.index === expected && rec.entry.term >= terms.lastTerm();
    if (!good) {
      const reason = rec.ok
        ? `record holds index ${rec.entry.index}, expected ${expected}`
        : rec.reason;
      // Search past the bad record's own bytes when its header is believable: its payload is
      // arbitrary data and may hold something that looks like a record.
      const head = pos - windowPos;
      const claimed =
        window.byteLength - head >= RECORD_HEADER_BYTES &&
        window.readUInt32BE(head) === RECORD_MAGIC
          ? peekHeader(window, head).length
          : undefined;
      const searchFrom =
        claimed !== undefined && claimed <= c.options.payloadMaxBytes
          ? pos + RECORD_HEADER_BYTES + claimed
          : pos + 1;
      const corrupt = pos < mustValidUntil || (await r.validRecordFrom(searchFrom, expected));
      if (corrupt && !c.options.truncateCorruptTail) throw r.corrupt(pos, reason);
      c.logger.warn({ position: pos, reason, corrupt }, 'cutting commit log tail');
      break;
    }
    c.index.stage({
      index: expected,
      position: pos,
      sizeBytes: rec.sizeBytes,
      term: rec.entry.term,
    });
    terms.append(expected, rec.entry.term);
    scannedBytes += rec.sizeBytes;
    pos += rec.sizeBytes;
    expected++;
  }
  const lastIndex = expected - 1;
  if (lastIndex < cpIndex && !c.options.truncateCorruptTail) {
    throw r.corrupt(pos, `log ends at index ${lastIndex} before checkpoint ${cpIndex}`);
  }

  // Step 5: cut, rewrite the index, sync, checkpoint.
  const truncatedBytes = await r.cutData(pos);
  await c.index.truncateAfter(lastIndex);
  await c.index.writeStaged();
  await c.index.sync();
  for (const s of r.starts.filter((x) => x >= trustedSeg)) {
    await c.files.use(r.segPath(s), false, (f) => f.sync());
  }
  // Each segment's first index comes from a record that checks: retention decides what to
  // delete from it, so an unchecked header with a flipped bit could drop kept entries.
  const segments: SegmentInfo[] = [];
  for (const s of r.starts) {
    const at = Math.max(s, start.position);
    segments.push({ start: s, firstIndex: at < pos ? await r.checkedIndexAt(at) : undefined });
  }
  const checkpoint = { index: lastIndex, endPosition: pos, term: terms.lastTerm() };
  await c.meta.batch(
    [{ type: 'put', key: MetaKeys.logCheckpoint, value: checkpointCodec.encode(checkpoint) }],
    { sync: true },
  );
  return {
    segments,
    terms,
    firstIndex: start.firstIndex,
    firstPosition: start.position,
    lastIndex,
    endPosition: pos,
    checkpointIndex: lastIndex,
    scannedBytes,
    truncatedBytes,
  };
}
