/**
 * The leader's view of one follower (DLedger's per-follower replicator state, etcd's Progress).
 *
 * - `probe`: the leader does not know where the follower's log matches; it sends one Append and
 *   waits for the answer (or the next heartbeat answer) before sending another.
 * - `replicate`: the follower matched; the leader streams Appends optimistically, bounded by the
 *   in-flight window in count and bytes.
 * - `snapshot`: the follower needs entries before the leader's first index. Signalled to the
 *   driver, which logs it (raftmq sends no snapshots); the follower stays paused until its data
 *   is replaced by a copy of a peer's (docs/operations.md). An answer from it at least an
 *   election timeout after it got here sends it back to `probe` from the leader's last index
 *   (`probeAfterSnapshot`): the conflict hint then shows whether it still needs removed entries.
 */
import { assert } from '../common/assert';
import { Inflights } from './inflights';

/** The replication state of one follower. */
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

/** What the leader knows about one follower's log. */
export class Progress {
  /** Highest index known to match the leader's log. */
  match = 0;
  /** Next index to send. Invariant: match < next. */
  next: number;
  state: ProgressState = 'probe';
  /** In probe state: an Append was sent and no answer came yet. */
  probeSent = false;
  /** Heard from since the last CheckQuorum round (§6.2). */
  recentActive = false;
  /** Entries from this index were requested from the driver and are not loaded yet. */
  loadPendingFrom: number | null = null;
  /**
   * The highest commit index an Append told this follower it may use (the commit it carried,
   * capped at the Append's last index). A lost Append leaves it too high; heartbeats carry the
   * commit index too (and the heartbeat tick's `sendWithheld`), so the follower still learns it.
   */
  commitSent = 0;
  /** Bytes of proposed entries held back from this follower (see `sendProposed`). */
  heldBytes = 0;
  /** In snapshot state: leader ticks since it entered it. */
  snapshotElapsedTicks = 0;
  readonly inflights: Inflights;

  constructor(next: number, inflightCountMax: number, inflightBytesMax: number) {
    assert(next >= 1, 'progress: next must be >= 1');
    this.next = next;
    this.inflights = new Inflights(inflightCountMax, inflightBytesMax);
  }

  /** Back to probing from just after the known match. */
  becomeProbe(): void {
    this.state = 'probe';
    this.heldBytes = 0;
    this.next = this.match + 1;
    this.probeSent = false;
    this.loadPendingFrom = null;
    this.commitSent = 0;
    this.inflights.reset();
  }

  /** Streaming from just after the known match. */
  becomeReplicate(): void {
    this.state = 'replicate';
    this.heldBytes = 0;
    this.next = this.match + 1;
    this.probeSent = false;
    this.loadPendingFrom = null;
    this.inflights.reset();
  }

  /**
   * Out of snapshot state, probing from `next` (the leader's last index + 1): an empty Append
   * there is acknowledged by a follower that holds everything, and otherwise rejected with the
   * hint that sets `next` to what it really lacks.
   */
  probeAfterSnapshot(next: number): void {
    assert(this.state === 'snapshot', 'progress: not in snapshot state');
    this.becomeProbe();
    this.next = Math.max(next, this.match + 1);
  }

  /** Waiting for a snapshot that this core does not produce. */
  becomeSnapshot(): void {
    this.state = 'snapshot';
    this.snapshotElapsedTicks = 0;
    this.heldBytes = 0;
    this.probeSent = false;
    this.loadPendingFrom = null;
    this.inflights.reset();
  }

  /** True when no Append may be sent now. */
  isPaused(): boolean {
    if (this.loadPendingFrom !== null) return true;
    switch (this.state) {
      case 'probe': return this.probeSent;
      case 'replicate': return this.inflights.full();
      case 'snapshot': return true;
    }
  }

  /** Records an Append carrying `count` entries up to `lastIndex` (`bytes` of them). */
  sentEntries(lastIndex: number, count: number, bytes: number): void {
    if (this.state === 'replicate') {
      if (count > 0) {
        assert(lastIndex >= this.next, 'progress: sent entries behind next');
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex, bytes);
      }
    } else {
      this.probeSent = true;
    }
  }

  /** An acknowledgement of `matchIndex`; returns true when it taught us something new. */
  maybeUpdate(matchIndex: number): boolean {
    let updated = false;
    if (matchIndex > this.match) {
      this.match = matchIndex;
      this.probeSent = false;
      updated = true;
    }
    this.next = Math.max(this.next, matchIndex + 1);
    return updated;
  }

  /**
   * A rejection of `rejectedIndex`; `nextHint` is where the conflict hint says to resume.
   * Returns false for a stale rejection (one that answers an older Append).
   */
  maybeDecreaseTo(rejectedIndex: number, nextHint: number): boolean {
    if (this.state === 'replicate') {
      // The follower matched up to `match`, so resending from there is always right.
      if (rejectedIndex <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (rejectedIndex !== this.next - 1) return false;
    this.next = Math.max(Math.min(rejectedIndex, nextHint), this.match + 1);
    this.probeSent = false;
    return true;
  }
}
