/**
 * RaftDriver: the only code that drives the Raft core and does its IO. It ticks the core on a
 * Scheduler, feeds it the transport's messages, and works through its Ready batches one at a
 * time, in the order the `Ready` contract gives (src/raft/types.ts):
 *
 * 1. send `messages` at once (they promise nothing durable; thesis §10.2.1 lets a leader write
 *    its log in parallel with replicating it). When the entries need no earlier write (no new
 *    term or vote, no truncation), they are handed to the CommitLog just before: appending
 *    computes each record's checksum, which the Appends among the messages carry to the
 *    followers (raft-append-wire.ts);
 * 2. persist: a changed term/vote is written to the metadata store with sync first (so the
 *    log never holds a term the hard state does not), then the log suffix is truncated if asked,
 *    the entries are appended to the CommitLog and waited for until persisted; the commit index
 *    is then written lazily in the background, at most once every 10 ticks (see
 *    {@link RaftDriver.scheduleCommitWrite});
 * 3. send `messagesAfterPersist` (votes, append acknowledgements: thesis §3.8);
 * 4. apply `committedEntries` in order through the `apply` callback, then resolve the proposals
 *    and reads they complete;
 * 5. `advance()`, then serve `loads` from the CommitLog in the background.
 *
 * Messages and ticks that arrive while a Ready is handled go into the core at once (it accepts
 * them between `ready()` and `advance()`); the loop picks up their output next round.
 *
 * Any failure to persist or apply stops the driver for good: nothing that depends on state it
 * could not make durable ever leaves it, every waiter fails, and `onFatal`/`stopped` report the
 * error to the owner (which ends the process in production; the simulator records it).
 */
import { AssertionFailure, assert } from '../common/assert';
import type { Clock, Scheduler } from '../common/clock';
import { RaftmqError, isRaftmqError } from '../common/errors';
import { type Logger, silentLogger } from '../common/logger';
import type { Prng } from '../common/prng';
import { asLogIndex, type LogIndex, type NodeId } from '../common/types';
import type { RaftTunables } from '../raft/config';
import { RaftNode, type RaftStatus } from '../raft/raft-node';
import {
  refusalToError,
  type Entry,
  type HardState,
  type LoadRequest,
  type Message,
  type RaftStats,
  type Ready,
  type SoftState,
} from '../raft/types';
import type { CommitLog } from '../store/commit-log';
import type { SyncStats } from '../store/commit-log-writer';
import type { LogEntry } from '../store/log-record';
import { MetaKeys, putOp, type MetaStore } from '../store/meta';
import { type RaftDriverOptions, resolveRaftDriverOptions } from './raft-driver-options';
import { fromLogEntry, toLogEntry } from './raft-entry-codec';
import { hardStateCodec } from './raft-hard-state';
import { loadRaftStorageState } from './raft-storage-state';
import { ProposalWaiters, ReadWaiters, type ProposeAck } from './raft-waiters';
import type { RaftTransport } from './transport';

export type { ProposeAck } from './raft-waiters';

/** The core's count of the peer messages it ignored, for whatever reason. */
function ignoredMessages(stats: Readonly<RaftStats>): number {
  return (
    stats.messagesMalformed +
    stats.messagesFromUnknownPeer +
    stats.messagesStaleTerm +
    stats.messagesUnexpected +
    stats.voteRequestsInLease
  );
}

/** Readies handled per run of the loop before it yields to the event loop once. */
const READY_ROUNDS_PER_RUN_MAX = 64;
/**
 * Ticks between two starts of the background commit-index write, at least (10: twice a second
 * with the default tick). The stored commit index is a hint for a restart; a write costs a
 * metadata round trip (measured: 1-2% of a node's CPU at one write per tick).
 */
const COMMIT_WRITE_INTERVAL_TICKS = 10;
/** Loads served per run of the load worker before it starts over. */
const LOADS_PER_RUN_MAX = 64;
/**
 * A leader's writes whose durability it has not waited for (`Ready.durableLater`), at most, in
 * count and bytes; past either, the loop waits for the oldest before going on, so that a slow
 * disk holds the leader back instead of filling the CommitLog's write buffer.
 */
export const LATER_WRITES_MAX = 16;
export const LATER_WRITE_BYTES_MAX = 32 * 1024 * 1024;

/** Everything a driver needs. */
export interface RaftDriverDeps {
  readonly id: NodeId;
  /** Every voter of the group, this node included. */
  readonly peers: readonly NodeId[];
  readonly raft?: Partial<RaftTunables>;
  readonly commitLog: CommitLog;
  readonly meta: MetaStore;
  readonly transport: RaftTransport;
  readonly scheduler: Scheduler;
  readonly clock: Clock;
  readonly prng: Prng;
  readonly logger?: Logger;
  /** Applies committed entries, in order; a rejection stops the driver. */
  readonly apply: (entries: readonly LogEntry[]) => Promise<void>;
  /** The state machine's applied index at start (entries after it are applied again). */
  readonly appliedIndex?: number;
  /** Called once when the driver stops on a failure. */
  readonly onFatal?: (err: Error) => void;
  /** Called when role, leader or term change (for routing and observers). */
  readonly onSoftState?: (softState: SoftState) => void;
  readonly options?: Partial<RaftDriverOptions>;
}

/** The core's status plus the driver's own. */
export interface RaftDriverStatus extends RaftStatus {
  readonly persistedIndex: number;
  readonly stopped: boolean;
  readonly fatal: string | null;
  readonly proposalsPending: number;
  readonly readsPending: number;
}

/** One Raft group member with its IO; see the file comment. */
export class RaftDriver {
  readonly id: NodeId;
  readonly options: Readonly<RaftDriverOptions>;
  /** Resolves when the driver stops: with the fatal error, or undefined after `close()`. */
  readonly stopped: Promise<Error | undefined>;
  private readonly log: Logger;
  private readonly proposals = new ProposalWaiters();
  private readonly reads = new ReadWaiters();
  /** Loads waiting to be served, at most one per peer (a newer one replaces it). */
  private readonly loadQueue = new Map<NodeId, LoadRequest>();
  private loadWorker: Promise<void> | undefined;
  /** The load being read from the CommitLog now, if any. */
  private loadServing: { readonly fromIndex: number; readonly done: Promise<void> } | undefined;
  /** Work that must run between two Readys (compactions); see {@link compact}. */
  private readonly betweenReadys: (() => void)[] = [];
  /** Followers `snapshot needed` was logged for, until they replicate again. */
  private readonly warnedSnapshotPeers = new Set<NodeId>();
  private warnedTermMax = false;
  private resolveStopped: (err: Error | undefined) => void = () => undefined;
  private stopTick: () => void = () => undefined;
  private durableHardState: HardState;
  private softState: SoftState;
  private appliedIndex: number;
  /** The commit index waiting to be written by the background commit writer. */
  private commitToWrite: LogIndex | undefined;
  /** The background commit writer while it runs (one metadata write in flight at most). */
  private commitWriter: Promise<void> | undefined;
  /** `COMMIT_WRITE_INTERVAL_TICKS` passed since the commit writer last started. */
  private commitWriteDue = true;
  private ticksSinceCommitWrite = 0;
  /** The leader's writes not yet durable (`Ready.durableLater`), oldest first. */
  private readonly laterWrites: { readonly done: Promise<void>; readonly bytes: number }[] = [];
  private laterWriteBytes = 0;
  private loopDone: Promise<void> = Promise.resolve();
  private loopRunning = false;
  private closed = false;
  private fatal: Error | undefined;
  private readSeq = 0;

  private constructor(
    private readonly deps: RaftDriverDeps,
    private readonly node: RaftNode,
    hardState: HardState,
    appliedIndex: number,
  ) {
    this.id = deps.id;
    this.options = resolveRaftDriverOptions(deps.options);
    this.log = (deps.logger ?? silentLogger()).child({ component: 'raft', node: deps.id });
    this.stopped = new Promise((resolve) => {
      this.resolveStopped = resolve;
    });
    this.durableHardState = hardState;
    const status = node.status();
    this.softState = { role: status.role, leaderId: status.leaderId, term: status.term };
    this.appliedIndex = appliedIndex;
  }

  /**
   * Loads the hard state and the log bounds, builds the core and starts ticking. A hard state
   * that fails to decode is META_CORRUPT; one that contradicts the log is CORRUPT_LOG.
   */
  static async open(deps: RaftDriverDeps): Promise<RaftDriver> {
    const storage = await loadRaftStorageState(
      deps.meta,
      deps.commitLog,
      deps.peers,
      deps.appliedIndex,
    );
    const config = {
      leaderWritesAsync: true,
      ...deps.raft,
      id: deps.id,
      peers: deps.peers,
      prng: deps.prng,
    };
    const node = new RaftNode(config, storage);
    const driver = new RaftDriver(deps, node, storage.hardState, storage.appliedIndex);
    driver.start(storage.firstIndex, storage.lastIndex);
    return driver;
  }

  private start(firstIndex: number, lastIndex: number): void {
    const { term, vote, commit } = this.durableHardState;
    this.log.info({ term, vote, commit, firstIndex, lastIndex }, 'raft node started');
    for (const peer of this.deps.peers) {
      if (peer !== this.id && !this.deps.transport.peers().includes(peer)) {
        this.log.warn({ peer }, 'transport does not know a voter');
      }
    }
    this.deps.transport.setHandler((message) => this.onMessage(message));
    this.stopTick = this.deps.scheduler.every(this.options.tickIntervalMs, () => this.onTick());
    this.kick();
  }

  /**
   * Proposes entries (leader only). Resolves once they are committed and applied here; rejects
   * with NOT_LEADER (details: leaderId, maybeCommitted), BUSY, TIMEOUT or the fatal error.
   */
  propose(payloads: readonly Uint8Array[]): Promise<ProposeAck> {
    const refused = this.refuseWhenDown();
    if (refused !== undefined) return Promise.reject(refused);
    if (this.proposals.size >= this.options.proposeWaitersMax) {
      return Promise.reject(new RaftmqError('BUSY', 'too many proposals waiting'));
    }
    const result = this.node.propose(payloads);
    if (!result.ok) return Promise.reject(refusalToError(result));
    const ack: ProposeAck = {
      firstIndex: result.firstIndex,
      lastIndex: result.lastIndex,
      term: result.term,
    };
    const deadlineMs = this.deps.clock.monotonicMs() + this.options.proposeTimeoutMs;
    const promise = new Promise<ProposeAck>((resolve, reject) => {
      this.proposals.add({ ack, deadlineMs, resolve, reject }, this.softState.leaderId);
    });
    this.kick();
    return promise;
  }

  /** A linearizable read point (thesis §6.4): resolves with an index applied here. */
  readIndex(): Promise<LogIndex> {
    const refused = this.refuseWhenDown();
    if (refused !== undefined) return Promise.reject(refused);
    if (this.reads.size >= this.options.readWaitersMax) {
      return Promise.reject(new RaftmqError('BUSY', 'too many reads waiting'));
    }
    this.readSeq += 1;
    const requestId = `${this.id}/${this.readSeq}`;
    const result = this.node.readIndex(requestId);
    if (!result.ok) return Promise.reject(refusalToError(result));
    const deadlineMs = this.deps.clock.monotonicMs() + this.options.readIndexTimeoutMs;
    const promise = new Promise<LogIndex>((resolve, reject) => {
      this.reads.add(requestId, { deadlineMs, index: undefined, resolve, reject });
    });
    this.kick();
    return promise;
  }

  /** Starts handing leadership to `to` (thesis §3.10); throws NOT_LEADER or INVALID_ARGUMENT. */
  transferLeadership(to: NodeId): void {
    const refused = this.refuseWhenDown();
    if (refused !== undefined) throw refused;
    const result = this.node.transferLeadership(to);
    if (!result.ok) throw refusalToError(result);
    this.kick();
  }

  /**
   * Compacts the core to `index` (`RaftNode.compact`) so that the caller may then remove the
   * CommitLog's entries below it (`MessageStore.removeBefore`). Runs between two Readys, never
   * while one is handled; queued loads of entries below `index` are answered empty (the core
   * would discard them), and a load reading below it now is waited for. Once this resolves, no
   * load below `index` is in flight or will start. Rejects with INVALID_ARGUMENT when `index`
   * is beyond what is applied or durable here, or with the driver's fatal or closed error.
   */
  compact(index: number): Promise<void> {
    const refused = this.refuseWhenDown();
    if (refused !== undefined) return Promise.reject(refused);
    const compacted = new Promise<void>((resolve, reject) => {
      const run = (): void => {
        const down = this.refuseWhenDown();
        if (down !== undefined) {
          reject(down);
          return;
        }
        const result = this.node.compact(asLogIndex(index));
        if (!result.ok) {
          reject(refusalToError(result));
          return;
        }
        this.dropLoadsBefore(index);
        resolve();
      };
      if (this.loopRunning) this.betweenReadys.push(run);
      else run();
    });
    return compacted.then(async () => {
      const serving = this.loadServing;
      if (serving !== undefined && serving.fromIndex < index) await serving.done;
    });
  }

  /** Runs the work queued for the gap between two Readys (also to fail it when down). */
  private runBetweenReadys(): void {
    for (
      let run = this.betweenReadys.shift();
      run !== undefined;
      run = this.betweenReadys.shift()
    ) {
      run();
    }
  }

  /** Answers queued loads from below `index` with nothing: the core discards them anyway. */
  private dropLoadsBefore(index: number): void {
    for (const [peer, load] of [...this.loadQueue]) {
      if (load.fromIndex >= index) continue;
      this.loadQueue.delete(peer);
      this.node.entriesLoaded(peer, []);
    }
    this.kick();
  }

  /** The CommitLog's sync rounds so far (kept out of `status()`, which the simulator polls). */
  syncStats(): SyncStats {
    return this.deps.commitLog.syncStats();
  }

  status(): RaftDriverStatus {
    return {
      ...this.node.status(),
      persistedIndex: this.fatal === undefined ? this.deps.commitLog.persistedIndex() : -1,
      stopped: this.closed || this.fatal !== undefined,
      fatal: this.fatal === undefined ? null : this.fatal.message,
      proposalsPending: this.proposals.size,
      readsPending: this.reads.size,
    };
  }

  /**
   * Stops ticking and taking input, waits for the loop and the loads, and fails the waiters
   * with STORE_CLOSED. The CommitLog, metadata store and transport belong to the caller.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopTick();
    for (let rounds = 0; this.loopRunning; rounds++) {
      assert(rounds < 2, 'raft driver: loop kept running after close');
      await this.loopDone;
    }
    this.runBetweenReadys();
    await this.loadsIdle();
    await this.commitWritesIdle();
    const err = new RaftmqError('STORE_CLOSED', 'raft driver closed');
    this.proposals.failAllInDoubt(err);
    this.reads.failAll(err);
    this.log.info({}, 'raft node closed');
    this.resolveStopped(this.fatal);
  }

  private refuseWhenDown(): Error | undefined {
    if (this.fatal !== undefined) return this.fatal;
    if (this.closed) return new RaftmqError('STORE_CLOSED', 'raft driver closed');
    return undefined;
  }

  private get running(): boolean {
    return !this.closed && this.fatal === undefined;
  }

  private onMessage(message: Message): void {
    if (!this.running) return;
    if (this.log.isLevelEnabled('trace')) {
      this.log.trace({ type: message.type, from: message.from, term: message.term }, 'received');
    }
    // Counted only when the line would be written: this runs for every inbound message.
    const debug = this.log.isLevelEnabled('debug');
    const ignoredBefore = debug ? ignoredMessages(this.node.stats) : 0;
    this.node.step(message);
    if (debug && ignoredMessages(this.node.stats) !== ignoredBefore) {
      // Not info: a peer that keeps sending bad input must not flood the log.
      this.log.debug(
        { type: message.type, from: message.from, term: message.term },
        'raft message ignored',
      );
    }
    this.kick();
  }

  private onTick(): void {
    if (!this.running) return;
    this.ticksSinceCommitWrite++;
    if (this.ticksSinceCommitWrite >= COMMIT_WRITE_INTERVAL_TICKS) this.commitWriteDue = true;
    // Only outside the loop: inside it, a term/vote write may be in flight, and a commit write
    // started now would carry the old term and vote (the loop starts its own; see `persist`).
    if (!this.loopRunning) this.startCommitWrite();
    this.node.tick();
    if (!this.warnedTermMax && this.node.stats.campaignsRefusedTermMax > 0) {
      this.warnedTermMax = true;
      const { term } = this.node.status();
      this.log.error({ term }, 'raft term at its maximum: this node can no longer campaign');
    }
    const nowMs = this.deps.clock.monotonicMs();
    this.proposals.expire(nowMs);
    this.reads.expire(nowMs);
    this.kick();
  }

  /** Starts the loop unless it runs (it is never re-entered) or there is nothing to do. */
  private kick(): void {
    if (this.loopRunning || !this.running || !this.node.hasReady()) return;
    this.loopRunning = true;
    this.loopDone = this.runLoop().then(
      () => {
        this.loopRunning = false;
        this.runBetweenReadys();
        this.kick();
      },
      (err: unknown) => {
        this.loopRunning = false;
        this.fail(err);
        this.runBetweenReadys();
      },
    );
  }

  private async runLoop(): Promise<void> {
    for (let round = 0; round < READY_ROUNDS_PER_RUN_MAX; round++) {
      this.runBetweenReadys();
      if (!this.running || !this.node.hasReady()) return;
      await this.handleReady(this.node.ready());
    }
  }

  private async handleReady(ready: Ready): Promise<void> {
    // Reads this Ready confirms were confirmed while this node led: they are served once
    // applied, even if the same Ready steps it down (which fails only unconfirmed reads).
    for (const readState of ready.readStates) {
      this.reads.confirmed(readState.requestId, readState.index);
    }
    if (ready.softState !== undefined) this.onSoftState(ready.softState);
    const appended = this.appendAtOnce(ready);
    this.send(ready.messages);
    await this.persist(ready, appended);
    if (!this.running) return;
    if (ready.messagesAfterPersist.length > 0) {
      // What they promise covers the whole log this node claims, also entries it handed out as
      // a leader without waiting (an ex-leader acknowledging a new leader's append): those
      // writes land first.
      if (this.laterWrites.length > 0) {
        await this.laterWritesIdle();
        if (!this.running) return;
      }
      this.send(ready.messagesAfterPersist);
    }
    if (ready.committedEntries.length > 0) await this.applyEntries(ready.committedEntries);
    this.reads.applied(this.appliedIndex);
    for (const peer of ready.snapshotsNeeded) this.warnSnapshotNeeded(peer);
    this.node.advance(ready);
    if (this.warnedSnapshotPeers.size > 0) this.forgetRecoveredSnapshotPeers();
    for (const load of ready.loads) this.startLoad(load);
  }

  /**
   * Hands the Ready's entries to the CommitLog now, before its messages leave, when nothing must
   * be written before them (a new term or vote, a truncation); true when it did. Appending only
   * encodes and queues the records (their checksums among them); `persist` waits for them.
   */
  private appendAtOnce(ready: Ready): boolean {
    if (
      ready.entries.length === 0 ||
      ready.truncateFrom !== undefined ||
      this.changesTermOrVote(ready.hardState)
    ) {
      return false;
    }
    this.deps.commitLog.append(ready.entries.map(toLogEntry));
    return true;
  }

  /** True when `hardState` holds a term or vote not yet durable (to be written, synced, first). */
  private changesTermOrVote(hardState: HardState | undefined): hardState is HardState {
    return (
      hardState !== undefined &&
      (hardState.term !== this.durableHardState.term ||
        hardState.vote !== this.durableHardState.vote)
    );
  }

  /** Step 2 of the file comment; `appended`: the entries are in the CommitLog already. */
  private async persist(ready: Ready, appended: boolean): Promise<void> {
    const log = this.deps.commitLog;
    const hardState = ready.hardState;
    if (this.changesTermOrVote(hardState)) {
      // The new commit index may cover entries of this very Ready that are not durable yet, or
      // durable entries this Ready truncates away: it is written only after them, below. A
      // background commit write still in flight carries the old term and vote, so it must land
      // before this one (LevelDB does not order concurrent writes for us).
      await this.commitWritesIdle();
      await this.writeHardState({ ...hardState, commit: this.durableHardState.commit }, true);
    }
    if (ready.truncateFrom !== undefined) {
      // A load reading the suffix must not race the cut (it would read a half-removed record).
      await this.loadsIdle();
      await log.truncateSuffix(ready.truncateFrom);
    }
    const last = ready.entries[ready.entries.length - 1];
    if (last !== undefined) {
      if (!appended) log.append(ready.entries.map(toLogEntry));
      if (ready.durableLater === true) await this.durableLater(ready.entries, last.index);
      else await log.waitPersisted(last.index);
    }
    if (hardState !== undefined && hardState.commit !== this.durableHardState.commit) {
      assert(hardState.commit <= log.lastIndex(), 'raft driver: commit beyond the log');
      this.scheduleCommitWrite(hardState.commit);
    }
  }

  /**
   * A leader's entries handed to the store without waiting: reported to the core once durable
   * (then it may count them toward commitment). Waits only when too many are outstanding.
   */
  private async durableLater(entries: readonly Entry[], lastIndex: number): Promise<void> {
    let bytes = 0;
    for (const e of entries) bytes += e.data.byteLength;
    const settle = (): void => {
      const at = this.laterWrites.findIndex((w) => w.done === done);
      if (at >= 0) this.laterWrites.splice(at, 1);
      this.laterWriteBytes -= bytes;
    };
    const done = this.deps.commitLog.waitPersisted(lastIndex).then(
      () => {
        settle();
        if (!this.running) return;
        try {
          this.node.entriesDurable(entries);
          this.kick();
        } catch (err) {
          this.fail(err);
        }
      },
      (err: unknown) => {
        settle();
        // Cut by a truncation: superseded entries, which the core no longer counts on. (The
        // CommitLog finishes writes in flight before it truncates, so this is not expected.)
        if (isRaftmqError(err, 'OUT_OF_RANGE')) return;
        this.fail(err);
      },
    );
    this.laterWrites.push({ done, bytes });
    this.laterWriteBytes += bytes;
    while (
      this.laterWrites.length > LATER_WRITES_MAX ||
      (this.laterWrites.length > 1 && this.laterWriteBytes > LATER_WRITE_BYTES_MAX)
    ) {
      await this.laterWrites[0]?.done;
    }
  }

  /** Waits until every write handed over without waiting (`durableLater`) has settled. */
  private async laterWritesIdle(): Promise<void> {
    while (this.laterWrites.length > 0) {
      await Promise.all(this.laterWrites.map((w) => w.done));
    }
  }

  private async writeHardState(hardState: HardState, sync: boolean): Promise<void> {
    await this.deps.meta.batch([putOp(MetaKeys.raftHardState, hardStateCodec, hardState)], {
      sync,
    });
    this.durableHardState = hardState;
  }

  /**
   * Writes the commit index in the background, unsynced: Raft re-learns it from the leader, so
   * nothing waits for it (neither the apply of this Ready nor the acknowledgements). The value
   * written is capped at what the local log holds persisted (a leader's own writes may trail
   * a commit its followers made), and committed entries are never truncated, so a stored
   * commit index never runs past the stored log. One write is in flight
   * at most; indexes asked for meanwhile are coalesced into the latest. A write starts at most
   * once every `COMMIT_WRITE_INTERVAL_TICKS` ticks, not once per Ready: under load a Ready is
   * handled every few milliseconds, and a metadata write per Ready cost more CPU than the rest
   * of a small Ready (measured), while a hint that trails by half a second serves a restart as
   * well (the node applies up to it before hearing from a leader). A failed write stops the
   * driver like any other persist failure.
   */
  private scheduleCommitWrite(commit: LogIndex): void {
    this.commitToWrite = commit;
    this.startCommitWrite();
  }

  /**
   * Starts the background commit writer when a commit index waits, the interval passed since the
   * last start and no write is in flight. Called by the loop after persisting (a term/vote write of
   * the loop has then landed) and by a tick while the loop is idle.
   */
  private startCommitWrite(): void {
    if (!this.commitWriteDue || this.commitWriter !== undefined) return;
    if (this.commitToWrite === undefined) return;
    this.commitWriteDue = false;
    this.ticksSinceCommitWrite = 0;
    this.commitWriter = this.runCommitWrites().then(
      () => {
        this.commitWriter = undefined;
      },
      (err: unknown) => {
        this.commitWriter = undefined;
        this.fail(err);
      },
    );
  }

  /** Writes the latest commit index asked for, once; a later one waits for the next tick. */
  private async runCommitWrites(): Promise<void> {
    const asked = this.commitToWrite;
    this.commitToWrite = undefined;
    if (asked === undefined || !this.running) return;
    // Never past what this node's own log holds: a leader whose writes complete later
    // (`durableLater`) learns commits its followers made before its own write is durable, and
    // a stored commit index beyond the stored log would stop the next start (CORRUPT_LOG).
    // The rest is written by a later round, once the log caught up.
    const commit = Math.min(asked, this.deps.commitLog.persistedIndex());
    if (commit < asked) this.commitToWrite = asLogIndex(Math.max(this.commitToWrite ?? 0, asked));
    if (commit <= this.durableHardState.commit) return;
    // The term and vote are the durable ones: a change of them waits for this writer to be
    // idle before it is written (see `persist`), so this write never undoes it.
    await this.writeHardState({ ...this.durableHardState, commit: asLogIndex(commit) }, false);
  }

  /** Waits until the background commit writer is idle (only the loop asks it for writes). */
  private async commitWritesIdle(): Promise<void> {
    for (let rounds = 0; this.commitWriter !== undefined; rounds++) {
      assert(rounds < 4, 'raft driver: commit writes kept running');
      await this.commitWriter;
    }
  }

  private async applyEntries(entries: readonly Entry[]): Promise<void> {
    const first = entries[0];
    const last = entries[entries.length - 1];
    assert(first !== undefined && last !== undefined, 'raft driver: empty apply batch');
    assert(
      first.index === this.appliedIndex + 1,
      () => `raft driver: applying ${first.index} after ${this.appliedIndex}`,
    );
    await this.deps.apply(entries.map(toLogEntry));
    this.appliedIndex = last.index;
    const termAt = (index: number): number | undefined =>
      entries[index - first.index]?.term ?? this.deps.commitLog.termAt(index);
    this.proposals.applied(last.index, termAt, this.softState.leaderId);
  }

  private onSoftState(next: SoftState): void {
    const previous = this.softState;
    this.softState = next;
    if (next.role !== previous.role || next.term !== previous.term) {
      this.log.info(
        { role: next.role, term: next.term, leaderId: next.leaderId },
        'raft role changed',
      );
    } else {
      this.log.info({ term: next.term, leaderId: next.leaderId }, 'raft leader changed');
    }
    if (previous.role === 'leader' && (next.role !== 'leader' || next.term !== previous.term)) {
      this.proposals.leadershipLost(next.leaderId);
      this.reads.leadershipLost(next.leaderId);
    }
    this.deps.onSoftState?.(next);
  }

  private send(messages: readonly Message[]): void {
    if (messages.length === 0 || !this.running) return;
    if (this.log.isLevelEnabled('trace')) {
      for (const m of messages) this.log.trace({ type: m.type, to: m.to, term: m.term }, 'send');
    }
    this.deps.transport.send(messages);
  }

  /**
   * Queues a load for the background worker, which serves loads one at a time. The core tracks
   * only the latest load per peer and discards answers to older ones, so a newer load replaces a
   * queued one: the queue never holds more than one load per voter.
   */
  private startLoad(load: LoadRequest): void {
    this.loadQueue.set(load.peer, load);
    if (this.loadWorker !== undefined) return;
    this.loadWorker = this.runLoads().then(
      () => {
        this.loadWorker = undefined;
        if (this.loadQueue.size > 0 && this.running) this.startLoad(this.nextLoad());
      },
      (err: unknown) => {
        this.loadWorker = undefined;
        this.fail(err);
      },
    );
  }

  private nextLoad(): LoadRequest {
    const first = this.loadQueue.values().next();
    assert(first.done !== true, 'raft driver: no queued load');
    this.loadQueue.delete(first.value.peer);
    return first.value;
  }

  private async runLoads(): Promise<void> {
    for (let served = 0; served < LOADS_PER_RUN_MAX; served++) {
      if (this.loadQueue.size === 0 || !this.running) return;
      await this.serveLoad(this.nextLoad());
    }
  }

  /** Waits until no load is being served (none start meanwhile: only the loop starts them). */
  private async loadsIdle(): Promise<void> {
    for (let rounds = 0; this.loadWorker !== undefined; rounds++) {
      assert(rounds < 4, 'raft driver: loads kept running');
      await this.loadWorker;
    }
  }

  private async serveLoad(load: LoadRequest): Promise<void> {
    const done = this.readLoad(load);
    this.loadServing = { fromIndex: load.fromIndex, done };
    try {
      await done;
    } finally {
      this.loadServing = undefined;
    }
  }

  private async readLoad(load: LoadRequest): Promise<void> {
    let entries: LogEntry[];
    try {
      entries = await this.deps.commitLog.readRange(load.fromIndex, load.countMax, load.bytesMax);
    } catch (err) {
      // The range is gone (truncated meanwhile): the contract answers that with no entries.
      if (!isRaftmqError(err, 'OUT_OF_RANGE')) throw err;
      entries = [];
    }
    if (!this.running) return;
    this.node.entriesLoaded(load.peer, entries.map(fromLogEntry));
    this.kick();
  }

  private warnSnapshotNeeded(peer: NodeId): void {
    if (this.warnedSnapshotPeers.has(peer)) return;
    this.warnedSnapshotPeers.add(peer);
    this.log.warn(
      { peer },
      'snapshot needed: follower needs entries retention removed; there are no snapshots, it ' +
        "can rejoin only from a copy of a peer's data",
    );
  }

  /**
   * Forgets the warning of each follower that replicates again (rebuilt from a peer's copy) or
   * that this node no longer leads, so a relapse is logged again. A follower back in `probe`
   * is not forgotten: the leader probes one in snapshot state once per election timeout.
   */
  private forgetRecoveredSnapshotPeers(): void {
    for (const peer of this.warnedSnapshotPeers) {
      const state = this.node.followerState(peer);
      if (state === 'probe' || state === 'snapshot') continue;
      if (state === 'replicate') {
        this.log.info({ peer }, 'follower that needed a snapshot caught up');
      }
      this.warnedSnapshotPeers.delete(peer);
    }
  }

  /** Stops the driver for good on a failure; see the file comment. */
  private fail(err: unknown): void {
    if (this.fatal !== undefined) return;
    // Broken invariants and fatal store errors go out as they are; anything else is wrapped.
    const error =
      err instanceof AssertionFailure || (isRaftmqError(err) && err.fatal)
        ? err
        : new RaftmqError(
            'STORE_FATAL',
            `raft driver stopped: ${err instanceof Error ? err.message : String(err)}`,
            { cause: err },
          );
    this.fatal = error;
    this.stopTick();
    this.log.error({ err: error }, 'raft driver stopped');
    this.proposals.failAllInDoubt(error);
    this.reads.failAll(error);
    this.deps.onFatal?.(error);
    this.resolveStopped(error);
  }
}
