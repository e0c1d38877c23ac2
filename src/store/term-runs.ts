/**
 * The term of every log entry, kept in memory as runs: terms change only at elections, so a log
 * of millions of entries has a handful of runs. Raft needs `termAt(i)` synchronously (log
 * matching, conflict hints), and this answers it without touching the disk.
 */
import { assert } from '../common/assert';

export class TermRuns {
  /** Parallel arrays: run k covers indexes [starts[k], starts[k+1]) with terms[k]. */
  private starts: number[] = [];
  private terms: number[] = [];
  /** Index and term of the entry just before the first run (the log's start). */
  private baseIndex: number;
  private baseTerm: number;
  private last: number;

  constructor(baseIndex: number, baseTerm: number) {
    this.baseIndex = baseIndex;
    this.baseTerm = baseTerm;
    this.last = baseIndex;
  }

  lastIndex(): number {
    return this.last;
  }

  lastTerm(): number {
    const t = this.terms[this.terms.length - 1];
    return t ?? this.baseTerm;
  }

  /** Records `index` (the next one) with `term`. */
  append(index: number, term: number): void {
    // Checked inline (no message closure per call): this runs once per appended entry.
    if (index !== this.last + 1 || term < this.lastTerm()) {
      assert(false, `term runs: (${index}, ${term}) after (${this.last}, ${this.lastTerm()})`);
    }
    if (this.terms.length === 0 || this.terms[this.terms.length - 1] !== term) {
      this.starts.push(index);
      this.terms.push(term);
    }
    this.last = index;
  }

  /** The term of `index`, or undefined outside [baseIndex, lastIndex]. */
  termAt(index: number): number | undefined {
    if (index === this.baseIndex) return this.baseTerm;
    if (index < this.baseIndex || index > this.last) return undefined;
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.starts[mid] ?? Infinity) <= index) lo = mid;
      else hi = mid - 1;
    }
    return this.terms[lo];
  }

  /** Forgets entries after `lastIndex`. */
  truncateAfter(lastIndex: number): void {
    assert(lastIndex >= this.baseIndex, 'term runs: truncate below base');
    while (this.starts.length > 0 && (this.starts[this.starts.length - 1] ?? 0) > lastIndex) {
      this.starts.pop();
      this.terms.pop();
    }
    this.last = Math.min(this.last, lastIndex);
  }

  /** Forgets entries before `newBaseIndex`, remembering its term as the base. */
  trimBefore(newBaseIndex: number): void {
    const term = this.termAt(newBaseIndex);
    assert(term !== undefined, `term runs: trim to unknown index ${newBaseIndex}`);
    let k = 0;
    while (k + 1 < this.starts.length && (this.starts[k + 1] ?? Infinity) <= newBaseIndex + 1) k++;
    const keepStarts = this.starts.slice(k);
    const keepTerms = this.terms.slice(k);
    if (keepStarts.length > 0 && (keepStarts[0] ?? 0) <= newBaseIndex) {
      keepStarts[0] = newBaseIndex + 1;
      if (newBaseIndex + 1 > this.last) {
        keepStarts.shift();
        keepTerms.shift();
      }
    }
    this.starts = keepStarts;
    this.terms = keepTerms;
    this.baseIndex = newBaseIndex;
    this.baseTerm = term;
    this.last = Math.max(this.last, newBaseIndex);
  }

  /** Number of runs (for memory checks). */
  runCount(): number {
    return this.starts.length;
  }
}
