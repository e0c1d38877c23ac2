/**
 * SimCluster: N broker nodes of one group in one process, each the production code over
 * simulated devices: a SimDisk and a MemMetaStore (whose syncs take simulated time), a real
 * CommitLog with small segments, and a real RaftDriver, all on one ManualClock driven by the
 * {@link SimLoop}, talking over a {@link SimNetwork}. Every random choice comes from one seed.
 *
 * Faults: `crash(node, mode)` fences the incarnation's devices, transport and timers, and loses
 * what the mode says (see SimDisk and MemMetaStore); `start(node)` opens a new incarnation on
 * the same disk. `pause(node)` freezes a node's timers, IO and inbound messages for a while.
 * `aimCrash(node, kind, mode)` arms a crash that strikes right after the node's next granted
 * vote or acknowledgement, or its next truncation or file removal.
 *
 * Each incarnation's log contents (term and record checksum per index, {@link SimLogContents})
 * are read back at open and follow every append. After every event the cluster checks what
 * needs the nodes' state (sim-log-checks.ts): Election Safety (with the history); it records in
 * the history every entry a leader's commit index covers (with its checksum); Leader
 * Completeness (Raft §5.4: when a node is first seen leading a term, its log holds every entry
 * known committed by that term, with the same term and checksum); and, every few ticks, Log
 * Matching (Raft §5.3: two logs that hold an entry of the same term at an index hold identical
 * entries up to it). As things happen (sim-node-checks.ts): the commit rule, durability of each
 * newly committed entry on a majority, one vote per term, no same-term suffix cuts; and when a
 * node opens again, that what its crashed incarnations promised survived (sim-durability.ts).
 */
import { assert } from '../common/assert';
import { ManualClock } from '../common/clock';
import { isRaftmqError } from '../common/errors';
import { type Logger, silentLogger } from '../common/logger';
import { createPrng, type Prng } from '../common/prng';
import { asNodeId, type NodeId } from '../common/types';
import type { RaftTunables } from '../raft/config';
import { RaftDriver, type RaftDriverStatus } from '../broker/raft-driver';
import { CommitLog } from '../store/commit-log';
import type { CommitLogOptions } from '../store/commit-log-options';
import type { LogEntry } from '../store/log-record';
import { fencedDisk, type CrashMode } from './sim-disk';
import { DurableLog, PromiseLedger } from './sim-durability';
import {
  checkAppendReplaces,
  checkCommitRule,
  checkDurableMajority,
  checkOneVote,
} from './sim-node-checks';
import { type AimedCrashKind, SimNode } from './sim-node';
import { SimHistory } from './sim-history';
import { fencedMeta, slowDisk, slowMeta } from './sim-io';
import {
  type CheckedLog,
  checkLeaderCompleteness,
  checkLogMatching,
  recordCommitted,
} from './sim-log-checks';
import { observeAppends, SimLogContents } from './sim-log-contents';
import { hardStateCodec, INITIAL_HARD_STATE } from '../broker/raft-hard-state';
import { MetaKeys } from '../store/meta';
import type { Message } from '../raft/types';
import { SimLoop, SimTimers } from './sim-loop';
import { SimNetwork } from './sim-network';
import { SimTrace } from './sim-trace';

/** CommitLog options that make segments roll and index files fill within a short run. */
export const SIM_COMMIT_LOG_OPTIONS: Partial<CommitLogOptions> = Object.freeze({
  segmentSizeBytes: 4096,
  indexEntriesPerFile: 64,
  payloadMaxBytes: 1024,
  pendingBytesMax: 64 * 1024,
  writeChunkBytes: 4096,
  openFilesMax: 8,
  checkpointIntervalMs: 500,
  // Nothing stays cached: every synced segment is released, under every fault the run draws.
  pageCacheKeepBytes: 0,
});

/** How to build a simulated cluster. */
export interface SimClusterOptions {
  readonly seed: number;
  readonly nodeCount: number;
  /** Simulated milliseconds per Raft tick. */
  readonly tickIntervalMs: number;
  readonly raft?: Partial<RaftTunables>;
  /** Each fsync and synced metadata batch takes [0, this] simulated milliseconds... */
  readonly syncMsMax: number;
  /** ...plus, with this chance (default 0), a stall of 50 to `syncStallMsMax` ms. */
  readonly syncStallProbability?: number;
  readonly syncStallMsMax?: number;
  /** Receives every trace line (the CLI's `--trace`). */
  readonly traceSink?: (line: string) => void;
  readonly logger?: Logger;
}

/** True while `incarnation` is the running (or starting) one of `node`. */
function isCurrent(node: SimNode, incarnation: number): boolean {
  return node.incarnation === incarnation && node.state !== 'down';
}

/** Ticks between two Log Matching checks. */
const LOG_MATCHING_CHECK_TICKS = 25;

/** The cluster; see the file comment. */
export class SimCluster {
  readonly clock = new ManualClock();
  readonly trace: SimTrace;
  readonly loop: SimLoop;
  readonly network: SimNetwork;
  readonly history: SimHistory;
  readonly prng: Prng;
  readonly ids: readonly NodeId[];
  /** Incarnations that stopped on a failure nobody injected (always a bug in a scenario). */
  readonly unexpectedFailures: string[] = [];
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly logger: Logger;
  private lastLogMatchingCheckMs = 0;
  /** Granted votes, by voter and term ("n1 7" -> candidate). */
  private readonly votesGranted = new Map<string, NodeId>();
  /** The highest term each node was seen in after any event (its stored term is no higher). */
  readonly termMaxOf = new Map<NodeId, number>();

  constructor(readonly options: SimClusterOptions) {
    this.prng = createPrng(options.seed);
    this.trace = new SimTrace(() => this.clock.monotonicMs(), options.traceSink);
    this.loop = new SimLoop(this.clock, this.trace);
    this.history = new SimHistory(() => this.trace.recent());
    this.loop.onEventError = (err) =>
      this.history.violation(
        `exception in an event: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
      );
    this.ids = Array.from({ length: options.nodeCount }, (_, i) => asNodeId(`n${i + 1}`));
    this.network = new SimNetwork(this.loop, this.prng.fork(), this.ids);
    this.logger = options.logger ?? silentLogger();
    for (const id of this.ids) this.nodes.set(id, new SimNode(id, this.clock, this.prng.fork()));
    this.network.observe((m) => this.onSend(m));
    for (const node of this.nodes.values()) {
      node.disk.setHook((op) => {
        if (op === 'truncate' || op === 'remove') this.strikeAimed(node, 'truncate');
      });
    }
  }

  /**
   * Records the promises a node sends; an armed crash may strike right after one. A node grants
   * at most one vote per term, across incarnations (Raft §5.2).
   */
  private onSend(message: Message): void {
    const node = this.node(message.from);
    node.ledger.sent(message, node.contents);
    checkOneVote(this.history, this.votesGranted, message);
    const promise =
      (message.type === 'VoteResp' || message.type === 'AppendResp') && !message.reject;
    if (promise) this.strikeAimed(node, 'promise');
  }

  /** Arms a crash of `id` that strikes right after its next `kind` (see AimedCrashKind). */
  aimCrash(id: NodeId, kind: AimedCrashKind, mode: CrashMode): void {
    this.node(id).aimedCrash = { kind, mode };
  }

  private strikeAimed(node: SimNode, kind: AimedCrashKind): void {
    const aimed = node.aimedCrash;
    if (aimed?.kind !== kind || node.state === 'down') return;
    node.aimedCrash = undefined;
    // As the next event: what the current one does before its next await still happens.
    this.trace.line(`aimed crash ${node.id} after ${kind}`);
    this.history.aimedCrashes += 1;
    this.loop.after(0, () => this.crash(node.id, aimed.mode));
  }

  node(id: NodeId): SimNode {
    const node = this.nodes.get(id);
    assert(node !== undefined, () => `sim: no node ${id}`);
    return node;
  }

  /** The driver of a running node, or undefined. */
  driver(id: NodeId): RaftDriver | undefined {
    const node = this.node(id);
    return node.state === 'up' ? node.driver : undefined;
  }

  /** Starts a new incarnation of `id` (it opens over simulated time). */
  start(id: NodeId): void {
    const node = this.node(id);
    assert(node.state === 'down', () => `sim: ${id} is already running`);
    node.incarnation += 1;
    node.fatal = undefined;
    node.completenessCheckedTerm = 0;
    const incarnation = node.incarnation;
    const timers = new SimTimers(this.loop);
    const disk = fencedDisk(node.disk);
    const meta = fencedMeta(node.meta);
    node.fences = [disk.fence, meta.fence];
    node.timers = timers;
    node.state = 'starting';
    this.trace.line(`start ${id} #${incarnation}`);
    const latency = {
      sleep: (ms: number) => timers.sleep(ms),
      prng: node.ioPrng,
      syncMsMax: this.options.syncMsMax,
      stallProbability: this.options.syncStallProbability,
      stallMsMax: this.options.syncStallMsMax,
    };
    this.open(
      node,
      incarnation,
      timers,
      slowDisk(disk.disk, latency),
      slowMeta(meta.meta, latency),
    ).catch((err: unknown) => this.onFatal(node, incarnation, err));
  }

  private async open(
    node: SimNode,
    incarnation: number,
    timers: SimTimers,
    disk: ReturnType<typeof slowDisk>,
    meta: ReturnType<typeof slowMeta>,
  ): Promise<void> {
    const logger = this.logger.child({ node: node.id });
    const commitLog = await CommitLog.open(
      '/node',
      {
        disk,
        meta,
        clock: this.clock,
        scheduler: timers,
        logger,
      },
      SIM_COMMIT_LOG_OPTIONS,
    );
    if (!isCurrent(node, incarnation)) return;
    // Reads only (no simulated time passes): the contents as recovery left them.
    const contents = await SimLogContents.read(commitLog);
    if (!isCurrent(node, incarnation)) return;
    await this.checkPromises(node, contents);
    if (!isCurrent(node, incarnation)) return;
    observeAppends(
      commitLog,
      contents,
      (entries) => checkAppendReplaces(this.history, node, contents, entries),
      (fromIndex) => node.ledger.replacedFrom(fromIndex),
    );
    node.commitLog = commitLog;
    node.contents = contents;
    node.durableAtCrash = undefined;
    this.history.nodeStarted(node.id, 0);
    const transport = this.network.attach(node.id);
    const driver = await RaftDriver.open({
      id: node.id,
      peers: this.ids,
      raft: this.options.raft,
      commitLog,
      meta,
      transport,
      scheduler: timers,
      clock: this.clock,
      prng: node.raftPrng.fork(),
      logger,
      apply: (entries) => this.apply(node, incarnation, entries),
      appliedIndex: 0,
      onFatal: (err) => this.onFatal(node, incarnation, err),
      onSoftState: (s) => {
        this.trace.line(`role ${node.id} ${s.role} t${s.term} ` + `leader ${s.leaderId ?? '-'}`);
        // Here too, not only after each event: a leadership may start and end within one.
        if (s.role === 'leader' && isCurrent(node, incarnation)) {
          this.history.leaderSeen(node.id, s.term);
        }
      },
      options: { tickIntervalMs: this.options.tickIntervalMs },
    });
    if (!isCurrent(node, incarnation)) return;
    node.driver = driver;
    node.state = 'up';
    this.trace.line(`up ${node.id} #${incarnation} last ${commitLog.lastIndex()}`);
  }

  /**
   * Checks what the node's earlier incarnations promised against what survived their crashes:
   * the stored hard state and the recovered log (see sim-durability.ts).
   */
  private async checkPromises(node: SimNode, contents: SimLogContents): Promise<void> {
    const stored = await node.meta.get(MetaKeys.raftHardState);
    const hardState = stored === undefined ? INITIAL_HARD_STATE : hardStateCodec.decode(stored);
    for (const broken of node.ledger.check(hardState, contents)) {
      this.history.violation(`durability: ${node.id} ${broken}`);
    }
    node.ledger = new PromiseLedger();
  }

  private apply(node: SimNode, incarnation: number, entries: readonly LogEntry[]): Promise<void> {
    if (!isCurrent(node, incarnation)) {
      return Promise.reject(new Error('sim: apply by a crashed incarnation'));
    }
    // Until open returns the driver is not known here: the term is then left out (Infinity),
    // which claims nothing about when the entries were committed.
    this.history.applied(node.id, entries, node.driver?.status().term);
    return Promise.resolve();
  }

  private onFatal(node: SimNode, incarnation: number, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (!isCurrent(node, incarnation)) {
      this.trace.line(`stopped ${node.id} #${incarnation} after crash: ${message}`);
      return;
    }
    node.fatal = err instanceof Error ? err : new Error(message);
    this.trace.line(`failed ${node.id} #${incarnation}: ${message}`);
    this.unexpectedFailures.push(`${node.id} #${incarnation}: ${message}`);
  }

  /** Crashes `id`: its incarnation is fenced off, its devices lose what `mode` says. */
  crash(id: NodeId, mode: CrashMode): void {
    const node = this.node(id);
    if (node.state === 'down') return;
    this.trace.line(`crash ${id} #${node.incarnation} ${mode}`);
    this.history.crashes += 1;
    node.state = 'down';
    node.aimedCrash = undefined;
    if (node.commitLog !== undefined && node.contents !== undefined) {
      const log = node.commitLog;
      node.durableAtCrash = DurableLog.of(node.contents, log.firstIndex(), log.persistedIndex());
    }
    for (const fence of node.fences) fence();
    this.network.detach(id);
    node.timers?.kill();
    node.disk.crash(mode);
    node.meta.crash(mode, node.crashPrng);
    node.driver = undefined;
    node.commitLog = undefined;
    node.contents = undefined;
  }

  /** Freezes `id` for `durationMs`: no timers, no IO completions, inbound messages held. */
  pause(id: NodeId, durationMs: number): void {
    const node = this.node(id);
    const untilMs = this.loop.nowMs() + durationMs;
    this.trace.line(`pause ${id} ${durationMs}ms`);
    this.history.pauses += 1;
    node.timers?.pauseUntil(untilMs);
    this.network.holdUntil(id, untilMs);
  }

  /** The running node that leads the highest term, if any. */
  leader(): NodeId | undefined {
    let best: { id: NodeId; term: number } | undefined;
    for (const id of this.ids) {
      const status = this.driver(id)?.status();
      if (status?.role === 'leader' && (best === undefined || status.term > best.term)) {
        best = { id, term: status.term };
      }
    }
    return best?.id;
  }

  status(id: NodeId): RaftDriverStatus | undefined {
    return this.driver(id)?.status();
  }

  /** A client proposes `payload` at `id`; the outcome goes to the history. */
  propose(id: NodeId, payload: Uint8Array, onDone?: (acked: boolean) => void): void {
    const driver = this.driver(id);
    if (driver === undefined) return;
    this.history.proposalsSent += 1;
    this.trace.line(`propose ${id} ${Buffer.from(payload).toString('hex')}`);
    driver.propose([payload]).then(
      (ack) => {
        this.trace.line(`acked ${id} ${ack.lastIndex}/${ack.term}`);
        this.history.ackedProposal(id, ack.lastIndex, ack.term, payload);
        onDone?.(true);
      },
      (err: unknown) => {
        this.history.proposalRejected(isRaftmqError(err) ? err.code : 'OTHER');
        onDone?.(false);
      },
    );
  }

  /** A client asks `id` for a linearizable read point. */
  readIndex(id: NodeId): void {
    const driver = this.driver(id);
    if (driver === undefined) return;
    const floor = this.history.maxAckedIndex;
    driver.readIndex().then(
      (index) => {
        this.trace.line(`read ${id} ${index}`);
        this.history.readServed(id, floor, index);
      },
      () => {
        this.history.readsRejected += 1;
      },
    );
  }

  /** Asks leader `id` to hand leadership to `to`; refusals are expected and only traced. */
  transfer(id: NodeId, to: NodeId): void {
    const driver = this.driver(id);
    if (driver === undefined) return;
    try {
      driver.transferLeadership(to);
      this.trace.line(`transfer ${id} -> ${to}`);
    } catch (err) {
      this.trace.line(
        `transfer ${id} -> ${to} refused: ${isRaftmqError(err) ? err.code : 'OTHER'}`,
      );
    }
  }

  /**
   * Runs the simulation for `durationMs`. Returns false when the run should end: a violation was
   * found (the run stops at once, so the trace ends where it went wrong) or more than
   * `eventsMax` events fell due (a livelock, itself a violation).
   */
  async runFor(durationMs: number, eventsMax = 20_000): Promise<boolean> {
    const outcome = await this.loop.runUntil(
      this.loop.nowMs() + durationMs,
      () => this.afterEvent(),
      eventsMax,
    );
    if (outcome === 'bounded') {
      this.history.violation(`livelock: more than ${eventsMax} events within ${durationMs} ms`);
    }
    return outcome === 'done' && this.history.violationCount === 0;
  }

  /** The checks after each event; see the file comment. False (stop) after a violation. */
  private afterEvent(): boolean {
    for (const id of this.ids) {
      const node = this.node(id);
      if (node.state !== 'up' || node.driver === undefined) continue;
      const status = node.driver.status();
      if (status.term > (this.termMaxOf.get(id) ?? 0)) this.termMaxOf.set(id, status.term);
      if (status.role !== 'leader') continue;
      this.history.leaderSeen(id, status.term);
      this.checkLeader(node, status);
    }
    for (const id of this.ids) {
      // A violation ends the run, so this is reported once.
      const unsynced = this.node(id).disk.cacheReleases.unsyncedBytes;
      if (unsynced > 0) {
        this.history.violation(`${id}: ${unsynced} page-cache bytes released before their sync`);
      }
    }
    const nowMs = this.loop.nowMs();
    if (
      nowMs - this.lastLogMatchingCheckMs >=
      LOG_MATCHING_CHECK_TICKS * this.options.tickIntervalMs
    ) {
      this.lastLogMatchingCheckMs = nowMs;
      this.checkLogMatching();
    }
    return this.history.violationCount === 0;
  }

  /** The log of a running node, for the checks; undefined while it has none. */
  private checkedLog(node: SimNode): CheckedLog | undefined {
    const { commitLog, contents } = node;
    if (node.state !== 'up' || commitLog === undefined || contents === undefined) return undefined;
    return { id: node.id, log: commitLog, contents };
  }

  /** Records leader `node`'s committed entries; checks its completeness once per leadership. */
  private checkLeader(node: SimNode, status: RaftDriverStatus): void {
    const checked = this.checkedLog(node);
    if (checked === undefined) return;
    const recordedMax = this.history.committedIndexMax;
    recordCommitted(this.history, checked, status.term, status.commitIndex);
    const nodes = [...this.nodes.values()];
    for (let index = recordedMax + 1; index <= this.history.committedIndexMax; index++) {
      checkDurableMajority(this.history, index, nodes);
    }
    checkCommitRule(this.history, node, checked, status);
    if (status.term <= node.completenessCheckedTerm) return;
    node.completenessCheckedTerm = status.term;
    checkLeaderCompleteness(this.history, checked, status.term);
  }

  /** Log Matching over every running node's log (see sim-log-checks.ts). */
  checkLogMatching(): void {
    const logs: CheckedLog[] = [];
    for (const id of this.ids) {
      const checked = this.checkedLog(this.node(id));
      if (checked !== undefined) logs.push(checked);
    }
    checkLogMatching(this.history, logs);
  }
}
