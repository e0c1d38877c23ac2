/**
 * Durability checks: what a node told others must survive its crash.
 *
 * - {@link PromiseLedger}: every granted vote and every acknowledgement of entries one
 *   incarnation sends is a promise that the vote, or the entries, are on its disk (Raft §5.2 and
 *   §5.3: a voter must not vote twice in a term, a follower acknowledges only what is durable;
 *   thesis §3.8). When the node next opens, after the crash has taken whatever it takes, the
 *   stored hard state must hold each vote (or a later term) and the recovered log each
 *   acknowledged entry with its term. An acknowledgement is void once a later leader replaced
 *   that part of the log (the entry was not committed, or the leader would hold it).
 * - {@link DurableLog}: a crashed node's log as far as it was persisted, the part a power loss
 *   keeps; with the running nodes' persisted logs it lets the cluster check that an entry a
 *   leader counts as committed is durable on a majority when it is first seen committed.
 *
 * Both name the broken promise directly, the moment the run shows it, instead of waiting for the
 * lost entry to surface as two different entries applied at one index, which takes a further
 * unlucky election that most runs never have.
 */
import type { NodeId } from '../common/types';
import type { HardState } from '../raft/types';
import type { Message } from '../raft/types';
import type { SimLogContents } from './sim-log-contents';

/** One acknowledged index and the term the node held there when it sent the acknowledgement. */
interface AckPromise {
  readonly index: number;
  readonly entryTerm: number;
}

/** The promises of one incarnation; see the file comment. */
export class PromiseLedger {
  /** Granted votes: term -> candidate. */
  private readonly votes = new Map<number, NodeId>();
  /** Acknowledged indexes, ascending, one promise per index (the latest). */
  private acks: AckPromise[] = [];
  /** The highest term of any promise (the stored term must reach it). */
  private termMax = 0;

  /** Records `message` if it promises something; `contents` is the sender's log now. */
  sent(message: Message, contents: SimLogContents | undefined): void {
    if (message.type === 'VoteResp' && !message.reject) {
      this.votes.set(message.term, message.to);
      this.termMax = Math.max(this.termMax, message.term);
    } else if (message.type === 'AppendResp' && !message.reject) {
      this.termMax = Math.max(this.termMax, message.term);
      const entryTerm = contents?.termAt(message.matchIndex);
      if (message.matchIndex > 0 && entryTerm !== undefined) {
        this.ack({ index: message.matchIndex, entryTerm });
      }
    }
  }

  private ack(promise: AckPromise): void {
    const acks = this.acks;
    let lo = 0;
    let hi = acks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((acks[mid] as AckPromise).index < promise.index) lo = mid + 1;
      else hi = mid;
    }
    if (acks[lo]?.index === promise.index) acks[lo] = promise;
    else acks.splice(lo, 0, promise);
  }

  /** The log was replaced from `index` on: acknowledgements there are void. */
  replacedFrom(index: number): void {
    const acks = this.acks;
    while (acks.length > 0 && (acks[acks.length - 1] as AckPromise).index >= index) acks.pop();
  }

  /**
   * Checks the promises against what survived (`hardState` as stored, `contents` as recovered);
   * returns one line per broken promise (the first few).
   */
  check(hardState: HardState, contents: SimLogContents): string[] {
    const broken: string[] = [];
    if (hardState.term < this.termMax) {
      broken.push(`promised in term ${this.termMax} but stored term ${hardState.term}`);
    }
    for (const [term, candidate] of this.votes) {
      if (hardState.term > term || (hardState.term === term && hardState.vote === candidate)) {
        continue;
      }
      broken.push(
        `granted its vote in term ${term} to ${candidate} but stored term ${hardState.term} ` +
          `vote ${hardState.vote ?? 'none'}`,
      );
    }
    for (const { index, entryTerm } of this.acks) {
      const held = contents.termAt(index);
      if (held === entryTerm) continue;
      broken.push(
        `acknowledged index ${index} of term ${entryTerm} but recovered ` +
          `${held === undefined ? `a log ending at ${contents.lastIndex()}` : `term ${held}`}`,
      );
      if (broken.length >= 4) break;
    }
    return broken;
  }
}

/** A crashed node's log up to its persisted index; see the file comment. */
export class DurableLog {
  private constructor(
    private readonly first: number,
    private readonly terms: readonly number[],
    private readonly crcs: readonly number[],
  ) {}

  /** The entries of `contents` from `firstIndex` up to `persistedIndex`. */
  static of(contents: SimLogContents, firstIndex: number, persistedIndex: number): DurableLog {
    const terms: number[] = [];
    const crcs: number[] = [];
    const first = Math.max(1, firstIndex);
    for (let index = first; index <= persistedIndex; index++) {
      const term = contents.termAt(index);
      const crc = contents.crcAt(index);
      if (term === undefined || crc === undefined) break;
      terms.push(term);
      crcs.push(crc);
    }
    return new DurableLog(first, terms, crcs);
  }

  holds(index: number, term: number, crc: number): boolean {
    const at = index - this.first;
    return this.terms[at] === term && this.crcs[at] === crc;
  }
}
