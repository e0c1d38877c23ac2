/**
 * Checks the cluster makes on single nodes as things happen, each naming the rule broken:
 *
 * - {@link checkAppendReplaces}: an append that replaces part of a log starts at a conflict;
 * - {@link checkCommitRule}: a leader commits only entries of its own term;
 * - {@link checkDurableMajority}: an entry first seen committed is durable on a majority;
 * - {@link checkOneVote}: a node grants one vote per term, across incarnations.
 *
 * Each catches a real bug the end-to-end checks (two entries applied at one index) see only
 * after a further unlucky turn that most runs never take.
 */
import type { NodeId } from '../common/types';
import type { RaftDriverStatus } from '../broker/raft-driver';
import type { Message } from '../raft/types';
import type { LogEntry } from '../store/log-record';
import type { SimHistory } from './sim-history';
import type { CheckedLog } from './sim-log-checks';
import type { SimLogContents } from './sim-log-contents';
import type { SimNode } from './sim-node';

/**
 * An append that replaces part of the log must start at a conflict (Raft §5.3: delete the
 * existing entry and all that follow it only if it conflicts with a new one): replacing an
 * entry with one of the same term cuts a matching suffix, entries the node may have
 * acknowledged. Acknowledgements of the replaced part are void from here.
 */
export function checkAppendReplaces(
  h: SimHistory,
  node: SimNode,
  contents: SimLogContents,
  entries: readonly LogEntry[],
): void {
  const head = entries[0];
  if (head === undefined || head.index > contents.lastIndex()) return;
  if (contents.termAt(head.index) === head.term) {
    h.violation(
      `${node.id} replaced its log from ${head.index} (up to ${contents.lastIndex()}) with ` +
        `entries up to ${head.index + entries.length - 1} of the same term ${head.term} there`,
    );
  }
  node.ledger.replacedFrom(head.index);
}

/**
 * A leader raises its commit index only to an entry of its own term (Raft §5.4.2, Figure 8:
 * counting replicas commits no entry of an earlier term; those commit with the first entry of
 * its own). Checked whenever the commit index of a leadership is seen to rise.
 */
export function checkCommitRule(
  h: SimHistory,
  node: SimNode,
  checked: CheckedLog,
  status: RaftDriverStatus,
): void {
  const last = node.leaderCommit;
  node.leaderCommit = { term: status.term, commitIndex: status.commitIndex };
  if (last.term !== status.term || status.commitIndex <= last.commitIndex) return;
  const entryTerm = checked.contents.termAt(status.commitIndex);
  if (entryTerm === undefined || entryTerm === status.term) return;
  h.violation(
    `leader ${node.id} of term ${status.term} raised its commit index from ` +
      `${last.commitIndex} to ${status.commitIndex}, an entry of term ${entryTerm}`,
  );
}

/**
 * An entry first seen committed is durable on a majority (Raft §5.3: committed means stored
 * on a majority; the leader counts itself only for what it has synced, thesis §10.2.1). A
 * running node holds it durably up to its CommitLog's persisted index; a crashed one as its
 * log was persisted when it crashed.
 */
export function checkDurableMajority(
  h: SimHistory,
  index: number,
  nodes: readonly SimNode[],
): void {
  const record = h.committedAt[index];
  if (record === undefined) return;
  const holders = nodes.filter((n) => {
    if (n.state !== 'down' && n.commitLog !== undefined && n.contents !== undefined) {
      return (
        index <= n.commitLog.persistedIndex() &&
        n.contents.termAt(index) === record.term &&
        n.contents.crcAt(index) === record.crc
      );
    }
    return n.durableAtCrash?.holds(index, record.term, record.crc) === true;
  });
  if (holders.length * 2 > nodes.length) return;
  const names = holders.map((n) => n.id).join(',');
  h.violation(
    `durability: index ${index} term ${record.term} committed (seen at ${record.node}) but ` +
      `durable only on ${names === '' ? 'no node' : names}`,
  );
}

/** A node grants at most one vote per term, across incarnations (Raft §5.2). */
export function checkOneVote(
  h: SimHistory,
  votesGranted: Map<string, NodeId>,
  message: Message,
): void {
  if (message.type !== 'VoteResp' || message.reject) return;
  const key = `${message.from} ${message.term}`;
  const earlier = votesGranted.get(key);
  if (earlier === undefined) votesGranted.set(key, message.to);
  else if (earlier !== message.to) {
    h.violation(
      `${message.from} voted for ${earlier} and for ${message.to} in term ${message.term}`,
    );
  }
}
