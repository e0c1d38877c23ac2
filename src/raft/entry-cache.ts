/**
 * A bounded in-memory copy of the most recent durable log entries, so that followers that keep
 * up and the local applier are served without asking the driver to read the disk. The cache is
 * one contiguous run of indexes that ends where the unstable entries begin; it evicts from the
 * oldest end to stay within its byte bound, and lets go of entries nobody needs any more
 * ({@link EntryCache.releaseThrough}) long before that.
 */
import { assert } from '../common/assert';
import { entrySizeBytes, type Entry } from './types';

/** Contiguous recent entries, at most `bytesMax` bytes. */
export class EntryCache {
  /**
   * Slots before `head` were evicted: emptied at once (an evicted entry may hold megabytes, and
   * a thousand of them waiting for the lazy compaction once held a gigabyte beyond the bound),
   * and dropped from the array lazily.
   */
  private entries: (Entry | undefined)[] = [];
  /** Index into `entries` of the oldest live entry. */
  private head = 0;
  private bytesNow = 0;

  constructor(private readonly bytesMax: number) {}

  /** Bytes held. */
  get bytes(): number {
    return this.bytesNow;
  }

  /** The oldest index held, or undefined when empty. */
  firstIndex(): number | undefined {
    return this.entries[this.head]?.index;
  }

  /** The newest index held, or undefined when empty. */
  lastIndex(): number | undefined {
    return this.entries.length > this.head ? this.entries[this.entries.length - 1]?.index
      : undefined;
  }

  /** The entry at `index`, when held. */
  get(index: number): Entry | undefined {
    const first = this.firstIndex();
    if (first === undefined || index < first) return undefined;
    const entry = this.entries[this.head + index - first];
    if (entry !== undefined) assert(entry.index === index, 'entry cache: not contiguous');
    return entry;
  }

  /** Adds entries that follow the newest one held (or restarts the run if they do not). */
  append(entries: readonly Entry[]): void {
    const first = entries[0];
    if (first === undefined) return;
    const last = this.lastIndex();
    if (last === undefined || first.index !== last + 1) this.clear();
    for (const entry of entries) {
      this.entries.push(entry);
      this.bytesNow += entrySizeBytes(entry);
    }
    this.evict();
  }

  /** Drops every entry at or after `index` (the log was truncated there). */
  truncateFrom(index: number): void {
    const first = this.firstIndex();
    if (first === undefined) return;
    if (index <= first) {
      this.clear();
      return;
    }
    while (this.entries.length > this.head) {
      const newest = this.entries[this.entries.length - 1];
      assert(newest !== undefined, 'entry cache: hole');
      if (newest.index < index) break;
      this.entries.pop();
      this.bytesNow -= entrySizeBytes(newest);
    }
  }

  /**
   * Drops the entries at or before `index`, which nobody needs from memory any more (applied
   * here, and on a leader matched by every follower). Held on until the byte bound pushed them
   * out, every entry outlived two scavenges, so its buffer was promoted and freed only by a full
   * collection: V8 counts those buffers as external memory and ran a mark-compact for every
   * 64 MB of them (`docs/performance.md`, "What starts a full collection").
   */
  releaseThrough(index: number): void {
    while (this.entries.length > this.head) {
      const oldest = this.entries[this.head];
      assert(oldest !== undefined, 'entry cache: hole');
      if (oldest.index > index) break;
      this.dropOldest(oldest);
    }
    this.compact();
  }

  private evict(): void {
    while (this.bytesNow > this.bytesMax && this.entries.length > this.head) {
      const oldest = this.entries[this.head];
      assert(oldest !== undefined, 'entry cache: hole');
      this.dropOldest(oldest);
    }
    this.compact();
  }

  private dropOldest(oldest: Entry): void {
    this.bytesNow -= entrySizeBytes(oldest);
    this.entries[this.head] = undefined;
    this.head += 1;
  }

  private compact(): void {
    // Compact once the dead prefix dominates, so eviction stays amortized O(1).
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    if (this.head > 0 && this.entries.length === this.head) this.clear();
  }

  private clear(): void {
    this.entries = [];
    this.head = 0;
    this.bytesNow = 0;
  }
}
