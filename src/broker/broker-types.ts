/**
 * The types the parts of a broker node share: topic and consumer-group configuration, the
 * node's view of its role, and `MessagingBackend`, the seam between the client-protocol
 * services (RocketMQ 5 gRPC, admin) and the replicated broker underneath them. The services
 * translate wire shapes and status codes; the backend owns validation against configuration,
 * queue choice, Raft and the store. Errors are RaftmqErrors (see docs/errors.md).
 */
import type { MessageType, StoredMessage } from '../store/message-format';
import type { LocatedMessage, QueueRecord } from '../store/message-store';
import type { TopicPerm } from '../namesrv/route-types';
import type { TopicRoute } from '../namesrv/route-types';
import type { ConsumerProgress } from './pop-service';

export type { TopicPerm, TopicRoute, LocatedMessage, MessageType, QueueRecord, StoredMessage };

/** A topic as configured in a broker group (replicated through the Raft log). */
export interface TopicConfig {
  readonly name: string;
  /** Queues 0..queueCount-1 (1..1024). */
  readonly queueCount: number;
  readonly perm: TopicPerm;
  /** The message types the topic accepts (at least one). */
  readonly messageTypes: readonly MessageType[];
}

/** Deliveries of a message before it is dead-lettered: RocketMQ's 16 retries, plus the first. */
export const DEFAULT_MAX_DELIVERY_ATTEMPTS = 17;

/** A consumer group as configured in a broker group (replicated through the Raft log). */
export interface GroupConfig {
  readonly name: string;
  /** Deliveries before a message goes to `%DLQ%<group>` (RocketMQ: 16 retries + 1). */
  readonly maxDeliveryAttempts: number;
  /** Deliver one message of a message group at a time, in order. */
  readonly fifo: boolean;
}

export type NodeRole = 'leader' | 'follower' | 'candidate' | 'preCandidate';

/** What a node knows of its group's leadership right now. */
export interface RoleView {
  readonly group: string;
  readonly nodeId: string;
  readonly role: NodeRole;
  readonly term: number;
  /** The leader this node follows (itself when leader), or null while unknown. */
  readonly leaderId: string | null;
  /** The client-protocol endpoint (`host:port`) of that leader, when known. */
  readonly leaderEndpoint: string | undefined;
  /**
   * True on a leader that has committed an entry of its own term (so its state is current
   * and it may answer writes and linearizable reads).
   */
  readonly leaderReady: boolean;
}

/** A message as the producer sent it: the broker picks the queue and stamps the store time. */
export type ProduceMessage = Omit<StoredMessage, 'queueId' | 'storeTimestampMs' | 'storeHost'>;

/** Where one produced message was stored. */
export interface SendReceipt {
  readonly messageId: string;
  readonly topic: string;
  readonly queueId: number;
  readonly queueOffset: number;
  /** The Raft index of the entry that carried it. */
  readonly index: number;
}

/** The offsets a queue holds: [min, max); `max` is the offset the next message will get. */
export interface QueueRange {
  readonly min: number;
  readonly max: number;
}

/** A node of a group as configured: its id and its two endpoints. */
export interface PeerEndpoints {
  readonly raft: string;
  readonly client: string;
}

/**
 * The replicated broker as the protocol services see it. Every method is safe to call with
 * any input: bad input throws a RaftmqError with a clear message, never crashes the node.
 */
export interface MessagingBackend {
  readonly groupName: string;
  readonly nodeId: string;
  /** This node's client-protocol endpoint, `host:port`. */
  readonly clientEndpoint: string;
  roleView(): RoleView;
  /** Waits (up to `deadlineMs`, absolute epoch ms) until a leader is known; undefined if none. */
  waitForLeader(deadlineMs: number): Promise<RoleView | undefined>;

  /** The topic's configuration as applied on this node. */
  getTopic(name: string): TopicConfig | undefined;
  listTopics(): TopicConfig[];
  /**
   * The topic, creating it (leader only, through the log) when auto-creation is on and the
   * name is legal. Throws TOPIC_NOT_FOUND, ILLEGAL_TOPIC or NOT_LEADER.
   */
  ensureTopic(name: string, deadlineMs: number): Promise<TopicConfig>;
  /** True when unknown topics are created on first use. */
  readonly autoCreateTopics: boolean;
  /** True when unknown consumer groups are created on first use. */
  readonly autoCreateGroups: boolean;
  /**
   * The consumer group, created with RocketMQ's defaults when `autoCreateGroups` is on (leader
   * only, through the log). Throws GROUP_NOT_FOUND, ILLEGAL_CONSUMER_GROUP or NOT_LEADER.
   */
  ensureGroup(name: string, deadlineMs: number): Promise<GroupConfig>;

  /**
   * Settles a send this node forwarded to a leader that died before answering (the send may or
   * may not be stored): waits, until `deadlineMs`, for this node to apply the first entry of a
   * term after `sinceTerm` (then every entry of the old leader that will ever commit is applied
   * here), and looks the messages up by id. Their receipts when every one is stored under its
   * topic (the stored copy's born time and body must be the message's: an id is the client's
   * own and may collide); 'none' when none is (sending again stores it once); undefined when it
   * cannot tell (some stored and some not, or two messages of the send share an id).
   */
  findStoredSend?(
    messages: readonly Pick<ProduceMessage, 'messageId' | 'topic' | 'body' | 'bornTimestampMs'>[],
    sinceTerm: number,
    deadlineMs: number,
  ): Promise<readonly SendReceipt[] | 'none' | undefined>;

  /**
   * Stores messages (leader only): checks them against the topic, picks queues (FIFO by message
   * group hash, others round-robin), batches them with concurrent sends into Raft entries and
   * resolves once they are committed and applied, with one receipt per message in order.
   * Throws NOT_LEADER (details.leaderEndpoint when known), TOPIC_NOT_FOUND, PERMISSION_DENIED,
   * MESSAGE_TYPE_MISMATCH, BUSY, TIMEOUT.
   */
  send(messages: readonly ProduceMessage[], deadlineMs: number): Promise<SendReceipt[]>;

  /** The route of `topic` across all groups (from a NameServer, else this group alone). */
  route(topic: string): Promise<TopicRoute | undefined>;

  /**
   * Committed messages of one queue from `offset`, at most `countMax` and at most `bytesMax`
   * of stored messages (but always the first), on any node, as their checked stored records
   * (not decoded), which pulls and receives send on (rmq-stored-frame.ts, or as they are by
   * Fetch). With `verifyCrc` false the CRC32C is left to the reader (a Fetch client checks
   * every record). OUT_OF_RANGE below the queue's first offset.
   */
  readQueueRecords(
    topic: string,
    queueId: number,
    offset: number,
    countMax: number,
    bytesMax?: number,
    verifyCrc?: boolean,
  ): Promise<QueueRecord[]>;
  queueRange(topic: string, queueId: number): QueueRange;
  /**
   * Resolves true once queue `queueId` of `topic` holds an offset >= `offset` (a committed and
   * applied message), false after `timeoutMs` or when `signal` aborts. For long polling.
   */
  waitForMessages(
    topic: string,
    queueId: number,
    offset: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<boolean>;
  /** The first offset whose message was stored at or after `timestampMs` (max when none). */
  searchOffset(topic: string, queueId: number, timestampMs: number): Promise<number>;

  /**
   * A linearizable read point (Raft thesis §6.4), on the ready leader only: resolves once this
   * node has applied everything committed before the call, so what it then reads is at least as
   * new as anything a client saw from any node. Throws NOT_LEADER (naming the leader when
   * known) on any other node, TIMEOUT past `deadlineMs`.
   */
  readPoint(deadlineMs: number): Promise<void>;

  /** A consumer group's committed offset on a queue, as applied on this node. */
  getOffset(group: string, topic: string, queueId: number): number | undefined;
  /** Commits a consumer offset through the log (leader only). */
  updateOffset(
    group: string,
    topic: string,
    queueId: number,
    offset: number,
    deadlineMs: number,
  ): Promise<void>;
}

/** One node's own view of itself, for cluster status. */
export interface NodeStatus {
  readonly cluster: string;
  readonly group: string;
  readonly nodeId: string;
  readonly role: NodeRole;
  readonly term: number;
  readonly leaderId: string | null;
  readonly clientEndpoint: string;
  readonly raftEndpoint: string;
  /** Last index in this node's log. */
  readonly lastIndex: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly topicCount: number;
  /** Set when the node stopped on a fatal error. */
  readonly fatal: string | null;
  /** The CommitLog's fdatasync rounds since the node started (SyncStats). */
  readonly syncCount: number;
  readonly syncMsTotal: number;
  readonly syncMsMax: number;
  /** Rounds of 10 ms or longer. */
  readonly slowSyncs: number;
  /**
   * Rounds whose fdatasync calls were timed where they ran (the timed-sync addon), their calls'
   * total and longest time (summed per round), and the timed rounds whose calls took 10 ms or
   * longer (the disk, or the pool thread's wait to run once it answered): slow rounds beyond
   * these waited for a CPU, not for the disk.
   */
  readonly timedSyncs: number;
  readonly syncCallMsTotal: number;
  readonly syncCallMsMax: number;
  readonly slowSyncCalls: number;
}

/**
 * The broker as the admin service sees it. Writes go through the Raft log on the leader and
 * throw NOT_LEADER elsewhere (the service forwards them); reads answer from this node's state.
 */
export interface AdminBackend {
  readonly groupName: string;
  readonly nodeId: string;
  roleView(): RoleView;
  /** Calls `listener` on every role or leader change; returns its remover. */
  onRoleChange(listener: () => void): () => void;
  waitForLeader(deadlineMs: number): Promise<RoleView | undefined>;
  /** Every node of the group, this one included. */
  peers(): Readonly<Record<string, PeerEndpoints>>;
  nodeStatus(): NodeStatus;
  /** Throws TOPIC_EXISTS, ILLEGAL_TOPIC, INVALID_ARGUMENT (queue count, perm, types). */
  createTopic(config: TopicConfig, deadlineMs: number): Promise<TopicConfig>;
  /** Throws TOPIC_NOT_FOUND; a queue count may only grow (offsets of queues must survive). */
  updateTopic(config: TopicConfig, deadlineMs: number): Promise<TopicConfig>;
  deleteTopic(name: string, deadlineMs: number): Promise<void>;
  listTopics(): TopicConfig[];
  createGroup(config: GroupConfig, deadlineMs: number): Promise<GroupConfig>;
  updateGroup(config: GroupConfig, deadlineMs: number): Promise<GroupConfig>;
  deleteGroup(name: string, deadlineMs: number): Promise<void>;
  listGroups(): GroupConfig[];
  /** Pop consumption progress of one group (or all), from this node's applied state. */
  consumerProgress?(group?: string): ConsumerProgress[];
  /** Hands leadership to `nodeId`; resolves once it leads, throws TIMEOUT otherwise. */
  transferLeadership(nodeId: string, deadlineMs: number): Promise<void>;
}
