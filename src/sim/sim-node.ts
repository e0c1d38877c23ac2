/**
 * One simulated node: its devices (a SimDisk and a MemMetaStore) survive crashes; everything else
 * belongs to an incarnation of its process. It also carries what the cluster's checks keep per
 * node across incarnations (promises, the log a crash left, an armed crash).
 */
import type { ManualClock } from '../common/clock';
import type { Prng } from '../common/prng';
import type { NodeId } from '../common/types';
import type { RaftDriver } from '../broker/raft-driver';
import type { CommitLog } from '../store/commit-log';
import { MemMetaStore } from '../store/mem-meta-store';
import { SimDisk, type CrashMode } from './sim-disk';
import { type DurableLog, PromiseLedger } from './sim-durability';
import type { SimLogContents } from './sim-log-contents';
import type { SimTimers } from './sim-loop';

/**
 * When an aimed crash strikes: right after the node next sends a granted vote or an
 * acknowledgement of entries ('promise'), or next truncates or removes a file ('truncate'),
 * in both cases before a sync can follow.
 */
export type AimedCrashKind = 'promise' | 'truncate';

/** One node: its devices survive crashes; everything else belongs to an incarnation. */
export class SimNode {
  readonly disk: SimDisk;
  readonly meta = new MemMetaStore();
  incarnation = 0;
  state: 'down' | 'starting' | 'up' = 'down';
  driver: RaftDriver | undefined;
  commitLog: CommitLog | undefined;
  /** What `commitLog` holds, entry by entry (set with it). */
  contents: SimLogContents | undefined;
  timers: SimTimers | undefined;
  /** The failure that stopped the current incarnation, if any. */
  fatal: Error | undefined;
  fences: Array<() => void> = [];
  /** The latest term whose leadership here had the completeness check. */
  completenessCheckedTerm = 0;
  /** The commit index last seen while this node led `term`. */
  leaderCommit = { term: 0, commitIndex: 0 };
  /** What the incarnations since the last check promised (checked at the next open). */
  ledger = new PromiseLedger();
  /** The log as persisted when it last crashed (what a power loss keeps), until it is up. */
  durableAtCrash: DurableLog | undefined;
  /** A crash armed to strike right after the node's next promise or truncation. */
  aimedCrash: { kind: AimedCrashKind; mode: CrashMode } | undefined;
  readonly raftPrng: Prng;
  readonly ioPrng: Prng;
  readonly crashPrng: Prng;

  constructor(
    readonly id: NodeId,
    clock: ManualClock,
    prng: Prng,
  ) {
    this.disk = new SimDisk({ clock, prng: prng.fork() });
    this.raftPrng = prng.fork();
    this.ioPrng = prng.fork();
    this.crashPrng = prng.fork();
  }
}
