/**
 * The records a ConsumeQueue has appended but not yet written, back to back in one buffer of
 * at most `bytesMax` bytes.
 *
 * Bytes handed to the disk are never changed afterwards: a flush writes from `bytes` as it was
 * when the flush began, while appends go after its count or into a grown copy, and dropping the
 * written records copies the rest into a new buffer. A disk may hold on to written bytes until
 * it syncs (the simulated one keeps them for torn replays).
 */
import { CQ_RECORD_BYTES, encodeRecord } from './consume-queue-record';

const EMPTY = Buffer.alloc(0);

/** A queue's unwritten records; see the file comment. */
export class PendingRecords {
  /** Records [0, count) of this buffer are valid. */
  bytes: Buffer = EMPTY;
  count = 0;

  constructor(private readonly bytesMax: number) {}

  /** True when one more record would exceed `bytesMax`. */
  isFull(): boolean {
    return (this.count + 1) * CQ_RECORD_BYTES > this.bytesMax;
  }

  /** Appends one record; the caller has checked the fields and `isFull()`. */
  push(position: number, sizeBytes: number, tagHash: number): void {
    const need = (this.count + 1) * CQ_RECORD_BYTES;
    if (need > this.bytes.byteLength) {
      const grown = Buffer.allocUnsafe(
        Math.min(this.bytesMax, Math.max(need, this.bytes.byteLength * 2, 64 * CQ_RECORD_BYTES)),
      );
      this.bytes.copy(grown, 0, 0, this.count * CQ_RECORD_BYTES);
      this.bytes = grown;
    }
    encodeRecord(this.bytes, this.count * CQ_RECORD_BYTES, position, sizeBytes, tagHash);
    this.count++;
  }

  /** Drops the first `count` records (just written), keeping the rest in a new buffer. */
  dropFirst(count: number): void {
    const left = this.count - count;
    if (left > 0) {
      const rest = Buffer.allocUnsafe(
        Math.min(this.bytesMax, Math.max(2 * left, 64) * CQ_RECORD_BYTES),
      );
      this.bytes.copy(rest, 0, count * CQ_RECORD_BYTES, this.count * CQ_RECORD_BYTES);
      this.bytes = rest;
    } else {
      this.bytes = EMPTY;
    }
    this.count = Math.max(0, left);
  }

  /** Keeps only the first `count` records (a cut). */
  keepFirst(count: number): void {
    this.count = count;
    if (count === 0) this.bytes = EMPTY;
  }

  /** Drops every record. */
  clear(): void {
    this.bytes = EMPTY;
    this.count = 0;
  }
}
