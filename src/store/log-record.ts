/**
 * The CommitLog record: one Raft entry as it lies in a segment file. Every record checks itself:
 *
 * | offset | size | field                                                  |
 * |--------|------|--------------------------------------------------------|
 * | 0      | 4    | magic `RMQ1` (0x524d5131)                              |
 * | 4      | 4    | payload length in bytes                                |
 * | 8      | 4    | CRC32C of bytes 4..8 and 12..end (all but magic, CRC)   |
 * | 12     | 1    | entry type (0 noop, 1 normal, 2 config)                |
 * | 13     | 3    | reserved, zero                                         |
 * | 16     | 8    | term, u64 big-endian                                   |
 * | 24     | 8    | Raft index, u64 big-endian                             |
 * | 32     | n    | payload                                                |
 *
 * All numbers are big-endian. u64 fields hold safe integers (< 2^53).
 */
import {
  bufferView,
  copyBytes,
  readU32BE,
  readU64BE as readU64,
  writeU32BE,
  writeU64BE as writeU64,
} from '../common/bytes';
import { crc32c, crc32cRange, crc32cSmall } from '../common/crc32c';
import { RaftmqError } from '../common/errors';

export const RECORD_MAGIC = 0x524d5131;
export const RECORD_HEADER_BYTES = 32;

/** Raft entry kinds as stored. */
export const EntryType = Object.freeze({ NOOP: 0, NORMAL: 1, CONFIG: 2 } as const);
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export function isEntryType(n: number): n is EntryType {
  return n === 0 || n === 1 || n === 2;
}

/** One Raft log entry. */
export interface LogEntry {
  index: number;
  term: number;
  type: EntryType;
  payload: Uint8Array;
  /** CommitLog position of the record; set on entries read back from the log. */
  position?: number;
  /**
   * {@link recordChecksum} of this entry, when the caller already computed it over these very
   * bytes (a follower checking the leader's checksum on receipt): written as it is.
   */
  recordCrc?: number;
}

/** Bytes a record of this payload size takes on disk. */
export function recordSizeBytes(payloadBytes: number): number {
  return RECORD_HEADER_BYTES + payloadBytes;
}

/**
 * Writes the record for `entry` at `buf[offset..]` (its size is `recordSizeBytes` of the
 * payload's); returns the CRC32C written, {@link recordChecksum} of the entry (`recordCrc` when
 * the entry carries it).
 */
export function encodeRecordInto(entry: LogEntry, buf: Buffer, offset: number): number {
  const length = entry.payload.length;
  writeU32BE(buf, offset, RECORD_MAGIC);
  writeU32BE(buf, offset + 4, length);
  buf[offset + 12] = entry.type;
  buf[offset + 13] = 0;
  buf[offset + 14] = 0;
  buf[offset + 15] = 0;
  writeU64(buf, offset + 16, entry.term);
  writeU64(buf, offset + 24, entry.index);
  copyBytes(buf, entry.payload, offset + RECORD_HEADER_BYTES);
  const crc =
    entry.recordCrc ?? recordChecksum(entry.index, entry.term, entry.type, entry.payload);
  writeU32BE(buf, offset + 8, crc);
  return crc;
}

/**
 * The CRC32C a record of this entry carries (bytes 8..12): over the payload length, type,
 * reserved bytes, term, index and payload, the record's bytes 4..8 and 12..end (what
 * `checkRecord` verifies), computed from the fields and the entry's own payload without a view
 * of any buffer.
 */
export function recordChecksum(
  index: number,
  term: number,
  type: number,
  payload: Uint8Array,
): number {
  const h = checksumScratch;
  writeU32BE(h, 0, payload.length);
  h[4] = type;
  h[5] = 0;
  h[6] = 0;
  h[7] = 0;
  writeU64(h, 8, term);
  writeU64(h, 16, index);
  return crc32c(payload, crc32cSmall(h, 0, CHECKSUM_SCRATCH_BYTES));
}

/** The header bytes a record's CRC covers before its payload (4..8 and 12..32). */
const CHECKSUM_SCRATCH_BYTES = 24;
/** Reused by {@link recordChecksum} (single-threaded, never held across an await). */
const checksumScratch = Buffer.alloc(CHECKSUM_SCRATCH_BYTES);

function recordCrc(buf: Buffer, offset: number, payloadBytes: number): number {
  const head = crc32cSmall(buf, offset + 4, offset + 8);
  return crc32cRange(buf, offset + 12, offset + RECORD_HEADER_BYTES + payloadBytes, head);
}

/** Where a record was read from, for error messages. */
export interface RecordSource {
  file: string;
  /** Global CommitLog position of the record's first byte. */
  position: number;
}

export type RecordCheck =
  | { ok: true; entry: LogEntry; sizeBytes: number }
  | {
      ok: false;
      reason: string;
      /** True when the bytes simply end (a torn or absent tail). */ short: boolean;
    };

/**
 * Parses the record at `buf[offset..end)` without throwing. `payloadMaxBytes` bounds the length
 * field so a garbage length cannot make a reader wait for gigabytes. The payload is a view into
 * `buf`, not a copy.
 */
export function checkRecord(
  buf: Buffer,
  offset: number,
  end: number,
  payloadMaxBytes: number,
): RecordCheck {
  if (end - offset < RECORD_HEADER_BYTES)
    return { ok: false, reason: 'header cut short', short: true };
  if (readU32BE(buf, offset) !== RECORD_MAGIC)
    return { ok: false, reason: 'bad magic', short: false };
  const length = readU32BE(buf, offset + 4);
  if (length > payloadMaxBytes)
    return { ok: false, reason: `length ${length} too large`, short: false };
  if (end - offset < RECORD_HEADER_BYTES + length) {
    return { ok: false, reason: 'payload cut short', short: true };
  }
  if (readU32BE(buf, offset + 8) !== recordCrc(buf, offset, length)) {
    return { ok: false, reason: 'CRC32C mismatch', short: false };
  }
  const type = buf[offset + 12] ?? -1;
  if (!isEntryType(type)) return { ok: false, reason: `unknown entry type ${type}`, short: false };
  const term = readU64(buf, offset + 16);
  const index = readU64(buf, offset + 24);
  if (!Number.isSafeInteger(term) || !Number.isSafeInteger(index)) {
    return { ok: false, reason: 'term or index out of range', short: false };
  }
  const start = offset + RECORD_HEADER_BYTES;
  return {
    ok: true,
    entry: { index, term, type, payload: bufferView(buf, start, start + length) },
    sizeBytes: RECORD_HEADER_BYTES + length,
  };
}

/** Like {@link checkRecord} but throws CORRUPT_RECORD naming file and position. */
export function decodeRecord(
  buf: Buffer,
  offset: number,
  end: number,
  payloadMaxBytes: number,
  source: RecordSource,
): { entry: LogEntry; sizeBytes: number } {
  const r = checkRecord(buf, offset, end, payloadMaxBytes);
  if (!r.ok) throw corruptRecord(source, r.reason);
  return r;
}

export function corruptRecord(source: RecordSource, reason: string): RaftmqError {
  return new RaftmqError(
    'CORRUPT_RECORD',
    `corrupt record in ${source.file} at position ${source.position}: ${reason}`,
    { details: { file: source.file, position: source.position } },
  );
}

/** Reads the term and index from a record header without checking it (for cheap peeks). */
export function peekHeader(
  buf: Buffer,
  offset: number,
): { index: number; term: number; length: number } {
  return {
    length: readU32BE(buf, offset + 4),
    term: readU64(buf, offset + 16),
    index: readU64(buf, offset + 24),
  };
}

