/**
 * Leader election (Raft §5.2, §5.4.1) with PreVote (thesis §9.6): campaigns, the vote tally and
 * the answer to vote requests, which is the same in every role.
 */
import { asLogIndex, asTerm, type NodeId } from '../common/types';
import { voteOutcome } from './quorum';
import type { RaftCore } from './raft-core';
import { broadcastAppend } from './replicator';
import { TERM_MAX, type PreVoteMessage, type VoteMessage } from './types';

/** Why a node campaigns: its timer ran out (with or without PreVote), or TimeoutNow told it. */
export type CampaignKind = 'preElection' | 'election' | 'transfer';

/**
 * Starts a campaign. A pre-candidate asks for votes at term + 1 without changing its own term,
 * so a node that cannot win never disrupts the group. A candidate bumps its term and votes for
 * itself; its Vote requests wait until that is durable (thesis §3.8), so no grant can arrive
 * before its own vote is safe. A transfer campaign skips PreVote and carries the transfer flag,
 * which lets it through the other nodes' leader lease (thesis §3.10). A node whose term
 * reached TERM_MAX refuses to campaign (peers would drop a request of a later term).
 */
export function campaign(core: RaftCore, kind: CampaignKind): void {
  if (core.role === 'leader') return;
  if (core.term >= TERM_MAX) {
    // Every campaign asks for term + 1, which would pass the bound peers and the store accept.
    // Counted for the driver to report; the timer restarts, so this is once per timeout.
    core.stats.campaignsRefusedTermMax += 1;
    core.resetElectionTimer();
    return;
  }
  if (kind === 'preElection') core.becomePreCandidate();
  else core.becomeCandidate();
  const voteTerm = kind === 'preElection' ? core.term + 1 : core.term;
  if (tallyVote(core, core.id, true)) return;
  const lastIndex = asLogIndex(core.log.lastIndex());
  const lastTerm = asTerm(core.log.lastTerm());
  for (const peer of core.others) {
    const envelope = core.envelope(peer, voteTerm);
    if (kind === 'preElection') {
      core.send({ ...envelope, type: 'PreVote', lastIndex, lastTerm });
    } else {
      core.sendAfterPersist({
        ...envelope,
        type: 'Vote',
        lastIndex,
        lastTerm,
        transfer: kind === 'transfer',
      });
    }
  }
}

/**
 * Records `from`'s answer in the current (pre-)campaign and acts on the outcome. Returns true
 * when the campaign ended (won or lost).
 */
export function tallyVote(core: RaftCore, from: NodeId, granted: boolean): boolean {
  if (!core.votes.has(from)) core.votes.set(from, granted);
  const outcome = voteOutcome(core.voters, core.votes);
  if (outcome === 'pending') return false;
  if (outcome === 'lost') {
    core.becomeFollower(core.term, null);
  } else if (core.role === 'preCandidate') {
    campaign(core, 'election');
  } else {
    core.becomeLeader();
    broadcastAppend(core);
  }
  return true;
}

/**
 * Answers a PreVote or Vote whose term is at least ours (the term check already ran). A vote is
 * granted once per term, to a candidate whose log is at least as up to date as ours (§5.4.1); a
 * pre-vote also to a future term without recording anything. Answers promise the vote is
 * durable, so they are sent after persistence.
 */
/**
 * Tie-break between two pre-candidates with equal logs: only the lower id is granted, so after
 * a leader dies two followers whose timers fired together do not both become candidates and
 * split the real vote (each votes for itself). PreVote grants only decide who may campaign,
 * never who wins (thesis §9.6), so this costs no safety; the refused node tries again on its
 * next timeout if the other does not win.
 */
function yieldsToSelf(core: RaftCore, request: PreVoteMessage | VoteMessage): boolean {
  return (
    request.type === 'PreVote' &&
    core.role === 'preCandidate' &&
    request.lastIndex === core.log.lastIndex() &&
    request.lastTerm === core.log.lastTerm() &&
    request.from > core.id
  );
}

export function answerVoteRequest(core: RaftCore, request: PreVoteMessage | VoteMessage): void {
  const isPreVote = request.type === 'PreVote';
  const canVote =
    core.vote === request.from ||
    (core.vote === null && core.leaderId === null) ||
    (isPreVote && request.term > core.term);
  const granted =
    canVote &&
    core.log.isUpToDate(request.lastIndex, request.lastTerm) &&
    !yieldsToSelf(core, request);
  const type = isPreVote ? 'PreVoteResp' : 'VoteResp';
  if (!granted) {
    core.sendAfterPersist({ ...core.envelope(request.from), type, reject: true });
    return;
  }
  // A granted answer carries the term asked for, so a pre-candidate can count it.
  core.sendAfterPersist({ ...core.envelope(request.from, request.term), type, reject: false });
  if (!isPreVote) {
    core.vote = request.from;
    core.electionElapsedTicks = 0;
  }
}
