/**
 * The entry index: fixed-width records beside the CommitLog mapping a Raft index to where its
 * record lies, so a lookup is one read at a computed offset.
 *
 * | offset | size | field                              |
 * |--------|------|------------------------------------|
 * | 0      | 8    | CommitLog position, u64 big-endian |
 * | 8      | 4    | record size in bytes               |
 * | 12     | 8    | term, u64 big-endian               |
 * | 20     | 4    | CRC32C of bytes 0..20              |
 *
 * Files hold `entriesPerFile` records and are named by the 20-digit Raft index of their first
 * slot; the file for index i starts at `floor((i - 1) / entriesPerFile) * entriesPerFile + 1`.
 * Index writes are not synced with every append: the CommitLog syncs them before it writes a
 * checkpoint, and recovery rebuilds whatever lies past the checkpoint from the data itself.
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import {
  readU32BE,
  readU64BE as readU64,
  writeU32BE,
  writeU64BE as writeU64,
} from '../common/bytes';
import { crc32cSmall } from '../common/crc32c';
import { RaftmqError } from '../common/errors';
import { assert } from '../common/assert';
import { FileCache } from './file-cache';

export const INDEX_RECORD_BYTES = 24;

export interface IndexRecord {
  index: number;
  position: number;
  sizeBytes: number;
  term: number;
}

/** 20-digit zero-padded decimal, the name of segment and index files. */
export function fileName20(n: number): string {
  return n.toString().padStart(20, '0');
}

export function parseFileName20(name: string): number | undefined {
  return /^\d{20}$/.test(name) ? Number(name) : undefined;
}

export function encodeIndexRecord(
  buf: Buffer,
  offset: number,
  r: Omit<IndexRecord, 'index'>,
): void {
  writeU64(buf, offset, r.position);
  writeU32BE(buf, offset + 8, r.sizeBytes);
  writeU64(buf, offset + 12, r.term);
  writeU32BE(buf, offset + 20, crc32cSmall(buf, offset, offset + 20));
}

/** Decodes a record; undefined when its CRC fails or it is all zero (never written). */
export function decodeIndexRecord(
  buf: Buffer,
  offset: number,
  index: number,
): IndexRecord | undefined {
  const crc = readU32BE(buf, offset + 20);
  if (crc !== crc32cSmall(buf, offset, offset + 20)) return undefined;
  const sizeBytes = readU32BE(buf, offset + 8);
  if (sizeBytes === 0) return undefined;
  return { index, position: readU64(buf, offset), sizeBytes, term: readU64(buf, offset + 12) };
}

/** Where a run of records lies, as parallel arrays (no per-record objects on the read path). */
export interface LocatedRecords {
  positions: Float64Array;
  sizes: Uint32Array;
  terms: Float64Array;
}

/** Records taken from the stage for writing. */
export interface StagedIndexRecords {
  firstIndex: number;
  count: number;
  data: Buffer;
  /** The buffer `data` is a view of; it stages later records once written. */
  readonly buffer: Buffer;
}

export class EntryIndex {
  private pending: Buffer;
  /**
   * A buffer whose records have been written, to stage the next round's in: a new buffer per
   * round (24 KiB at least, and as large as the largest round since) was most of what a Raft
   * node allocated at a paced 50,000 entries/s, and fresh Buffers are what start V8's
   * collections (docs/performance.md, "What V8 costs").
   */
  private spare: Buffer | undefined;
  private pendingCount = 0;
  private pendingFirstIndex = 0;
  private readonly dirtyFiles = new Set<number>();

  constructor(
    private readonly disk: Disk,
    readonly dir: string,
    readonly entriesPerFile: number,
    private readonly files: FileCache,
  ) {
    this.pending = Buffer.allocUnsafe(INDEX_RECORD_BYTES * 1024);
  }

  fileStartOf(index: number): number {
    assert(index >= 1, `entry index ${index} < 1`);
    return Math.floor((index - 1) / this.entriesPerFile) * this.entriesPerFile + 1;
  }

  filePath(fileStart: number): string {
    return path.join(this.dir, fileName20(fileStart));
  }

  /** Start indexes of the index files on disk, ascending. */
  async listFiles(): Promise<number[]> {
    const names = await this.disk.list(this.dir);
    const starts: number[] = [];
    for (const name of names) {
      const n = parseFileName20(name);
      if (n !== undefined) starts.push(n);
    }
    return starts.sort((a, b) => a - b);
  }

  /** Stages the record for `index` (must follow the previous staged one). */
  stage(record: IndexRecord): void {
    if (this.pendingCount === 0) this.pendingFirstIndex = record.index;
    assert(
      record.index === this.pendingFirstIndex + this.pendingCount,
      'index records out of order',
    );
    const need = (this.pendingCount + 1) * INDEX_RECORD_BYTES;
    if (need > this.pending.byteLength) {
      const grown = Buffer.allocUnsafe(this.pending.byteLength * 2);
      this.pending.copy(grown, 0, 0, this.pendingCount * INDEX_RECORD_BYTES);
      this.pending = grown;
    }
    encodeIndexRecord(this.pending, this.pendingCount * INDEX_RECORD_BYTES, record);
    this.pendingCount++;
  }

  /** Drops staged records from `index` on (after a suffix truncation of unwritten entries). */
  dropStagedFrom(index: number): void {
    if (this.pendingCount === 0 || index >= this.pendingFirstIndex + this.pendingCount) return;
    this.pendingCount = Math.max(0, index - this.pendingFirstIndex);
  }

  hasStaged(): boolean {
    return this.pendingCount > 0;
  }

  /** Takes the staged records, for a write that may run while more are staged. */
  takeStaged(): StagedIndexRecords | undefined {
    if (this.pendingCount === 0) return undefined;
    const taken = {
      firstIndex: this.pendingFirstIndex,
      count: this.pendingCount,
      data: this.pending.subarray(0, this.pendingCount * INDEX_RECORD_BYTES),
      buffer: this.pending,
    };
    // The taken buffer is read until its write completes; the next records go to the spare
    // (`writeTaken` hands the taken one back), or to a new buffer while both are in use.
    this.pending = this.spare ?? Buffer.allocUnsafe(INDEX_RECORD_BYTES * 1024);
    this.spare = undefined;
    this.pendingCount = 0;
    return taken;
  }

  /** Writes taken records to their files (no sync). */
  async writeTaken(taken: StagedIndexRecords | undefined): Promise<void> {
    if (!taken) return;
    let i = 0;
    while (i < taken.count) {
      const index = taken.firstIndex + i;
      const fileStart = this.fileStartOf(index);
      const n = Math.min(taken.count - i, fileStart + this.entriesPerFile - index);
      const chunk = taken.data.subarray(i * INDEX_RECORD_BYTES, (i + n) * INDEX_RECORD_BYTES);
      const at = (index - fileStart) * INDEX_RECORD_BYTES;
      await this.files.use(this.filePath(fileStart), true, (f) => f.writev([chunk], at));
      this.dirtyFiles.add(fileStart);
      i += n;
    }
    // Written: nothing reads the buffer any more (a failed write never gets here, and its
    // buffer is left to the garbage collector).
    if (this.spare === undefined && taken.buffer !== this.pending) this.spare = taken.buffer;
  }

  /** Writes every staged record (no sync). */
  async writeStaged(): Promise<void> {
    await this.writeTaken(this.takeStaged());
  }

  /** Syncs every file written since the last sync (before a checkpoint names them). */
  async sync(): Promise<void> {
    const starts = [...this.dirtyFiles];
    for (const start of starts) {
      await this.files.use(this.filePath(start), true, (f) => f.sync());
      // Cleared only once synced: after a failed sync the file still needs one.
      this.dirtyFiles.delete(start);
    }
    if (starts.length > 0) await this.disk.syncDir(this.dir);
  }

  /** Reads `count` records from `from` (all within the written files). */
  async readRange(from: number, count: number): Promise<IndexRecord[]> {
    const out: IndexRecord[] = [];
    let index = from;
    while (out.length < count) {
      const fileStart = this.fileStartOf(index);
      const n = Math.min(count - out.length, fileStart + this.entriesPerFile - index);
      const filePath = this.filePath(fileStart);
      const buf = Buffer.allocUnsafe(n * INDEX_RECORD_BYTES);
      const offset = (index - fileStart) * INDEX_RECORD_BYTES;
      const got = await this.files.use(filePath, false, (f) =>
        f.read(buf, 0, buf.byteLength, offset),
      );
      for (let k = 0; k < n; k++) {
        const r =
          k * INDEX_RECORD_BYTES + INDEX_RECORD_BYTES <= got
            ? decodeIndexRecord(buf, k * INDEX_RECORD_BYTES, index + k)
            : undefined;
        if (!r) throw corruptIndex(filePath, offset + k * INDEX_RECORD_BYTES, index + k);
        out.push(r);
      }
      index += n;
    }
    return out;
  }

  /**
   * Positions, sizes and terms of `count` records from `from`, parsed without checking each
   * record's CRC: the read path checks every data record it reaches through them (magic,
   * CRC32C, index, term), so a damaged index record can only produce an error, never wrong data.
   */
  async locate(from: number, count: number): Promise<LocatedRecords> {
    const out: LocatedRecords = {
      positions: new Float64Array(count),
      sizes: new Uint32Array(count),
      terms: new Float64Array(count),
    };
    let done = 0;
    while (done < count) {
      const index = from + done;
      const fileStart = this.fileStartOf(index);
      const n = Math.min(count - done, fileStart + this.entriesPerFile - index);
      const filePath = this.filePath(fileStart);
      const buf = Buffer.allocUnsafe(n * INDEX_RECORD_BYTES);
      const offset = (index - fileStart) * INDEX_RECORD_BYTES;
      const got = await this.files.use(filePath, false, (f) =>
        f.read(buf, 0, buf.byteLength, offset),
      );
      if (got < buf.byteLength) {
        throw corruptIndex(filePath, offset + got - (got % INDEX_RECORD_BYTES), index);
      }
      for (let k = 0; k < n; k++) {
        const at = k * INDEX_RECORD_BYTES;
        out.positions[done + k] = readU64(buf, at);
        out.sizes[done + k] = readU32BE(buf, at + 8);
        out.terms[done + k] = readU64(buf, at + 12);
      }
      done += n;
    }
    return out;
  }

  async lookup(index: number): Promise<IndexRecord> {
    const [r] = await this.readRange(index, 1);
    assert(r !== undefined, 'readRange(1) returned nothing');
    return r;
  }

  /**
   * Scans records from `from` through `to`, calling `visit` for each good one until it returns
   * false, and returns the last index whose record (and every one before it) was accepted.
   */
  async scan(from: number, to: number, visit: (r: IndexRecord) => boolean): Promise<number> {
    let index = from;
    const batch = 8192;
    while (index <= to) {
      const fileStart = this.fileStartOf(index);
      const n = Math.min(to - index + 1, batch, fileStart + this.entriesPerFile - index);
      const stat = await this.disk.stat(this.filePath(fileStart));
      if (!stat) return index - 1;
      const buf = Buffer.allocUnsafe(n * INDEX_RECORD_BYTES);
      const at = (index - fileStart) * INDEX_RECORD_BYTES;
      const got = await this.files.use(this.filePath(fileStart), false, (f) =>
        f.read(buf, 0, buf.byteLength, at),
      );
      for (let k = 0; k < n; k++) {
        if ((k + 1) * INDEX_RECORD_BYTES > got) return index + k - 1;
        const r = decodeIndexRecord(buf, k * INDEX_RECORD_BYTES, index + k);
        if (!r || !visit(r)) return index + k - 1;
      }
      index += n;
    }
    return to;
  }

  /** Removes records after `lastIndex` (file truncate + later files removed) and syncs. */
  async truncateAfter(lastIndex: number): Promise<void> {
    this.dropStagedFrom(lastIndex + 1);
    const keepStart = this.fileStartOf(lastIndex + 1);
    for (const start of await this.listFiles()) {
      if (start > keepStart) {
        await this.files.forget(this.filePath(start));
        await this.disk.remove(this.filePath(start));
      }
    }
    const keepPath = this.filePath(keepStart);
    if (await this.disk.stat(keepPath)) {
      const size = (lastIndex + 1 - keepStart) * INDEX_RECORD_BYTES;
      await this.files.use(keepPath, false, async (f) => {
        await f.truncate(size);
        await f.sync();
      });
    }
    await this.disk.syncDir(this.dir);
  }

  /** Removes files all of whose slots are below `firstIndex`. */
  async removeFilesBefore(firstIndex: number): Promise<void> {
    let removed = false;
    for (const start of await this.listFiles()) {
      if (start + this.entriesPerFile <= firstIndex) {
        await this.files.forget(this.filePath(start));
        await this.disk.remove(this.filePath(start));
        this.dirtyFiles.delete(start);
        removed = true;
      }
    }
    if (removed) await this.disk.syncDir(this.dir);
  }
}

function corruptIndex(file: string, position: number, index: number): RaftmqError {
  return new RaftmqError(
    'CORRUPT_RECORD',
    `corrupt entry index record for index ${index} in ${file} at byte ${position}`,
    { details: { file, position, index } },
  );
}
