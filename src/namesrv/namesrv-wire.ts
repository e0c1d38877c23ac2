/**
 * The NameServer protocol's wire shapes (`proto/namesrv.proto`, loaded with
 * `PROTO_LOADER_OPTIONS`: camelCase fields, enums as names, uint64 as numbers) and their
 * conversion to and from the route table's types. Requests from the wire are checked here for
 * what the table does not check itself (enums, stats, auto-creation); the table checks the rest.
 * Also loads the protocol files both services of a NameServer need.
 */
import * as path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { RaftmqError } from '../common/errors';
import { findProtoDir, loadProto, PROTO_LOADER_OPTIONS } from '../common/proto-files';
import type {
  BrokerRegistration,
  BrokerRole,
  GroupRoute,
  GroupView,
  NodeRef,
  RegisterOutcome,
  RegisterResult,
  TopicPerm,
  TopicRoute,
} from './route-types';

export const NAMESRV_PROTO_FILE = 'namesrv.proto';
export const NAMESRV_SERVICE = 'raftmq.namesrv.v1.NameServer';
export const MESSAGING_PROTO_FILE = 'apache/rocketmq/v2/service.proto';
export const MESSAGING_SERVICE = 'apache.rocketmq.v2.MessagingService';

/** Raft progress a node may report with its registration (cluster view only). */
export interface NodeStats {
  readonly commitIndex: number;
  readonly appliedIndex: number;
}

/** What a node reports besides its {@link BrokerRegistration}; all optional. */
export interface RegistrationExtras {
  readonly stats?: NodeStats;
  /** The group creates unknown topics on first use (with `defaultQueueCount` queues). */
  readonly autoCreateTopics?: boolean;
  /** Queue count of auto-created topics (1..1024); required when `autoCreateTopics`. */
  readonly defaultQueueCount?: number;
}

/** A node's full registration: what the route table takes plus {@link RegistrationExtras}. */
export type NodeRegistration = BrokerRegistration & RegistrationExtras;

/** RocketMQ's default upper bound for a topic's queue count (as in the route table). */
export const QUEUE_COUNT_MAX = 1024;

const ROLE_TO_WIRE: Readonly<Record<BrokerRole, string>> = {
  leader: 'ROLE_LEADER',
  follower: 'ROLE_FOLLOWER',
};
const PERM_TO_WIRE: Readonly<Record<TopicPerm, string>> = {
  READ: 'PERM_READ',
  WRITE: 'PERM_WRITE',
  READ_WRITE: 'PERM_READ_WRITE',
};
const OUTCOME_TO_WIRE: Readonly<Record<RegisterOutcome, string>> = {
  leader: 'OUTCOME_LEADER',
  follower: 'OUTCOME_FOLLOWER',
  'stale-leader': 'OUTCOME_STALE_LEADER',
  'stale-term': 'OUTCOME_STALE_TERM',
};

function reverse<K extends string>(table: Readonly<Record<K, string>>): ReadonlyMap<string, K> {
  return new Map(Object.entries(table).map(([k, v]) => [v as string, k as K]));
}
const ROLE_FROM_WIRE = reverse(ROLE_TO_WIRE);
const PERM_FROM_WIRE = reverse(PERM_TO_WIRE);
const OUTCOME_FROM_WIRE = reverse(OUTCOME_TO_WIRE);

function invalid(field: string, message: string): never {
  throw new RaftmqError('INVALID_ARGUMENT', `${field}: ${message}`, { details: { field } });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value` as an object, or an empty one (proto-loader leaves unset sub-messages out). */
function objectOr(value: unknown): Record<string, unknown> {
  return isObject(value) ? value : {};
}

/**
 * An empty object without a prototype, for maps keyed by names a client chose: on a plain
 * object, `topics['__proto__'] = x` sets the prototype instead of adding the topic, which is
 * then lost (`__proto__` is a valid RocketMQ topic name).
 */
export function nameKeyedObject<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

function isIndex(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** Loads (once) `namesrv.proto` from `protoDir`, `$RAFTMQ_PROTO_DIR` or the package. */
export function loadNamesrvProto(protoDir = ''): Promise<protoLoader.PackageDefinition> {
  return loadProto(path.join(findProtoDir(NAMESRV_PROTO_FILE, protoDir), NAMESRV_PROTO_FILE));
}

const messagingLoads = new Map<string, Promise<protoLoader.PackageDefinition>>();

/**
 * Loads (once per directory) the RocketMQ v2 service and its imports. `service.proto` imports
 * `apache/rocketmq/v2/definition.proto`, so the directory holding `apache/` must be an include
 * path (plain `loadProto` of the full path cannot resolve that import).
 */
export function loadMessagingProto(protoDir = ''): Promise<protoLoader.PackageDefinition> {
  const dir = findProtoDir(MESSAGING_PROTO_FILE, protoDir);
  let definition = messagingLoads.get(dir);
  if (definition === undefined) {
    definition = protoLoader.load(MESSAGING_PROTO_FILE, {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [dir],
    });
    messagingLoads.set(dir, definition);
    // A failed load is not cached, so a corrected file can be loaded later.
    definition.catch(() => messagingLoads.delete(dir));
  }
  return definition;
}

// ---- Register ----

/** The RegisterRequest for `reg` (client side). */
export function registrationToWire(reg: NodeRegistration): object {
  const topics = nameKeyedObject<object>();
  for (const [name, t] of Object.entries(reg.topics)) {
    topics[name] = {
      queueCount: t.queueCount,
      perm: PERM_TO_WIRE[t.perm],
      messageTypes: [...t.messageTypes],
    };
  }
  return {
    cluster: reg.cluster,
    group: reg.group,
    nodeId: reg.nodeId,
    endpoint: reg.endpoint,
    role: ROLE_TO_WIRE[reg.role],
    term: reg.term,
    topics,
    ...(reg.stats === undefined ? {} : { stats: { ...reg.stats } }),
    autoCreateTopics: reg.autoCreateTopics ?? false,
    defaultQueueCount: reg.defaultQueueCount ?? 0,
    liveFollowers: [...(reg.liveFollowers ?? [])],
    reportsLiveFollowers: reg.liveFollowers !== undefined,
  };
}

/**
 * The registration a RegisterRequest carries (server side). Throws INVALID_ARGUMENT naming the
 * field for a bad role, perm, stats or auto-creation setting; names, endpoint, term and topics
 * are left to `RouteTable.register`, which checks them.
 */
export function registrationFromWire(request: unknown): NodeRegistration {
  const req = objectOr(request);
  const role = ROLE_FROM_WIRE.get(String(req.role));
  if (role === undefined) invalid('role', 'must be ROLE_LEADER or ROLE_FOLLOWER');
  const topics = nameKeyedObject<unknown>();
  for (const [name, value] of Object.entries(objectOr(req.topics))) {
    const t = objectOr(value);
    const perm = PERM_FROM_WIRE.get(String(t.perm));
    if (perm === undefined) {
      invalid(`topics.${name}.perm`, 'must be PERM_READ, PERM_WRITE or PERM_READ_WRITE');
    }
    topics[name] = { queueCount: t.queueCount, perm, messageTypes: t.messageTypes };
  }
  let stats: NodeStats | undefined;
  if (isObject(req.stats)) {
    const { commitIndex, appliedIndex } = req.stats;
    if (!isIndex(commitIndex)) invalid('stats.commitIndex', 'must be below 2^53');
    if (!isIndex(appliedIndex)) invalid('stats.appliedIndex', 'must be below 2^53');
    stats = { commitIndex, appliedIndex };
  }
  const autoCreateTopics = req.autoCreateTopics === true;
  const queueCount = req.defaultQueueCount;
  if (
    autoCreateTopics &&
    !(isIndex(queueCount) && queueCount >= 1 && queueCount <= QUEUE_COUNT_MAX)
  ) {
    invalid('defaultQueueCount', `must be in [1, ${QUEUE_COUNT_MAX}] with autoCreateTopics`);
  }
  return {
    cluster: req.cluster as string,
    group: req.group as string,
    nodeId: req.nodeId as string,
    endpoint: req.endpoint as string,
    role,
    term: req.term as number,
    topics: topics as unknown as BrokerRegistration['topics'],
    ...(stats === undefined ? {} : { stats }),
    ...(autoCreateTopics ? { autoCreateTopics, defaultQueueCount: queueCount as number } : {}),
    // Checked with the rest of the registration by the route table.
    ...(req.reportsLiveFollowers === true
      ? { liveFollowers: Array.isArray(req.liveFollowers) ? (req.liveFollowers as string[]) : [] }
      : {}),
  };
}

function refToWire(node: NodeRef): object {
  return { nodeId: node.nodeId, endpoint: node.endpoint, term: node.term };
}

/** The RegisterResponse for `result`. */
export function registerResultToWire(result: RegisterResult): object {
  return {
    outcome: OUTCOME_TO_WIRE[result.outcome],
    ...(result.leader === undefined ? {} : { leader: refToWire(result.leader) }),
    droppedTopicCount: result.droppedTopics.length,
  };
}

/** A RegisterResponse as the client reads it. */
export interface RegisterReply {
  readonly outcome: RegisterOutcome;
  readonly leader: NodeRef | undefined;
  /** Topics the NameServer left out of its routes (its `topicsMax`); 0 almost always. */
  readonly droppedTopicCount: number;
}

function malformedReply(what: string): never {
  throw new RaftmqError('INTERNAL', `malformed NameServer response: ${what}`);
}

function refFromWire(value: unknown): NodeRef | undefined {
  if (!isObject(value)) return undefined;
  const { nodeId, endpoint, term } = value;
  if (typeof nodeId !== 'string' || typeof endpoint !== 'string' || !isIndex(term)) {
    malformedReply('node reference');
  }
  return { nodeId, endpoint, term };
}

/** Reads a RegisterResponse; throws INTERNAL when it is malformed. */
export function registerReplyFromWire(response: unknown): RegisterReply {
  const res = objectOr(response);
  const outcome = OUTCOME_FROM_WIRE.get(String(res.outcome));
  if (outcome === undefined) malformedReply(`outcome ${String(res.outcome)}`);
  // Absent from an older NameServer's reply: nothing dropped.
  const dropped = res.droppedTopicCount ?? 0;
  if (!isIndex(dropped)) malformedReply('dropped topic count');
  return { outcome, leader: refFromWire(res.leader), droppedTopicCount: dropped };
}

// ---- GetRoute ----

function groupToWire(group: GroupRoute): object {
  return {
    cluster: group.cluster,
    group: group.group,
    ...(group.leader === undefined ? {} : { leader: refToWire(group.leader) }),
    writable: group.writable,
    followers: group.followers.map(refToWire),
    queues: group.queues.map((q) => ({
      queueId: q.queueId,
      perm: PERM_TO_WIRE[q.perm],
      messageTypes: [...q.messageTypes],
    })),
  };
}

/** The GetRouteResponse for a route (or for none). */
export function routeToWire(route: TopicRoute | undefined): object {
  return route === undefined
    ? { found: false, groups: [] }
    : { found: true, groups: route.groups.map(groupToWire) };
}

function groupFromWire(value: unknown): GroupRoute {
  const g = objectOr(value);
  if (typeof g.cluster !== 'string' || typeof g.group !== 'string') malformedReply('group name');
  const leader = refFromWire(g.leader);
  const followers = (Array.isArray(g.followers) ? g.followers : []).map((f) => {
    const ref = refFromWire(f);
    return ref ?? malformedReply('follower');
  });
  const queues = (Array.isArray(g.queues) ? g.queues : []).map((value) => {
    const q = objectOr(value);
    const perm = PERM_FROM_WIRE.get(String(q.perm));
    if (perm === undefined || !isIndex(q.queueId) || !Array.isArray(q.messageTypes)) {
      return malformedReply('queue');
    }
    return { queueId: q.queueId, perm, messageTypes: q.messageTypes.map(String) };
  });
  return {
    cluster: g.cluster,
    group: g.group,
    leader,
    writable: g.writable === true,
    leaderless: leader === undefined,
    followers,
    queues,
  };
}

/** Reads a GetRouteResponse: the route, or undefined when not found; INTERNAL if malformed. */
export function routeFromWire(topic: string, response: unknown): TopicRoute | undefined {
  const res = objectOr(response);
  if (res.found !== true) return undefined;
  const groups = Array.isArray(res.groups) ? res.groups : [];
  return { topic, groups: groups.map(groupFromWire) };
}

// ---- GetCluster ----

/** Per-node extras and timing the cluster view adds to the table's {@link GroupView}. */
export interface ClusterNodeInfo {
  readonly extras: RegistrationExtras | undefined;
  readonly lastHeartbeatEpochMs: number;
  readonly lastHeartbeatAgeMs: number;
}

/** The GetClusterResponse; `info` supplies what the table does not keep. */
export function clusterToWire(
  groups: readonly GroupView[],
  info: (group: string, nodeId: string, lastHeartbeatMs: number) => ClusterNodeInfo,
): object {
  return {
    groups: groups.map((g) => {
      let autoCreateTopics = false;
      const nodes = g.nodes.map((n) => {
        const extra = info(g.group, n.nodeId, n.lastHeartbeatMs);
        autoCreateTopics ||= extra.extras?.autoCreateTopics === true;
        return {
          nodeId: n.nodeId,
          endpoint: n.endpoint,
          term: n.term,
          reportedRole: ROLE_TO_WIRE[n.reportedRole],
          isLeader: n.isLeader,
          lastHeartbeatEpochMs: Math.round(extra.lastHeartbeatEpochMs),
          lastHeartbeatAgeMs: Math.max(0, Math.round(extra.lastHeartbeatAgeMs)),
          topicCount: n.topicCount,
          ...(extra.extras?.stats === undefined ? {} : { stats: { ...extra.extras.stats } }),
        };
      });
      return {
        cluster: g.cluster,
        group: g.group,
        leaderTermMax: g.leaderTermMax,
        leaderNodeId: g.leaderNodeId ?? '',
        nodes,
        autoCreateTopics,
      };
    }),
  };
}
