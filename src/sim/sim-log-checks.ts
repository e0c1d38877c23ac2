/**
 * The simulator's checks on the nodes' logs, by content (each log's {@link SimLogContents}:
 * term and record checksum per index), reporting to the run's {@link SimHistory}:
 *
 * - {@link recordCommitted}: the entries a leader's commit index covers join the history's
 *   committed entries (which never change, see `SimHistory.committed`);
 * - {@link checkLeaderCompleteness} (Raft §5.4): a leader holds every entry committed by its
 *   term, with the same term and checksum;
 * - {@link checkLogMatching} (Raft §5.3): two logs that hold an entry of the same term at an
 *   index hold identical entries up to it; and each node's recorded contents agree with its
 *   CommitLog's terms (a check of the simulator itself).
 *
 * The cluster decides when each runs (see sim-cluster.ts).
 */
import { assert } from '../common/assert';
import type { NodeId } from '../common/types';
import type { CommitLog } from '../store/commit-log';
import type { SimHistory } from './sim-history';
import type { SimLogContents } from './sim-log-contents';

/** One running node's log, as the checks read it. */
export interface CheckedLog {
  readonly id: NodeId;
  readonly log: CommitLog;
  readonly contents: SimLogContents;
}

function crcHex(crc: number | undefined): string {
  return crc === undefined ? 'none' : crc.toString(16).padStart(8, '0');
}

/**
 * Records the entries leader `node` of `term` holds up to `commitIndex`, past those recorded
 * already (committed entries are recorded as a prefix: by leaders here, by nodes as they apply in
 * order), and only as far as its CommitLog has them (a new leader's followers may commit its
 * first entry before its own append). Every commit index starts at a leader, so this sees each
 * committed entry, unless a leader commits and loses its role within one event; then a later
 * leader or an applying node records it.
 */
export function recordCommitted(
  h: SimHistory,
  node: CheckedLog,
  term: number,
  commitIndex: number,
): void {
  if (commitIndex <= h.committedIndexMax) return;
  const { log, contents } = node;
  const upTo = Math.min(commitIndex, log.lastIndex(), contents.lastIndex());
  for (let index = Math.max(h.committedIndexMax + 1, log.firstIndex()); index <= upTo; index++) {
    const entryTerm = log.termAt(index);
    const crc = contents.crcAt(index);
    if (entryTerm === undefined || crc === undefined) continue;
    h.committed(node.id, index, entryTerm, crc, term);
  }
}

/**
 * Leader Completeness: leader `node` of `term` holds every entry committed by `term` (those
 * recorded with `byTerm` at most `term`), with the same term and record checksum. Meant for a
 * node first seen leading: its log as elected is all in its CommitLog by then (a candidate sends
 * its vote requests only after its earlier writes). Entries below its first index are not
 * checked: only applied entries are removed, so it held them (a node that compacted and then
 * led again was reported as missing them).
 */
export function checkLeaderCompleteness(h: SimHistory, node: CheckedLog, term: number): void {
  for (let index = Math.max(1, node.log.firstIndex()); index <= h.committedIndexMax; index++) {
    const record = h.committedAt[index];
    if (record === undefined || record.byTerm > term) continue;
    const entryTerm = node.log.termAt(index);
    const crc = node.contents.crcAt(index);
    if (entryTerm === record.term && crc === record.crc) continue;
    h.violation(
      `leader ${node.id} of term ${term} holds term ${String(entryTerm)} checksum ` +
        `${crcHex(crc)} at ${index}, where ${record.node} had term ${record.term} checksum ` +
        `${crcHex(record.crc)} committed by term ${record.byTerm}`,
    );
    return;
  }
}

/**
 * Log Matching on contents: two logs that hold an entry of the same term at an index hold
 * identical entries (term and record checksum) at every index up to it. First checks that each
 * node's recorded contents cover its log with the same terms.
 */
export function checkLogMatching(h: SimHistory, logs: readonly CheckedLog[]): void {
  for (const node of logs) if (!contentsMatchLog(h, node)) return;
  for (let a = 0; a < logs.length; a++) {
    for (let b = a + 1; b < logs.length; b++) {
      const x = logs[a];
      const y = logs[b];
      assert(x !== undefined && y !== undefined, 'sim: log pair');
      const first = Math.max(x.log.firstIndex(), y.log.firstIndex());
      let i = Math.min(x.log.lastIndex(), y.log.lastIndex());
      while (i >= first && x.log.termAt(i) !== y.log.termAt(i)) i--;
      const agreedAt = i;
      for (; i >= first; i--) {
        if (x.log.termAt(i) === y.log.termAt(i) && x.contents.crcAt(i) === y.contents.crcAt(i)) {
          continue;
        }
        h.violation(
          `log matching: ${x.id} and ${y.id} both hold term ${String(x.log.termAt(agreedAt))} ` +
            `at ${agreedAt} but differ at ${i}: term ${String(x.log.termAt(i))} checksum ` +
            `${crcHex(x.contents.crcAt(i))} vs term ${String(y.log.termAt(i))} checksum ` +
            `${crcHex(y.contents.crcAt(i))}`,
        );
        return;
      }
    }
  }
}

/** The recorded contents of `node` cover its log with the same terms (a check of the sim). */
function contentsMatchLog(h: SimHistory, node: CheckedLog): boolean {
  const { log, contents } = node;
  const last = log.lastIndex();
  for (let index = Math.max(log.firstIndex(), 1); index <= last; index++) {
    if (contents.termAt(index) === log.termAt(index) && contents.crcAt(index) !== undefined) {
      continue;
    }
    h.violation(
      `sim: ${node.id}'s recorded contents have term ${String(contents.termAt(index))} at ` +
        `${index}, its CommitLog ${String(log.termAt(index))}`,
    );
    return false;
  }
  return true;
}
