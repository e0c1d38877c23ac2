/**
 * The state of one Raft node and the role transitions every part of the core shares. The
 * protocol logic lives in the modules that take a RaftCore: election.ts (campaigns and votes),
 * replicator.ts (the leader's side of log replication), the role step functions, and
 * raft-node.ts (the public RawNode-style API, which is the only way in).
 */
import { assert } from '../common/assert';
import { asLogIndex, asTerm, type LogIndex, type NodeId, type Term } from '../common/types';
import type { RaftConfig } from './config';
import { Progress } from './progress';
import { RaftLog } from './raft-log';
import { ReadIndexQueue } from './read-index';
import {
  TERM_MAX, type AppendRespMessage, type LoadRequest, type Message, type RaftRole,
  type RaftStats, type RaftStorageState, type ReadState,
} from './types';

/** Election timeouts a leader waits after a failed hand-off before trying the preferred leader. */
const PREFERRED_RETRY_TIMEOUTS = 4;
/** The hold doubles with each hand-off failed in a row, at most this many times (x32). */
const PREFERRED_BACKOFF_DOUBLINGS_MAX = 5;

/** The envelope fields of a message from this node. */
export interface Envelope {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: Term;
}

/** Everything one node knows; mutated only by the core's own modules. */
export class RaftCore {
  readonly id: NodeId;
  /** Every voter, this node included. */
  readonly voters: readonly NodeId[];
  /** Every voter but this node. */
  readonly others: readonly NodeId[];
  readonly log: RaftLog;
  readonly stats: RaftStats = {
    messagesFromUnknownPeer: 0,
    messagesMalformed: 0,
    messagesStaleTerm: 0,
    messagesUnexpected: 0,
    voteRequestsInLease: 0,
    loadsDiscarded: 0,
    campaignsRefusedTermMax: 0,
  };

  term: number;
  vote: NodeId | null;
  role: RaftRole = 'follower';
  leaderId: NodeId | null = null;

  /** Ticks since the last reset: leader contact (followers) or the last check (leaders). */
  electionElapsedTicks = 0;
  heartbeatElapsedTicks = 0;
  randomizedElectionTimeoutTicks = 0;

  /** Votes received in the current (pre-)campaign. */
  readonly votes = new Map<NodeId, boolean>();
  /** Per-follower replication state; filled only while leader. */
  readonly progress = new Map<NodeId, Progress>();
  /** The follower leadership is being handed to, if any (thesis §3.10). */
  transferee: NodeId | null = null;
  /**
   * Ticks before the leader may try the preferred leader again after a failed hand-off; counted
   * down only while leader, and kept across role changes, so a hold from an earlier leadership
   * goes on in the next one.
   */
  preferredTransferHoldTicks = 0;
  /**
   * This node handed leadership to the preferred leader and has not seen it lead since; and how
   * many hand-offs in a row failed (aborted, or this node leading again after one). Kept across
   * role changes: a preferred leader that reaches the leader but not a majority of voters wins
   * no election, and without a growing hold the leader handed off to it again each time it was
   * re-elected, a few heartbeats later, leaving the group without a leader most of the time.
   */
  handedOffToPreferred = false;
  preferredHandoffsFailed = 0;
  readonly reads = new ReadIndexQueue();

  /** (last index, bytes) of each proposal not yet committed, oldest first. */
  private uncommitted: { lastIndex: number; bytes: number }[] = [];
  private uncommittedBytesNow = 0;

  // The outbox, drained into each Ready.
  messages: Message[] = [];
  messagesAfterPersist: Message[] = [];
  loads: LoadRequest[] = [];
  readStates: ReadState[] = [];
  snapshotsNeeded = new Set<NodeId>();

  constructor(readonly cfg: RaftConfig, storage: RaftStorageState) {
    this.id = cfg.id;
    this.voters = cfg.peers;
    this.others = cfg.peers.filter((peer) => peer !== cfg.id);
    this.log = new RaftLog(storage, cfg.entryCacheBytesMax);
    this.term = storage.hardState.term;
    this.vote = storage.hardState.vote;
    assert(this.vote === null || this.voters.includes(this.vote),
      () => `raft: stored vote for unknown node ${String(this.vote)}`);
    assert(this.log.lastTerm() <= this.term, 'raft: log holds a term beyond the stored term');
    this.resetElectionTimer();
  }

  envelope(to: NodeId, term: number = this.term): Envelope {
    return { from: this.id, to, term: asTerm(term) };
  }

  /**
   * An AppendResp to `to` in this term. One literal rather than `envelope()` spread into one:
   * a follower sends it every round, and a spread is a slow clone in V8 where a literal makes
   * one fixed shape.
   */
  appendResp(to: NodeId, reject: boolean, matchIndex: number, rejectedIndex: number,
    hintTerm: number, hintIndex: number): AppendRespMessage {
    return { from: this.id, to, term: asTerm(this.term), type: 'AppendResp', reject,
      matchIndex: asLogIndex(matchIndex), rejectedIndex: asLogIndex(rejectedIndex),
      hintTerm: asTerm(hintTerm), hintIndex: asLogIndex(hintIndex) };
  }

  /** Queues a message that does not depend on unpersisted state. */
  send(message: Message): void {
    this.messages.push(message);
  }

  /** Queues a message that promises durable state: sent only after the Ready is persisted. */
  sendAfterPersist(message: Message): void {
    this.messagesAfterPersist.push(message);
  }

  resetElectionTimer(): void {
    this.electionElapsedTicks = 0;
    const timeout = this.cfg.electionTimeoutTicks;
    this.randomizedElectionTimeoutTicks = this.cfg.prng.nextInt(timeout, 2 * timeout);
  }

  /** Common reset on every role change; a new term clears the vote. */
  private reset(term: number): void {
    assert(term >= this.term, 'raft: term must not fall');
    assert(term === this.term || term <= TERM_MAX, 'raft: term beyond TERM_MAX');
    if (term !== this.term) {
      this.term = term;
      this.vote = null;
    }
    this.leaderId = null;
    this.heartbeatElapsedTicks = 0;
    this.resetElectionTimer();
    this.votes.clear();
    this.progress.clear();
    this.transferee = null;
    this.reads.reset();
    this.uncommitted = [];
    this.uncommittedBytesNow = 0;
  }

  becomeFollower(term: number, leaderId: NodeId | null): void {
    this.reset(term);
    this.role = 'follower';
    if (leaderId !== null) this.followLeader(leaderId);
  }

  /** Records the leader this follower hears from; the preferred leader leading ends the hold. */
  followLeader(leaderId: NodeId): void {
    this.leaderId = leaderId;
    if (leaderId === this.cfg.preferredLeaderId) {
      this.handedOffToPreferred = false;
      this.preferredHandoffsFailed = 0;
      this.preferredTransferHoldTicks = 0;
    }
  }

  /** A hand-off to the preferred leader failed: hold the next one back, twice as long each time. */
  notePreferredHandoffFailed(): void {
    this.handedOffToPreferred = false;
    this.preferredHandoffsFailed += 1;
    const doublings = Math.min(this.preferredHandoffsFailed - 1, PREFERRED_BACKOFF_DOUBLINGS_MAX);
    this.preferredTransferHoldTicks =
      PREFERRED_RETRY_TIMEOUTS * this.cfg.electionTimeoutTicks * 2 ** doublings;
  }

  /** PreVote (thesis §9.6): campaign without touching term or vote. */
  becomePreCandidate(): void {
    assert(this.role !== 'leader', 'raft: a leader cannot become a pre-candidate');
    this.reset(this.term);
    this.role = 'preCandidate';
  }

  becomeCandidate(): void {
    assert(this.role !== 'leader', 'raft: a leader cannot become a candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  /** Takes leadership and appends the no-op of the new term (thesis §6.4, Raft §5.4.2). */
  becomeLeader(): void {
    assert(this.role === 'candidate', 'raft: only a candidate becomes leader');
    this.reset(this.term);
    this.role = 'leader';
    this.leaderId = this.id;
    // Leading again after handing off to the preferred leader: that hand-off did not work.
    if (this.handedOffToPreferred) this.notePreferredHandoffFailed();
    const next = this.log.lastIndex() + 1;
    for (const peer of this.others) {
      this.progress.set(peer, new Progress(next, this.cfg.inflightCountMax,
        this.cfg.inflightBytesMax));
    }
    const [noop] = this.log.appendNew(this.term, 'noop', [new Uint8Array(0)]);
    assert(noop !== undefined, 'raft: no-op not appended');
    this.trackUncommitted(noop.index, 0);
  }

  /** The progress of follower `peer`; only while leader. */
  progressOf(peer: NodeId): Progress {
    const progress = this.progress.get(peer);
    assert(progress !== undefined, () => `raft: no progress for ${peer}`);
    return progress;
  }

  /** True once an entry of the current term is committed (so the no-op is). */
  committedInCurrentTerm(): boolean {
    return this.log.termAt(this.log.committed) === this.term;
  }

  /** Bytes proposed in this term and not yet committed. */
  get uncommittedBytes(): number {
    return this.uncommittedBytesNow;
  }

  trackUncommitted(lastIndex: number, bytes: number): void {
    this.uncommitted.push({ lastIndex, bytes });
    this.uncommittedBytesNow += bytes;
  }

  /** Forgets proposals the commit index has passed. */
  releaseCommitted(): void {
    while ((this.uncommitted[0]?.lastIndex ?? Infinity) <= this.log.committed) {
      const done = this.uncommitted.shift();
      if (done !== undefined) this.uncommittedBytesNow -= done.bytes;
    }
  }

  /** The commit index as a branded value. */
  commitIndex(): LogIndex {
    return asLogIndex(this.log.committed);
  }
}
