/**
 * Retention for one broker node: every `retentionCheckIntervalMs` it removes the CommitLog's
 * oldest segments (older than `fileReservedTimeMs`, or while the log exceeds
 * `retainedBytesMax`), with everything that points into them, without pulling entries from
 * under the Raft core or a follower that still needs them. A round:
 *
 * 1. the bound: the first index that must stay is at most the applied index + 1 as last stored
 *    (BrokerState.retainFromIndexMax: a restart applies the tail after it again), and on a
 *    leader at most match + 1 of every follower heard from lately (follower-liveness.ts; all
 *    of them until the leader is ready), except one in snapshot state (it needs entries that
 *    are gone already);
 * 2. the decision: `MessageStore.retentionPoint(bound)`, the first index retention keeps;
 * 3. when that is past the core's first index: `RaftDriver.compact(point)` (between Readys;
 *    no load below the point is in flight afterwards), then `MessageStore.removeBefore(point)`
 *    (segments, then ConsumeQueue files and key-index entries), then the queues' first
 *    offsets move up (BrokerState.raiseQueueMins).
 *
 * A follower not heard from is not waited for: one down longer than the retention keeps its
 * data comes back needing entries no peer has. There are no Raft snapshots, so the leader logs
 * `snapshot needed` for it and it can rejoin only from a copy of a peer's data directory
 * (docs/operations.md). Rounds never overlap; `stop()` waits for the one running.
 */
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { MessageStore } from '../store/message-store';
import type { BrokerState } from './broker-state';
import type { RaftDriver } from './raft-driver';

export interface RetentionTaskDeps {
  readonly driver: RaftDriver;
  readonly state: BrokerState;
  readonly store: MessageStore;
  /** The followers heard from lately while this node is the ready leader, else undefined. */
  readonly liveFollowers: () => readonly string[] | undefined;
  readonly log: Logger;
}

/** What one round did. */
export interface RetentionRound {
  /** The first index retention would keep; equal to `firstIndexBefore` when nothing went. */
  readonly point: number;
  readonly firstIndexBefore: number;
  /** The CommitLog's first index after the round. */
  readonly firstIndex: number;
}

export class RetentionTask {
  private timer: ReturnType<typeof setInterval> | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(private readonly deps: RetentionTaskDeps) {}

  /** Runs a round every `intervalMs` (the timer does not keep the process alive). */
  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      if (this.running !== undefined || this.stopped) return;
      this.runNow().catch((err: unknown) => {
        // A refused compaction (INVALID_ARGUMENT: the bound moved) or a stopped driver leaves
        // the files as they were; the next round tries again. A store failure stops the store
        // itself (commit-log-maintenance.ts), which the driver then reports as fatal.
        this.deps.log.warn({ err }, 'retention round failed');
      });
    }, intervalMs);
    this.timer.unref();
  }

  /** Runs a round now, after the one in progress (for operators and tests). */
  async runNow(): Promise<RetentionRound> {
    for (let waits = 0; this.running !== undefined; waits++) {
      if (waits > 8) throw new RaftmqError('BUSY', 'retention rounds keep running');
      await this.running.catch(() => undefined);
    }
    if (this.stopped) throw new RaftmqError('STORE_CLOSED', 'retention stopped');
    const round = this.runOnce();
    this.running = round;
    try {
      return await round;
    } finally {
      this.running = undefined;
    }
  }

  /** Stops the timer and waits for a round in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    // A failed round was logged where it ran.
    await this.running?.catch(() => undefined);
  }

  /** The bound of step 1 of the file comment. */
  bound(): number {
    const { driver, state } = this.deps;
    const status = driver.status();
    let bound = Math.min(status.appliedIndex + 1, state.retainFromIndexMax);
    if (status.role === 'leader') {
      const live = this.deps.liveFollowers();
      for (const [id, progress] of status.progress) {
        // One in snapshot state needs entries gone already: waiting for it would stop
        // retention for good while it answers heartbeats. The leader probes it once per
        // election timeout (it may have been rebuilt); while a probe is out it shows in probe
        // state with its old match, which holds a round back at most: keeping more is safe.
        if (progress.state === 'snapshot') continue;
        if (live === undefined || live.includes(id)) bound = Math.min(bound, progress.match + 1);
      }
    }
    return bound;
  }

  /** One round; see the file comment. */
  private async runOnce(): Promise<RetentionRound> {
    const { driver, state, store } = this.deps;
    const firstIndexBefore = store.commitLog.firstIndex();
    const bound = this.bound();
    const point = await store.retentionPoint(bound);
    if (point <= firstIndexBefore) {
      return { point: firstIndexBefore, firstIndexBefore, firstIndex: firstIndexBefore };
    }
    // A no-op when an earlier round compacted the core this far and its removal failed.
    await driver.compact(point);
    const firstIndex = await store.removeBefore(point);
    await state.raiseQueueMins();
    this.deps.log.info({ bound, firstIndexBefore, firstIndex }, 'retention removed a prefix');
    return { point, firstIndexBefore, firstIndex };
  }
}
