/**
 * RaftNode: one member of a Raft group as a pure, deterministic state machine, in the shape of
 * etcd's RawNode. Inputs: `tick()`, `step(message)`, `propose()`, `readIndex()`,
 * `transferLeadership()`, `entriesLoaded()`. Output: `ready()` batches, each acknowledged with
 * `advance()`; the contract is on {@link Ready}: persist, then send, then apply, then advance.
 *
 * Between `ready()` and `advance()` the driver may keep stepping messages and ticking (their
 * output goes into the next Ready), but must not ask for another Ready.
 *
 * Terms are checked in one place, `step()`, before the role's own step function runs.
 */
import { assert } from '../common/assert';
import {
  asLogIndex, asTerm, type LogIndex, type NodeId, type Term,
} from '../common/types';
import { resolveRaftConfig, type RaftConfig, type RaftConfigInput } from './config';
import { answerVoteRequest, campaign } from './election';
import { isWellFormed } from './message-check';
import type { ProgressState } from './progress';
import { RaftCore } from './raft-core';
import { afterLeaderCommit, maybeCommit, onEntriesLoaded, sendProposed, startReads }
  from './replicator';
import { stepCandidate } from './step-candidate';
import { stepFollower } from './step-follower';
import { startTransfer, stepLeader } from './step-leader';
import { tick } from './ticker';
import {
  ENTRY_OVERHEAD_BYTES, type Entry, type HardState, type Message, type ProposeResult,
  type RaftRefusal, type RaftRequestResult, type RaftRole, type RaftStats,
  type RaftStorageState, type Ready, type SoftState,
} from './types';

/** A snapshot of a node's state for status pages, logs and tests. */
/** A follower's replication state as the leader sees it. */
export interface FollowerProgress {
  readonly match: number;
  readonly next: number;
  readonly state: ProgressState;
  /** Heard from since the last CheckQuorum round. */
  readonly recentActive: boolean;
}

export interface RaftStatus {
  readonly id: NodeId;
  readonly role: RaftRole;
  readonly term: Term;
  readonly vote: NodeId | null;
  readonly leaderId: NodeId | null;
  readonly commitIndex: LogIndex;
  readonly appliedIndex: LogIndex;
  readonly lastIndex: LogIndex;
  readonly durableIndex: LogIndex;
  /** The first index of the log (raised by `compact()`). */
  readonly firstIndex: LogIndex;
  readonly transferee: NodeId | null;
  /** The oldest durable entry still held in memory (the entry cache); null when none is. */
  readonly cachedFirstIndex: LogIndex | null;
  /** Leader only: each follower's replication state. */
  readonly progress: ReadonlyMap<NodeId, FollowerProgress>;
}

/** One Raft group member; see the file comment for the contract. */
export class RaftNode {
  readonly config: RaftConfig;
  private readonly core: RaftCore;
  private outstanding: Ready | null = null;
  private lastHardState: HardState;
  private lastSoftState: SoftState;

  constructor(config: RaftConfigInput, storage: RaftStorageState) {
    this.config = resolveRaftConfig(config);
    this.core = new RaftCore(this.config, storage);
    this.lastHardState = storage.hardState;
    this.lastSoftState = this.softState();
  }

  /** Counters of ignored input; read-only for callers. */
  get stats(): Readonly<RaftStats> {
    return this.core.stats;
  }

  status(): RaftStatus {
    const core = this.core;
    const progress = new Map<NodeId, FollowerProgress>();
    for (const [peer, p] of core.progress) {
      progress.set(peer, { match: p.match, next: p.next, state: p.state,
        recentActive: p.recentActive });
    }
    return {
      id: core.id,
      role: core.role,
      term: asTerm(core.term),
      vote: core.vote,
      leaderId: core.leaderId,
      commitIndex: asLogIndex(core.log.committed),
      appliedIndex: asLogIndex(core.log.applied),
      lastIndex: asLogIndex(core.log.lastIndex()),
      durableIndex: asLogIndex(core.log.durableIndex),
      firstIndex: asLogIndex(core.log.firstIndex),
      transferee: core.transferee,
      cachedFirstIndex: core.log.cachedFirstIndex(),
      progress,
    };
  }

  /** Leader only: the replication state of follower `peer`; undefined on any other node. */
  followerState(peer: NodeId): ProgressState | undefined {
    return this.core.progress.get(peer)?.state;
  }

  /** Advances logical time by one tick. */
  tick(): void {
    tick(this.core);
  }

  /** Starts an election now (through PreVote when enabled); a leader ignores it. */
  campaign(): void {
    campaign(this.core, this.config.preVote ? 'preElection' : 'election');
  }

  /**
   * Feeds in a message from a peer. Malformed messages, messages from unknown ids and messages
   * out of protocol are dropped and counted in `stats`; this never throws for bad input.
   */
  step(message: Message): void {
    const core = this.core;
    if (!isWellFormed(message)) {
      core.stats.messagesMalformed += 1;
      return;
    }
    if (message.to !== core.id || message.from === core.id || !core.others.includes(message.from)) {
      core.stats.messagesFromUnknownPeer += 1;
      return;
    }
    if (message.term > core.term) {
      if (!this.onHigherTerm(message)) return;
    } else if (message.term < core.term) {
      this.onLowerTerm(message);
      return;
    }
    switch (message.type) {
      case 'PreVote':
      case 'Vote':
        answerVoteRequest(core, message);
        return;
      default:
        break;
    }
    switch (core.role) {
      case 'follower': stepFollower(core, message); return;
      case 'preCandidate':
      case 'candidate': stepCandidate(core, message); return;
      case 'leader': stepLeader(core, message); return;
    }
  }

  /** A message from a later term; returns false when it is to be ignored. */
  private onHigherTerm(message: Message): boolean {
    const core = this.core;
    if (message.type === 'TimeoutNow') {
      // A leader sends TimeoutNow only to a follower that acknowledged its Appends, so of that
      // follower's term: one of a later term is not from an honest leader (thesis §3.10).
      core.stats.messagesUnexpected += 1;
      return false;
    }
    if (message.type === 'PreVote' || message.type === 'Vote') {
      // Leader stickiness (thesis §4.2.3): while a live leader is known, disruptive (pre)votes
      // are ignored, except a campaign a leader asked for with TimeoutNow.
      const forced = message.type === 'Vote' && message.transfer;
      const inLease = this.config.checkQuorum && core.leaderId !== null
        && core.electionElapsedTicks < this.config.electionTimeoutTicks;
      if (inLease && !forced) {
        core.stats.voteRequestsInLease += 1;
        return false;
      }
    }
    // A pre-vote and a granted pre-vote answer carry a proposed term, not a real one.
    if (message.type === 'PreVote' || (message.type === 'PreVoteResp' && !message.reject)) {
      return true;
    }
    const fromLeader = message.type === 'Append' || message.type === 'Heartbeat';
    core.becomeFollower(message.term, fromLeader ? message.from : null);
    return true;
  }

  /** A message from an earlier term: dropped, but its sender may need to learn our term. */
  private onLowerTerm(message: Message): void {
    const core = this.core;
    core.stats.messagesStaleTerm += 1;
    const fromLeader = message.type === 'Append' || message.type === 'Heartbeat';
    if (fromLeader && (this.config.checkQuorum || this.config.preVote)) {
      // With CheckQuorum or PreVote our term may never reach a stale leader through votes, so
      // tell it directly; it steps down on seeing the later term.
      core.send(core.appendResp(message.from, true, 0, 0, 0, 0));
    } else if (message.type === 'PreVote') {
      core.send({ ...core.envelope(message.from), type: 'PreVoteResp', reject: true });
    }
  }

  private refuse(code: RaftRefusal['code'], reason: string): RaftRefusal {
    return { ok: false, code, leaderId: this.core.leaderId, reason };
  }

  /**
   * Appends client data as new entries (leader only). Refuses with NOT_LEADER (naming the
   * leader when known), or BUSY while a leadership transfer runs or while the uncommitted
   * bytes are at their bound. Success means appended, not committed: the entries are committed
   * when they show up in `committedEntries` at the returned indexes with the returned term.
   */
  propose(payloads: readonly Uint8Array[]): ProposeResult {
    const core = this.core;
    if (payloads.length === 0 || payloads.length > this.config.batchEntriesMax) {
      return this.refuse('INVALID_ARGUMENT',
        `a proposal must hold 1 to ${this.config.batchEntriesMax} entries`);
    }
    if (core.role !== 'leader') return this.refuse('NOT_LEADER', 'not the leader');
    if (core.transferee !== null) {
      return { ...this.refuse('BUSY', 'leadership transfer in progress'), transferring: true };
    }
    let bytes = 0;
    for (const data of payloads) bytes += data.length + ENTRY_OVERHEAD_BYTES;
    const uncommittedBytes = core.uncommittedBytes;
    if (uncommittedBytes > 0 && uncommittedBytes + bytes > this.config.uncommittedBytesMax) {
      return this.refuse('BUSY', 'too many uncommitted bytes');
    }
    const entries = core.log.appendNew(core.term, 'normal', payloads);
    const first = entries[0];
    const last = entries[entries.length - 1];
    assert(first !== undefined && last !== undefined, 'raft: nothing appended');
    core.trackUncommitted(last.index, bytes);
    for (const peer of core.others) sendProposed(core, peer, bytes);
    return { ok: true, firstIndex: first.index, lastIndex: last.index, term: asTerm(core.term) };
  }

  /**
   * Asks for a linearizable read point (leader only, thesis §6.4). A `readStates` entry with this
   * id comes out once leadership is confirmed; reads still pending when leadership is lost are
   * dropped (the driver fails them on the role change in `softState`).
   */
  readIndex(requestId: string): RaftRequestResult {
    const core = this.core;
    if (core.role !== 'leader') return this.refuse('NOT_LEADER', 'not the leader');
    if (core.reads.size() >= this.config.readIndexPendingMax) {
      return this.refuse('BUSY', 'too many pending reads');
    }
    if (core.committedInCurrentTerm()) startReads(core, [requestId]);
    else core.reads.addWaitingForCommit(requestId);
    return { ok: true };
  }

  /** Hands leadership to voter `to` (thesis §3.10); leader only. */
  transferLeadership(to: NodeId): RaftRequestResult {
    const core = this.core;
    if (core.role !== 'leader') return this.refuse('NOT_LEADER', 'not the leader');
    if (to === core.id) return { ok: true };
    if (!core.others.includes(to)) return this.refuse('INVALID_ARGUMENT', `unknown voter ${to}`);
    startTransfer(core, to);
    return { ok: true };
  }

  /**
   * The driver will remove the store's entries below `index` (etcd's storage `Compact`): the
   * core stops asking for them, and a follower that still needs one is named in
   * `snapshotsNeeded`. Allowed only for applied and durable entries (`index <= applied + 1`,
   * `index <= durableIndex + 1`), else refused with INVALID_ARGUMENT; an index at or below
   * the first index is a no-op. Call it between Readys; loads the driver answers later for
   * entries below `index` are discarded (their terms no longer match).
   */
  compact(index: LogIndex): RaftRequestResult {
    const log = this.core.log;
    if (index <= log.firstIndex) return { ok: true };
    if (index > log.applied + 1 || index > log.durableIndex + 1) {
      return this.refuse('INVALID_ARGUMENT', `cannot compact to ${index}: applied `
        + `${log.applied}, durable ${log.durableIndex}`);
    }
    log.compact(index);
    return { ok: true };
  }

  /** The driver's answer to a load in a Ready (see {@link LoadRequest}). */
  entriesLoaded(peer: NodeId, entries: readonly Entry[]): void {
    const core = this.core;
    if (peer === core.id) {
      if (!core.log.offerLoadedForApply(entries)) core.stats.loadsDiscarded += 1;
      return;
    }
    assert(core.others.includes(peer), () => `raft: entries loaded for unknown peer ${peer}`);
    onEntriesLoaded(core, peer, entries);
  }

  private softState(): SoftState {
    const core = this.core;
    return { role: core.role, leaderId: core.leaderId, term: asTerm(core.term) };
  }

  private hardState(): HardState {
    const core = this.core;
    return { term: asTerm(core.term), vote: core.vote, commit: core.commitIndex() };
  }

  /** True when `ready()` has something to do; false while a Ready is outstanding. */
  hasReady(): boolean {
    if (this.outstanding !== null) return false;
    const core = this.core;
    return core.messages.length > 0 || core.messagesAfterPersist.length > 0
      || core.loads.length > 0 || core.readStates.length > 0 || core.snapshotsNeeded.size > 0
      || core.log.hasUnstableToHandOut() || core.log.hasCommittedToApply()
      || !sameHardState(this.hardState(), this.lastHardState)
      || !sameSoftState(this.softState(), this.lastSoftState);
  }

  /** The next batch of work; the driver must `advance()` it before asking again. */
  ready(): Ready {
    assert(this.outstanding === null, 'raft: ready() before advance() of the previous Ready');
    const core = this.core;
    const hardState = this.hardState();
    const { entries, truncateFrom } = core.log.handOutUnstable();
    // A leader's own new entries need not be durable before the Ready goes on (thesis §10.2.1):
    // it counts itself toward commitment only once the driver reports them durable. Anything
    // that promises durable state (term, vote, acknowledgements) keeps the classic contract.
    const durableLater =
      this.config.leaderWritesAsync && core.role === 'leader' && entries.length > 0
      && truncateFrom === undefined && core.messagesAfterPersist.length === 0
      && hardState.term === this.lastHardState.term && hardState.vote === this.lastHardState.vote;
    const last = entries[entries.length - 1];
    if (last !== undefined && !durableLater) core.log.durableBefore(last.index);
    let committedEntries = core.log.handOutCommitted(this.config.batchEntriesMax,
      this.config.batchBytesMax);
    if (committedEntries === undefined) {
      committedEntries = [];
      if (!core.log.applyLoadPending) {
        core.log.applyLoadPending = true;
        core.loads.push({
          peer: core.id, fromIndex: asLogIndex(core.log.nextApplyIndex()),
          countMax: this.config.batchEntriesMax, bytesMax: this.config.batchBytesMax,
        });
      }
    }
    const softState = this.softState();
    // Every field present (undefined when absent): one shape for every Ready, where spreading
    // the optional ones in made up to sixteen, and the driver's reads of them megamorphic.
    const ready: Ready = {
      durableLater: durableLater ? true : undefined,
      hardState: sameHardState(hardState, this.lastHardState) ? undefined : hardState,
      softState: sameSoftState(softState, this.lastSoftState) ? undefined : softState,
      truncateFrom: truncateFrom === undefined ? undefined : asLogIndex(truncateFrom),
      entries,
      messages: core.messages,
      messagesAfterPersist: core.messagesAfterPersist,
      committedEntries,
      readStates: core.readStates,
      loads: core.loads,
      snapshotsNeeded: [...core.snapshotsNeeded],
    };
    core.messages = [];
    core.messagesAfterPersist = [];
    core.readStates = [];
    core.loads = [];
    core.snapshotsNeeded = new Set();
    this.lastHardState = hardState;
    this.lastSoftState = softState;
    this.outstanding = ready;
    return ready;
  }

  /**
   * The driver persisted (unless `ready.durableLater`), sent and applied `ready`. A leader now
   * counts its newly durable entries toward commitment (thesis §10.2.1).
   */
  advance(ready: Ready): void {
    assert(ready === this.outstanding, 'raft: advance() of a Ready that is not outstanding');
    const core = this.core;
    if (ready.durableLater !== true && ready.entries.length > 0) {
      core.log.persisted(ready.entries);
      // Written in order: everything handed out before is durable too.
      assert(core.log.handedOut === 0, 'raft: handed-out entries left unstable');
    }
    core.log.readyDone();
    core.log.appliedAll();
    this.outstanding = null;
    if (core.role === 'leader' && maybeCommit(core)) afterLeaderCommit(core);
    core.log.releaseCached(heldByOthers(core));
  }

  /**
   * The entries of a `durableLater` Ready (and all written before them) are durable now. May
   * be called at any time, also after a role change; entries since superseded are ignored.
   */
  entriesDurable(entries: readonly Entry[]): void {
    const core = this.core;
    core.log.persisted(entries);
    if (core.role === 'leader' && maybeCommit(core)) afterLeaderCommit(core);
  }
}

/**
 * The last index no other node may ask this one for: on a leader the lowest match of its
 * followers; on any other node (it serves nobody) its whole log.
 */
function heldByOthers(core: RaftCore): number {
  let lowest = core.log.lastIndex();
  if (core.role !== 'leader') return lowest;
  for (const progress of core.progress.values()) lowest = Math.min(lowest, progress.match);
  return lowest;
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function sameSoftState(a: SoftState, b: SoftState): boolean {
  return a.role === b.role && a.leaderId === b.leaderId && a.term === b.term;
}
