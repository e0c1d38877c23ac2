/**
 * The admin service (`proto/admin.proto`, `raftmq.admin.v1.Admin`) of one broker node, over an
 * {@link AdminBackend}. It checks requests, runs reads on this node, runs writes here when this
 * node leads and otherwise forwards them to the leader's client endpoint with the
 * `x-raftmq-forwarded: 1` header (one hop at most: a forwarded write is never forwarded again),
 * waiting for an election to end within the call's deadline. ClusterStatus asks every peer's
 * NodeStatus in parallel with a short deadline.
 *
 * Every outcome of a decodable request, refusals included, is answered with gRPC OK and a
 * `status` carrying the raftmq error code (the proto says why). Only undecodable request bytes
 * end the call with INVALID_ARGUMENT: the request deserializer never throws, so they reach the
 * handler as a rejected frame instead of an INTERNAL error inside grpc-js.
 */
import * as grpc from '@grpc/grpc-js';
import { isRaftmqError, RaftmqError } from '../common/errors';
import { componentLogger, type Logger } from '../common/logger';
import { intInRange, isString, resolveOptions, type OptionSpec } from '../common/options';
import { MESSAGE_TYPES } from '../store/message-format';
import {
  adminServiceDefinition,
  checkStatus,
  FORWARDED_HEADER,
  groupToWire,
  LIST_PAGE_SIZE_MAX,
  loadAdminDefinition,
  nodeStatusFromWire,
  nodeStatusToWire,
  topicToWire,
  AdminRpc,
  type AdminMethod,
  type WireObject,
} from './admin-client';
import {
  checkGroupConfig,
  checkGroupName,
  checkTopicConfig,
  checkTopicName,
} from './broker-command';
import {
  DEFAULT_MAX_DELIVERY_ATTEMPTS,
  type AdminBackend,
  type GroupConfig,
  type MessageType,
  type NodeStatus,
  type TopicConfig,
  type TopicPerm,
} from './broker-types';
import { statusError, type DecodedFrame } from './grpc-util';
import { leaderMovedFrom, NOT_SENT_RETRY_MS, notSentByGrpc } from './leader-move';

/** Options of the admin service. */
export interface AdminServiceOptions {
  /** Deadline of a call that has none. */
  readonly callTimeoutMsDefault: number;
  /** Longest deadline honoured, so that no call holds a waiter for long. */
  readonly callTimeoutMsMax: number;
  /** How long ClusterStatus waits for each peer's NodeStatus, at most. */
  readonly peerStatusTimeoutMs: number;
  /**
   * Work (waiting for a leader, forwarding, the backend) ends this long before the caller's
   * deadline, so that its answer (NOT_LEADER, TIMEOUT) reaches the caller in time.
   */
  readonly answerMarginMs: number;
  /** Directory of the `.proto` files ('' for the usual lookup). */
  readonly protoDir: string;
}

export const ADMIN_SERVICE_DEFAULTS: Readonly<AdminServiceOptions> = Object.freeze({
  callTimeoutMsDefault: 10_000,
  callTimeoutMsMax: 300_000,
  peerStatusTimeoutMs: 1_000,
  answerMarginMs: 100,
  protoDir: '',
});

const SPEC: OptionSpec<AdminServiceOptions> = {
  callTimeoutMsDefault: intInRange(1, 3_600_000),
  callTimeoutMsMax: intInRange(1, 3_600_000),
  peerStatusTimeoutMs: intInRange(1, 60_000),
  answerMarginMs: intInRange(0, 10_000),
  protoDir: isString(false),
};

/** What `grpc.Server.addService` takes, and a `close()` for when the server is down. */
export interface AdminService {
  readonly definition: grpc.ServiceDefinition;
  readonly handlers: grpc.UntypedServiceImplementation;
  /** Closes the channels to peers; call after the server shut down. */
  close(): Promise<void>;
}

/** Channels kept to other nodes, at most (a group has at most 9 nodes). */
const PEER_CHANNELS_MAX = 16;

/** Builds the admin service of `backend`. */
export async function createAdminService(
  backend: AdminBackend,
  logger: Logger,
  options?: Partial<AdminServiceOptions>,
): Promise<AdminService> {
  const resolved = resolveOptions('adminService', ADMIN_SERVICE_DEFAULTS, SPEC, options);
  const base = adminServiceDefinition(await loadAdminDefinition(resolved.protoDir));
  const definition: grpc.ServiceDefinition = Object.fromEntries(
    Object.entries(base).map(([name, method]) => [
      name,
      { ...method, requestDeserialize: safeDeserializer(method.requestDeserialize) },
    ]),
  );
  const impl = new AdminServiceImpl(backend, base, resolved, logger);
  return { definition, handlers: impl.handlers(), close: () => impl.close() };
}

function safeDeserializer(decode: (bytes: Buffer) => unknown): (bytes: Buffer) => DecodedFrame {
  return (bytes) => {
    try {
      return { ok: true, value: decode(bytes) };
    } catch (err) {
      // Not swallowed: the handler ends the call with INVALID_ARGUMENT and this reason.
      return { ok: false, reason: `undecodable request: ${String(err)}` };
    }
  };
}

type Call = grpc.ServerUnaryCall<DecodedFrame, WireObject>;
type Run = (request: WireObject, call: Call) => Promise<WireObject>;

const OK_STATUS = Object.freeze({ code: 'OK', message: '', retryable: false });

class AdminServiceImpl {
  private readonly log: Logger;
  private readonly rpcs = new Map<string, AdminRpc>();
  private closed = false;

  constructor(
    private readonly backend: AdminBackend,
    private readonly service: grpc.ServiceDefinition,
    private readonly options: AdminServiceOptions,
    logger: Logger,
  ) {
    this.log = componentLogger(logger, {
      component: 'admin-service',
      group: backend.groupName,
      node: backend.nodeId,
    });
  }

  handlers(): grpc.UntypedServiceImplementation {
    const b = this.backend;
    const runs: Record<AdminMethod, Run> = {
      CreateTopic: (req, call) => {
        const topic = parseNewTopic(req.topic);
        return this.write(call, 'CreateTopic', { topic: topicToWire(topic) }, async (d) =>
          ok({ topic: topicToWire(await b.createTopic(topic, d)) }),
        );
      },
      UpdateTopic: (req, call) => {
        const change = parseTopicChange(req.topic);
        return this.write(call, 'UpdateTopic', { topic: topicToWire(change) }, async (d) => {
          const current = b.listTopics().find((t) => t.name === change.name);
          if (current === undefined) throw notFound('TOPIC_NOT_FOUND', 'topic', change.name);
          const merged = { ...current, ...change };
          checkTopicConfig(merged);
          return ok({ topic: topicToWire(await b.updateTopic(merged, d)) });
        });
      },
      DeleteTopic: (req, call) => {
        const name = req.name;
        checkTopicName(name, true);
        return this.write(call, 'DeleteTopic', { name }, async (d) => {
          await b.deleteTopic(name, d);
          return ok({});
        });
      },
      ListTopics: (req) => {
        const { page, nextAfterName } = listPage(b.listTopics(), req);
        return Promise.resolve(ok({ topics: page.map(topicToWire), nextAfterName }));
      },
      CreateGroup: (req, call) => {
        const group = parseNewGroup(req.group);
        return this.write(call, 'CreateGroup', { group: groupToWire(group) }, async (d) =>
          ok({ group: groupToWire(await b.createGroup(group, d)) }),
        );
      },
      UpdateGroup: (req, call) => {
        const change = parseGroupChange(req.group);
        return this.write(call, 'UpdateGroup', { group: groupToWire(change) }, async (d) => {
          const current = b.listGroups().find((g) => g.name === change.name);
          if (current === undefined)
            throw notFound('GROUP_NOT_FOUND', 'consumer group', change.name);
          const merged = { ...current, ...change };
          checkGroupConfig(merged);
          return ok({ group: groupToWire(await b.updateGroup(merged, d)) });
        });
      },
      DeleteGroup: (req, call) => {
        const name = req.name;
        checkGroupName(name);
        return this.write(call, 'DeleteGroup', { name }, async (d) => {
          await b.deleteGroup(name, d);
          return ok({});
        });
      },
      ListGroups: (req) => {
        const { page, nextAfterName } = listPage(b.listGroups(), req);
        return Promise.resolve(ok({ groups: page.map(groupToWire), nextAfterName }));
      },
      ConsumerProgress: (req) => {
        const group = typeof req.group === 'string' ? req.group : '';
        if (group !== '') checkGroupName(group);
        if (b.consumerProgress === undefined) {
          throw new RaftmqError('UNSUPPORTED', 'this node does not track consumer progress');
        }
        const queues = b.consumerProgress(group === '' ? undefined : group);
        return Promise.resolve(ok({ queues }));
      },
      NodeStatus: () => Promise.resolve(ok({ node: nodeStatusToWire(b.nodeStatus()) })),
      ClusterStatus: (_req, call) => this.clusterStatus(call),
      TransferLeadership: (req, call) => {
        const nodeId = req.nodeId;
        if (typeof nodeId !== 'string' || !Object.hasOwn(b.peers(), nodeId)) {
          throw invalid(`nodeId must be one of ${Object.keys(b.peers()).join(', ')}`);
        }
        return this.write(call, 'TransferLeadership', { nodeId }, async (d) => {
          const view = b.roleView();
          // Already done; anything else (this node not leading included) is the backend's call.
          if (view.role !== 'leader' || nodeId !== b.nodeId) await b.transferLeadership(nodeId, d);
          return ok({ leaderId: nodeId });
        });
      },
    };
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const [name, run] of Object.entries(runs) as [AdminMethod, Run][]) {
      handlers[name] = this.unary(name, run);
    }
    return handlers;
  }

  close(): Promise<void> {
    this.closed = true;
    for (const rpc of this.rpcs.values()) rpc.close();
    this.rpcs.clear();
    return Promise.resolve();
  }

  private unary(name: AdminMethod, run: Run): grpc.handleUnaryCall<DecodedFrame, WireObject> {
    return (call, callback) => {
      const frame = call.request;
      if (!frame.ok) {
        this.log.debug({ method: name, reason: frame.reason }, 'refused an undecodable request');
        callback(statusError(grpc.status.INVALID_ARGUMENT, frame.reason));
        return;
      }
      const request = asWire(frame.value);
      this.log.debug({ method: name }, 'admin request');
      // `run` may throw synchronously (request checks) or reject; both become a status.
      Promise.resolve()
        .then(() => run(request, call))
        .then(
          (response) => callback(null, response),
          (err: unknown) => callback(null, { status: this.errorStatus(err, name) }),
        );
    };
  }

  /** The status of a failure; an unexpected one is logged and answered as INTERNAL. */
  private errorStatus(err: unknown, method: AdminMethod): WireObject {
    if (!isRaftmqError(err)) {
      this.log.error({ err, method }, 'admin request failed unexpectedly');
      return {
        code: 'INTERNAL',
        message: `${method} failed; see the node's log`,
        retryable: false,
      };
    }
    this.log.debug({ method, code: err.code, msg: err.message }, 'admin request refused');
    const status: WireObject = { code: err.code, message: err.message, retryable: err.retryable };
    if (err.code === 'NOT_LEADER') {
      const view = this.backend.roleView();
      const leaderId = err.details.leaderId ?? view.leaderId ?? '';
      const leaderEndpoint = err.details.leaderEndpoint ?? view.leaderEndpoint ?? '';
      if (typeof leaderId === 'string') status.leaderId = leaderId;
      if (typeof leaderEndpoint === 'string') status.leaderEndpoint = leaderEndpoint;
    }
    return status;
  }

  /** When work on the call must end (epoch ms): its deadline, defaulted, capped, less margin. */
  private deadlineOf(call: Call): number {
    const given = call.getDeadline();
    const givenMs = given instanceof Date ? given.getTime() : given;
    const nowMs = Date.now();
    const ms = Number.isFinite(givenMs) ? givenMs : nowMs + this.options.callTimeoutMsDefault;
    const capped = Math.min(ms, nowMs + this.options.callTimeoutMsMax);
    return Math.max(nowMs + 1, capped - this.options.answerMarginMs);
  }

  /** Runs a write here when this node leads (or the write was forwarded), else forwards it. */
  private async write(
    call: Call,
    method: AdminMethod,
    request: WireObject,
    local: (deadlineMs: number) => Promise<WireObject>,
  ): Promise<WireObject> {
    const deadlineMs = this.deadlineOf(call);
    if (call.metadata.get(FORWARDED_HEADER).length > 0) return local(deadlineMs);
    for (;;) {
      let view = this.backend.roleView();
      if (view.role === 'leader' && view.leaderReady) return local(deadlineMs);
      // A leader not yet ready (no entry of its term committed) waits for readiness, as a
      // follower waits for an election, instead of refusing the write at once.
      if (view.role === 'leader' || view.leaderId === null || view.leaderEndpoint === undefined) {
        const waited = await this.backend.waitForLeader(deadlineMs);
        if (waited === undefined) {
          throw new RaftmqError('NOT_LEADER', 'no leader was elected before the deadline');
        }
        view = waited;
      }
      if (view.leaderId === this.backend.nodeId) return local(deadlineMs);
      const endpoint = view.leaderEndpoint;
      if (endpoint === undefined) throw new RaftmqError('NOT_LEADER', 'the leader is not known');
      const metadata = new grpc.Metadata();
      metadata.set(FORWARDED_HEADER, '1');
      this.log.debug(
        { method, leader: view.leaderId, endpoint },
        'forwarding a write to the leader',
      );
      try {
        return await this.rpcFor(endpoint).call(method, request, { deadlineMs, metadata });
      } catch (err) {
        // The write never left (no connection to the leader this node knows): nothing can have
        // taken effect, so it is forwarded again, at once to a newer leader, else to the same
        // one a little later (it may be back), within the deadline. (Before, such a write failed
        // at once, though the group elected a new leader within an election timeout.)
        const cause = isRaftmqError(err) ? err.cause : undefined;
        if (!notSentByGrpc(cause)) throw err;
        const waitMs = Math.min(deadlineMs - Date.now(), NOT_SENT_RETRY_MS);
        await leaderMovedFrom(this.backend, endpoint, view.term, waitMs);
        if (Date.now() >= deadlineMs) throw err;
      }
    }
  }

  private async clusterStatus(call: Call): Promise<WireObject> {
    const deadlineMs = Math.min(
      this.deadlineOf(call),
      Date.now() + this.options.peerStatusTimeoutMs,
    );
    const peers = Object.entries(this.backend.peers()).sort(([a], [b]) => (a < b ? -1 : 1));
    const members = await Promise.all(
      peers.map(async ([nodeId, p]) => {
        const base = { nodeId, clientEndpoint: p.client, raftEndpoint: p.raft };
        try {
          const node: NodeStatus | undefined = await this.statusOf(nodeId, p.client, deadlineMs);
          return { ...base, reachable: true, error: '', node };
        } catch (err) {
          const error = err instanceof Error ? err.message : String(err);
          return { ...base, reachable: false, error, node: undefined };
        }
      }),
    );
    let leader: NodeStatus | undefined;
    let term = 0;
    for (const m of members) {
      if (m.node === undefined) continue;
      term = Math.max(term, m.node.term);
      if (m.node.role === 'leader' && (leader === undefined || m.node.term > leader.term)) {
        leader = m.node;
      }
    }
    return ok({
      group: this.backend.groupName,
      answeredBy: this.backend.nodeId,
      leaderId: leader?.nodeId ?? '',
      term,
      members: members.map((m) => ({
        ...m,
        node: m.node === undefined ? null : nodeStatusToWire(m.node),
      })),
    });
  }

  private async statusOf(
    nodeId: string,
    endpoint: string,
    deadlineMs: number,
  ): Promise<NodeStatus> {
    if (nodeId === this.backend.nodeId) return this.backend.nodeStatus();
    const res = await this.rpcFor(endpoint).call('NodeStatus', {}, { deadlineMs });
    checkStatus(res, endpoint);
    return nodeStatusFromWire(res.node);
  }

  private rpcFor(endpoint: string): AdminRpc {
    if (this.closed) throw new RaftmqError('NOT_LEADER', 'this node is stopping');
    let rpc = this.rpcs.get(endpoint);
    if (rpc === undefined) {
      if (this.rpcs.size >= PEER_CHANNELS_MAX) {
        const [oldest, oldRpc] = this.rpcs.entries().next().value as [string, AdminRpc];
        this.rpcs.delete(oldest);
        oldRpc.close();
      }
      rpc = new AdminRpc(endpoint, this.service);
      this.rpcs.set(endpoint, rpc);
    }
    return rpc;
  }
}

function ok(fields: WireObject): WireObject {
  return { status: OK_STATUS, ...fields };
}

function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * The page of `items` a ListTopics or ListGroups request asks for (admin.proto): sorted by name,
 * those after `afterName`, at most `limit` (0 or above {@link LIST_PAGE_SIZE_MAX}: that many),
 * and the name to ask after next ('' when none follow). Keyset paging, so a name created or
 * deleted between two pages never shifts the others.
 */
function listPage<T extends { name: string }>(
  items: T[],
  req: WireObject,
): { page: T[]; nextAfterName: string } {
  const afterName = typeof req.afterName === 'string' ? req.afterName : '';
  const asked = typeof req.limit === 'number' ? req.limit : 0;
  const limit = asked <= 0 || asked > LIST_PAGE_SIZE_MAX ? LIST_PAGE_SIZE_MAX : asked;
  const sorted = items.sort(byName);
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid]?.name ?? '') <= afterName) lo = mid + 1;
    else hi = mid;
  }
  const page = sorted.slice(lo, lo + limit);
  const last = page[page.length - 1];
  const more = lo + limit < sorted.length && last !== undefined;
  return { page, nextAfterName: more ? last.name : '' };
}

function asWire(value: unknown): WireObject {
  return typeof value === 'object' && value !== null ? (value as WireObject) : {};
}

function invalid(message: string): RaftmqError {
  return new RaftmqError('INVALID_ARGUMENT', message);
}

function notFound(code: 'TOPIC_NOT_FOUND' | 'GROUP_NOT_FOUND', what: string, name: string) {
  return new RaftmqError(code, `${what} ${JSON.stringify(name)} does not exist`);
}

function requireObject(value: unknown, field: string): WireObject {
  if (typeof value !== 'object' || value === null) throw invalid(`${field} is required`);
  return value as WireObject;
}

const PERMS: readonly TopicPerm[] = ['READ', 'WRITE', 'READ_WRITE'];

/** An enum value on the wire: its name with `prefix`, or a number no name has. */
function parseEnum<T extends string>(
  value: unknown,
  prefix: string,
  allowed: readonly T[],
  field: string,
): T | undefined {
  if (value === `${prefix}UNSPECIFIED` || value === undefined || value === 0) return undefined;
  const name = typeof value === 'string' ? value.slice(prefix.length) : '';
  if (typeof value === 'string' && value.startsWith(prefix) && allowed.includes(name as T)) {
    return name as T;
  }
  throw invalid(`${field} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
}

function parseTypes(value: unknown, field: string): MessageType[] | undefined {
  if (!Array.isArray(value)) throw invalid(`${field} must be a list`);
  const types = value.map((v) => parseEnum(v, 'MESSAGE_TYPE_', MESSAGE_TYPES, field));
  if (types.some((t) => t === undefined)) throw invalid(`${field} has an unspecified type`);
  return types.length === 0 ? undefined : (types as MessageType[]);
}

/** The fields of a topic the request gives (zero values are absent). */
function parseTopicFields(value: unknown): Partial<TopicConfig> & { name: string } {
  const t = requireObject(value, 'topic');
  checkTopicName(t.name);
  const queueCount = t.queueCount;
  if (typeof queueCount !== 'number') throw invalid('topic.queueCount must be a number');
  const fields: Partial<TopicConfig> & { name: string } = { name: t.name };
  const perm = parseEnum(t.perm, 'TOPIC_PERM_', PERMS, 'topic.perm');
  const messageTypes = parseTypes(t.messageTypes, 'topic.messageTypes');
  return Object.assign(
    fields,
    queueCount === 0 ? {} : { queueCount },
    perm === undefined ? {} : { perm },
    messageTypes === undefined ? {} : { messageTypes },
  );
}

function parseNewTopic(value: unknown): TopicConfig {
  const fields = parseTopicFields(value);
  if (fields.queueCount === undefined) throw invalid('topic.queueCount is required (1..1024)');
  const topic = { perm: 'READ_WRITE', messageTypes: ['NORMAL'], ...fields };
  checkTopicConfig(topic);
  return topic;
}

function parseTopicChange(value: unknown): Partial<TopicConfig> & { name: string } {
  const fields = parseTopicFields(value);
  // Checked with placeholders for the absent fields; the merged topic is checked again.
  checkTopicConfig({ queueCount: 1, perm: 'READ', messageTypes: ['NORMAL'], ...fields });
  return fields;
}

function parseGroupFields(value: unknown): Partial<GroupConfig> & { name: string } {
  const g = requireObject(value, 'group');
  const attempts = g.maxDeliveryAttempts;
  if (typeof attempts !== 'number') throw invalid('group.maxDeliveryAttempts must be a number');
  if (g.fifo !== undefined && typeof g.fifo !== 'boolean') throw invalid('group.fifo: a boolean');
  const fields = { name: g.name as string };
  checkGroupConfig({ name: g.name, maxDeliveryAttempts: attempts || 1, fifo: false });
  return Object.assign(
    fields,
    attempts === 0 ? {} : { maxDeliveryAttempts: attempts },
    g.fifo === undefined ? {} : { fifo: g.fifo },
  );
}

function parseNewGroup(value: unknown): GroupConfig {
  const group = { maxDeliveryAttempts: DEFAULT_MAX_DELIVERY_ATTEMPTS, fifo: false };
  const merged = { ...group, ...parseGroupFields(value) };
  checkGroupConfig(merged);
  return merged;
}

function parseGroupChange(value: unknown): Partial<GroupConfig> & { name: string } {
  return parseGroupFields(value);
}
