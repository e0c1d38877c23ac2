/**
 * The history of a simulated run and the safety checks made on it as it happens:
 *
 * - Election Safety (Raft §5.2): at most one leader per term;
 * - State Machine Safety (Raft §5.4.3): no two nodes (or two incarnations of one node) apply
 *   different entries at one index, and each node applies indexes in order without gaps;
 * - what is committed at an index never changes: every entry seen committed (in a leader's log
 *   up to its commit index, or applied anywhere) is recorded with its term and record checksum,
 *   and any later sighting must agree;
 * - an acknowledged proposal is the entry applied at its index, with its payload;
 * - a ReadIndex point (thesis §6.4) covers every proposal acknowledged before the read began.
 *
 * Checks that need the nodes' logs (Log Matching, Leader Completeness against the committed
 * entries recorded here, liveness) live with the cluster; they report here. Violations are
 * collected, not thrown, so a run ends with all it found and the trace around the first one.
 */
import type { NodeId } from '../common/types';
import type { LogEntry } from '../store/log-record';
import { entryChecksum } from './sim-log-contents';

/** What was applied at one index, as first seen anywhere. */
export interface AppliedRecord {
  readonly term: number;
  readonly type: number;
  readonly payloadHex: string;
  readonly node: NodeId;
}

/** An entry known to be committed, as first seen. */
export interface CommittedRecord {
  readonly term: number;
  /** The entry's record checksum (`entryChecksum`). */
  readonly crc: number;
  /**
   * A term by which it was committed: the term of the leader whose commit index covered it, or
   * the term of a node that applied it (at least the committing leader's); Infinity when not
   * known. Every leader of a later term must hold the entry (Raft §5.4, Leader Completeness).
   */
  readonly byTerm: number;
  readonly node: NodeId;
}

/** A proposal the cluster acknowledged (its promise resolved). */
export interface AckedProposal {
  readonly index: number;
  readonly term: number;
  readonly payloadHex: string;
  readonly node: NodeId;
}

/** How many violations a history keeps (the rest are counted). */
const VIOLATIONS_KEPT_MAX = 50;

/** The recorder; see the file comment. */
export class SimHistory {
  readonly leaderOfTerm = new Map<number, NodeId>();
  readonly appliedAt = new Map<number, AppliedRecord>();
  /** The index each node's current incarnation applied up to. */
  readonly appliedIndexOf = new Map<NodeId, number>();
  readonly acked = new Map<number, AckedProposal>();
  /** Committed entries by index (holes where none was seen yet). */
  readonly committedAt: Array<CommittedRecord | undefined> = [];
  /** The highest index in {@link committedAt}. */
  committedIndexMax = 0;
  readonly violations: string[] = [];
  violationCount = 0;
  /** The first violation's trace context, if any. */
  firstViolationTrace: string[] | undefined;
  maxAckedIndex = 0;
  proposalsSent = 0;
  readonly proposalsRejected = new Map<string, number>();
  readsServed = 0;
  readsRejected = 0;
  crashes = 0;
  /** Crashes that struck right after a promise or a truncation (also in `crashes`). */
  aimedCrashes = 0;
  pauses = 0;
  partitions = 0;
  networkChanges = 0;

  constructor(private readonly recentTrace: () => string[]) {}

  /** Records a violation (with the trace around the first one). */
  violation(message: string): void {
    this.violationCount += 1;
    if (this.violations.length < VIOLATIONS_KEPT_MAX) this.violations.push(message);
    this.firstViolationTrace ??= this.recentTrace();
  }

  /** `node` was seen leading `term`. */
  leaderSeen(node: NodeId, term: number): void {
    const known = this.leaderOfTerm.get(term);
    if (known === undefined) this.leaderOfTerm.set(term, node);
    else if (known !== node) this.violation(`two leaders in term ${term}: ${known} and ${node}`);
  }

  /** The highest term any leader was seen in. */
  maxLeaderTerm(): number {
    let max = 0;
    for (const term of this.leaderOfTerm.keys()) max = Math.max(max, term);
    return max;
  }

  /** A node (re)started: its state machine starts over from `appliedIndex`. */
  nodeStarted(node: NodeId, appliedIndex: number): void {
    this.appliedIndexOf.set(node, appliedIndex);
  }

  /**
   * `node` holds the entry (term, crc) at `index`, known committed by `byTerm`. The first sighting
   * is recorded; a later one must agree (a committed entry never changes) and may lower `byTerm`.
   */
  committed(node: NodeId, index: number, term: number, crc: number, byTerm: number): void {
    const earlier = this.committedAt[index];
    if (earlier === undefined) {
      this.committedAt[index] = { term, crc, byTerm, node };
      this.committedIndexMax = Math.max(this.committedIndexMax, index);
    } else if (earlier.term !== term || earlier.crc !== crc) {
      this.violation(
        `${node} holds term ${term} checksum ${hex(crc)} at committed index ${index}, ` +
          `${earlier.node} had term ${earlier.term} checksum ${hex(earlier.crc)} committed there`,
      );
    } else if (byTerm < earlier.byTerm) {
      this.committedAt[index] = { ...earlier, byTerm };
    }
  }

  /** `node`, in term `nodeTerm` (Infinity if not known), applied `entries`. */
  applied(node: NodeId, entries: readonly LogEntry[], nodeTerm = Number.POSITIVE_INFINITY): void {
    for (const entry of entries) {
      this.committed(node, entry.index, entry.term, entryChecksum(entry), nodeTerm);
      const expected = (this.appliedIndexOf.get(node) ?? 0) + 1;
      if (entry.index !== expected) {
        this.violation(`${node} applied index ${entry.index}, expected ${expected}`);
      }
      this.appliedIndexOf.set(node, entry.index);
      const record: AppliedRecord = {
        term: entry.term,
        type: entry.type,
        payloadHex: Buffer.from(entry.payload).toString('hex'),
        node,
      };
      const earlier = this.appliedAt.get(entry.index);
      if (earlier === undefined) {
        this.appliedAt.set(entry.index, record);
      } else if (
        earlier.term !== record.term ||
        earlier.type !== record.type ||
        earlier.payloadHex !== record.payloadHex
      ) {
        this.violation(
          `${node} applied ${describe(record)} at ${entry.index}, ` +
            `${earlier.node} applied ${describe(earlier)}`,
        );
      }
    }
  }

  /** A proposal of `payload` was acknowledged at (index, term) by `node`. */
  ackedProposal(node: NodeId, index: number, term: number, payload: Uint8Array): void {
    const payloadHex = Buffer.from(payload).toString('hex');
    const record = this.appliedAt.get(index);
    if (record === undefined || record.term !== term || record.payloadHex !== payloadHex) {
      this.violation(
        `${node} acknowledged ${payloadHex} at ${index}/${term} but applied there: ` +
          `${record === undefined ? 'nothing' : describe(record)}`,
      );
    }
    if (this.acked.has(index)) this.violation(`two proposals acknowledged at index ${index}`);
    this.acked.set(index, { index, term, payloadHex, node });
    this.maxAckedIndex = Math.max(this.maxAckedIndex, index);
  }

  /** A read that began when `floorIndex` was the highest acknowledged index got `index`. */
  readServed(node: NodeId, floorIndex: number, index: number): void {
    this.readsServed += 1;
    if (index < floorIndex) {
      this.violation(`${node} served a read at ${index} below acknowledged index ${floorIndex}`);
    }
  }

  proposalRejected(code: string): void {
    this.proposalsRejected.set(code, (this.proposalsRejected.get(code) ?? 0) + 1);
  }
}

function hex(crc: number): string {
  return crc.toString(16).padStart(8, '0');
}

function describe(record: AppliedRecord): string {
  return `type ${record.type} term ${record.term} payload ${record.payloadHex.slice(0, 32)}`;
}
