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
  const segStart = s.segmentStartOf(position);
  if (
    position < s.firstPos ||
    position + sizeBytes > s.endPos ||
    position + sizeBytes > segStart + s.options.segmentSizeBytes
  ) {
    throw new RaftmqError('OUT_OF_RANGE', `bytes [${position}, +${sizeBytes}) outside the log`, {
      details: { position, sizeBytes },
    });
  }
  // Appended but not yet written: wait for the write rather than read a short file.
  if (position + sizeBytes > s.writtenEndPos) await s.written.wait(s.last);
  const buf = Buffer.allocUnsafe(sizeBytes);
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
  return buf;
}
