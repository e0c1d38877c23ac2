/**
 * Checks on nodes cut off from a majority by a partition (a side smaller than a quorum; every
 * message across the cut is lost, in flight too), made once per tick while it lasts:
 *
 * - no term rises on a minority side: with PreVote (thesis §9.6) a node becomes a candidate,
 *   and bumps its term, only after a majority said it could win, which a minority cannot give.
 *   A term that climbs while isolated forces an election when the partition heals. Skipped for
 *   a partition that began near a leadership transfer (TimeoutNow skips PreVote);
 * - a leader on a minority side steps down within two election timeouts of its own ticks
 *   (CheckQuorum, thesis §6.2: it checks once per election timeout that a majority was heard
 *   from), so clients stop being served by a leader that cannot commit.
 *
 * A paused node ticks nothing, so its time on the minority side counts from when it resumes; a
 * slow sync may hold the step-down back, so the bound grows by the longest sync of the run.
 */
import type { NodeId } from '../common/types';
import type { SimCluster } from './sim-cluster';

/**
 * Ticks a minority leader gets beyond two election timeouts: the phase of its tick timer against
 * the scenario's ticks, and a Ready its driver may still be persisting.
 */
const STEP_DOWN_SLACK_TICKS = 5;

interface MinoritySide {
  readonly members: readonly NodeId[];
  /** The highest term any member was seen in before the partition began. */
  readonly termMax: number;
  readonly sinceTick: number;
  checkTerms: boolean;
}

/** The checks; see the file comment. */
export class IsolationChecks {
  private sides: MinoritySide[] = [];
  private lastTransferTick = Number.NEGATIVE_INFINITY;
  private readonly resumeTickOf = new Map<NodeId, number>();

  constructor(
    private readonly cluster: SimCluster,
    private readonly electionTimeoutTicks: number,
    /** The longest a sync may take, in ticks (added to the step-down bound). */
    private readonly syncTicksMax: number,
  ) {}

  /** A partition began at `tick`: each group hears only itself. */
  partitioned(groups: readonly (readonly NodeId[])[], tick: number): void {
    const c = this.cluster;
    const quorum = Math.floor(c.ids.length / 2) + 1;
    const checkTerms = tick - this.lastTransferTick > 2 * this.electionTimeoutTicks + 2;
    this.sides = groups
      .filter((members) => members.length < quorum)
      .map((members) => ({
        members,
        termMax: Math.max(0, ...members.map((id) => c.termMaxOf.get(id) ?? 0)),
        sinceTick: tick,
        checkTerms,
      }));
  }

  /** Every link is back. */
  healed(): void {
    this.sides = [];
  }

  /**
   * A client asked for a leadership transfer at `tick`. A leader that starts a transfer restarts
   * its election timeout (the transfer gets a whole one to finish), so its step-down bound
   * counts from here.
   */
  transferred(tick: number): void {
    this.lastTransferTick = tick;
    for (const side of this.sides) side.checkTerms = false;
  }

  /** `id` is paused until `untilTick`. */
  paused(id: NodeId, untilTick: number): void {
    this.resumeTickOf.set(id, Math.max(untilTick, this.resumeTickOf.get(id) ?? 0));
  }

  /** The checks at `tick`. */
  check(tick: number): void {
    const c = this.cluster;
    for (const side of this.sides) {
      for (const id of side.members) {
        const status = c.status(id);
        if (status === undefined) continue;
        if (side.checkTerms && status.term > side.termMax) {
          c.history.violation(
            `isolation: ${id} reached term ${status.term} on a minority side ` +
              `${side.members.join(',')} whose highest term was ${side.termMax} at tick ` +
              `${side.sinceTick}`,
          );
          return;
        }
        const since = Math.max(
          side.sinceTick,
          this.resumeTickOf.get(id) ?? 0,
          this.lastTransferTick,
        );
        const boundTicks =
          2 * this.electionTimeoutTicks + STEP_DOWN_SLACK_TICKS + this.syncTicksMax;
        if (status.role === 'leader' && tick - since > boundTicks) {
          c.history.violation(
            `isolation: ${id} still leads term ${status.term} ${tick - since} ticks after ` +
              `being cut off on a minority side ${side.members.join(',')} (bound ${boundTicks})`,
          );
          return;
        }
      }
    }
  }
}
