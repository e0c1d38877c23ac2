/**
 * The leader's side of log replication (Raft §5.3, thesis §10.2): building Append messages from
 * what is in memory (or asking the driver to load it), pipelining within each follower's window,
 * heartbeats, and advancing the commit index by the rule of Raft §5.4.2.
 */
import { assert } from '../common/assert';
import { asLogIndex, asTerm, type NodeId } from '../common/types';
import type { Progress } from './progress';
import { majorityMatchIndex } from './quorum';
import type { RaftCore } from './raft-core';
import { entriesSizeBytes, type Entry } from './types';

/**
 * Sends `to` the next Append if its window allows. With `sendIfEmpty` an Append without entries
 * is sent too (to carry the commit index or probe). Returns true when a message was sent.
 */
export function sendAppend(core: RaftCore, to: NodeId, sendIfEmpty: boolean): boolean {
  const progress = core.progressOf(to);
  if (progress.isPaused()) return false;
  if (progress.next < core.log.firstIndex) {
    // The follower needs entries before our first index: only a snapshot can help it.
    progress.becomeSnapshot();
    core.snapshotsNeeded.add(to);
    return false;
  }
  const entries = core.log.slice(progress.next, core.log.lastIndex(), core.cfg.batchEntriesMax,
    core.cfg.batchBytesMax);
  if (entries === undefined) {
    requestLoad(core, to, progress);
    return false;
  }
  if (entries.length === 0 && !sendIfEmpty) return false;
  emitAppend(core, to, progress, entries);
  return true;
}

/** Sends `to` as many Appends as its window and the log allow. */
export function sendAppendsWhileOpen(core: RaftCore, to: NodeId): void {
  // Bounded: each send fills one window slot, or the follower is probing (one message).
  for (let i = 0; i <= core.cfg.inflightCountMax; i++) {
    if (!sendAppend(core, to, false)) return;
  }
}

/**
 * True while newly proposed entries should wait for `progress`'s follower: it is in replicate
 * state with Appends in flight, and what waits is below `appendHoldBytes`. Its acknowledgement
 * of those Appends (or the next heartbeat, if that is lost: {@link sendWithheld}) sends them
 * all in one Append. A follower handles Appends in rounds, one write and fsync each: an Append
 * sent while it is in a round waits for the next one anyway, so holding entries back costs the
 * latency of one hop, and spares both sides a message, its decoding and a wake-up per proposal.
 */
function holding(core: RaftCore, progress: Progress): boolean {
  return progress.state === 'replicate' && progress.inflights.count > 0
    && progress.heldBytes < core.cfg.appendHoldBytes;
}

/**
 * At a heartbeat: sends `to` whatever was held back from it, the entries `holding` kept or the
 * commit index `broadcastCommit` left to its next acknowledgement. A follower whose answers are
 * lost (a one-way cut) sends no acknowledgement, and heartbeats carry the commit index capped at
 * its last known match; this keeps it learning entries and the commit index once a heartbeat
 * interval, as a follower that answers does at once.
 */
export function sendWithheld(core: RaftCore, to: NodeId): void {
  const progress = core.progressOf(to);
  if (progress.state !== 'replicate') return;
  if (progress.heldBytes > 0) sendAppendsWhileOpen(core, to);
  if (commitUnsent(core, progress)) sendAppend(core, to, true);
}

/** True when an empty Append would tell the follower a commit index no Append told it yet. */
function commitUnsent(core: RaftCore, progress: Progress): boolean {
  return progress.commitSent < Math.min(core.commitIndex(), progress.next - 1);
}

/** After a proposal of `bytes`: sends `to` its new entries unless they wait (see `holding`). */
export function sendProposed(core: RaftCore, to: NodeId, bytes: number): void {
  const progress = core.progressOf(to);
  progress.heldBytes += bytes;
  if (!holding(core, progress)) sendAppendsWhileOpen(core, to);
}

/** Sends every follower what it is missing, or an empty Append carrying the commit index. */
export function broadcastAppend(core: RaftCore): void {
  for (const peer of core.others) sendAppend(core, peer, true);
}

/**
 * Tells the followers a new commit index. Entries not sent yet go out and carry it. A follower
 * in replicate state with Appends in flight gets no empty Append: its acknowledgement of them
 * brings one ({@link sendCommitIfIdle}) unless a later Append carried the index first. Under a
 * steady load the commit index then always rides on entries, where an empty Append per commit
 * doubled the messages (and the follower's rounds) per proposal.
 */
export function broadcastCommit(core: RaftCore): void {
  for (const peer of core.others) {
    const progress = core.progressOf(peer);
    if (progress.state !== 'replicate') sendAppend(core, peer, true);
    else if (!holding(core, progress) && !sendAppend(core, peer, false)) {
      sendCommitIfIdle(core, peer);
    }
  }
}

/**
 * Sends `to` an empty Append with the commit index when it is in replicate state, nothing is in
 * flight to it, and no Append told it this commit index yet.
 */
export function sendCommitIfIdle(core: RaftCore, to: NodeId): void {
  const progress = core.progressOf(to);
  if (progress.state !== 'replicate' || progress.inflights.count > 0) return;
  if (commitUnsent(core, progress)) sendAppend(core, to, true);
}

/** Sends every follower a heartbeat; a non-zero `context` names a ReadIndex round. */
export function broadcastHeartbeat(core: RaftCore, context: number): void {
  for (const peer of core.others) {
    // Never tell a follower a commit index beyond what it is known to hold (etcd does the same).
    const commit = Math.min(core.progressOf(peer).match, core.log.committed);
    core.send({ ...core.envelope(peer), type: 'Heartbeat', commit: asLogIndex(commit), context });
  }
}

function requestLoad(core: RaftCore, to: NodeId, progress: Progress): void {
  progress.loadPendingFrom = progress.next;
  core.loads.push({
    peer: to,
    fromIndex: asLogIndex(progress.next),
    countMax: core.cfg.batchEntriesMax,
    bytesMax: core.cfg.batchBytesMax,
  });
}

/** Sends one Append with `entries`, which follow progress.next - 1 (>= firstIndex - 1). */
function emitAppend(core: RaftCore, to: NodeId, progress: Progress, entries: readonly Entry[]):
void {
  const prevIndex = progress.next - 1;
  const prevTerm = core.log.termAt(prevIndex);
  assert(prevTerm !== undefined, () => `replicator: no term at ${prevIndex} to send from`);
  const first = entries[0];
  assert(first === undefined || first.index === prevIndex + 1, 'replicator: entries misplaced');
  const commit = core.commitIndex();
  // Spelled out rather than spread from `core.envelope()`: one Append per follower per round,
  // and an object spread is a slow clone in V8 where a literal allocates a fixed shape.
  core.send({
    from: core.id, to, term: asTerm(core.term),
    type: 'Append',
    prevIndex: asLogIndex(prevIndex),
    prevTerm: asTerm(prevTerm),
    entries,
    commit,
  });
  progress.commitSent = Math.max(progress.commitSent, Math.min(commit, prevIndex + entries.length));
  progress.heldBytes = 0;
  progress.sentEntries(prevIndex + entries.length, entries.length, entriesSizeBytes(entries));
}

/**
 * The driver loaded entries for follower `peer`. They are sent if the follower still waits for
 * exactly them and they still match the log; otherwise they are dropped (the next heartbeat
 * answer retries).
 */
export function onEntriesLoaded(core: RaftCore, peer: NodeId, entries: readonly Entry[]): void {
  const progress = core.role === 'leader' ? core.progress.get(peer) : undefined;
  const from = progress?.loadPendingFrom ?? null;
  if (progress === undefined || from === null) {
    core.stats.loadsDiscarded += 1;
    return;
  }
  progress.loadPendingFrom = null;
  const usable = takeMatching(core, from, entries);
  if (usable.length === 0 || progress.next !== from) {
    core.stats.loadsDiscarded += 1;
    return;
  }
  emitAppend(core, peer, progress, usable);
  sendAppendsWhileOpen(core, peer);
}

/** The prefix of `entries` that starts at `from`, is consecutive, matches the log and fits. */
function takeMatching(core: RaftCore, from: number, entries: readonly Entry[]): Entry[] {
  const out: Entry[] = [];
  let bytes = 0;
  for (const entry of entries) {
    if (out.length >= core.cfg.batchEntriesMax) break;
    if (entry.index !== from + out.length || !core.log.matchTerm(entry.index, entry.term)) break;
    bytes += entriesSizeBytes([entry]);
    if (out.length > 0 && bytes > core.cfg.batchBytesMax) break;
    out.push(entry);
  }
  return out;
}

/**
 * Raises the commit index to the highest index a majority holds durably, but only if that
 * entry is of the current term: counting replicas of older-term entries is unsafe (Raft §5.4.2,
 * Figure 8). The leader counts itself only up to its durable index (thesis §10.2.1).
 */
export function maybeCommit(core: RaftCore): boolean {
  assert(core.role === 'leader', 'replicator: only a leader commits');
  const matches = [core.log.durableIndex];
  for (const peer of core.others) matches.push(core.progressOf(peer).match);
  const index = majorityMatchIndex(matches);
  if (index <= core.log.committed || core.log.termAt(index) !== core.term) return false;
  return core.log.commitTo(index);
}

/** Follow-up once the leader's commit index moved: budgets, waiting reads, followers. */
export function afterLeaderCommit(core: RaftCore): void {
  core.releaseCommitted();
  if (core.committedInCurrentTerm()) {
    const waiting = core.reads.takeWaitingForCommit();
    if (waiting.length > 0) startReads(core, waiting);
  }
  broadcastCommit(core);
}

/** Records reads at the current commit index and confirms leadership for them (§6.4). */
export function startReads(core: RaftCore, requestIds: readonly string[]): void {
  assert(core.committedInCurrentTerm(), 'replicator: read before the term committed');
  const index = core.commitIndex();
  if (core.voters.length === 1) {
    for (const requestId of requestIds) core.readStates.push({ requestId, index });
    return;
  }
  for (const requestId of requestIds) core.reads.add(requestId, index, core.id);
  broadcastHeartbeat(core, core.reads.lastContext());
}

/** Sends TimeoutNow to the transfer target once its log matches ours (thesis §3.10). */
export function maybeSendTimeoutNow(core: RaftCore, peer: NodeId): void {
  if (core.transferee !== peer) return;
  if (core.progressOf(peer).match !== core.log.lastIndex()) return;
  core.send({ ...core.envelope(peer), type: 'TimeoutNow' });
}
