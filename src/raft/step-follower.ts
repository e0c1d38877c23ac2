/**
 * The follower's step function: accept the leader's log (Raft §5.3), learn its commit index,
 * and campaign at once on TimeoutNow (thesis §3.10). The term check already ran in
 * raft-node.ts, so every message here is of the node's current term. A term has at most one
 * leader (Election Safety, Raft §5.2), so once this node follows one, the messages only a
 * leader sends (Append, Heartbeat, TimeoutNow) are dropped when another member sends them.
 */
import { campaign } from './election';
import type { RaftCore } from './raft-core';
import type { AppendMessage, HeartbeatMessage, Message } from './types';

/** Handles a message of the current term while follower. */
export function stepFollower(core: RaftCore, message: Message): void {
  switch (message.type) {
    case 'Append':
      if (!fromLeader(core, message)) return;
      if (rewritesOwnTerm(core, message)) {
        core.stats.messagesMalformed += 1;
        return;
      }
      core.electionElapsedTicks = 0;
      core.followLeader(message.from);
      handleAppend(core, message);
      return;
    case 'Heartbeat':
      if (!fromLeader(core, message)) return;
      core.electionElapsedTicks = 0;
      core.followLeader(message.from);
      handleHeartbeat(core, message);
      return;
    case 'TimeoutNow':
      // Only this term's leader hands over; from anyone else it would depose a live leader.
      if (!fromLeader(core, message)) return;
      campaign(core, 'transfer');
      return;
    default:
      core.stats.messagesUnexpected += 1;
  }
}

/**
 * True when `message` may be from this term's leader: none is known yet, or it is the sender.
 * Otherwise it is counted as unexpected.
 */
function fromLeader(core: RaftCore, message: Message): boolean {
  if (core.leaderId === null || core.leaderId === message.from) return true;
  core.stats.messagesUnexpected += 1;
  return false;
}

/**
 * True when `message` would drop an entry of its own term from our log. Only the leader of a
 * term makes entries of that term, and it never rewrites them (Raft §5.3), so such an Append is
 * not from the leader, whoever we take for it. Log terms never fall, so the suffix it would drop
 * holds one exactly when our last entry is of its term. Cheap on the usual path: a leader's
 * Appends go on from our last index.
 */
function rewritesOwnTerm(core: RaftCore, message: AppendMessage): boolean {
  const log = core.log;
  if (log.lastTerm() !== message.term || message.prevIndex >= log.lastIndex()) return false;
  if (message.prevIndex < log.committed || !log.matchTerm(message.prevIndex, message.prevTerm)) {
    return false;
  }
  const conflictIndex = log.findConflict(message.entries);
  return conflictIndex !== undefined && conflictIndex <= log.lastIndex();
}

/**
 * AppendEntries (Raft §5.3): if the log holds (prevIndex, prevTerm), drop any conflicting suffix
 * (`rewritesOwnTerm` ran first), append what is new and raise the commit index; otherwise
 * reject with a hint naming the conflicting term and where it starts, so the leader skips that
 * whole term. Every answer is sent after persistence: an acknowledgement promises the entries
 * are durable.
 */
export function handleAppend(core: RaftCore, message: AppendMessage): void {
  const log = core.log;
  if (message.prevIndex < log.committed) {
    // Everything up to our commit index matches any leader's log (Leader Completeness).
    acknowledge(core, message, log.committed);
    return;
  }
  if (log.matchTerm(message.prevIndex, message.prevTerm)) {
    const lastNewIndex = message.prevIndex + message.entries.length;
    const conflictIndex = log.findConflict(message.entries);
    if (conflictIndex !== undefined) {
      log.append(message.entries.slice(conflictIndex - message.prevIndex - 1));
    }
    log.commitTo(Math.min(message.commit, lastNewIndex));
    acknowledge(core, message, lastNewIndex);
    return;
  }
  let hintTerm = 0;
  let hintIndex = log.lastIndex() + 1;
  const termThere = log.termAt(message.prevIndex);
  if (message.prevIndex <= log.lastIndex() && termThere !== undefined) {
    hintTerm = termThere;
    hintIndex = log.firstIndexOfTerm(termThere, message.prevIndex);
  }
  core.sendAfterPersist(
    core.appendResp(message.from, true, 0, message.prevIndex, hintTerm, hintIndex));
}

/**
 * Answers an Append we accepted. An acceptance to the same leader still queued just before it
 * (the same Ready handles several Appends) is replaced, not joined: the leader learns the higher
 * match from the newer one alone, and one answer per Ready is one message per round.
 */
function acknowledge(core: RaftCore, message: AppendMessage, matchIndex: number): void {
  const queued = core.messagesAfterPersist;
  const last = queued[queued.length - 1];
  if (last !== undefined && last.type === 'AppendResp' && !last.reject && last.to === message.from
    && last.term === core.term && last.matchIndex <= matchIndex) {
    queued.pop();
  }
  core.sendAfterPersist(core.appendResp(message.from, false, matchIndex, 0, 0, 0));
}

/**
 * A heartbeat carries the leader's commit index, capped by the leader at what we are known to
 * hold. The answer echoes the ReadIndex context; it promises nothing durable, so it goes at once.
 */
function handleHeartbeat(core: RaftCore, message: HeartbeatMessage): void {
  core.log.commitTo(Math.min(message.commit, core.log.lastIndex()));
  core.send({ ...core.envelope(message.from), type: 'HeartbeatResp', context: message.context });
}
