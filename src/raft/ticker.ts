/**
 * What one tick does: followers and candidates count toward a randomized election timeout;
 * leaders send heartbeats (and what they held back from a follower: `sendWithheld`), run the
 * CheckQuorum round (thesis §6.2), abort a stalled leadership transfer, hand leadership to
 * the preferred leader once it has caught up, and time how long followers wait for a snapshot.
 */
import type { NodeId } from '../common/types';
import { campaign } from './election';
import { hasQuorum } from './quorum';
import type { RaftCore } from './raft-core';
import { broadcastHeartbeat, sendWithheld } from './replicator';
import { startTransfer } from './step-leader';


/** Advances the node's logical clock by one tick. */
export function tick(core: RaftCore): void {
  if (core.role === 'leader') tickLeader(core);
  else tickElection(core);
}

function tickElection(core: RaftCore): void {
  core.electionElapsedTicks += 1;
  if (core.electionElapsedTicks >= core.randomizedElectionTimeoutTicks) {
    campaign(core, core.cfg.preVote ? 'preElection' : 'election');
  }
}

function tickLeader(core: RaftCore): void {
  core.heartbeatElapsedTicks += 1;
  core.electionElapsedTicks += 1;
  for (const progress of core.progress.values()) {
    if (progress.state === 'snapshot') progress.snapshotElapsedTicks += 1;
  }
  if (core.electionElapsedTicks >= core.cfg.electionTimeoutTicks) {
    core.electionElapsedTicks = 0;
    if (core.cfg.checkQuorum) {
      const active = (id: NodeId): boolean =>
        id === core.id || core.progress.get(id)?.recentActive === true;
      if (!hasQuorum(core.voters, active)) {
        core.becomeFollower(core.term, null);
        return;
      }
      for (const progress of core.progress.values()) progress.recentActive = false;
    }
    if (core.transferee !== null) {
      // The transfer did not finish within an election timeout: abort it (thesis §3.10), and
      // let a failed hand-off to the preferred leader rest before it is tried again.
      core.transferee = null;
      core.notePreferredHandoffFailed();
    }
  }
  if (core.preferredTransferHoldTicks > 0) core.preferredTransferHoldTicks -= 1;
  if (core.heartbeatElapsedTicks >= core.cfg.heartbeatIntervalTicks) {
    core.heartbeatElapsedTicks = 0;
    broadcastHeartbeat(core, core.reads.lastContext());
    for (const peer of core.others) sendWithheld(core, peer);
    maybeTransferToPreferred(core);
  }
}

/** DLedger's preferred leader: once it holds everything committed, hand leadership to it. */
function maybeTransferToPreferred(core: RaftCore): void {
  const preferred = core.cfg.preferredLeaderId;
  if (preferred === null || preferred === core.id || core.transferee !== null
    || core.preferredTransferHoldTicks > 0) {
    return;
  }
  const progress = core.progressOf(preferred);
  if (progress.recentActive && progress.match >= core.log.committed) {
    core.handedOffToPreferred = true;
    startTransfer(core, preferred);
  }
}
