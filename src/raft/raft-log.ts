/**
 * The core's view of the log. The log itself lives in the driver's store, which the core can ask
 * for terms (synchronously, the store keeps them in memory) but never for entries. In memory the
 * core keeps:
 *
 * - the unstable entries: everything after `durableIndex`, not yet reported durable. A prefix
 *   of them was handed out to the driver (`handedOutSeqs`): in the outstanding Ready, and, for
 *   a leader whose writes complete later (`leaderWritesAsync`), in earlier Readys too;
 * - a bounded cache of the most recent durable entries, contiguous with the unstable ones;
 * - committed entries the driver loaded for the applier.
 *
 * `durableIndex` is the end of the longest prefix that the store holds durably and that equals
 * this log. It only drops when a leader's entries conflict with durable ones (a follower's
 * uncommitted suffix is replaced, Raft §5.3); the next Ready then carries `truncateFrom`.
 */
import { assert } from '../common/assert';
import { asLogIndex, asTerm, type LogIndex, type Term } from '../common/types';
import { EntryCache } from './entry-cache';
import { entrySizeBytes, type Entry, type EntryType, type RaftStorageState } from './types';

/** Entries and truncation for one Ready. */
export interface UnstableHandOut {
  readonly entries: readonly Entry[];
  readonly truncateFrom: number | undefined;
}

/** The log as the core sees it; see the file comment. */
export class RaftLog {
  /**
   * The first index the store holds; the term of `firstIndex - 1` is known (the store keeps it
   * when it removes a prefix). Raised only by {@link compact}.
   */
  private firstIndexNow: number;
  private readonly storageTermAt: (index: LogIndex) => Term | undefined;
  private durableIndexNow: number;
  private unstable: Entry[] = [];
  /**
   * The hand-out number of each handed-out entry (`handedOutSeqs[i]` for `unstable[i]`; its
   * length is how many are handed out), non-decreasing: entries are handed out in log order,
   * and a conflict cuts a suffix before new entries are handed out again.
   */
  private handedOutSeqs: number[] = [];
  private handOutSeq = 0;
  /** The hand-out number of each array of entries handed out (reports name them by array). */
  private readonly seqOfHandOut = new WeakMap<readonly Entry[], number>();
  /**
   * While a Ready is built and until its advance: the last index it hands out whose write the
   * driver waits for before applying (0: none). Entries up to it count as durable for the apply.
   */
  private durableBeforeApply = 0;
  /** The last index the store will hold once the writes handed out so far are done. */
  private storeLastIndex: number;
  private readonly cache: EntryCache;
  /** Highest index known committed. */
  committed: number;
  /** Highest index the applier has reported applied (through advance()). */
  applied: number;
  /** Highest index handed out to the applier. */
  private applying: number;
  private loadedForApply: Entry[] = [];
  /** A load for the applier is outstanding. */
  applyLoadPending = false;

  constructor(storage: RaftStorageState, entryCacheBytesMax: number) {
    this.firstIndexNow = storage.firstIndex;
    this.storageTermAt = (index) => storage.termAt(index);
    this.durableIndexNow = storage.lastIndex;
    this.storeLastIndex = storage.lastIndex;
    this.cache = new EntryCache(entryCacheBytesMax);
    this.committed = storage.hardState.commit;
    this.applied = storage.appliedIndex;
    this.applying = storage.appliedIndex;
    assert(this.firstIndex >= 1, 'raft log: firstIndex must be >= 1');
    assert(storage.lastIndex >= this.firstIndex - 1, 'raft log: lastIndex before firstIndex - 1');
    assert(this.termAt(this.firstIndex - 1) !== undefined,
      'raft log: the term of firstIndex - 1 must be known');
    assert(this.committed <= storage.lastIndex, () =>
      `raft log: commit ${this.committed} beyond lastIndex ${storage.lastIndex}`);
    assert(this.applied >= this.firstIndex - 1 && this.applied <= this.committed,
      () => `raft log: applied ${this.applied} outside [firstIndex - 1, commit]`);
  }

  /** The first index the store holds (see `firstIndexNow`). */
  get firstIndex(): number {
    return this.firstIndexNow;
  }

  /**
   * The driver is about to remove the store's entries below `index` (etcd's
   * `MemoryStorage.Compact`): from now on the core asks for no term below `index - 1` and no
   * entry below `index`; a follower that needs one gets `snapshotsNeeded`. Only applied, durable
   * entries may go: the caller checks `index <= applied + 1` and `index <= durableIndex + 1`.
   */
  compact(index: number): void {
    assert(index > this.firstIndexNow, 'raft log: compaction does not move the first index');
    assert(index <= this.applied + 1 && index <= this.durableIndexNow + 1, () =>
      `raft log: compaction to ${index} beyond applied ${this.applied} or durable `
      + `${this.durableIndexNow}`);
    this.firstIndexNow = index;
    this.cache.releaseThrough(index - 1);
    while ((this.loadedForApply[0]?.index ?? index) < index) this.loadedForApply.shift();
    assert(this.termAt(index - 1) !== undefined, 'raft log: no term before the new first index');
  }

  /** End of the durable prefix that equals this log. */
  get durableIndex(): number {
    return this.durableIndexNow;
  }

  lastIndex(): number {
    return this.durableIndexNow + this.unstable.length;
  }

  lastTerm(): number {
    const term = this.termAt(this.lastIndex());
    assert(term !== undefined, 'raft log: no term for lastIndex');
    return term;
  }

  /** The term at `index`, or undefined outside [firstIndex - 1, lastIndex]. */
  termAt(index: number): number | undefined {
    if (index > this.durableIndexNow) return this.unstable[index - this.durableIndexNow - 1]?.term;
    if (index < this.firstIndex - 1) return undefined;
    const term = this.storageTermAt(asLogIndex(index));
    assert(term !== undefined, () => `raft log: store has no term for durable index ${index}`);
    return term;
  }

  matchTerm(index: number, term: number): boolean {
    return this.termAt(index) === term;
  }

  /** True when a log ending at (lastIndex, lastTerm) is at least as up to date (Raft §5.4.1). */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** Leader path: appends new entries of `term` after the last one and returns them. */
  appendNew(term: number, type: EntryType, payloads: readonly Uint8Array[]): Entry[] {
    const start = this.lastIndex() + 1;
    assert(term >= this.lastTerm(), 'raft log: appending an older term');
    const entries = payloads.map((data, i): Entry => ({
      index: asLogIndex(start + i), term: asTerm(term), type, data,
    }));
    for (const entry of entries) this.unstable.push(entry);
    return entries;
  }

  /** The first entry of `entries` that is new or conflicts with this log, or undefined. */
  findConflict(entries: readonly Entry[]): number | undefined {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return undefined;
  }

  /**
   * Follower path: writes `entries` at their indexes, dropping whatever this log holds from the
   * first of them on. Committed entries are never replaced (Leader Completeness, Raft §5.4).
   */
  append(entries: readonly Entry[]): void {
    const first = entries[0];
    if (first === undefined) return;
    assert(first.index > this.committed, () =>
      `raft log: truncating committed index ${first.index} (commit ${this.committed})`);
    assert(first.index <= this.lastIndex() + 1, 'raft log: append leaves a gap');
    if (first.index > this.durableIndexNow) {
      const keep = first.index - this.durableIndexNow - 1;
      this.unstable.length = keep;
      if (this.handedOutSeqs.length > keep) this.handedOutSeqs.length = keep;
      for (const entry of entries) this.unstable.push(entry);
      return;
    }
    this.durableIndexNow = first.index - 1;
    this.unstable = [...entries];
    this.handedOutSeqs = [];
    this.cache.truncateFrom(first.index);
  }

  /** Raises the commit index (it never falls). */
  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    assert(index <= this.lastIndex(), () =>
      `raft log: commit ${index} beyond lastIndex ${this.lastIndex()}`);
    this.committed = index;
    return true;
  }

  /** The first index of the run of `term` that contains `atIndex` (whose term is `term`). */
  firstIndexOfTerm(term: number, atIndex: number): number {
    assert(this.termAt(atIndex) === term, 'raft log: term run lookup at a wrong index');
    let lo = this.firstIndex - 1;
    let hi = atIndex;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      if ((this.termAt(mid) ?? 0) >= term) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** The last index at or before `atIndex` whose term is <= `term`; firstIndex - 2 if none. */
  lastIndexWithTermAtMost(term: number, atIndex: number): number {
    let lo = this.firstIndex - 2;
    let hi = Math.min(atIndex, this.lastIndex());
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if ((this.termAt(mid) ?? Number.MAX_SAFE_INTEGER) <= term) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Up to `countMax` entries from `from` through `to`, at most `bytesMax` bytes but at least one,
   * when they are in memory; [] when `from > to`; undefined when they must be loaded.
   */
  slice(from: number, to: number, countMax: number, bytesMax: number): Entry[] | undefined {
    if (from > to) return [];
    assert(to <= this.lastIndex(), 'raft log: slice beyond lastIndex');
    const first = this.entryInMemory(from);
    if (first === undefined) return undefined;
    const out = [first];
    let bytes = entrySizeBytes(first);
    for (let index = from + 1; index <= to && out.length < countMax; index++) {
      const entry = this.entryInMemory(index);
      if (entry === undefined) break;
      bytes += entrySizeBytes(entry);
      if (bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }

  private entryInMemory(index: number): Entry | undefined {
    if (index > this.durableIndexNow) return this.unstable[index - this.durableIndexNow - 1];
    return this.cache.get(index);
  }

  /** Unstable entries handed out to the driver and not yet reported durable. */
  get handedOut(): number {
    return this.handedOutSeqs.length;
  }

  /** True when some unstable entries were not handed out yet. */
  hasUnstableToHandOut(): boolean {
    return this.unstable.length > this.handedOutSeqs.length;
  }

  /** Hands the unstable entries not handed out yet to a Ready. */
  handOutUnstable(): UnstableHandOut {
    const entries = this.unstable.slice(this.handedOutSeqs.length);
    const first = entries[0];
    const last = entries[entries.length - 1];
    if (first === undefined || last === undefined) return { entries, truncateFrom: undefined };
    assert(first.index <= this.storeLastIndex + 1, 'raft log: hand-out leaves a gap in the store');
    const truncateFrom = first.index <= this.storeLastIndex ? first.index : undefined;
    this.storeLastIndex = last.index;
    const seq = ++this.handOutSeq;
    for (let i = 0; i < entries.length; i++) this.handedOutSeqs.push(seq);
    this.seqOfHandOut.set(entries, seq);
    return { entries, truncateFrom };
  }

  /**
   * The Ready being built hands out entries up to `index` and the driver makes them durable
   * before it applies that Ready's committed entries (the classic contract); see
   * `durableBeforeApply`. Reset by {@link readyDone}.
   */
  durableBefore(index: number): void {
    this.durableBeforeApply = index;
  }

  /** The outstanding Ready was advanced. */
  readyDone(): void {
    this.durableBeforeApply = 0;
  }

  /**
   * The driver made `entries` (an array {@link handOutUnstable} returned) durable, and with them
   * everything it wrote before (the store is written in order). So every entry still in this
   * log that was handed out with them or before them is durable: the leading run of handed-out
   * entries whose hand-out number is at most theirs. Entries superseded by a conflict after
   * they were handed out are gone from that run (a conflict cuts a suffix, and what replaces it
   * is handed out later, with a higher number), so a late report, or one that arrives while
   * the store truncates and rewrites, counts nothing unwritten; entries already durable are
   * no-ops. The numbers, not the entries' terms, decide: a peer that breaks the Log Matching
   * Property must not make an unwritten entry count as durable.
   */
  persisted(entries: readonly Entry[]): void {
    const seq = this.seqOfHandOut.get(entries);
    if (seq === undefined) return;
    let moved = 0;
    const seqs = this.handedOutSeqs;
    while (moved < seqs.length && (seqs[moved] as number) <= seq) moved++;
    if (moved > 0) {
      const done = this.unstable.splice(0, moved);
      this.handedOutSeqs.splice(0, moved);
      this.durableIndexNow += moved;
      this.cache.append(done);
    }
  }

  /**
   * Last index the applier may get now: committed, and durable or made durable before the
   * apply of the Ready being built (entries whose write completes later are not applied yet).
   */
  private applyableIndex(): number {
    return Math.min(this.committed, Math.max(this.durableIndexNow, this.durableBeforeApply));
  }

  /** True when committed entries are waiting for the applier and can be handed out or loaded. */
  hasCommittedToApply(): boolean {
    const from = this.applying + 1;
    if (from > this.applyableIndex()) return false;
    if (this.entryInMemory(from) !== undefined) return true;
    if (this.loadedForApply[0]?.index === from) return true;
    return !this.applyLoadPending;
  }

  /**
   * The next committed entries for the applier, or undefined when they must be loaded first
   * (the caller issues the load and sets `applyLoadPending`).
   */
  handOutCommitted(countMax: number, bytesMax: number): Entry[] | undefined {
    const from = this.applying + 1;
    const to = this.applyableIndex();
    if (from > to) return [];
    while ((this.loadedForApply[0]?.index ?? from) < from) this.loadedForApply.shift();
    let entries = this.slice(from, to, countMax, bytesMax);
    if (entries === undefined && this.loadedForApply[0]?.index === from) {
      entries = [];
      let bytes = 0;
      while (entries.length < countMax) {
        const entry = this.loadedForApply[0];
        if (entry === undefined || entry.index > to) break;
        bytes += entrySizeBytes(entry);
        if (entries.length > 0 && bytes > bytesMax) break;
        entries.push(entry);
        this.loadedForApply.shift();
      }
    }
    const last = entries?.[entries.length - 1];
    if (last !== undefined) this.applying = last.index;
    return entries;
  }

  /**
   * Accepts entries the driver loaded for the applier: the consecutive, committed prefix that
   * matches this log and starts where the applier is. False when nothing of it is usable.
   */
  offerLoadedForApply(entries: readonly Entry[]): boolean {
    this.applyLoadPending = false;
    const usable: Entry[] = [];
    for (const entry of entries) {
      if (entry.index !== this.applying + 1 + usable.length || entry.index > this.committed
        || !this.matchTerm(entry.index, entry.term)) {
        break;
      }
      usable.push(entry);
    }
    if (usable.length === 0) return false;
    this.loadedForApply = usable;
    return true;
  }

  /** The next index the applier needs. */
  nextApplyIndex(): number {
    return this.applying + 1;
  }

  /** The applier finished everything handed out to it. */
  appliedAll(): void {
    this.applied = this.applying;
  }

  /** The oldest entry in the cache, or null when it is empty. */
  cachedFirstIndex(): LogIndex | null {
    const first = this.cache.firstIndex();
    return first === undefined ? null : asLogIndex(first);
  }

  /**
   * No other node will ask for entries up to `index` (a leader passes the lowest match of its
   * followers); those applied here as well leave the cache.
   */
  releaseCached(index: number): void {
    this.cache.releaseThrough(Math.min(index, this.applied));
  }
}
