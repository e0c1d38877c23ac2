/**
 * The window of Append messages in flight to one follower, bounded in count and in bytes. Each
 * slot records the last index a message carried and its entry bytes; an acknowledgement of
 * index i frees every slot up to i. A ring buffer, so nothing allocates per message.
 */
import { assert } from '../common/assert';

/** A bounded FIFO of (lastIndex, bytes) for Append messages not yet acknowledged. */
export class Inflights {
  private readonly lastIndexes: number[];
  private readonly sizesBytes: number[];
  private start = 0;
  private countNow = 0;
  private bytesNow = 0;

  constructor(readonly countMax: number, readonly bytesMax: number) {
    assert(Number.isSafeInteger(countMax) && countMax > 0, 'inflights: countMax must be > 0');
    assert(bytesMax > 0, 'inflights: bytesMax must be > 0');
    this.lastIndexes = new Array<number>(countMax).fill(0);
    this.sizesBytes = new Array<number>(countMax).fill(0);
  }

  /** Messages in flight. */
  get count(): number {
    return this.countNow;
  }

  /** Entry bytes in flight. */
  get bytes(): number {
    return this.bytesNow;
  }

  /** True when no further message may be sent: the count or the byte bound is reached. */
  full(): boolean {
    return this.countNow >= this.countMax || this.bytesNow >= this.bytesMax;
  }

  /** Records a message whose last entry is `lastIndex`; indexes must increase. */
  add(lastIndex: number, bytes: number): void {
    assert(!this.full(), 'inflights: add to a full window');
    assert(bytes >= 0, 'inflights: negative size');
    if (this.countNow > 0) {
      const newest = this.lastIndexes[(this.start + this.countNow - 1) % this.countMax] ?? 0;
      assert(lastIndex > newest, () => `inflights: index ${lastIndex} after ${newest}`);
    }
    const slot = (this.start + this.countNow) % this.countMax;
    this.lastIndexes[slot] = lastIndex;
    this.sizesBytes[slot] = bytes;
    this.countNow += 1;
    this.bytesNow += bytes;
  }

  /** Frees every message whose last index is at or below `index` (it was acknowledged). */
  freeLE(index: number): void {
    while (this.countNow > 0) {
      const lastIndex = this.lastIndexes[this.start] ?? 0;
      if (lastIndex > index) break;
      this.bytesNow -= this.sizesBytes[this.start] ?? 0;
      this.start = (this.start + 1) % this.countMax;
      this.countNow -= 1;
    }
    if (this.countNow === 0) this.start = 0;
    assert(this.bytesNow >= 0, 'inflights: negative byte count');
  }

  /** Frees the oldest message (presumed lost), so a stalled full window can move again. */
  freeFirstOne(): void {
    const oldest = this.lastIndexes[this.start];
    if (this.countNow > 0 && oldest !== undefined) this.freeLE(oldest);
  }

  /** Forgets everything (the follower left the replicate state). */
  reset(): void {
    this.start = 0;
    this.countNow = 0;
    this.bytesNow = 0;
  }
}
