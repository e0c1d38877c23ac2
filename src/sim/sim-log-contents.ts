/**
 * What one incarnation's CommitLog holds, entry by entry, as the simulator's checks see it: the
 * term and the record checksum of every entry (`recordChecksum`: the CRC32C a CommitLog record
 * carries, over index, term, type and payload). It is read back from the log when the
 * incarnation opens, so it covers what recovery kept, and kept up to date by observing every
 * `append` the driver makes: an append at index i replaces everything from i on, which is also
 * how the driver's suffix truncations show (the log is cut, then appended to at the cut).
 *
 * Log Matching and Leader Completeness compare these checksums, not only terms: two logs that
 * agree on every term but hold different bytes at an index are told apart.
 *
 * Not covered: prefix removal and retention (the simulated driver runs neither).
 */
import { assert } from '../common/assert';
import type { CommitLog } from '../store/commit-log';
import { recordChecksum, type LogEntry } from '../store/log-record';

/** Entries read per call when the contents are read back at open. */
const READ_COUNT_MAX = 512;
const READ_BYTES_MAX = 1 << 20;

/** The record checksum of `entry`, computed from its fields (see the file comment). */
export function entryChecksum(entry: LogEntry): number {
  return recordChecksum(entry.index, entry.term, entry.type, entry.payload);
}

/** The contents; see the file comment. */
export class SimLogContents {
  /** Index of the entry at position 0 of the arrays. */
  private readonly first: number;
  private readonly terms: number[] = [];
  private readonly crcs: number[] = [];

  private constructor(firstIndex: number) {
    this.first = firstIndex;
  }

  /** Reads every entry `log` holds now (it must be open and idle, as right after open). */
  static async read(log: CommitLog): Promise<SimLogContents> {
    const contents = new SimLogContents(log.firstIndex());
    const last = log.lastIndex();
    for (let from = log.firstIndex(); from <= last;) {
      const entries = await log.readRange(from, READ_COUNT_MAX, READ_BYTES_MAX);
      assert(entries.length > 0, 'sim contents: empty read');
      contents.appended(entries);
      from = contents.lastIndex() + 1;
    }
    return contents;
  }

  /** Records entries appended to the log (an append at index i replaces everything from i). */
  appended(entries: readonly LogEntry[]): void {
    const head = entries[0];
    if (head === undefined) return;
    const at = head.index - this.first;
    assert(at >= 0 && at <= this.terms.length, () => `sim contents: append at ${head.index}`);
    this.terms.length = at;
    this.crcs.length = at;
    for (const entry of entries) {
      this.terms.push(entry.term);
      this.crcs.push(entryChecksum(entry));
    }
  }

  /** The last index recorded (it may lie past the log's end after a bare truncation). */
  lastIndex(): number {
    return this.first + this.terms.length - 1;
  }

  termAt(index: number): number | undefined {
    return this.terms[index - this.first];
  }

  crcAt(index: number): number | undefined {
    return this.crcs[index - this.first];
  }
}

/**
 * Makes `contents` follow every append to `log`. The CommitLog has no observer of its own and
 * the simulator must run the production store unchanged, so this wraps the one instance's
 * `append`: entries are recorded after the store accepted them (it validates first and throws
 * without writing anything). `onAppend` sees each append before `contents` records it, and
 * `onTruncate` each suffix truncation as it is asked for (the append at the cut may come only
 * after the truncation's own writes, or never, if the node crashes in between).
 */
export function observeAppends(
  log: CommitLog,
  contents: SimLogContents,
  onAppend?: (entries: readonly LogEntry[]) => void,
  onTruncate?: (fromIndex: number) => void,
): void {
  const append = log.append.bind(log);
  log.append = (entries: readonly LogEntry[]): number => {
    const last = append(entries);
    onAppend?.(entries);
    contents.appended(entries);
    return last;
  };
  if (onTruncate === undefined) return;
  const truncateSuffix = log.truncateSuffix.bind(log);
  log.truncateSuffix = (fromIndex: number): Promise<void> => {
    onTruncate(fromIndex);
    return truncateSuffix(fromIndex);
  };
}
