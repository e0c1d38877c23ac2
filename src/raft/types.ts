/**
 * The data types of the Raft core: log entries, the wire messages between the members of one
 * group, the state the driver keeps on disk, and the `Ready` batch the core hands to its driver.
 * Everything here is plain data; the driver encodes it for the wire and the store.
 */
import { RaftmqError } from '../common/errors';
import type { LogIndex, NodeId, Term } from '../common/types';

/**
 * The highest term a node accepts from a peer or takes itself, and the highest log index a
 * message may name. Well below 2^53, so `term + 1` and `index + 1` stay exact and the hard state
 * codec always accepts what the core asks it to store: a term of 2^53 - 1 from a peer once made
 * the receiver's next campaign compute 2^53, which the store refused, stopping the node after it
 * had made the peer's term durable. At one election a millisecond a group takes over 100,000
 * years to get here honestly; a message above it is malformed.
 */
export const TERM_MAX = 2 ** 52;
/** See {@link TERM_MAX}; an index that high is never reached by an honest log. */
export const LOG_INDEX_MAX = 2 ** 52;

/** What an entry carries: client data, the no-op a new leader appends, or (later) membership. */
export type EntryType = 'normal' | 'noop' | 'config';

/** One Raft log entry. `index` and `term` identify it across the group (Raft §5.3). */
export interface Entry {
  readonly index: LogIndex;
  readonly term: Term;
  readonly type: EntryType;
  readonly data: Uint8Array;
  /**
   * The checksum of this entry's CommitLog record, when an Append brought it and the receiver
   * checked it against these bytes (raft-append-decode.ts): the CommitLog writes it instead of
   * computing it again. The core carries it along and never reads it.
   */
  readonly recordCrc?: number;
}

/** Bytes an entry is counted as beyond its payload (index, term, type, framing). */
export const ENTRY_OVERHEAD_BYTES = 32;
/** Bytes a message is counted as beyond its entries (envelope and per-type fields). */
export const MESSAGE_OVERHEAD_BYTES = 64;

/** The size an entry is counted as for every byte bound in the core. */
export function entrySizeBytes(entry: Entry): number {
  // `length`, not `byteLength`: the same for bytes, and inlined by V8 (common/bytes.ts).
  return entry.data.length + ENTRY_OVERHEAD_BYTES;
}

/** The summed {@link entrySizeBytes} of `entries`. */
export function entriesSizeBytes(entries: readonly Entry[]): number {
  let total = 0;
  for (const entry of entries) total += entrySizeBytes(entry);
  return total;
}

/** The state that must be durable before anything that depends on it leaves the node. */
export interface HardState {
  readonly term: Term;
  /** The candidate voted for in `term`, or null. */
  readonly vote: NodeId | null;
  /** The highest index known committed (may be re-learned, so persisting it lazily is fine). */
  readonly commit: LogIndex;
}

/** The node's role. A pre-candidate runs the PreVote round (thesis §9.6) before a real one. */
export type RaftRole = 'follower' | 'preCandidate' | 'candidate' | 'leader';

/** Volatile state the driver may want to act on (routing, logs); never persisted. */
export interface SoftState {
  readonly role: RaftRole;
  readonly leaderId: NodeId | null;
  readonly term: Term;
}

interface MessageBase {
  readonly from: NodeId;
  readonly to: NodeId;
  /** The sender's term; for PreVote and a granted PreVoteResp, the term proposed. */
  readonly term: Term;
}

/** Asks whether the sender could win an election at `term` (thesis §9.6); changes no state. */
export interface PreVoteMessage extends MessageBase {
  readonly type: 'PreVote';
  readonly lastIndex: LogIndex;
  readonly lastTerm: Term;
}

/** The answer to a PreVote. */
export interface PreVoteRespMessage extends MessageBase {
  readonly type: 'PreVoteResp';
  readonly reject: boolean;
}

/** RequestVote (Raft §5.2). `transfer` marks a campaign started by TimeoutNow (thesis §3.10). */
export interface VoteMessage extends MessageBase {
  readonly type: 'Vote';
  readonly lastIndex: LogIndex;
  readonly lastTerm: Term;
  readonly transfer: boolean;
}

/** The answer to a Vote. */
export interface VoteRespMessage extends MessageBase {
  readonly type: 'VoteResp';
  readonly reject: boolean;
}

/** AppendEntries (Raft §5.3): entries following (prevIndex, prevTerm), and the commit index. */
export interface AppendMessage extends MessageBase {
  readonly type: 'Append';
  readonly prevIndex: LogIndex;
  readonly prevTerm: Term;
  readonly entries: readonly Entry[];
  readonly commit: LogIndex;
}

/**
 * The answer to an Append. On success `matchIndex` is the last index known to match the leader.
 * On rejection `rejectedIndex` is the prevIndex refused, and the hint lets the leader skip a
 * whole term per round trip (Raft §5.3, last paragraphs): `hintTerm` is the follower's term at
 * `rejectedIndex` and `hintIndex` the first index it holds of that term; `hintTerm` 0 means
 * the follower's log is shorter, and then `hintIndex` is its last index + 1.
 */
export interface AppendRespMessage extends MessageBase {
  readonly type: 'AppendResp';
  readonly reject: boolean;
  readonly matchIndex: LogIndex;
  readonly rejectedIndex: LogIndex;
  readonly hintTerm: Term;
  readonly hintIndex: LogIndex;
}

/** Leader liveness and commit index; `context` (non-zero) names a ReadIndex round (§6.4). */
export interface HeartbeatMessage extends MessageBase {
  readonly type: 'Heartbeat';
  readonly commit: LogIndex;
  readonly context: number;
}

/** The answer to a Heartbeat, echoing its context. */
export interface HeartbeatRespMessage extends MessageBase {
  readonly type: 'HeartbeatResp';
  readonly context: number;
}

/** Tells a caught-up follower to campaign at once (leadership transfer, thesis §3.10). */
export interface TimeoutNowMessage extends MessageBase {
  readonly type: 'TimeoutNow';
}

/** Every message the members of a group exchange. */
export type Message =
  | PreVoteMessage
  | PreVoteRespMessage
  | VoteMessage
  | VoteRespMessage
  | AppendMessage
  | AppendRespMessage
  | HeartbeatMessage
  | HeartbeatRespMessage
  | TimeoutNowMessage;

/** The message type names. */
export type MessageType = Message['type'];

/** The size a message is counted as for byte bounds (an estimate of its encoded size). */
export function messageSizeBytes(message: Message): number {
  if (message.type === 'Append') return MESSAGE_OVERHEAD_BYTES + entriesSizeBytes(message.entries);
  return MESSAGE_OVERHEAD_BYTES;
}

/** A linearizable read may be served once the applied index reaches `index` (thesis §6.4). */
export interface ReadState {
  readonly requestId: string;
  readonly index: LogIndex;
}

/**
 * A request to read entries from the driver's log, which the core cannot read synchronously.
 * `peer` is the follower the entries are for, or the node's own id when they are committed
 * entries for the local applier. The driver answers each load exactly once with
 * `RaftNode.entriesLoaded(peer, entries)`: consecutive entries from `fromIndex`, at most
 * `countMax` of them and at most `bytesMax` bytes (but at least one entry if any exists), or an
 * empty array when the range no longer exists.
 */
export interface LoadRequest {
  readonly peer: NodeId;
  readonly fromIndex: LogIndex;
  readonly countMax: number;
  readonly bytesMax: number;
}

/**
 * One batch of work for the driver. The contract, in this order:
 *
 * 1. Persist: if `truncateFrom` is set, drop the log from that index on; append `entries`;
 *    then write `hardState` if set (entries first, or both atomically). Sync.
 *    `messages` do not depend on this and may be sent before or while persisting
 *    (a leader writes its log in parallel with replicating it, thesis §10.2.1).
 * 2. Send `messagesAfterPersist` only after step 1 is durable: they promise durable state
 *    (votes, append acknowledgements; thesis §3.8).
 * 3. Apply `committedEntries` in order; serve `readStates` once applied up to their index.
 * 4. Call `advance(ready)`. That call tells the core everything in this Ready is durable and
 *    applied; a leader counts its own log toward commitment only from then on.
 *
 * `loads` are answered later with `entriesLoaded()`. `snapshotsNeeded` names followers that need
 * entries before the log's first index (snapshots are not implemented yet).
 * `softState` is set when role, leader or term changed.
 */
export interface Ready {
  /**
   * Set on a leader's Ready when `leaderWritesAsync` is on: the driver hands `entries` to the
   * store and goes on without waiting for them to be durable, and reports them with
   * `RaftNode.entriesDurable()` once they are. Its committed entries are all durable already.
   */
  readonly durableLater?: true;
  readonly softState?: SoftState;
  readonly hardState?: HardState;
  readonly truncateFrom?: LogIndex;
  readonly entries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly messagesAfterPersist: readonly Message[];
  readonly committedEntries: readonly Entry[];
  readonly readStates: readonly ReadState[];
  readonly loads: readonly LoadRequest[];
  readonly snapshotsNeeded: readonly NodeId[];
}

/**
 * What the driver loaded from disk at start. `termAt` must answer for every index in
 * [firstIndex - 1, lastIndex] of the driver's current log (the store keeps terms in memory), and
 * it must follow the writes the driver makes for each Ready.
 */
export interface RaftStorageState {
  readonly hardState: HardState;
  readonly firstIndex: LogIndex;
  readonly lastIndex: LogIndex;
  termAt(index: LogIndex): Term | undefined;
  readonly appliedIndex: LogIndex;
}

/** Why the core refused a request; `code` is a registered {@link ErrorCode}. */
export interface RaftRefusal {
  readonly ok: false;
  readonly code: 'NOT_LEADER' | 'BUSY' | 'INVALID_ARGUMENT';
  /** The leader as this node knows it (a hint for NOT_LEADER), or null. */
  readonly leaderId: NodeId | null;
  readonly reason: string;
  /**
   * Set on BUSY while a leadership transfer runs: nothing was appended, and the leader is about
   * to change (or the transfer to end, within an election timeout).
   */
  readonly transferring?: true;
}

/** The outcome of `propose()`: the indexes the entries got in the leader's term, or a refusal. */
export type ProposeResult =
  | { readonly ok: true; readonly firstIndex: LogIndex; readonly lastIndex: LogIndex;
      readonly term: Term }
  | RaftRefusal;

/** The outcome of `readIndex()` and `transferLeadership()`. */
export type RaftRequestResult = { readonly ok: true } | RaftRefusal;

/** Turns a refusal into the typed error the broker returns to clients. */
export function refusalToError(refusal: RaftRefusal): RaftmqError {
  return new RaftmqError(refusal.code, `raft: ${refusal.reason}`, {
    details: refusal.transferring === true
      ? { leaderId: refusal.leaderId, transferring: true }
      : { leaderId: refusal.leaderId },
  });
}

/** Counters of input the core ignored, for the driver to log or export. */
export interface RaftStats {
  /** Messages from ids outside the group, or addressed to another node. */
  messagesFromUnknownPeer: number;
  /** Messages whose fields break the protocol's shape (e.g. non-consecutive entries). */
  messagesMalformed: number;
  /** Messages from an older term. */
  messagesStaleTerm: number;
  /** Messages that make no sense in the node's current role and term. */
  messagesUnexpected: number;
  /** Vote and PreVote requests ignored because a live leader is known (thesis §4.2.3). */
  voteRequestsInLease: number;
  /** Loaded entries that no longer matched the log or were no longer wanted. */
  loadsDiscarded: number;
  /** Campaigns not started because the term had reached {@link TERM_MAX}. */
  campaignsRefusedTermMax: number;
}
