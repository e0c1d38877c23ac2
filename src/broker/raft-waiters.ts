/**
 * The driver's bounded tables of callers waiting on Raft: proposals waiting to be committed and
 * applied, and reads waiting for their ReadIndex to be confirmed and applied (thesis §6.4).
 * Both are kept in insertion order, so deadlines (a fixed timeout after insertion) are in order
 * too and expiry looks only at the front.
 */
import { RaftmqError } from '../common/errors';
import type { LogIndex, NodeId, Term } from '../common/types';

/** What a committed and applied proposal resolves with. */
export interface ProposeAck {
  readonly firstIndex: LogIndex;
  readonly lastIndex: LogIndex;
  readonly term: Term;
}

interface ProposalWaiter {
  readonly ack: ProposeAck;
  readonly deadlineMs: number;
  readonly resolve: (ack: ProposeAck) => void;
  readonly reject: (err: Error) => void;
}

/** Proposals waiting for commit and apply, keyed by their last index. */
export class ProposalWaiters {
  private readonly waiters = new Map<number, ProposalWaiter>();

  get size(): number {
    return this.waiters.size;
  }

  /**
   * Adds a waiter. A proposal accepted at `ack.term` proves every earlier leadership of this
   * node over, so waiters of other terms are failed first; then all waiters share one term and
   * their indexes grow in insertion order.
   */
  add(waiter: ProposalWaiter, leaderId: NodeId | null): void {
    const first = this.waiters.values().next();
    if (first.done !== true && first.value.ack.term !== waiter.ack.term) {
      this.leadershipLost(leaderId);
    }
    this.waiters.set(waiter.ack.lastIndex, waiter);
  }

  /**
   * Entries up to `appliedIndex` were applied; `termAt` gives the term of each. A proposal whose
   * last entry was applied with its term succeeded; with another term it was replaced (the
   * entries of a deposed leader, Raft §5.3) and fails with NOT_LEADER.
   */
  applied(
    appliedIndex: number,
    termAt: (index: number) => number | undefined,
    leaderId: NodeId | null,
  ): void {
    for (const [lastIndex, waiter] of this.waiters) {
      if (lastIndex > appliedIndex) return;
      this.waiters.delete(lastIndex);
      if (termAt(lastIndex) === waiter.ack.term) waiter.resolve(waiter.ack);
      else waiter.reject(notLeader(leaderId, 'proposal replaced by another leader', false));
    }
  }

  /**
   * Leadership of `term` ended (or the node left the leader role): fail every waiter. Their
   * entries may still commit under a later leader, so the error says the outcome is unknown.
   */
  leadershipLost(leaderId: NodeId | null): void {
    const all = [...this.waiters.values()];
    this.waiters.clear();
    for (const waiter of all) {
      waiter.reject(notLeader(leaderId, 'leadership lost', true, waiter.ack.term));
    }
  }

  /** Fails waiters whose deadline passed with TIMEOUT. */
  expire(nowMs: number): void {
    for (const [lastIndex, waiter] of this.waiters) {
      if (waiter.deadlineMs > nowMs) return;
      this.waiters.delete(lastIndex);
      waiter.reject(
        new RaftmqError('TIMEOUT', 'proposal not committed in time', {
          details: { index: lastIndex, term: waiter.ack.term },
        }),
      );
    }
  }

  /**
   * Fails every waiter because the driver stopped with `cause` (closed, or a fatal store
   * error). An entry already sent to followers may still commit under the next leader, so the
   * error is TIMEOUT, "may or may not have taken effect", with `maybeCommitted` and the
   * proposal's term: a definite error for such an entry made clients send it again, and the
   * message was stored twice behind one acknowledgement (a leader whose disk filled up).
   */
  failAllInDoubt(cause: Error): void {
    const all = [...this.waiters.entries()];
    this.waiters.clear();
    for (const [lastIndex, waiter] of all) {
      waiter.reject(
        new RaftmqError(
          'TIMEOUT',
          `raft: this node stopped (${cause.message}) before the entry was known to be ` +
            'committed; it may or may not have taken effect',
          {
            details: { index: lastIndex, term: waiter.ack.term, maybeCommitted: true },
            cause,
          },
        ),
      );
    }
  }
}

/**
 * NOT_LEADER naming the leader; `maybeCommitted` says whether the entry may still commit, and
 * `term` (with it) the term it was proposed in, which a caller settling it waits past.
 */
export function notLeader(
  leaderId: NodeId | null,
  reason: string,
  maybeCommitted: boolean,
  term?: number,
): RaftmqError {
  return new RaftmqError('NOT_LEADER', `raft: ${reason}`, {
    details: term === undefined ? { leaderId, maybeCommitted } : { leaderId, maybeCommitted, term },
  });
}

interface ReadWaiter {
  readonly deadlineMs: number;
  /** The confirmed read point, once known. */
  index: number | undefined;
  readonly resolve: (index: LogIndex) => void;
  readonly reject: (err: Error) => void;
}

/** Reads waiting for their ReadIndex, keyed by request id. */
export class ReadWaiters {
  private readonly waiters = new Map<string, ReadWaiter>();
  private confirmedCount = 0;

  get size(): number {
    return this.waiters.size;
  }

  add(requestId: string, waiter: ReadWaiter): void {
    this.waiters.set(requestId, waiter);
  }

  /** The leader confirmed the read point of `requestId` (a read state of a Ready). */
  confirmed(requestId: string, index: number): void {
    const waiter = this.waiters.get(requestId);
    if (waiter === undefined || waiter.index !== undefined) return;
    waiter.index = index;
    this.confirmedCount += 1;
  }

  /** Serves every confirmed read whose point is applied. */
  applied(appliedIndex: number): void {
    if (this.confirmedCount === 0) return;
    for (const [requestId, waiter] of this.waiters) {
      if (waiter.index === undefined || waiter.index > appliedIndex) continue;
      this.waiters.delete(requestId);
      this.confirmedCount -= 1;
      waiter.resolve(waiter.index as LogIndex);
    }
  }

  /**
   * Leadership ended: the core dropped the unconfirmed reads, so fail them. Confirmed reads stay:
   * their point was confirmed while leader, so serving them once applied is still linearizable.
   */
  leadershipLost(leaderId: NodeId | null): void {
    for (const [requestId, waiter] of this.waiters) {
      if (waiter.index !== undefined) continue;
      this.waiters.delete(requestId);
      waiter.reject(notLeader(leaderId, 'leadership lost before the read was confirmed', false));
    }
  }

  expire(nowMs: number): void {
    for (const [requestId, waiter] of this.waiters) {
      if (waiter.deadlineMs > nowMs) return;
      this.waiters.delete(requestId);
      if (waiter.index !== undefined) this.confirmedCount -= 1;
      waiter.reject(
        new RaftmqError('TIMEOUT', 'read not served in time', {
          details: { requestId },
        }),
      );
    }
  }

  failAll(err: Error): void {
    const all = [...this.waiters.values()];
    this.waiters.clear();
    this.confirmedCount = 0;
    for (const waiter of all) waiter.reject(err);
  }
}
