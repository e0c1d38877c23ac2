/**
 * Turns a {@link TopicRoute} of the route table into the `message_queues` of a RocketMQ v2
 * `QueryRouteResponse`, as plain objects in the shape @grpc/proto-loader takes with raftmq's
 * `PROTO_LOADER_OPTIONS` (camelCase keys, enums as their names). Pure: no IO, no logging; what
 * it had to leave out is returned for the caller to log.
 *
 * The shape (see docs/namesrv.md and the contract notes §6.2, §7.1, §10.3, §10.13):
 * - A group's **leader** is `Broker{name: group, id: 0}` with queues `0..queueCount-1`. Java
 *   clients keep only `broker.id == 0` entries, so they use leaders only and spread over every
 *   queue; the server picks the real queue anyway.
 * - **Each follower** is an extra `Broker{name: "<group>@<nodeId>", id: 1, 2, ...}` with queue
 *   0 only. The Node producer keeps only queue-0 entries, picks one candidate per broker name,
 *   retries the next candidate on failure and isolates a failed endpoint for good. Followers
 *   forward sends to their leader, so listing them lets a Node producer carry on through a
 *   follower when the leader dies, instead of failing until its next 30 s route refresh.
 * - The leader's queue 0 is then listed again, 16 times per follower in all
 *   ({@link LEADER_SHARE_PER_FOLLOWER}): the Node clients round-robin over queue-0 entries, so
 *   all but 1 in 17 of their first attempts skip the forwarding hop.
 * - A group with no leader lists its followers only (they forward, or wait for the election).
 * - Every queue carries the topic's permission and accepted message types as registered.
 * - Every `Broker` has exactly one address (the Node client joins several into one invalid
 *   target). IPv4 dotted quads get scheme `IPv4`, anything else `DOMAIN_NAME`; IPv6 literals
 *   are skipped, because the Node client does not bracket them.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { RaftmqError, RmqCode } from '../common/errors';
import type { GroupRoute, NodeRef, QueueRoute, TopicPerm, TopicRoute } from './route-types';

/** RocketMQ v2 `AddressScheme` names raftmq emits. */
export type RmqAddressScheme = 'IPv4' | 'DOMAIN_NAME';

/** RocketMQ v2 `Resource`. */
export interface RmqResource {
  readonly name: string;
  readonly resourceNamespace: string;
}

/** RocketMQ v2 `Broker` with its one address. */
export interface RmqBroker {
  readonly name: string;
  readonly id: number;
  readonly endpoints: {
    readonly scheme: RmqAddressScheme;
    readonly addresses: readonly { readonly host: string; readonly port: number }[];
  };
}

/** RocketMQ v2 `MessageQueue`. */
export interface RmqMessageQueue {
  readonly topic: RmqResource;
  readonly id: number;
  /** RocketMQ v2 `Permission` name. */
  readonly permission: TopicPerm;
  readonly broker: RmqBroker;
  /** RocketMQ v2 `MessageType` names. */
  readonly acceptMessageTypes: readonly string[];
}

/** A node left out of the queues, and why. */
export interface SkippedNode {
  readonly group: string;
  readonly nodeId: string;
  readonly endpoint: string;
  readonly reason: string;
}

/** What {@link toMessageQueues} returns. */
export interface RmqRoute {
  readonly messageQueues: RmqMessageQueue[];
  readonly skipped: SkippedNode[];
}

/** A parsed `host:port`. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
  readonly scheme: RmqAddressScheme;
}

/** One DNS label: letters, digits, `_` and inner `-`, 1..63 characters. */
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
const HOST_LENGTH_MAX = 253;

function badEndpoint(text: string, why: string): never {
  throw new RaftmqError('INVALID_ARGUMENT', `endpoint ${JSON.stringify(text)}: ${why}`, {
    details: { field: 'endpoint' },
  });
}

/**
 * Parses `host:port` strictly: a port of 1..65535 in plain decimal, and a host that is an IPv4
 * dotted quad or a DNS name. Throws INVALID_ARGUMENT (field `endpoint`) for anything else,
 * IPv6 literals included (bracketed or not), since RocketMQ clients cannot dial them.
 */
export function parseHostPort(text: string): HostPort {
  if (typeof text !== 'string') badEndpoint(String(text), 'must be a string');
  const colon = text.lastIndexOf(':');
  if (colon < 0) badEndpoint(text, 'must be host:port');
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (host.includes(':') || host.startsWith('[') || isIPv6(host)) {
    badEndpoint(text, 'IPv6 literals are not supported (RocketMQ clients do not bracket them)');
  }
  if (!/^[0-9]{1,5}$/.test(portText)) badEndpoint(text, 'port must be a decimal number');
  const port = Number(portText);
  if (port < 1 || port > 65_535) badEndpoint(text, 'port must be in [1, 65535]');
  if (isIPv4(host)) return { host, port, scheme: 'IPv4' };
  if (/^[0-9.]+$/.test(host)) badEndpoint(text, 'host is not a valid IPv4 address');
  if (host.length === 0 || host.length > HOST_LENGTH_MAX) {
    badEndpoint(text, `host must be 1..${HOST_LENGTH_MAX} characters`);
  }
  if (!host.split('.').every((label) => LABEL.test(label))) {
    badEndpoint(text, 'host is neither an IPv4 address nor a DNS name');
  }
  return { host, port, scheme: 'DOMAIN_NAME' };
}

/**
 * How many times the leader's queue 0 is listed per listed follower. The Node clients keep only
 * queue-0 entries and send or receive round-robin over them; a follower forwards what it gets to
 * the leader, an extra hop that costs CPU on two nodes (with the followers listed once each, 2
 * of 3 official-client sends were forwarded, and each follower spent 210 to 370 µs of CPU per
 * message sent to the group; with 1 in 17 forwarded, 140 to 190). The followers stay the next
 * candidates of every send, since
 * the client retries on a different broker name, so failover is unchanged. A duplicate is
 * harmless to other clients: the server picks the queue of a message.
 */
export const LEADER_SHARE_PER_FOLLOWER = 16;

/** The broker name under which a follower is listed. */
export function followerBrokerName(group: string, nodeId: string): string {
  return `${group}@${nodeId}`;
}

function brokerOf(name: string, id: number, at: HostPort): RmqBroker {
  return {
    name,
    id,
    endpoints: { scheme: at.scheme, addresses: [{ host: at.host, port: at.port }] },
  };
}

/** The queues one group contributes, appended to `out`. */
function groupQueues(
  group: GroupRoute,
  topic: RmqResource,
  out: RmqMessageQueue[],
  skipped: SkippedNode[],
): void {
  const parse = (node: NodeRef): HostPort | undefined => {
    try {
      return parseHostPort(node.endpoint);
    } catch (err) {
      // Not swallowed: reported to the caller, which logs it; the rest of the route is usable.
      const reason = err instanceof Error ? err.message : String(err);
      skipped.push({ group: group.group, nodeId: node.nodeId, endpoint: node.endpoint, reason });
      return undefined;
    }
  };
  const queue = (config: QueueRoute, id: number, broker: RmqBroker): RmqMessageQueue => ({
    topic,
    id,
    permission: config.perm,
    broker,
    acceptMessageTypes: [...config.messageTypes],
  });
  const leaderAt = group.leader && parse(group.leader);
  const queueZero = group.queues.find((q) => q.queueId === 0) ?? group.queues[0];
  const followers: RmqBroker[] = [];
  for (const follower of group.followers) {
    const at = parse(follower);
    if (at === undefined) continue;
    followers.push(
      brokerOf(followerBrokerName(group.group, follower.nodeId), followers.length + 1, at),
    );
  }
  if (leaderAt !== undefined) {
    const broker = brokerOf(group.group, 0, leaderAt);
    for (const q of group.queues) out.push(queue(q, q.queueId, broker));
    // The Node clients round-robin over queue-0 entries; repeating the leader's keeps most
    // first attempts off the forwarding hop (see LEADER_SHARE_PER_FOLLOWER).
    const copies = LEADER_SHARE_PER_FOLLOWER * followers.length - 1;
    if (queueZero !== undefined)
      for (let i = 0; i < copies; i++) out.push(queue(queueZero, 0, broker));
  }
  if (queueZero === undefined) return;
  for (const broker of followers) out.push(queue(queueZero, 0, broker));
}

/**
 * The RocketMQ v2 `message_queues` of `route`, named `topic` (the name and namespace as the
 * client asked for them, not the table's `ns%name` key). Groups come in the route's order
 * (sorted by name); within a group the leader's queues come first, then the repeats of its
 * queue 0, then its followers.
 */
export function toMessageQueues(route: TopicRoute, topic: RmqResource): RmqRoute {
  const messageQueues: RmqMessageQueue[] = [];
  const skipped: SkippedNode[] = [];
  const resource = { name: topic.name, resourceNamespace: topic.resourceNamespace };
  for (const group of route.groups) groupQueues(group, resource, messageQueues, skipped);
  return { messageQueues, skipped };
}

/** A QueryRouteResponse as {@link queryRouteAnswer} builds it. */
export interface RmqQueryRouteResponse {
  readonly status: { readonly code: number; readonly message: string };
  readonly messageQueues: RmqMessageQueue[];
}

/**
 * What a QueryRoute answers for `route`, on a NameServer and on a broker alike: the queues with
 * status OK, or status NOT_FOUND when no node of the route has an endpoint clients can dial. An
 * OK answer without queues breaks the clients (contract §6.2: the Node producer throws "max out
 * of range", a SimpleConsumer's startup hangs). `key` is the table's name of the topic (with its
 * namespace), for the message. `skipped` is for the caller to log.
 */
export function queryRouteAnswer(
  route: TopicRoute,
  topic: RmqResource,
  key: string,
): { readonly response: RmqQueryRouteResponse; readonly skipped: SkippedNode[] } {
  const { messageQueues, skipped } = toMessageQueues(route, topic);
  if (messageQueues.length === 0) {
    const message = `topic ${key} is registered, but no node hosting it has a usable endpoint`;
    return { response: { status: { code: RmqCode.NOT_FOUND, message }, messageQueues }, skipped };
  }
  return { response: { status: { code: RmqCode.OK, message: 'OK' }, messageQueues }, skipped };
}
