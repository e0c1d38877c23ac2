/**
 * The leader's step function: acknowledgements and rejections of Appends (with the conflict
 * hint of Raft §5.3), heartbeat answers (liveness for CheckQuorum, ReadIndex confirmation), and
 * leadership transfer (thesis §3.10).
 */
import type { NodeId } from '../common/types';
import type { Progress } from './progress';
import type { RaftCore } from './raft-core';
import {
  afterLeaderCommit, maybeCommit, maybeSendTimeoutNow, sendAppend, sendAppendsWhileOpen,
  sendCommitIfIdle,
} from './replicator';
import type { AppendRespMessage, HeartbeatRespMessage, Message } from './types';

/** Handles a message of the current term while leader. */
export function stepLeader(core: RaftCore, message: Message): void {
  switch (message.type) {
    case 'AppendResp':
      onAppendResp(core, message);
      return;
    case 'HeartbeatResp':
      onHeartbeatResp(core, message);
      return;
    default:
      // Append, Heartbeat or TimeoutNow of our own term cannot come from a legitimate leader.
      core.stats.messagesUnexpected += 1;
  }
}

/**
 * Where to resume after a rejection: the follower holds `hintTerm` from `hintIndex` up to the
 * rejected index. If our log has that term too, resume after our last entry of it; otherwise
 * resume no later than where the follower's run of that term starts.
 */
export function nextIndexFromHint(core: RaftCore, message: AppendRespMessage): number {
  if (message.hintTerm === 0) return message.hintIndex;
  const index = core.log.lastIndexWithTermAtMost(message.hintTerm, message.rejectedIndex - 1);
  if (core.log.termAt(index) === message.hintTerm) return index + 1;
  return Math.min(index + 1, message.hintIndex);
}

/**
 * A follower in snapshot state answered a heartbeat (it is up, and sends nothing else while
 * the leader sends it no Appends): once an election timeout has passed since it got there,
 * probe it again. Nothing else brings it out during this leader's term, and the documented
 * recovery (its data replaced by a peer's copy) gives it the entries it lacked; if it still
 * lacks removed ones, the probe's rejection puts it back in snapshot state.
 */
function maybeProbeAfterSnapshot(core: RaftCore, progress: Progress): void {
  if (progress.state !== 'snapshot') return;
  if (progress.snapshotElapsedTicks < core.cfg.electionTimeoutTicks) return;
  progress.probeAfterSnapshot(core.log.lastIndex() + 1);
}

function onAppendResp(core: RaftCore, message: AppendRespMessage): void {
  const progress = core.progressOf(message.from);
  if (!message.reject && message.matchIndex > core.log.lastIndex()) {
    // We never sent that far in this term: not an answer from an honest follower.
    core.stats.messagesMalformed += 1;
    return;
  }
  progress.recentActive = true;
  if (message.reject) {
    if (progress.maybeDecreaseTo(message.rejectedIndex, nextIndexFromHint(core, message))) {
      if (progress.state === 'replicate') progress.becomeProbe();
      sendAppend(core, message.from, true);
    }
    return;
  }
  if (!progress.maybeUpdate(message.matchIndex)) return;
  if (progress.state === 'probe') progress.becomeReplicate();
  else if (progress.state === 'replicate') progress.inflights.freeLE(message.matchIndex);
  if (maybeCommit(core)) afterLeaderCommit(core);
  sendAppendsWhileOpen(core, message.from);
  sendCommitIfIdle(core, message.from);
  maybeSendTimeoutNow(core, message.from);
}

function onHeartbeatResp(core: RaftCore, message: HeartbeatRespMessage): void {
  const progress = core.progressOf(message.from);
  progress.recentActive = true;
  maybeProbeAfterSnapshot(core, progress);
  progress.probeSent = false;
  // Appends may have been lost: free a slot of a full window so the next Append (which the
  // follower rejects if it has a gap) gets us back to probing.
  if (progress.state === 'replicate' && progress.inflights.full()) {
    progress.inflights.freeFirstOne();
  }
  if (progress.match < core.log.lastIndex()) sendAppend(core, message.from, true);
  if (message.context > 0) {
    for (const read of core.reads.ack(message.from, message.context, core.voters)) {
      core.readStates.push(read);
    }
  }
}

/**
 * Starts handing leadership to `to` (thesis §3.10): proposals are refused from now on, the
 * target is caught up, then told to campaign at once. Aborted after an election timeout.
 */
export function startTransfer(core: RaftCore, to: NodeId): void {
  if (core.transferee === to) return;
  core.transferee = to;
  core.electionElapsedTicks = 0;
  if (core.progressOf(to).match === core.log.lastIndex()) maybeSendTimeoutNow(core, to);
  else sendAppend(core, to, true);
}
