/**
 * The `raft-node` IPC protocol, shared by the node process (`raft-node.ts`) and its parent
 * (`raft-node-client.ts`). JSON over the Node IPC channel: the parent sends `{ reqId, cmd, args }`
 * and gets one `{ reqId, ok: true, result }` or `{ reqId, ok: false, error: { code, message } }`;
 * the node also sends events `{ event, atMs, ... }` on its own: `started`, `softState` (role,
 * term, leader), `termCommitted` (this node, as leader, applied the first entry of its term),
 * `acked` (entries of a `propose` run with `ackEvents`, as each proposal is acknowledged) and
 * `fatal`. `atMs` is {@link wallMs}, comparable across processes on one machine. Commands are
 * listed in {@link RaftNodeCommands}; `load` runs a bounded propose loop inside the leader (see
 * `raft-load.ts`), since IPC would be the bottleneck.
 */
import { createHash } from 'node:crypto';
import { RaftmqError } from '../common/errors';
import type { RaftMemberConfig } from '../broker/raft-member';
import type { SyncStats } from '../store/commit-log-writer';

/** What the process is started with. */
export interface RaftNodeConfig extends RaftMemberConfig {
  /** pino level; `$RAFTMQ_LOG_LEVEL` and then `info` when absent. */
  readonly logLevel?: string;
}

/** A node's status as the `status` command answers it. */
export interface RaftNodeStatus {
  readonly id: string;
  readonly pid: number;
  readonly role: string;
  readonly term: number;
  readonly leaderId: string | null;
  readonly commitIndex: number;
  readonly lastIndex: number;
  readonly appliedIndex: number;
  readonly appliedCount: number;
  readonly digest: number;
  readonly stopped: boolean;
  readonly fatal: string | null;
  /** Leader only: each follower's replication state. */
  readonly progress: Record<string, { match: number; next: number; state: string }>;
  /** CPU time this process used so far (user + system). */
  readonly cpuMs: number;
  /** The CommitLog's fdatasync rounds so far. */
  readonly sync: SyncStats;
}

/** One acknowledged entry: where it went and its checksum (the record CRC, `recordChecksum`). */
export interface AckedEntry {
  /** The entry's place among those of its `propose` run, in the order they were proposed. */
  readonly seq: number;
  readonly index: number;
  readonly term: number;
  readonly checksum: number;
  /** {@link payloadHash} of its payload, which tells the entry apart wherever it lies. */
  readonly payloadHash: string;
}

/** What `propose` does: `count` distinct entries of `sizeBytes` random bytes each. */
export interface ProposeSpec {
  readonly count: number;
  readonly sizeBytes: number;
  /** Proposals in flight at once (default 1: one after another). */
  readonly inflightMax?: number;
  /** Entries per proposal, at most (default 64). */
  readonly batchEntries?: number;
  /**
   * Also send each acknowledged proposal's entries at once as an `acked` event, so that the
   * parent knows what was acknowledged even if this process dies before `propose` answers.
   */
  readonly ackEvents?: boolean;
}

/** Every command: its arguments and its result. */
export interface RaftNodeCommands {
  status: { args: Record<string, never>; result: RaftNodeStatus };
  /** Proposes `count` distinct entries and answers with those acknowledged, by `seq`. */
  propose: {
    args: ProposeSpec;
    result: { acked: AckedEntry[]; errors: Record<string, number> };
  };
  load: { args: LoadSpec; result: LoadResult };
  /** The digest of applied entries 1..upTo (recent indexes only; OUT_OF_RANGE otherwise). */
  appliedDigest: { args: { upTo: number }; result: { upTo: number; digest: number } };
  /** Checksums of applied entries at these indexes (null where not applied or not recent). */
  appliedChecksums: { args: { indexes: number[] }; result: { checksums: (number | null)[] } };
  transferLeadership: { args: { to: string }; result: Record<string, never> };
  stop: { args: Record<string, never>; result: Record<string, never> };
}

/** The name of a command. */
export type RaftNodeCommand = keyof RaftNodeCommands;

/** A request from the parent. */
export interface RaftNodeRequest<C extends RaftNodeCommand = RaftNodeCommand> {
  readonly reqId: number;
  readonly cmd: C;
  readonly args: RaftNodeCommands[C]['args'];
}

/** A reply to one request. */
export type RaftNodeReply =
  | { readonly reqId: number; readonly ok: true; readonly result: unknown }
  | { readonly reqId: number; readonly ok: false; readonly error: RaftNodeError };

/** A failed command: the RaftmqError code (or UNEXPECTED) and its message. */
export interface RaftNodeError {
  readonly code: string;
  readonly message: string;
}

/** What a node reports on its own. */
export type RaftNodeEvent =
  | {
      readonly event: 'started';
      readonly atMs: number;
      readonly pid: number;
      readonly port: number;
    }
  | {
      readonly event: 'softState';
      readonly atMs: number;
      readonly role: string;
      readonly term: number;
      readonly leaderId: string | null;
    }
  | {
      readonly event: 'termCommitted';
      readonly atMs: number;
      readonly term: number;
      readonly index: number;
    }
  | {
      readonly event: 'acked';
      readonly atMs: number;
      readonly entries: readonly AckedEntry[];
    }
  | { readonly event: 'fatal'; readonly atMs: number; readonly message: string };

/** Largest entry size, in `propose` and `load`. */
export const ENTRY_SIZE_BYTES_MAX = 1 << 20;

/** A `load` run: propose for a while, as fast as accepted or paced, inside this node. */
export interface LoadSpec {
  /** How long to propose, at most {@link LOAD_DURATION_MS_MAX}. */
  readonly durationMs: number;
  /** Entries due (sent, when not paced) in the first `warmupMs` are not measured. */
  readonly warmupMs?: number;
  readonly sizeBytes: number;
  /** Proposals in flight at once. */
  readonly inflightMax: number;
  /** Entries per proposal, at most. */
  readonly batchEntries: number;
  /**
   * Paced: entries per second, each entry's latency measured from the time it was due (so a
   * stall counts for every entry it delayed). Absent: proposals as fast as the leader accepts.
   */
  readonly ratePerSec?: number;
  /** Entries proposed, at most. */
  readonly countMax?: number;
}

/**
 * What a `load` run measured. Rates and latencies cover the entries due in the measured window
 * (after the warmup), however late they completed: the run waits for every proposal to settle.
 */
export interface LoadResult {
  readonly proposedEntries: number;
  readonly committedEntries: number;
  readonly measuredEntries: number;
  readonly measuredMs: number;
  readonly entriesPerSec: number;
  readonly latencyP50Ms: number;
  readonly latencyP90Ms: number;
  readonly latencyP99Ms: number;
  readonly latencyMaxMs: number;
  readonly errors: Record<string, number>;
}

/** The longest `load` run. */
export const LOAD_DURATION_MS_MAX = 120_000;

/** A hash of an entry's payload (64 bits of its SHA-256, in hex): distinct payloads differ. */
export function payloadHash(payload: Uint8Array): string {
  return createHash('sha256').update(payload).digest('hex').slice(0, 16);
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Checks that `value` is an integer in [min, max]; throws INVALID_ARGUMENT naming `field`. */
export function checkInt(value: unknown, min: number, max: number, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new RaftmqError('INVALID_ARGUMENT', `${field} must be an integer in [${min}, ${max}]`);
  }
  return value;
}
