/**
 * ReadIndex bookkeeping on the leader (thesis §6.4). A read is recorded with the commit index at
 * the time it is asked, then a heartbeat round carrying a sequence number as its context
 * confirms that this node is still the leader; once a majority answered a round, every read up
 * to that round is released with its recorded index. Reads asked before the leader committed an
 * entry of its own term wait for that first (its commit index could still be behind).
 */
import { assert } from '../common/assert';
import type { LogIndex, NodeId } from '../common/types';
import { hasQuorum } from './quorum';
import type { ReadState } from './types';

interface PendingRead {
  readonly seq: number;
  readonly requestId: string;
  readonly index: LogIndex;
  readonly acks: Set<NodeId>;
}

/** The leader's outstanding ReadIndex requests. */
export class ReadIndexQueue {
  private waitingForCommit: string[] = [];
  private pending: PendingRead[] = [];
  private nextSeq = 1;

  /** Requests held, in both stages. */
  size(): number {
    return this.waitingForCommit.length + this.pending.length;
  }

  /** Holds a request until the leader has committed an entry of its term. */
  addWaitingForCommit(requestId: string): void {
    this.waitingForCommit.push(requestId);
  }

  /** Returns and forgets the requests waiting for the first commit of the term. */
  takeWaitingForCommit(): string[] {
    const out = this.waitingForCommit;
    this.waitingForCommit = [];
    return out;
  }

  /** Records a read at `index`; returns the context its heartbeat round carries. */
  add(requestId: string, index: LogIndex, selfId: NodeId): number {
    const seq = this.nextSeq;
    this.nextSeq += 1;
    this.pending.push({ seq, requestId, index, acks: new Set([selfId]) });
    return seq;
  }

  /** The context of the newest pending round, or 0 when none is pending. */
  lastContext(): number {
    return this.pending[this.pending.length - 1]?.seq ?? 0;
  }

  /**
   * `from` answered the round `context`. Returns the reads released by it: a majority answering
   * a round confirms leadership for that round and every earlier one.
   */
  ack(from: NodeId, context: number, voters: readonly NodeId[]): ReadState[] {
    const position = this.pending.findIndex((read) => read.seq === context);
    const read = this.pending[position];
    if (read === undefined) return [];
    read.acks.add(from);
    if (!hasQuorum(voters, (id) => read.acks.has(id))) return [];
    const released = this.pending.splice(0, position + 1);
    let previous = 0;
    return released.map((r) => {
      assert(r.index >= previous, 'read index: recorded indexes must not fall');
      previous = r.index;
      return { requestId: r.requestId, index: r.index };
    });
  }

  /** Forgets everything (leadership was lost; the driver fails the reads). */
  reset(): void {
    this.waitingForCommit = [];
    this.pending = [];
  }
}
