/**
 * The NameServer's route table: a pure, synchronous registry of broker groups, their nodes and
 * the topics they host. No IO and no timers: every call that needs time takes `nowMs`, which the
 * service reads from its injected `Clock` (use `monotonicMs()`: expiry is a duration).
 *
 * Leadership rules (raftmq's terms on top of RocketMQ's `RouteInfoManager`):
 * - A node's registrations carry its Raft term, which never decreases on a node. A registration
 *   with a term below the one recorded for that node is a replayed or reordered message and is
 *   ignored whole (outcome `stale-term`; not even its heartbeat counts).
 * - A group's `leaderTermMax` is the highest term any of its live nodes reports, leader or
 *   follower (a follower's term is at least that of any leader it has heard from). The group's
 *   leader is the live node whose latest registration claims leadership in exactly that term;
 *   should two claim the same term (Raft's election safety says they cannot), the earlier claim
 *   wins.
 * - So a claim in an older term never displaces a newer leader, and an old leader that keeps
 *   heartbeating with its old term stays demoted while any node of the newer term is
 *   registered: if the newer leader expires, the group is leaderless (readable from followers,
 *   not writable) until a node claims that term or a later one. A leader that re-registers as
 *   follower gives up leadership.
 * - The bound comes from live nodes only, so a node that reported an absurd term (a bug, or a
 *   forged registration: registrations are not authenticated) demotes the real leader only while
 *   it stays registered, not for as long as the group lives. Until 2026-12-04 the highest claim
 *   ever seen was kept, and one forged claim of term 2^53-1 left the group leaderless for good.
 * - A leader may report which followers it has heard from lately (`liveFollowers`); routes then
 *   list only those, and a dead follower leaves them within seconds instead of at its expiry.
 * - A group with a live leader hosts the topics its leader lists (the leader holds every
 *   committed topic change); a lagging follower's listing of a deleted topic does not keep it
 *   routed. Only a leaderless group is routed by what its other nodes list.
 *
 * Bounds: `groupsMax`, `nodesPerGroupMax` and `topicsMax` (distinct topics in the whole table).
 * A new group or node that would exceed one of the first two gets `BUSY` (retryable: expiry
 * frees room). `topicsMax` never refuses a registration: one that brings more new topics than
 * the table has room for is recorded (heartbeat, role, term and every topic that fits) with the
 * excess left out and reported in `droppedTopics`. Refusing it whole let the node's accepted
 * entry expire, and one topic over the bound took the group, with every topic that did fit, out
 * of all routes for as long as it stayed over. Which topics are left out is deterministic: of
 * those new to the table, the first by name get the room; a topic once admitted keeps its place.
 */
import { assert } from '../common/assert';
import { RESOURCE_NAME_LENGTH_MAX, RESOURCE_NAME_PATTERN } from '../common/resource-names';
import { RaftmqError } from '../common/errors';
import {
  type RouteTableOptions,
  resolveRouteTableOptions,
  type BrokerRole,
  type TopicPerm,
  type TopicRegistration,
  type BrokerRegistration,
  type RegisterOutcome,
  type RegisterResult,
  type NodeRef,
  type GroupRoute,
  type TopicRoute,
  type GroupView,
  type DroppedNode,
} from './route-types';

/** The types and options live in route-types.ts; importers of the table get them from here. */
export * from './route-types';

const PERMS: readonly string[] = ['READ', 'WRITE', 'READ_WRITE'];
/** RocketMQ v2 `MessageType` names a topic may accept. */
const MESSAGE_TYPES: readonly string[] = ['NORMAL', 'FIFO', 'DELAY', 'TRANSACTION'];
/** RocketMQ's topic name rule (`TopicValidator`). */
const NAME_LENGTH_MAX = 255;
/** RocketMQ's default upper bound for a topic's queue count. */
const QUEUE_COUNT_MAX = 1024;
const NO_TOPICS: readonly string[] = Object.freeze([]);

/** One topic as a node registers it. */
interface NodeEntry extends NodeRef {
  readonly role: BrokerRole;
  readonly topics: ReadonlyMap<string, TopicRegistration>;
  readonly lastHeartbeatMs: number;
  /** Sequence number of the first registration claiming leadership in `term`; 0 if none. */
  readonly claimSeq: number;
  /** The followers a leader reported alive (BrokerRegistration.liveFollowers); undefined: all. */
  readonly liveFollowers: ReadonlySet<string> | undefined;
}

interface GroupEntry {
  readonly cluster: string;
  readonly nodes: Map<string, NodeEntry>;
}

/** RocketMQ's topic name rule (common/resource-names.ts), namespace prefix included. */
function isTopicName(name: string): boolean {
  return name.length <= RESOURCE_NAME_LENGTH_MAX && RESOURCE_NAME_PATTERN.test(name);
}

function invalid(field: string, message: string): never {
  throw new RaftmqError('INVALID_ARGUMENT', `${field}: ${message}`, { details: { field } });
}

function checkName(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) invalid(field, 'must be a non-empty string');
  if (value.length > NAME_LENGTH_MAX) invalid(field, `must be at most ${NAME_LENGTH_MAX} chars`);
  return value;
}

function checkEndpoint(value: unknown): string {
  const text = checkName(value, 'endpoint');
  const match = /^([^\s:]+|\[[0-9a-fA-F:.]+\]):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (match === null || port < 1 || port > 65_535) {
    invalid('endpoint', `must be host:port with port in [1, 65535], got ${text}`);
  }
  return text;
}

function isIntIn(value: unknown, min: number, max: number): value is number {
  return Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkTopic(name: string, value: unknown): TopicRegistration {
  const field = `topics.${name}`;
  if (!isTopicName(name)) invalid(field, 'topic name must match [%|a-zA-Z0-9_-]{1,127}');
  if (!isObject(value)) invalid(field, 'must be an object');
  const { queueCount, perm, messageTypes } = value;
  if (!isIntIn(queueCount, 1, QUEUE_COUNT_MAX)) {
    invalid(`${field}.queueCount`, `must be an integer in [1, ${QUEUE_COUNT_MAX}]`);
  }
  if (typeof perm !== 'string' || !PERMS.includes(perm)) {
    invalid(`${field}.perm`, `must be one of ${PERMS.join(', ')}`);
  }
  if (
    !Array.isArray(messageTypes) ||
    !messageTypes.every((t) => typeof t === 'string' && MESSAGE_TYPES.includes(t))
  ) {
    invalid(`${field}.messageTypes`, `must be an array of ${MESSAGE_TYPES.join(', ')}`);
  }
  const types = Object.freeze([...new Set(messageTypes as string[])]);
  return Object.freeze({ queueCount, perm: perm as TopicPerm, messageTypes: types });
}

/** Checks a registration from the wire; throws INVALID_ARGUMENT naming the first bad field. */
function checkRegistration(reg: unknown): Checked {
  if (!isObject(reg)) invalid('registration', 'must be an object');
  const cluster = checkName(reg.cluster, 'cluster');
  const group = checkName(reg.group, 'group');
  const nodeId = checkName(reg.nodeId, 'nodeId');
  const endpoint = checkEndpoint(reg.endpoint);
  const { role, term } = reg;
  if (role !== 'leader' && role !== 'follower') invalid('role', 'must be leader or follower');
  if (!isIntIn(term, 0, Number.MAX_SAFE_INTEGER)) {
    invalid('term', 'must be a non-negative safe integer');
  }
  if (!isObject(reg.topics)) invalid('topics', 'must be an object');
  const entries = Object.entries(reg.topics);
  const topics = new Map(entries.map(([name, t]) => [name, checkTopic(name, t)] as const));
  let liveFollowers: ReadonlySet<string> | undefined;
  if (reg.liveFollowers !== undefined) {
    if (!Array.isArray(reg.liveFollowers)) invalid('liveFollowers', 'must be a list of node ids');
    const ids = reg.liveFollowers as unknown[];
    if (ids.length > NAME_LIST_MAX) invalid('liveFollowers', `has more than ${NAME_LIST_MAX} ids`);
    liveFollowers = new Set(ids.map((id, i) => checkName(id, `liveFollowers[${i}]`)));
  }
  return { cluster, group, nodeId, endpoint, role, term, topics, liveFollowers };
}

/** Node ids a leader may report alive, at most (far above any group's size). */
const NAME_LIST_MAX = 1024;

type Checked = Omit<BrokerRegistration, 'topics' | 'liveFollowers'> & {
  topics: Map<string, TopicRegistration>;
  liveFollowers: ReadonlySet<string> | undefined;
};

function ref(node: NodeEntry): NodeRef {
  return Object.freeze({ nodeId: node.nodeId, endpoint: node.endpoint, term: node.term });
}

function byName<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/** The NameServer's route table. Not thread-safe by design: Node runs it on one thread. */
export class RouteTable {
  /** Resolved options. */
  readonly options: Readonly<RouteTableOptions>;
  private readonly groups = new Map<string, GroupEntry>();
  /** topic -> group -> number of that group's nodes listing it. */
  private readonly topicIndex = new Map<string, Map<string, number>>();
  private claimSeq = 0;

  constructor(options?: Partial<RouteTableOptions>) {
    this.options = resolveRouteTableOptions(options);
  }

  /**
   * Records a registration or heartbeat at `nowMs`. Throws INVALID_ARGUMENT for a malformed
   * registration (or a group already registered under another cluster) and BUSY when a new
   * group or node would exceed its bound; in both cases the table is unchanged. Topics beyond
   * `topicsMax` are left out and named in the result's `droppedTopics` (see the file comment).
   */
  register(registration: BrokerRegistration, nowMs: number): RegisterResult {
    assert(Number.isFinite(nowMs), () => `nowMs must be finite, got ${nowMs}`);
    const reg = checkRegistration(registration);
    const existing = this.groups.get(reg.group);
    if (existing !== undefined && existing.cluster !== reg.cluster) {
      invalid('cluster', `group ${reg.group} is registered in cluster ${existing.cluster}`);
    }
    const previous = existing?.nodes.get(reg.nodeId);
    if (existing !== undefined && previous !== undefined && reg.term < previous.term) {
      const leader = this.leaderRef(existing);
      return { outcome: 'stale-term', stale: true, leader, droppedTopics: NO_TOPICS };
    }
    if (existing === undefined && this.groups.size >= this.options.groupsMax) {
      throw new RaftmqError('BUSY', `route table full: groupsMax (${this.options.groupsMax})`);
    }
    if (
      previous === undefined &&
      existing !== undefined &&
      existing.nodes.size >= this.options.nodesPerGroupMax
    ) {
      const max = this.options.nodesPerGroupMax;
      throw new RaftmqError('BUSY', `group ${reg.group} full: nodesPerGroupMax (${max})`);
    }
    const { topics, dropped } = this.admitTopics(reg.group, previous?.topics, reg.topics);

    const group: GroupEntry = existing ?? { cluster: reg.cluster, nodes: new Map() };
    this.groups.set(reg.group, group);
    let claimSeq = 0;
    if (reg.role === 'leader') {
      const sameClaim = previous?.role === 'leader' && previous.term === reg.term;
      claimSeq = sameClaim ? previous.claimSeq : ++this.claimSeq;
    }
    if (previous !== undefined) this.indexTopics(reg.group, previous.topics, -1);
    this.indexTopics(reg.group, topics, +1);
    assert(this.topicIndex.size <= this.options.topicsMax, () => 'topic index over topicsMax');
    group.nodes.set(
      reg.nodeId,
      Object.freeze({
        nodeId: reg.nodeId,
        endpoint: reg.endpoint,
        role: reg.role,
        term: reg.term,
        topics,
        lastHeartbeatMs: nowMs,
        claimSeq,
        liveFollowers: reg.role === 'leader' ? reg.liveFollowers : undefined,
      }),
    );
    const leader = this.leaderOf(group);
    const outcome: RegisterOutcome =
      reg.role === 'follower'
        ? 'follower'
        : leader?.nodeId === reg.nodeId
          ? 'leader'
          : 'stale-leader';
    return {
      outcome,
      stale: outcome === 'stale-leader',
      leader: leader && ref(leader),
      droppedTopics: dropped,
    };
  }

  /** Removes one node (a broker shutting down cleanly); returns it, or undefined if unknown. */
  unregister(group: string, nodeId: string): DroppedNode | undefined {
    checkName(group, 'group');
    checkName(nodeId, 'nodeId');
    return this.drop(group, nodeId);
  }

  /** Drops every node not heard from for more than `brokerExpiryMs` before `nowMs`. */
  expire(nowMs: number): DroppedNode[] {
    assert(Number.isFinite(nowMs), () => `nowMs must be finite, got ${nowMs}`);
    const dead: { group: string; nodeId: string; wasLeader: boolean }[] = [];
    for (const [groupName, group] of this.groups) {
      // Leadership is judged before any drop: dropping one node can change who leads.
      const leader = this.leaderOf(group);
      for (const node of group.nodes.values()) {
        if (nowMs - node.lastHeartbeatMs > this.options.brokerExpiryMs) {
          dead.push({ group: groupName, nodeId: node.nodeId, wasLeader: node === leader });
        }
      }
    }
    return dead.map(({ group, nodeId, wasLeader }) => {
      const dropped = this.drop(group, nodeId);
      assert(dropped !== undefined, () => `expired node ${group}/${nodeId} vanished`);
      return Object.freeze({ ...dropped, wasLeader });
    });
  }

  /**
   * The route of `topic`, or undefined when no group hosts it. A group with a live leader hosts
   * the topics its leader lists; a leaderless group, those any of its nodes lists.
   */
  route(topic: string): TopicRoute | undefined {
    if (typeof topic !== 'string' || !isTopicName(topic)) {
      invalid('topic', 'must match [%|a-zA-Z0-9_-]{1,127}');
    }
    const hosts = this.topicIndex.get(topic);
    if (hosts === undefined) return undefined;
    const groups: GroupRoute[] = [];
    for (const name of [...hosts.keys()].sort()) {
      const group = this.groups.get(name);
      assert(group !== undefined, () => `topic index names unknown group ${name}`);
      const entry = this.groupRoute(name, group, topic);
      if (entry !== undefined) groups.push(entry);
    }
    if (groups.length === 0) return undefined;
    return Object.freeze({ topic, groups: Object.freeze(groups) });
  }

  /** Every group with its nodes, roles, terms and last heartbeats; sorted by group name. */
  clusterView(): GroupView[] {
    return [...this.groups].sort(byName).map(([name, group]) => {
      const leader = this.leaderOf(group);
      const nodes = [...group.nodes].sort(byName).map(([, node]) =>
        Object.freeze({
          ...ref(node),
          reportedRole: node.role,
          isLeader: node === leader,
          lastHeartbeatMs: node.lastHeartbeatMs,
          topicCount: node.topics.size,
        }),
      );
      return Object.freeze({
        cluster: group.cluster,
        group: name,
        leaderTermMax: termMax(group),
        leaderNodeId: leader?.nodeId,
        nodes: Object.freeze(nodes),
      });
    });
  }

  /** The group's leader, by the rules in the file comment. */
  private leaderOf(group: GroupEntry): NodeEntry | undefined {
    const term = termMax(group);
    let best: NodeEntry | undefined;
    for (const node of group.nodes.values()) {
      if (node.role !== 'leader' || node.term !== term) continue;
      if (best === undefined || node.claimSeq < best.claimSeq) best = node;
    }
    return best;
  }

  private leaderRef(group: GroupEntry): NodeRef | undefined {
    const leader = this.leaderOf(group);
    return leader && ref(leader);
  }

  /** The group's part of the route of `topic`; undefined when its leader does not list it. */
  private groupRoute(name: string, group: GroupEntry, topic: string): GroupRoute | undefined {
    const leader = this.leaderOf(group);
    // The leader holds every committed topic change, so its table decides: a topic it does not
    // list was deleted (or never committed), whatever a lagging follower still lists. Without
    // a leader, the listing node with the highest term (then lowest id) is the best guess.
    if (leader !== undefined && !leader.topics.has(topic)) return undefined;
    const source =
      leader ??
      [...group.nodes.values()]
        .filter((n) => n.topics.has(topic))
        .sort((a, b) => b.term - a.term || (a.nodeId < b.nodeId ? -1 : 1))[0];
    const config = source?.topics.get(topic);
    assert(config !== undefined, () => `group ${name} indexed for ${topic} but lists it nowhere`);
    const queues = Array.from({ length: config.queueCount }, (_, queueId) =>
      Object.freeze({ queueId, perm: config.perm, messageTypes: config.messageTypes }),
    );
    // A leader that reports its live followers keeps the dead ones out of the routes: a client
    // would send to them (a FIFO message group hashed onto one fails every attempt) and its
    // shutdown would fail notifying them, until they expired after `brokerExpiryMs`.
    const live = leader?.liveFollowers;
    const followers = [...group.nodes]
      .sort(byName)
      .filter(([id, n]) => n !== leader && (live === undefined || live.has(id)))
      .map(([, n]) => ref(n));
    return Object.freeze({
      cluster: group.cluster,
      group: name,
      leader: leader && ref(leader),
      writable: leader !== undefined && config.perm !== 'READ',
      leaderless: leader === undefined,
      followers: Object.freeze(followers),
      queues: Object.freeze(queues),
    });
  }

  /**
   * The topics of a node's new registration (`to`, replacing `from`) that fit in `topicsMax`,
   * and the ones left out (sorted). Topics already in the table take no room, whoever lists
   * them; the node's old topics that no one else lists free theirs. Of the topics new to the
   * table, the first by name get the room left.
   */
  private admitTopics(
    group: string,
    from: ReadonlyMap<string, TopicRegistration> | undefined,
    to: ReadonlyMap<string, TopicRegistration>,
  ): { topics: ReadonlyMap<string, TopicRegistration>; dropped: readonly string[] } {
    let room = this.options.topicsMax - this.topicIndex.size;
    for (const topic of from?.keys() ?? []) {
      const hosts = this.topicIndex.get(topic);
      if (!to.has(topic) && hosts?.size === 1 && hosts.get(group) === 1) room += 1;
    }
    const fresh: string[] = [];
    for (const topic of to.keys()) if (!this.topicIndex.has(topic)) fresh.push(topic);
    if (fresh.length <= room) return { topics: to, dropped: NO_TOPICS };
    assert(room >= 0, () => `route table over topicsMax by ${-room}`);
    const dropped = fresh.sort().slice(room);
    const topics = new Map(to);
    for (const topic of dropped) topics.delete(topic);
    return { topics, dropped: Object.freeze(dropped) };
  }

  private indexTopics(group: string, topics: ReadonlyMap<string, unknown>, delta: 1 | -1): void {
    for (const topic of topics.keys()) {
      const hosts = this.topicIndex.get(topic) ?? new Map<string, number>();
      const count = (hosts.get(group) ?? 0) + delta;
      assert(count >= 0, () => `topic index count below zero for ${topic} in ${group}`);
      if (count === 0) hosts.delete(group);
      else hosts.set(group, count);
      if (hosts.size === 0) this.topicIndex.delete(topic);
      else this.topicIndex.set(topic, hosts);
    }
  }

  private drop(groupName: string, nodeId: string): DroppedNode | undefined {
    const group = this.groups.get(groupName);
    const node = group?.nodes.get(nodeId);
    if (group === undefined || node === undefined) return undefined;
    const wasLeader = this.leaderOf(group) === node;
    group.nodes.delete(nodeId);
    this.indexTopics(groupName, node.topics, -1);
    if (group.nodes.size === 0) this.groups.delete(groupName);
    return Object.freeze({
      ...ref(node),
      cluster: group.cluster,
      group: groupName,
      lastHeartbeatMs: node.lastHeartbeatMs,
      wasLeader,
    });
  }
}

/** The highest term a live node of `group` reports; -1 for a group without nodes. */
function termMax(group: GroupEntry): number {
  let max = -1;
  for (const node of group.nodes.values()) if (node.term > max) max = node.term;
  return max;
}
