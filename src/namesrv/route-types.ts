/**
 * Types and options of the NameServer route table (route-table.ts): what brokers register,
 * what routes and the cluster view look like, and the bounds.
 */
import { checkOption, intInRange, type OptionSpec, resolveOptions } from '../common/options';

/**
 * Route table options. `brokerExpiryMs`: a node silent for longer is dropped (RocketMQ: 120 s).
 * `scanIntervalMs`: how often the service calls `expire()` (RocketMQ: 10 s; unused here).
 * `groupsMax`, `nodesPerGroupMax`, `topicsMax` (distinct topics in the table): the bounds.
 */
export interface RouteTableOptions {
  brokerExpiryMs: number;
  scanIntervalMs: number;
  groupsMax: number;
  nodesPerGroupMax: number;
  topicsMax: number;
}

/** Defaults, from RocketMQ's NameServer where it has one. */
export const ROUTE_TABLE_DEFAULTS: Readonly<RouteTableOptions> = Object.freeze({
  brokerExpiryMs: 120_000,
  scanIntervalMs: 10_000,
  groupsMax: 1024,
  nodesPerGroupMax: 16,
  topicsMax: 65_536,
});

const OPTION_SPEC: OptionSpec<RouteTableOptions> = {
  brokerExpiryMs: intInRange(1, 86_400_000),
  scanIntervalMs: intInRange(1, 86_400_000),
  groupsMax: intInRange(1, 1_000_000),
  nodesPerGroupMax: intInRange(1, 1024),
  topicsMax: intInRange(1, 10_000_000),
};

/** Merges `input` over the defaults; throws `INVALID_OPTION` naming a bad or unknown field. */
export function resolveRouteTableOptions(
  input?: Partial<RouteTableOptions>,
): Readonly<RouteTableOptions> {
  const options = resolveOptions('routeTable', ROUTE_TABLE_DEFAULTS, OPTION_SPEC, input);
  checkOption(
    options.scanIntervalMs <= options.brokerExpiryMs,
    'routeTable.scanIntervalMs',
    'must not exceed brokerExpiryMs',
  );
  return options;
}

/** The role a node reports for itself. */
export type BrokerRole = 'leader' | 'follower';
/** Topic permission, as in RocketMQ's `PermName`. */
export type TopicPerm = 'READ' | 'WRITE' | 'READ_WRITE';

export interface TopicRegistration {
  readonly queueCount: number;
  readonly perm: TopicPerm;
  readonly messageTypes: readonly string[];
}

/** A registration or heartbeat from one broker node (RocketMQ re-registers every 30 s). */
export interface BrokerRegistration {
  readonly cluster: string;
  readonly group: string;
  readonly nodeId: string;
  /** `host:port` of the node's client endpoint. */
  readonly endpoint: string;
  readonly role: BrokerRole;
  readonly term: number;
  readonly topics: Readonly<Record<string, TopicRegistration>>;
  /**
   * Leader only: the node ids of the followers it has heard from within its liveness window
   * (follower-liveness.ts). When present, the group's routes list only these followers, so a
   * follower that died leaves the routes within seconds, not after `brokerExpiryMs`; absent
   * (an older broker, or a follower's registration), every registered follower is listed.
   */
  readonly liveFollowers?: readonly string[];
}

/**
 * What a registration did. `leader`: the node is its group's leader. `follower`: recorded as a
 * follower. `stale-leader`: recorded, but its leadership claim lost to a newer (or earlier
 * same-term) leader. `stale-term`: ignored, its term is below the node's recorded term.
 */
export type RegisterOutcome = 'leader' | 'follower' | 'stale-leader' | 'stale-term';

/** The result of `register()`. */
export interface RegisterResult {
  readonly outcome: RegisterOutcome;
  /** True for `stale-leader` and `stale-term`. */
  readonly stale: boolean;
  /** The group's leader after the call, if it has one. */
  readonly leader: NodeRef | undefined;
  /**
   * Topics of the registration left out of the table because it holds `topicsMax` distinct
   * topics (sorted by name; empty almost always). The rest of the registration was recorded.
   */
  readonly droppedTopics: readonly string[];
}

/** A node as routes name it. */
export interface NodeRef {
  readonly nodeId: string;
  readonly endpoint: string;
  readonly term: number;
}

/** One queue of a topic in one group. */
export interface QueueRoute {
  readonly queueId: number;
  readonly perm: TopicPerm;
  readonly messageTypes: readonly string[];
}

/** One group's part of a topic route. */
export interface GroupRoute {
  readonly cluster: string;
  readonly group: string;
  /** The live leader, or undefined when the group is leaderless. */
  readonly leader: NodeRef | undefined;
  /** True when the group has a live leader and the topic's perm includes WRITE. */
  readonly writable: boolean;
  /** True when the group has no live leader (still listed: followers serve reads). */
  readonly leaderless: boolean;
  readonly followers: readonly NodeRef[];
  readonly queues: readonly QueueRoute[];
}

/** A topic's route; `route()` returns undefined instead of an empty one (TOPIC_NOT_FOUND). */
export interface TopicRoute {
  readonly topic: string;
  /** Sorted by group name. */
  readonly groups: readonly GroupRoute[];
}

/** One node in `clusterView()`. */
export interface NodeView extends NodeRef {
  /** The role the node last reported. */
  readonly reportedRole: BrokerRole;
  /** True when the table counts it as its group's leader. */
  readonly isLeader: boolean;
  /** The `nowMs` of its last accepted registration. */
  readonly lastHeartbeatMs: number;
  readonly topicCount: number;
}

/** One group in `clusterView()`. */
export interface GroupView {
  readonly cluster: string;
  readonly group: string;
  /** Highest term any live node reports, leader or follower; -1 for a group without nodes. */
  readonly leaderTermMax: number;
  readonly leaderNodeId: string | undefined;
  /** Sorted by node id. */
  readonly nodes: readonly NodeView[];
}

/** A node dropped by `expire()` or `unregister()`. */
export interface DroppedNode extends NodeRef {
  readonly cluster: string;
  readonly group: string;
  readonly lastHeartbeatMs: number;
  readonly wasLeader: boolean;
}
