/**
 * The client side of the admin protocol (`proto/admin.proto`): {@link AdminClient}, a small
 * typed client for the CLI, tests and benchmarks, built on {@link AdminRpc}, the untyped unary
 * caller the admin service also uses to forward writes and to ask peers for their status. The
 * converters between the wire shapes and the broker's types live here, for both sides.
 *
 * An answer whose status is not OK becomes a RaftmqError of that code (an unknown code becomes
 * INTERNAL with `details.code`); a failed call becomes TIMEOUT (deadline, unreachable node,
 * cancellation: the request may or may not have taken effect) or INTERNAL, with the endpoint
 * and gRPC code in `details`.
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { ERROR_CODES, RaftmqError, type ErrorCode } from '../common/errors';
import { findProtoDir, loadProto } from '../common/proto-files';
import { formatEndpoint, parseEndpoint } from './broker-node-config';
import type { ConsumerProgress } from './pop-service';
import type {
  GroupConfig,
  MessageType,
  NodeRole,
  NodeStatus,
  TopicConfig,
  TopicPerm,
} from './broker-types';

export const ADMIN_PROTO_FILE = 'admin.proto';
export const ADMIN_SERVICE_NAME = 'raftmq.admin.v1.Admin';
/** Metadata header of a write forwarded by a follower; its receiver never forwards again. */
export const FORWARDED_HEADER = 'x-raftmq-forwarded';

export const ADMIN_METHODS = [
  'CreateTopic',
  'UpdateTopic',
  'DeleteTopic',
  'ListTopics',
  'CreateGroup',
  'UpdateGroup',
  'DeleteGroup',
  'ListGroups',
  'ConsumerProgress',
  'NodeStatus',
  'ClusterStatus',
  'TransferLeadership',
] as const;
export type AdminMethod = (typeof ADMIN_METHODS)[number];

/**
 * Most topics or groups in one ListTopics or ListGroups answer (admin.proto). A name is at most
 * 127 characters, so a page stays under 1 MiB, well inside grpc's default 4 MiB receive limit.
 */
export const LIST_PAGE_SIZE_MAX = 5000;

/** One page of a listing, and the name to ask after for the next ('' on the last page). */
export interface ListPage<T> {
  readonly items: T[];
  readonly nextAfterName: string;
}

/** A decoded response or request: proto-loader objects are loosely typed. */
export type WireObject = Record<string, unknown>;

/** Channel options: reconnect within a second, so a restarted node is seen again quickly. */
export const ADMIN_CHANNEL_OPTIONS: grpc.ChannelOptions = Object.freeze({
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
});

/** Loads the admin package definition (`protoDir` overrides the lookup of `proto/`). */
export function loadAdminDefinition(protoDir = ''): Promise<protoLoader.PackageDefinition> {
  return loadProto(path.join(findProtoDir(ADMIN_PROTO_FILE, protoDir), ADMIN_PROTO_FILE));
}

/** The service definition of `raftmq.admin.v1.Admin` in `definition`. */
export function adminServiceDefinition(
  definition: protoLoader.PackageDefinition,
): grpc.ServiceDefinition {
  const service = definition[ADMIN_SERVICE_NAME];
  if (service === undefined || 'format' in service) {
    throw new RaftmqError('INTERNAL', `${ADMIN_PROTO_FILE} has no service ${ADMIN_SERVICE_NAME}`);
  }
  return service;
}

/** Per-call options of {@link AdminRpc.call}. */
export interface AdminRpcCallOptions {
  /** Absolute deadline, epoch milliseconds. */
  readonly deadlineMs: number;
  readonly metadata?: grpc.Metadata;
}

/** Unary calls of the admin service to one endpoint, untyped. */
export class AdminRpc {
  private readonly client: grpc.Client;

  constructor(
    readonly endpoint: string,
    private readonly service: grpc.ServiceDefinition,
  ) {
    this.client = new grpc.Client(
      endpoint,
      grpc.credentials.createInsecure(),
      ADMIN_CHANNEL_OPTIONS,
    );
  }

  /** Resolves with the decoded response; rejects with a RaftmqError when the call fails. */
  call(method: AdminMethod, request: object, options: AdminRpcCallOptions): Promise<WireObject> {
    const def = this.service[method];
    if (def === undefined) {
      return Promise.reject(new RaftmqError('INTERNAL', `admin service has no ${method}`));
    }
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize as (bytes: Buffer) => WireObject,
        request,
        options.metadata ?? new grpc.Metadata(),
        { deadline: new Date(options.deadlineMs) },
        (err: grpc.ServiceError | null, value?: WireObject) => {
          if (err === null && value !== undefined) resolve(value);
          else reject(callError(err, this.endpoint, method));
        },
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

function callError(err: grpc.ServiceError | null, endpoint: string, method: string): RaftmqError {
  const grpcCode = err?.code ?? grpc.status.UNKNOWN;
  const details = { endpoint, method, grpcCode };
  const text = `${method} at ${endpoint} failed: ${err?.details ?? 'no response'}`;
  switch (grpcCode) {
    case grpc.status.DEADLINE_EXCEEDED:
    case grpc.status.UNAVAILABLE:
    case grpc.status.CANCELLED:
      return new RaftmqError('TIMEOUT', text, { cause: err, details });
    case grpc.status.INVALID_ARGUMENT:
      return new RaftmqError('INVALID_ARGUMENT', text, { cause: err, details });
    default:
      return new RaftmqError('INTERNAL', text, { cause: err, details });
  }
}

const PERM_PREFIX = 'TOPIC_PERM_';
const TYPE_PREFIX = 'MESSAGE_TYPE_';

export function permToWire(perm: TopicPerm): string {
  return `${PERM_PREFIX}${perm}`;
}

export function messageTypeToWire(type: MessageType): string {
  return `${TYPE_PREFIX}${type}`;
}

/** A topic (or the given fields of one, for updates) in its wire shape. */
export function topicToWire(topic: Partial<TopicConfig> & { readonly name: string }): WireObject {
  return {
    name: topic.name,
    queueCount: uint32(topic.queueCount ?? 0, 'topic.queueCount'),
    perm: topic.perm === undefined ? `${PERM_PREFIX}UNSPECIFIED` : permToWire(topic.perm),
    messageTypes: (topic.messageTypes ?? []).map(messageTypeToWire),
  };
}

/**
 * `n` for a uint32 field of the admin protocol, refused with INVALID_ARGUMENT when it is not
 * one: the encoder would wrap it (a queue count of 2^32 + 1 became 1), and the server then
 * checks a number the caller never gave.
 */
function uint32(n: number, field: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
    throw new RaftmqError(
      'INVALID_ARGUMENT',
      `${field} must be an integer in [0, 2^32), got ${n}`,
      {
        details: { field },
      },
    );
  }
  return n;
}

/** A group (or the given fields of one, for updates) in its wire shape. */
export function groupToWire(group: Partial<GroupConfig> & { readonly name: string }): WireObject {
  const wire: WireObject = {
    name: group.name,
    maxDeliveryAttempts: uint32(group.maxDeliveryAttempts ?? 0, 'group.maxDeliveryAttempts'),
  };
  if (group.fifo !== undefined) wire.fifo = group.fifo;
  return wire;
}

export function nodeStatusToWire(s: NodeStatus): WireObject {
  return { ...s, leaderId: s.leaderId ?? '', fatal: s.fatal ?? '' };
}

/** A topic as a server sent it (trusted: the server built it from a checked configuration). */
export function topicFromWire(w: unknown): TopicConfig {
  const o = asWire(w);
  return {
    name: str(o.name),
    queueCount: num(o.queueCount),
    perm: str(o.perm).slice(PERM_PREFIX.length) as TopicPerm,
    messageTypes: (Array.isArray(o.messageTypes) ? o.messageTypes : []).map(
      (t) => String(t).slice(TYPE_PREFIX.length) as MessageType,
    ),
  };
}

export function groupFromWire(w: unknown): GroupConfig {
  const o = asWire(w);
  return {
    name: str(o.name),
    maxDeliveryAttempts: num(o.maxDeliveryAttempts),
    fifo: o.fifo === true,
  };
}

export function nodeStatusFromWire(w: unknown): NodeStatus {
  const o = asWire(w);
  return {
    cluster: str(o.cluster),
    group: str(o.group),
    nodeId: str(o.nodeId),
    role: str(o.role) as NodeRole,
    term: num(o.term),
    leaderId: str(o.leaderId) === '' ? null : str(o.leaderId),
    clientEndpoint: str(o.clientEndpoint),
    raftEndpoint: str(o.raftEndpoint),
    lastIndex: num(o.lastIndex),
    commitIndex: num(o.commitIndex),
    appliedIndex: num(o.appliedIndex),
    topicCount: num(o.topicCount),
    fatal: str(o.fatal) === '' ? null : str(o.fatal),
    syncCount: num(o.syncCount),
    syncMsTotal: num(o.syncMsTotal),
    syncMsMax: num(o.syncMsMax),
    slowSyncs: num(o.slowSyncs),
    timedSyncs: num(o.timedSyncs),
    syncCallMsTotal: num(o.syncCallMsTotal),
    syncCallMsMax: num(o.syncCallMsMax),
    slowSyncCalls: num(o.slowSyncCalls),
  };
}

/** One configured node of a group, and what it said of itself when it answered. */
export interface ClusterMember {
  readonly nodeId: string;
  readonly clientEndpoint: string;
  readonly raftEndpoint: string;
  readonly reachable: boolean;
  /** Why it is unreachable; null when reachable. */
  readonly error: string | null;
  readonly status: NodeStatus | null;
}

/** A group's status as one node collected it. */
export interface ClusterStatus {
  readonly group: string;
  readonly answeredBy: string;
  /** The reachable node reporting itself leader in the highest term; null when none. */
  readonly leaderId: string | null;
  readonly term: number;
  readonly members: readonly ClusterMember[];
}

export function clusterStatusFromWire(w: WireObject): ClusterStatus {
  const members = (Array.isArray(w.members) ? w.members : []).map((m): ClusterMember => {
    const o = asWire(m);
    return {
      nodeId: str(o.nodeId),
      clientEndpoint: str(o.clientEndpoint),
      raftEndpoint: str(o.raftEndpoint),
      reachable: o.reachable === true,
      error: str(o.error) === '' ? null : str(o.error),
      status: o.reachable === true && o.node !== null ? nodeStatusFromWire(o.node) : null,
    };
  });
  const leaderId = str(w.leaderId);
  return {
    group: str(w.group),
    answeredBy: str(w.answeredBy),
    leaderId: leaderId === '' ? null : leaderId,
    term: num(w.term),
    members,
  };
}

/** Throws the RaftmqError a response's status carries, unless it is OK. */
export function checkStatus(response: WireObject, endpoint: string): void {
  const status = asWire(response.status);
  const code = str(status.code);
  if (code === 'OK') return;
  const known = Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
  const details: Record<string, unknown> = { endpoint };
  if (str(status.leaderId) !== '') details.leaderId = str(status.leaderId);
  if (str(status.leaderEndpoint) !== '') details.leaderEndpoint = str(status.leaderEndpoint);
  if (!known) details.code = code;
  throw new RaftmqError(known ? (code as ErrorCode) : 'INTERNAL', str(status.message), { details });
}

function asWire(value: unknown): WireObject {
  return typeof value === 'object' && value !== null ? (value as WireObject) : {};
}

function wireList(value: unknown): unknown[] {
  return Array.isArray(value) ? (value as unknown[]) : [];
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function num(value: unknown): number {
  return typeof value === 'number' ? value : 0;
}

/** Options of {@link AdminClient.connect}. */
export interface AdminClientOptions {
  /** Deadline of each call unless the call gives one (default 10 s). */
  readonly timeoutMs?: number;
  /** Directory of the `.proto` files (default: the lookup of `findProtoDir`). */
  readonly protoDir?: string;
}

/** Per-call options. */
export interface AdminCallOptions {
  readonly timeoutMs?: number;
}

/** A new topic: `perm` defaults to READ_WRITE, `messageTypes` to [NORMAL]. */
export type CreateTopicInput = Pick<TopicConfig, 'name' | 'queueCount'> &
  Partial<Pick<TopicConfig, 'perm' | 'messageTypes'>>;
/** The fields of a topic to change; the others keep their values. */
export type UpdateTopicInput = Pick<TopicConfig, 'name'> & Partial<TopicConfig>;
/** A new group (`maxDeliveryAttempts` 17, `fifo` false by default) or the fields to change. */
export type GroupInput = Pick<GroupConfig, 'name'> & Partial<GroupConfig>;

const DEFAULT_TIMEOUT_MS = 10_000;

/** A typed admin client of one broker node. */
export class AdminClient {
  private constructor(
    private readonly rpc: AdminRpc,
    private readonly timeoutMs: number,
  ) {}

  /** Loads the protocol and opens a (lazily connected) channel to `endpoint` (`host:port`). */
  static async connect(endpoint: string, options: AdminClientOptions = {}): Promise<AdminClient> {
    const checked = formatEndpoint(parseEndpoint(endpoint, 'endpoint'));
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) {
      throw new RaftmqError('INVALID_OPTION', `timeoutMs: must be a positive integer`);
    }
    const service = adminServiceDefinition(await loadAdminDefinition(options.protoDir));
    return new AdminClient(new AdminRpc(checked, service), timeoutMs);
  }

  get endpoint(): string {
    return this.rpc.endpoint;
  }

  async createTopic(topic: CreateTopicInput, options?: AdminCallOptions): Promise<TopicConfig> {
    const res = await this.call('CreateTopic', { topic: topicToWire(topic) }, options);
    return topicFromWire(res.topic);
  }

  async updateTopic(topic: UpdateTopicInput, options?: AdminCallOptions): Promise<TopicConfig> {
    const res = await this.call('UpdateTopic', { topic: topicToWire(topic) }, options);
    return topicFromWire(res.topic);
  }

  async deleteTopic(name: string, options?: AdminCallOptions): Promise<void> {
    await this.call('DeleteTopic', { name }, options);
  }

  /** Every topic, sorted by name, asked for page by page (admin.proto, ListTopicsRequest). */
  async listTopics(options?: AdminCallOptions): Promise<TopicConfig[]> {
    const wire = await this.listAll('ListTopics', 'topics', options);
    return wire.map(topicFromWire);
  }

  /** One page of the topics: those after `afterName`, at most `limit` (0: the server's most). */
  async listTopicsPage(
    afterName: string,
    limit = 0,
    options?: AdminCallOptions,
  ): Promise<ListPage<TopicConfig>> {
    const page = await this.page('ListTopics', 'topics', afterName, limit, options);
    return { items: page.items.map(topicFromWire), nextAfterName: page.nextAfterName };
  }

  async createGroup(group: GroupInput, options?: AdminCallOptions): Promise<GroupConfig> {
    const res = await this.call('CreateGroup', { group: groupToWire(group) }, options);
    return groupFromWire(res.group);
  }

  async updateGroup(group: GroupInput, options?: AdminCallOptions): Promise<GroupConfig> {
    const res = await this.call('UpdateGroup', { group: groupToWire(group) }, options);
    return groupFromWire(res.group);
  }

  async deleteGroup(name: string, options?: AdminCallOptions): Promise<void> {
    await this.call('DeleteGroup', { name }, options);
  }

  /** Every consumer group, sorted by name, asked for page by page (admin.proto). */
  async listGroups(options?: AdminCallOptions): Promise<GroupConfig[]> {
    const wire = await this.listAll('ListGroups', 'groups', options);
    return wire.map(groupFromWire);
  }

  /** One page of the groups: those after `afterName`, at most `limit` (0: the server's most). */
  async listGroupsPage(
    afterName: string,
    limit = 0,
    options?: AdminCallOptions,
  ): Promise<ListPage<GroupConfig>> {
    const page = await this.page('ListGroups', 'groups', afterName, limit, options);
    return { items: page.items.map(groupFromWire), nextAfterName: page.nextAfterName };
  }

  /** Pop consumption progress of `group` (every group when absent), per queue. */
  async consumerProgress(group = '', options?: AdminCallOptions): Promise<ConsumerProgress[]> {
    const res = await this.call('ConsumerProgress', { group }, options);
    return (Array.isArray(res.queues) ? res.queues : []).map(progressFromWire);
  }

  async nodeStatus(options?: AdminCallOptions): Promise<NodeStatus> {
    return nodeStatusFromWire((await this.call('NodeStatus', {}, options)).node);
  }

  async clusterStatus(options?: AdminCallOptions): Promise<ClusterStatus> {
    return clusterStatusFromWire(await this.call('ClusterStatus', {}, options));
  }

  /** Resolves with the leader's id once `nodeId` leads. */
  async transferLeadership(nodeId: string, options?: AdminCallOptions): Promise<string> {
    const res = await this.call('TransferLeadership', { nodeId }, options);
    return str(res.leaderId);
  }

  close(): void {
    this.rpc.close();
  }

  /** One page of ListTopics or ListGroups, undecoded (admin.proto). */
  private async page(
    method: 'ListTopics' | 'ListGroups',
    field: 'topics' | 'groups',
    afterName: string,
    limit: number,
    options: AdminCallOptions | undefined,
  ): Promise<ListPage<unknown>> {
    const res = await this.call(method, { afterName, limit }, options);
    return { items: wireList(res[field]), nextAfterName: str(res.nextAfterName) };
  }

  /**
   * Follows the pages of ListTopics or ListGroups to the end, each within the call's timeout.
   * A server whose next page would not move forward is refused rather than looped on.
   */
  private async listAll(
    method: 'ListTopics' | 'ListGroups',
    field: 'topics' | 'groups',
    options: AdminCallOptions | undefined,
  ): Promise<unknown[]> {
    const all: unknown[] = [];
    let afterName = '';
    for (;;) {
      const { items, nextAfterName: next } = await this.page(method, field, afterName, 0, options);
      all.push(...items);
      if (next === '') return all;
      if (next <= afterName) {
        throw new RaftmqError(
          'INTERNAL',
          `${this.endpoint}: ${method} page after '${afterName}' points back to '${next}'`,
        );
      }
      afterName = next;
    }
  }

  private async call(
    method: AdminMethod,
    request: object,
    options: AdminCallOptions | undefined,
  ): Promise<WireObject> {
    const deadlineMs = Date.now() + (options?.timeoutMs ?? this.timeoutMs);
    const res = await this.rpc.call(method, request, { deadlineMs });
    checkStatus(res, this.endpoint);
    return res;
  }
}

function progressFromWire(value: unknown): ConsumerProgress {
  const o = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const n = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0));
  return {
    group: typeof o.group === 'string' ? o.group : '',
    topic: typeof o.topic === 'string' ? o.topic : '',
    queueId: n(o.queueId),
    brokerOffset: n(o.brokerOffset),
    ackedFrontier: n(o.ackedFrontier),
    cursor: n(o.cursor),
    inflightCount: n(o.inflightCount),
    lag: n(o.lag),
  };
}
