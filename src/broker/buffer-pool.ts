/**
 * Reusable buffers for what the Raft transport writes to its Append streams. A leader encodes
 * every replicated byte once per follower into a new Buffer; at tens of MB a second those Buffers
 * are what make V8 collect (each fresh Buffer counts as external memory, and young external
 * memory past a fixed mark forces a scavenge; docs/performance.md, "What V8 costs"). A buffer
 * taken here goes back once a write of it succeeded (the stream's write callback without an
 * error), and the next Append of about its size is encoded into it.
 *
 * Buffers come in power-of-two classes from {@link BUFFER_POOL_MIN_BYTES} to
 * {@link BUFFER_POOL_MAX_BYTES}; a request outside that range gets a fresh buffer, and giving
 * one back beyond `retainBytesMax` lets it go. A buffer must not be given back while anything
 * may still read it: one given back too early is overwritten by the next Append.
 */
import { assert } from '../common/assert';

export const BUFFER_POOL_MIN_BYTES = 16 * 1024;
export const BUFFER_POOL_MAX_BYTES = 4 * 1024 * 1024;

/** The class (a power of two, at least the minimum) that holds `bytes`. */
function classBytes(bytes: number): number {
  let size = BUFFER_POOL_MIN_BYTES;
  while (size < bytes) size *= 2;
  return size;
}

export interface BufferPoolStats {
  /** Buffers handed out from the free lists. */
  reused: number;
  /** Buffers allocated because no free one of the class was there. */
  allocated: number;
  /** Bytes held on the free lists now. */
  retainedBytes: number;
}

export class BufferPool {
  /** Free buffers by class size. */
  private readonly free = new Map<number, Buffer[]>();
  private readonly counts: BufferPoolStats = { reused: 0, allocated: 0, retainedBytes: 0 };

  constructor(readonly retainBytesMax = 16 * 1024 * 1024) {
    assert(Number.isSafeInteger(retainBytesMax) && retainBytesMax >= 0, 'buffer pool: bad bound');
  }

  /**
   * A buffer of at least `bytes` bytes ({@link pooled} says whether it is one to give back once
   * written). Its contents are whatever was there: write before reading.
   */
  take(bytes: number): Buffer {
    if (bytes < BUFFER_POOL_MIN_BYTES / 2 || bytes > BUFFER_POOL_MAX_BYTES) {
      return Buffer.allocUnsafe(bytes);
    }
    const size = classBytes(bytes);
    const list = this.free.get(size);
    const buf = list?.pop();
    if (buf !== undefined) {
      this.counts.reused += 1;
      this.counts.retainedBytes -= size;
      return buf;
    }
    this.counts.allocated += 1;
    return Buffer.allocUnsafeSlow(size);
  }

  /** True when `buf` (as {@link take} returned it) belongs to a class: give it back when done. */
  pooled(buf: Buffer): boolean {
    const size = buf.length;
    return (
      size >= BUFFER_POOL_MIN_BYTES &&
      size <= BUFFER_POOL_MAX_BYTES &&
      (size & (size - 1)) === 0 &&
      buf.byteOffset === 0 &&
      buf.buffer.byteLength === size
    );
  }

  /** Takes back a pooled buffer nothing reads any more; one beyond the bound is let go. */
  give(buf: Buffer): void {
    if (!this.pooled(buf)) return;
    const size = buf.length;
    if (this.counts.retainedBytes + size > this.retainBytesMax) return;
    let list = this.free.get(size);
    if (list === undefined) {
      list = [];
      this.free.set(size, list);
    }
    list.push(buf);
    this.counts.retainedBytes += size;
  }

  stats(): BufferPoolStats {
    return { ...this.counts };
  }
}
