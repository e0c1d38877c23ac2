/**
 * The step function of pre-candidates and candidates (Raft §5.2, thesis §9.6): count answers to
 * our (pre-)votes, and give way to a leader of our term.
 */
import { tallyVote } from './election';
import type { RaftCore } from './raft-core';
import { stepFollower } from './step-follower';
import type { Message } from './types';

/** Handles a message of the current term while pre-candidate or candidate. */
export function stepCandidate(core: RaftCore, message: Message): void {
  switch (message.type) {
    case 'Append':
    case 'Heartbeat':
      // A leader of our term exists: it won, we lost (Raft §5.2).
      core.becomeFollower(core.term, message.from);
      stepFollower(core, message);
      return;
    case 'PreVoteResp':
      if (core.role === 'preCandidate') tallyVote(core, message.from, !message.reject);
      else core.stats.messagesUnexpected += 1;
      return;
    case 'VoteResp':
      if (core.role === 'candidate') tallyVote(core, message.from, !message.reject);
      else core.stats.messagesUnexpected += 1;
      return;
    default:
      core.stats.messagesUnexpected += 1;
  }
}
