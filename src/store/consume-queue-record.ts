/**
 * The ConsumeQueue record: fixed 20 bytes, so that the message at queue offset N is found with
 * one read at byte N * 20 of the queue's logical space.
 *
 * | offset | size | field                                                      |
 * |--------|------|------------------------------------------------------------|
 * | 0      | 8    | CommitLog position of the message, u64 big-endian          |
 * | 8      | 4    | message size in bytes, > 0                                 |
 * | 12     | 8    | tag hash code (Java String.hashCode, sign-extended i64); 0 = no tag |
 *
 * Records check themselves: size > 0, a sign-extended tag, positions strictly increasing
 * between neighbours. Files are named by the 20-digit starting byte offset.
 */
import * as path from 'node:path';
import { readI32BE, readU32BE, readU64BE, writeU32BE, writeU64BE } from '../common/bytes';
import type { FileCache } from './file-cache';
import { fileName20 } from './entry-index';

export const CQ_RECORD_BYTES = 20;

/** One record, as read back. */
export interface CqRecord {
  /** Queue offset (record number). */
  offset: number;
  /** CommitLog position of the message. */
  position: number;
  sizeBytes: number;
  /** Signed int32 tag hash; 0 when the message has no tag. */
  tagHash: number;
}

/** The file of a queue directory whose first record is at queue offset `start`. */
export function queueFilePath(dir: string, start: number): string {
  return path.join(dir, fileName20(start * CQ_RECORD_BYTES));
}

/** Writes one record at `buf[at..]`; the caller has checked the fields. */
export function encodeRecord(
  buf: Buffer,
  at: number,
  position: number,
  sizeBytes: number,
  tag: number,
): void {
  writeU64BE(buf, at, position);
  writeU32BE(buf, at + 8, sizeBytes);
  writeU32BE(buf, at + 12, tag < 0 ? -1 : 0);
  writeU32BE(buf, at + 16, tag);
}

/** Why the record at `buf[at..]` is malformed (ignoring its neighbours); undefined when fine. */
export function recordFault(buf: Buffer, at: number): string | undefined {
  if (readU32BE(buf, at) >= 2 ** 21) return 'position beyond 2^53';
  if (readI32BE(buf, at + 8) <= 0) return 'size not positive';
  if (readI32BE(buf, at + 12) !== (readI32BE(buf, at + 16) < 0 ? -1 : 0)) {
    return 'tag hash not a sign-extended int32';
  }
  return undefined;
}

/**
 * Why the record at `buf[at..]` is malformed or out of order with a well-formed neighbour
 * (`hasPrev`/`hasNext`: whether `buf` holds one before/after it); undefined when fine.
 */
export function neighbourFault(
  buf: Buffer,
  at: number,
  hasPrev: boolean,
  hasNext: boolean,
): string | undefined {
  const fault = recordFault(buf, at);
  if (fault !== undefined) return fault;
  const pos = positionOf(buf, at);
  const prev = at - CQ_RECORD_BYTES;
  if (hasPrev && recordFault(buf, prev) === undefined && positionOf(buf, prev) >= pos) {
    return 'position not above the previous record';
  }
  const next = at + CQ_RECORD_BYTES;
  if (hasNext && recordFault(buf, next) === undefined && positionOf(buf, next) <= pos) {
    return 'position not below the next record';
  }
  return undefined;
}

/** The CommitLog position the record at `buf[at..]` holds. */
export function positionOf(buf: Buffer, at: number): number {
  return readU64BE(buf, at);
}

/** Reads until `length` bytes or end of file; returns bytes read. */
export async function readFully(
  disk: FileCache,
  file: string,
  buf: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  return disk.use(file, false, async (f) => {
    let got = 0;
    while (got < length) {
      const n = await f.read(buf, offset + got, length - got, position + got);
      if (n <= 0) break;
      got += n;
    }
    return got;
  });
}
