/**
 * The history of a simulated run and the safety checks made on it as it happens:
 *
 * - Election Safety (Raft §5.2): at most one leader per term;
 * - State Machine Safety (Raft §5.4.3): no two nodes (or two incarnations of one node) apply
 *   different entries at one index, and each node applies indexes in order without gaps;
 * - an acknowledged proposal is the entry applied at its index, with its payload;
 * - a ReadIndex point (thesis §6.4) covers every proposal acknowledged before the read began.
 *
 * Checks that need the nodes' logs (Log Matching, Leader Completeness, liveness) live with the
 * cluster; they report here. Violations are collected, not thrown, so a run ends with all it
 * found and the trace around the first one.
 */
import type { NodeId } from '../common/types';
import type { LogEntry } from '../store/log-record';

/** What was applied at one index, as first seen anywhere. */
export interface AppliedRecord {
  readonly term: number;
  readonly type: number;
  readonly payloadHex: string;
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
  pauses = 0;
  partitions = 0;

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

  /** `node` applied `entries`. */
  applied(node: NodeId, entries: readonly LogEntry[]): void {
    for (const entry of entries) {
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

function describe(record: AppliedRecord): string {
  return `type ${record.type} term ${record.term} payload ${record.payloadHex.slice(0, 32)}`;
}
