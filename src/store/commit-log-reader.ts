/**
 * The read path of a CommitLog: entries by index (located through the entry index, read with
 * one read per run of records that lie back to back in a segment, every record checked), their
 * positions, and raw bytes at a position. A read of something appended but not yet written
 * waits for the write rather than read a short file.
 */
import { RaftmqError } from '../common/errors';
import { type LogEntry, checkRecord, corruptRecord } from './log-record';
import type { LocatedRecords } from './entry-index';
import type { CommitLogState } from './commit-log-state';

/**
 * Reads entries from `from`: at most `countMax`, and at most `bytesMax` of records (but always
 * at least one). Every record is checked (magic, CRC32C, index, term) before it is returned.
 */
export async function readRange(
  s: CommitLogState,
  from: number,
  countMax: number,
  bytesMax: number,
): Promise<LogEntry[]> {
  s.usable();
  if (from < s.first || from > s.last) {
    throw new RaftmqError('OUT_OF_RANGE', `index ${from} outside [${s.first}, ${s.last}]`, {
      details: { index: from, firstIndex: s.first, lastIndex: s.last },
    });
  }
  const to = Math.min(s.last, from + Math.max(1, countMax) - 1);
  if (to > s.writtenIdx) await s.written.wait(to);
  const loc = await s.index.locate(from, to - from + 1);
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
    const segStart = s.segmentStartOf(head);
    let j = i;
    let end = head;
    while (j < n && loc.positions[j] === end && s.segmentStartOf(end) === segStart) {
      end += loc.sizes[j] ?? 0;
      j++;
    }
    const buf = await readBytes(s, head, end - head);
    decodeRun(s, buf, head, from + i, loc, i, j, out);
    i = j;
  }
  return out;
}

/** Positions, sizes and terms of entries [from, from + count), once they are written. */
export async function positionsOf(
  s: CommitLogState,
  from: number,
  count: number,
): Promise<LocatedRecords> {
  s.usable();
  const to = from + count - 1;
  if (from < s.first || to > s.last || count < 1) {
    throw new RaftmqError(
      'OUT_OF_RANGE',
      `entries [${from}, ${to}] outside [${s.first}, ${s.last}]`,
    );
  }
  if (to > s.writtenIdx) await s.written.wait(to);
  return s.recent.locate(from, count) ?? s.index.locate(from, count);
}

/** Checks and decodes records [i, j) of `loc`, which lie back to back in `buf`. */
function decodeRun(
  s: CommitLogState,
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
    const r = checkRecord(buf, offset, offset + size, s.options.payloadMaxBytes);
    if (!r.ok || r.entry.index !== index || r.entry.term !== loc.terms[k]) {
      const position = bufPosition + offset;
      const source = { file: s.segmentPath(s.segmentStartOf(position)), position };
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

/** Bytes at a CommitLog position: a message inside an entry, as a ConsumeQueue locates it. */
export interface ByteSpan {
  readonly position: number;
  readonly sizeBytes: number;
}

/**
 * How {@link readSpans} joins spans into reads. Spans of one segment whose gap is at most
 * `gapMaxBytes` share a read of at most `runMaxBytes` (a lone span larger than that is still
 * read whole). The messages of one queue lie between those of the other queues, so a small gap
 * is normal; reading it costs a copy from the page cache, far less than a read call per span.
 */
export interface SpanReadOptions {
  readonly gapMaxBytes: number;
  readonly runMaxBytes: number;
}

const SPAN_READ_DEFAULTS_RUN_MAX_BYTES = 4 * 1024 * 1024;

export const SPAN_READ_DEFAULTS: SpanReadOptions = {
  gapMaxBytes: 64 * 1024,
  runMaxBytes: SPAN_READ_DEFAULTS_RUN_MAX_BYTES,
};

/** Throws unless [position, position + sizeBytes) lies inside one segment of the log. */
function checkSpan(s: CommitLogState, position: number, sizeBytes: number): number {
  const segStart = s.segmentStartOf(position);
  if (
    !Number.isSafeInteger(position) ||
    !Number.isSafeInteger(sizeBytes) ||
    sizeBytes < 1 ||
    position < s.firstPos ||
    position + sizeBytes > s.endPos ||
    position + sizeBytes > segStart + s.options.segmentSizeBytes
  ) {
    throw new RaftmqError('OUT_OF_RANGE', `bytes [${position}, +${sizeBytes}) outside the log`, {
      details: { position, sizeBytes },
    });
  }
  return segStart;
}

/** Reads [position, position + sizeBytes) of the segment at `segStart` into a new buffer. */
async function readRun(
  s: CommitLogState,
  segStart: number,
  position: number,
  sizeBytes: number,
): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(sizeBytes);
  await readRunInto(s, segStart, position, sizeBytes, buf);
  return buf;
}

/**
 * Read buffers of sparse runs (see {@link readSpans}), kept for the next read: a run of one
 * queue's messages is mostly the other queues' messages, and a fresh buffer of megabytes per
 * read made the garbage collector the largest cost of serving a pull. At most
 * `SCRATCH_KEPT_MAX` are kept, each `SCRATCH_BYTES` long; a longer run gets a buffer of its own.
 */
const scratchKept: Buffer[] = [];
const SCRATCH_KEPT_MAX = 4;
const SCRATCH_BYTES = SPAN_READ_DEFAULTS_RUN_MAX_BYTES;

/** Every full-size scratch buffer there is (kept or in use): at most `SCRATCH_KEPT_MAX`. */
const scratchOwned = new Set<Buffer>();

/**
 * A buffer of at least `sizeBytes`: a kept one, or a new full-size one while fewer than
 * `SCRATCH_KEPT_MAX` exist; past that (many sparse runs at once), a new one of just the run's
 * size, which is not kept. So reads never allocate more than the runs themselves, and at most
 * `SCRATCH_KEPT_MAX` full-size buffers ever exist.
 */
function takeScratch(sizeBytes: number): Buffer {
  if (sizeBytes > SCRATCH_BYTES) return Buffer.allocUnsafe(sizeBytes);
  const kept = scratchKept.pop();
  if (kept !== undefined) return kept;
  if (scratchOwned.size >= SCRATCH_KEPT_MAX) return Buffer.allocUnsafe(sizeBytes);
  const buf = Buffer.allocUnsafe(SCRATCH_BYTES);
  scratchOwned.add(buf);
  return buf;
}

/** Gives back a buffer {@link takeScratch} returned (one it made for a single run is dropped). */
function keepScratch(buf: Buffer): void {
  if (scratchOwned.has(buf)) scratchKept.push(buf);
}

/** Reads [position, position + sizeBytes) of the segment at `segStart` into `buf` from 0. */
async function readRunInto(
  s: CommitLogState,
  segStart: number,
  position: number,
  sizeBytes: number,
  buf: Buffer,
): Promise<void> {
  const filePath = s.segmentPath(segStart);
  const got = await s.files.use(filePath, false, (f) =>
    f.read(buf, 0, sizeBytes, position - segStart),
  );
  if (got !== sizeBytes) {
    throw new RaftmqError(
      'CORRUPT_RECORD',
      `short read in ${filePath} at ${position}: ${got} of ${sizeBytes}`,
      { details: { file: filePath, position } },
    );
  }
}

/**
 * Reads raw bytes at a CommitLog position (a message inside an entry, found through a
 * ConsumeQueue). The bytes must lie within one written record; the message codec checks them.
 */
export async function readBytes(
  s: CommitLogState,
  position: number,
  sizeBytes: number,
): Promise<Buffer> {
  s.usable();
  const segStart = checkSpan(s, position, sizeBytes);
  // Appended but not yet written: wait for the write rather than read a short file.
  if (position + sizeBytes > s.writtenEndPos) await s.written.wait(s.last);
  return readRun(s, segStart, position, sizeBytes);
}

/**
 * Reads many spans (in any order; the result follows the input's order) with few reads: spans
 * of one segment that lie near each other share one read (see {@link SpanReadOptions}). Each
 * result is a view into a buffer of the call's own, so it keeps that buffer alive: callers
 * hold results only for as long as they answer a request. A run that the spans fill at least
 * half is read into that buffer directly; a sparser one is read into a kept scratch buffer and
 * its spans copied out together, so that the gaps never need a fresh buffer.
 */
export async function readSpans(
  s: CommitLogState,
  spans: readonly ByteSpan[],
  options: SpanReadOptions = SPAN_READ_DEFAULTS,
): Promise<Buffer[]> {
  s.usable();
  // Loops and module functions, not closures made per call: V8 compiles a hot closure again for
  // each instance (docs/performance.md, "What V8 costs").
  const segStarts = new Array<number>(spans.length);
  let end = 0;
  for (let i = 0; i < spans.length; i++) {
    const sp = spanAt(spans, i);
    segStarts[i] = checkSpan(s, sp.position, sp.sizeBytes);
    end = Math.max(end, sp.position + sp.sizeBytes);
  }
  if (end > s.writtenEndPos) await s.written.wait(s.last);
  const order = orderByPosition(spans);
  const out: Buffer[] = new Array<Buffer>(spans.length);
  const reads: Promise<void>[] = [];
  let k = 0;
  while (k < order.length) {
    const first = order[k] as number;
    const segStart = segStarts[first] as number;
    const runStart = spanAt(spans, first).position;
    let runEnd = runStart + spanAt(spans, first).sizeBytes;
    let m = k + 1;
    for (; m < order.length; m++) {
      const i = order[m] as number;
      const sp = spanAt(spans, i);
      const newEnd = Math.max(runEnd, sp.position + sp.sizeBytes);
      if (
        segStarts[i] !== segStart ||
        sp.position - runEnd > options.gapMaxBytes ||
        newEnd - runStart > options.runMaxBytes
      ) {
        break;
      }
      runEnd = newEnd;
    }
    const members = order.slice(k, m);
    reads.push(readMembers(s, spans, members, segStart, runStart, runEnd - runStart, out));
    k = m;
  }
  await Promise.all(reads);
  return out;
}

/** Reads one run and sets `out[i]` for each of its `members` (see {@link readSpans}). */
async function readMembers(
  s: CommitLogState,
  spans: readonly ByteSpan[],
  members: readonly number[],
  segStart: number,
  runStart: number,
  runBytes: number,
  out: Buffer[],
): Promise<void> {
  let usedBytes = 0;
  for (const i of members) usedBytes += spanAt(spans, i).sizeBytes;
  if (usedBytes * 2 >= runBytes) {
    const buf = await readRun(s, segStart, runStart, runBytes);
    for (const i of members) {
      const sp = spanAt(spans, i);
      out[i] = buf.subarray(sp.position - runStart, sp.position - runStart + sp.sizeBytes);
    }
    return;
  }
  const scratch = takeScratch(runBytes);
  try {
    await readRunInto(s, segStart, runStart, runBytes, scratch);
    const compact = Buffer.allocUnsafe(usedBytes);
    let at = 0;
    for (const i of members) {
      const sp = spanAt(spans, i);
      scratch.copy(compact, at, sp.position - runStart, sp.position - runStart + sp.sizeBytes);
      out[i] = compact.subarray(at, at + sp.sizeBytes);
      at += sp.sizeBytes;
    }
  } finally {
    keepScratch(scratch);
  }
}

/** The spans {@link byPosition} compares: set only during one (synchronous) sort. */
let sorting: readonly ByteSpan[] = [];

function byPosition(a: number, b: number): number {
  return spanAt(sorting, a).position - spanAt(sorting, b).position;
}

/** The indexes of `spans` in the order of their positions. */
function orderByPosition(spans: readonly ByteSpan[]): number[] {
  const order = new Array<number>(spans.length);
  for (let i = 0; i < spans.length; i++) order[i] = i;
  sorting = spans;
  try {
    return order.sort(byPosition);
  } finally {
    sorting = [];
  }
}

function spanAt(spans: readonly ByteSpan[], i: number): ByteSpan {
  return spans[i] as ByteSpan;
}
