/**
 * raftmq's pull consumer: reading queues by offset over the RocketMQ 5 protocol (`QueryRoute`,
 * `PullMessage`, `GetOffset`, `UpdateOffset`, `QueryOffset`), which the official Node client
 * does not offer. The consumer asks its access point (a NameServer or any broker) for a topic's
 * route, then reads from the node a call names — or, by default, the leader of the queue's
 * group. Any node serves committed reads (its ConsumeQueues hold only applied messages), so a
 * reader may spread over followers; only UpdateOffset is a write, which a follower forwards.
 *
 * A pull goes by raftmq's Fetch protocol (`proto/fetch.proto`) by default: one reply carries the
 * messages as the broker stores them, each checked here by its CRC32C (and its topic and queue)
 * before it is decoded. With `pullProtocol: 'pull-message'`, or against a server that does not
 * implement Fetch (it answers UNIMPLEMENTED once; the endpoint is then remembered), a pull uses
 * RocketMQ 5 PullMessage, a server stream: a status, one frame per message, then the next
 * offset. Both answer the same. When the queue holds nothing at the offset the broker
 * long-polls for up to `awaitMs`. Every call has a
 * deadline (`callTimeoutMs`, plus `awaitMs` for a pull); a pull answers at most `countMax`
 * messages and a stream with more frames than that is refused. Without an explicit endpoint a
 * call that finds its node unreachable or not leading refreshes the route and tries again
 * until its deadline.
 */
import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { type ErrorCode, RaftmqError } from '../common/errors';
import { intInRange, isString, oneOf, type OptionSpec, resolveOptions } from '../common/options';
import { findProtoDir, PROTO_LOADER_OPTIONS } from '../common/proto-files';
import { decodeMessage } from '../store/message-codec';
import {
  decodeFetchReply,
  decodePullFrame,
  type FetchReply,
  type PullFrame,
  type PullFrameMessage,
} from './pull-wire';

const SERVICE_PROTO = 'apache/rocketmq/v2/service.proto';
const SERVICE_NAME = 'apache.rocketmq.v2.MessagingService';
const FETCH_PROTO = 'fetch.proto';
const FETCH_SERVICE_NAME = 'raftmq.fetch.v1.Fetch';

/** How pulls travel: raftmq's Fetch (stored records, one frame per reply) or PullMessage. */
export type PullProtocol = 'fetch' | 'pull-message';

/** Options of a {@link PullConsumer}. */
export interface PullConsumerOptions {
  /** Access point, `host:port` of a NameServer or of any broker node. */
  endpoint: string;
  /** Consumer group named in PullMessage (offsets take the group per call). */
  consumerGroup: string;
  /** Namespace of topics and groups (RocketMQ 5 `resource_namespace`); empty for none. */
  namespace: string;
  /** Deadline of one call, retries included (a pull adds its `awaitMs`). */
  callTimeoutMs: number;
  /** Route answers are reused for this long, then asked again. */
  routeTtlMs: number;
  /** Topics whose route is kept at most (oldest dropped first). */
  routeCacheEntriesMax: number;
  /** gRPC channels kept open at most (least recently used closed first). */
  channelsMax: number;
  /** Largest response frame accepted (a Fetch reply holds up to the broker's pullBytesMax). */
  receiveMessageBytesMax: number;
  /** How pulls travel (see the file comment); 'fetch' falls back to PullMessage by itself. */
  pullProtocol: PullProtocol;
  /** Sent as `x-mq-client-id`; empty: generated. */
  clientId: string;
  /** Directory of the `.proto` files; empty: `$RAFTMQ_PROTO_DIR`, else the package's. */
  protoDir: string;
}

export const PULL_CONSUMER_DEFAULTS: Readonly<Omit<PullConsumerOptions, 'endpoint'>> =
  Object.freeze({
    consumerGroup: 'raftmq_pull_consumer',
    namespace: '',
    callTimeoutMs: 5_000,
    routeTtlMs: 30_000,
    routeCacheEntriesMax: 1_024,
    channelsMax: 32,
    receiveMessageBytesMax: 8 * 1024 * 1024,
    pullProtocol: 'fetch',
    clientId: '',
    protoDir: '',
  });

const OPTION_SPEC: OptionSpec<PullConsumerOptions> = {
  endpoint: (value, path) => checkEndpoint(value, path, 'INVALID_OPTION'),
  consumerGroup: isString(true),
  namespace: isString(false),
  callTimeoutMs: intInRange(10, 600_000),
  routeTtlMs: intInRange(0, 3_600_000),
  routeCacheEntriesMax: intInRange(1, 1_000_000),
  channelsMax: intInRange(1, 1_024),
  receiveMessageBytesMax: intInRange(64 * 1024, 256 * 1024 * 1024),
  pullProtocol: oneOf('fetch', 'pull-message'),
  clientId: isString(false),
  protoDir: isString(false),
};

/** Checks the options and fills defaults; throws INVALID_OPTION naming the field. */
export function resolvePullConsumerOptions(
  input: Partial<PullConsumerOptions> & { endpoint: string },
): Readonly<PullConsumerOptions> {
  const defaults = { endpoint: '', ...PULL_CONSUMER_DEFAULTS };
  return resolveOptions('pullConsumer', defaults, OPTION_SPEC, input);
}

/** Largest `countMax` of one pull (the broker caps a batch lower: 256 by default). */
export const PULL_COUNT_MAX = 1_024;
/** Longest long poll a pull may ask for. */
export const AWAIT_MS_MAX = 600_000;

/** Per-call choices of a pull or an offset call. */
export interface ReadTarget {
  /** `host:port` of the node to ask; default: the leader of the queue's group (from the route). */
  endpoint?: string;
  /** Broker group owning the queue; needed only when several groups host the topic. */
  brokerGroup?: string;
}

export interface PullCallOptions extends ReadTarget {
  /** How long the broker may wait for a message when there is none at the offset (0: none). */
  awaitMs?: number;
  /** RocketMQ tag expression (`*`, or tags joined by `||`); default `*`. */
  tagExpression?: string;
}

/** A message as a pull returns it. */
export interface PulledMessage {
  readonly messageId: string;
  /** Topic as the caller names it (without namespace). */
  readonly topic: string;
  readonly queueId: number;
  /** Queue offset. */
  readonly offset: number;
  /**
   * A view of the reply the message came in, not a copy (copying every body cost the consumer
   * a tenth of its CPU): while it lives, it keeps that reply's bytes alive (up to
   * `receiveMessageBytesMax`). To keep a few messages long after a pull, copy their bodies
   * (`Buffer.from(body)`).
   */
  readonly body: Buffer;
  readonly tag: string | undefined;
  readonly keys: readonly string[];
  readonly properties: ReadonlyMap<string, string>;
  /** Set for FIFO messages. */
  readonly messageGroup: string | undefined;
  readonly bornTimestampMs: number | undefined;
  readonly storeTimestampMs: number | undefined;
}

/**
 * FOUND: messages came. NO_NEW_MSG: none at the offset before the long poll ended.
 * NO_MATCHED_MSG: records were read but none matched the tag expression (resume at
 * `nextOffset`). OFFSET_ILLEGAL: the offset is beyond the queue's end (`nextOffset` = end).
 */
export type PullStatus = 'FOUND' | 'NO_NEW_MSG' | 'NO_MATCHED_MSG' | 'OFFSET_ILLEGAL';

export interface PullResult {
  readonly status: PullStatus;
  readonly messages: readonly PulledMessage[];
  /** Where the next pull of this queue starts. */
  readonly nextOffset: number;
}

/** Which offset {@link PullConsumer.queryOffset} asks for. */
export type QueryOffsetPolicy = 'BEGINNING' | 'END' | 'TIMESTAMP';

/** One broker group of a topic's route. */
export interface RouteGroup {
  readonly name: string;
  /** `host:port` of the leader; undefined while the group has none. */
  readonly leaderEndpoint: string | undefined;
  readonly followers: readonly { readonly nodeId: string; readonly endpoint: string }[];
  /** Queue ids of the topic in this group (known from the leader's entries). */
  readonly queueIds: readonly number[];
}

export interface TopicRouteView {
  readonly topic: string;
  readonly groups: readonly RouteGroup[];
}

interface WireStatus {
  code?: string | number;
  message?: string;
}
interface WireQueue {
  id?: number;
  broker?: { name?: string; id?: number; endpoints?: { addresses?: WireAddress[] } };
}
interface WireAddress {
  host: string;
  port: number;
}
type Reply = Record<string, unknown>;

/** RocketMQ status codes mapped to raftmq error codes (anything else is INTERNAL). */
const STATUS_ERRORS: Readonly<Record<string, ErrorCode>> = {
  BAD_REQUEST: 'INVALID_ARGUMENT',
  ILLEGAL_TOPIC: 'ILLEGAL_TOPIC',
  ILLEGAL_CONSUMER_GROUP: 'ILLEGAL_CONSUMER_GROUP',
  ILLEGAL_FILTER_EXPRESSION: 'ILLEGAL_FILTER_EXPRESSION',
  ILLEGAL_OFFSET: 'OUT_OF_RANGE',
  CLIENT_ID_REQUIRED: 'CLIENT_ID_REQUIRED',
  FORBIDDEN: 'PERMISSION_DENIED',
  TOPIC_NOT_FOUND: 'TOPIC_NOT_FOUND',
  CONSUMER_GROUP_NOT_FOUND: 'GROUP_NOT_FOUND',
  TOO_MANY_REQUESTS: 'BUSY',
  HA_NOT_AVAILABLE: 'NOT_LEADER',
  PROXY_TIMEOUT: 'TIMEOUT',
  MASTER_PERSISTENCE_TIMEOUT: 'TIMEOUT',
  UNSUPPORTED: 'UNSUPPORTED',
};
const RETRY_DELAY_MS_MAX = 200;
/**
 * What a FetchQueue reply adds to its records, at most: a status and the next offset, and per
 * record a tag and length and its offset (under 20 bytes each, at most 1,024 records).
 */
const FETCH_REPLY_OVERHEAD_BYTES = 32 * 1024;
/** Endpoints remembered as not serving Fetch, at most (forgotten all at once past it). */
const NO_FETCH_ENDPOINTS_MAX = 1_024;
let consumerCount = 0;

function checkEndpoint(value: unknown, path: string, code: ErrorCode): void {
  const ok = typeof value === 'string' && /^[^\s:/]+:[0-9]{1,5}$/.test(value);
  if (!ok || Number(value.slice(value.lastIndexOf(':') + 1)) > 65_535) {
    throw new RaftmqError(code, `${path}: must be host:port, got ${JSON.stringify(value)}`, {
      details: code === 'INVALID_OPTION' ? { option: path } : { field: path },
    });
  }
}

function checkArg(ok: boolean, field: string, message: string): void {
  if (!ok) {
    throw new RaftmqError('INVALID_ARGUMENT', `${field}: ${message}`, { details: { field } });
  }
}

function checkInt(value: number, field: string, min: number, max: number): void {
  checkArg(
    Number.isSafeInteger(value) && value >= min && value <= max,
    field,
    `must be an integer in [${min}, ${max}], got ${String(value)}`,
  );
}

/** `Code` names by number, from the loaded schema (PullMessage frames carry numbers). */
const CODE_NAMES = new Map<number, string>();

function codeName(status: WireStatus | undefined): string {
  const code = status?.code;
  if (code === undefined) return 'OK';
  return typeof code === 'number' ? (CODE_NAMES.get(code) ?? String(code)) : code;
}

/** The typed error of a non-OK RocketMQ status. */
function statusError(what: string, status: WireStatus | undefined, endpoint: string): RaftmqError {
  const name = codeName(status);
  return new RaftmqError(
    STATUS_ERRORS[name] ?? 'INTERNAL',
    `${what}: ${name}: ${status?.message}`,
    {
      details: { status: name, endpoint },
    },
  );
}

/** The typed error of a failed gRPC call. */
function grpcError(what: string, endpoint: string, err: grpc.ServiceError): RaftmqError {
  const details = { endpoint, grpcCode: err.code };
  const code: ErrorCode =
    err.code === grpc.status.DEADLINE_EXCEEDED
      ? 'TIMEOUT'
      : err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.CANCELLED
        ? 'NOT_LEADER'
        : err.code === grpc.status.RESOURCE_EXHAUSTED
          ? 'BUSY'
          : 'INTERNAL';
  return new RaftmqError(code, `${what} to ${endpoint}: ${err.details}`, { details, cause: err });
}

function msToWire(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

function pulledMessage(m: PullFrameMessage, topic: string): PulledMessage {
  const offset = m.queueOffset;
  if (offset === undefined || m.messageId === '') {
    throw new RaftmqError('INTERNAL', 'malformed PullMessage response: message without offset');
  }
  // Field by field: object rest and spread took a twentieth of the consumer's CPU here.
  return {
    messageId: m.messageId,
    topic,
    queueId: m.queueId,
    offset,
    body: m.body,
    tag: m.tag,
    keys: m.keys,
    properties: m.properties,
    messageGroup: m.messageGroup,
    bornTimestampMs: m.bornTimestampMs,
    storeTimestampMs: m.storeTimestampMs,
  };
}

/** What a FetchQueue reply is checked against: the request it answers. */
interface FetchAsked {
  readonly endpoint: string;
  /** The topic as the caller names it, and as the broker stores it (with the namespace). */
  readonly topic: string;
  readonly storedTopic: string;
  readonly queueId: number;
  readonly offset: number;
  readonly countMax: number;
}

/**
 * The pull result of a FetchQueue reply. Every record is checked (CRC32C, length, format) and
 * decoded; a reply that breaks the protocol (a record of another queue, offsets out of order,
 * more records than asked) is refused with INTERNAL, and a corrupt record with CORRUPT_RECORD.
 */
function fetchResult(res: FetchReply, asked: FetchAsked): PullResult {
  const { endpoint } = asked;
  const malformed = (why: string): RaftmqError =>
    new RaftmqError('INTERNAL', `malformed FetchQueue response from ${endpoint}: ${why}`, {
      details: { endpoint },
    });
  const status = res.status;
  if (status === undefined) throw malformed('no status');
  const name = codeName(status);
  if (name !== 'OK' && name !== 'MESSAGE_NOT_FOUND' && name !== 'ILLEGAL_OFFSET') {
    throw statusError('FetchQueue', status, endpoint);
  }
  const nextOffset = res.nextOffset;
  if (!Number.isSafeInteger(nextOffset)) throw malformed(`next offset ${nextOffset}`);
  if (name === 'ILLEGAL_OFFSET') return { status: 'OFFSET_ILLEGAL', messages: [], nextOffset };
  if (name === 'MESSAGE_NOT_FOUND') return { status: 'NO_NEW_MSG', messages: [], nextOffset };
  const { records, offsets } = res;
  if (records.length !== offsets.length) {
    throw malformed(`${records.length} records with ${offsets.length} offsets`);
  }
  if (records.length > asked.countMax) {
    throw malformed(`${records.length} records, ${asked.countMax} asked`);
  }
  // The broker answers MESSAGE_NOT_FOUND when it read nothing: an OK reply always moves on
  // (one that did not would have its consumer pull the same offset forever).
  if (records.length === 0 && nextOffset <= asked.offset) {
    throw malformed(`next offset ${nextOffset} does not move past ${asked.offset}`);
  }
  const messages = new Array<PulledMessage>(records.length);
  const context = { file: `FetchQueue reply from ${endpoint}` };
  let previous = asked.offset - 1;
  for (let i = 0; i < records.length; i++) {
    const offset = offsets[i] as number;
    if (!(offset > previous && offset < nextOffset)) {
      throw malformed(`offset ${offset} out of order (next offset ${nextOffset})`);
    }
    previous = offset;
    const m = decodeMessage(records[i] as Buffer, context, true);
    if (m.topic !== asked.storedTopic || m.queueId !== asked.queueId) {
      throw malformed(
        `a record of ${m.topic}:${m.queueId} for ${asked.storedTopic}:${asked.queueId}`,
      );
    }
    messages[i] = {
      messageId: m.messageId,
      topic: asked.topic,
      queueId: m.queueId,
      offset,
      body: m.body as Buffer,
      tag: m.tag,
      keys: m.keys,
      properties: m.userProperties,
      messageGroup: m.messageGroup,
      bornTimestampMs: m.bornTimestampMs,
      storeTimestampMs: m.storeTimestampMs,
    };
  }
  return { status: messages.length > 0 ? 'FOUND' : 'NO_MATCHED_MSG', messages, nextOffset };
}

/** The route a QueryRouteResponse describes (leaders are broker id 0, followers `group@node`). */
function routeFromQueues(topic: string, queues: readonly WireQueue[]): TopicRouteView {
  const groups = new Map<
    string,
    { leader?: string; followers: Map<string, string>; ids: number[] }
  >();
  for (const q of queues) {
    const a = q.broker?.endpoints?.addresses?.[0];
    const name = q.broker?.name;
    if (a === undefined || name === undefined) continue;
    const at = name.indexOf('@');
    const groupName = at < 0 ? name : name.slice(0, at);
    let g = groups.get(groupName);
    if (g === undefined) groups.set(groupName, (g = { followers: new Map(), ids: [] }));
    if (q.broker?.id === 0) {
      g.leader = `${a.host}:${a.port}`;
      g.ids.push(q.id ?? 0);
    } else if (at >= 0) {
      g.followers.set(name.slice(at + 1), `${a.host}:${a.port}`);
    }
  }
  return {
    topic,
    groups: [...groups].map(([name, g]) => ({
      name,
      leaderEndpoint: g.leader,
      followers: [...g.followers].map(([nodeId, endpoint]) => ({ nodeId, endpoint })),
      queueIds: [...new Set(g.ids)].sort((x, y) => x - y),
    })),
  };
}

type UnaryFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Reply) => void,
) => grpc.ClientUnaryCall;
type StreamFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
) => grpc.ClientReadableStream<PullFrame>;
type Stub = grpc.Client & Record<string, UnaryFn | StreamFn>;
type StubCtor = new (address: string, creds: grpc.ChannelCredentials, opts?: object) => Stub;

/** Reads queues by offset; see the file comment. */
export class PullConsumer {
  readonly options: Readonly<PullConsumerOptions>;
  private readonly clientId: string;
  private readonly stubs = new Map<string, Stub>();
  private readonly routes = new Map<string, { view: TopicRouteView; expiresMs: number }>();
  /** Endpoints that answered FetchQueue UNIMPLEMENTED: pulls there use PullMessage. */
  private readonly noFetch = new Set<string>();
  private closed = false;

  private constructor(
    private readonly Ctor: StubCtor,
    options: Readonly<PullConsumerOptions>,
  ) {
    this.options = options;
    this.clientId =
      options.clientId !== ''
        ? options.clientId
        : `${os.hostname()}@${process.pid}@raftmq-pull${consumerCount++}@${Date.now().toString(36)}`;
  }

  /** Checks the options and loads the protocol; connects lazily. */
  static async create(
    options: Partial<PullConsumerOptions> & { endpoint: string },
  ): Promise<PullConsumer> {
    const resolved = resolvePullConsumerOptions(options);
    const dir = findProtoDir(SERVICE_PROTO, resolved.protoDir);
    // service.proto imports definition.proto by its path under `dir`: an include path.
    const def = await protoLoader.load(SERVICE_PROTO, {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [dir],
    });
    const codes = def['apache.rocketmq.v2.Code'];
    if (codes !== undefined && 'format' in codes) {
      const values = (codes.type as { value?: { name: string; number: number }[] }).value ?? [];
      for (const v of values) CODE_NAMES.set(v.number, v.name);
    }
    const service = def[SERVICE_NAME];
    if (service === undefined || 'format' in service || service.PullMessage === undefined) {
      throw new RaftmqError('INTERNAL', `${SERVICE_PROTO} has no ${SERVICE_NAME}.PullMessage`);
    }
    const fetchDef = await protoLoader.load(FETCH_PROTO, {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [findProtoDir(FETCH_PROTO, resolved.protoDir)],
    });
    const fetchService = fetchDef[FETCH_SERVICE_NAME];
    if (fetchService === undefined || 'format' in fetchService || !fetchService.FetchQueue) {
      throw new RaftmqError('INTERNAL', `${FETCH_PROTO} has no ${FETCH_SERVICE_NAME}.FetchQueue`);
    }
    // One stub per endpoint calls both services (a method is known by its path). PullMessage
    // frames and FetchQueue replies go through the hand-written decoders (pull-wire.ts).
    const Ctor = grpc.makeGenericClientConstructor(
      {
        ...service,
        PullMessage: { ...service.PullMessage, responseDeserialize: decodePullFrame },
        FetchQueue: { ...fetchService.FetchQueue, responseDeserialize: decodeFetchReply },
      },
      'MessagingService',
    ) as unknown as StubCtor;
    return new PullConsumer(Ctor, resolved);
  }

  /** The route of `topic`, from the cache unless `refresh` or expired. */
  async route(topic: string, refresh = false): Promise<TopicRouteView> {
    checkArg(typeof topic === 'string' && topic !== '', 'topic', 'must be a non-empty string');
    const nowMs = Date.now();
    const cached = this.routes.get(topic);
    if (!refresh && cached !== undefined && cached.expiresMs > nowMs) return cached.view;
    const deadlineMs = nowMs + this.options.callTimeoutMs;
    const res = await this.unary(
      this.options.endpoint,
      'QueryRoute',
      {
        topic: this.resource(topic),
        endpoints: { scheme: 'IPv4', addresses: [] },
      },
      deadlineMs,
    );
    const status = res.status as WireStatus | undefined;
    if (codeName(status) !== 'OK')
      throw statusError(`route of ${topic}`, status, this.options.endpoint);
    const view = routeFromQueues(topic, (res.messageQueues ?? []) as WireQueue[]);
    this.routes.delete(topic);
    while (this.routes.size >= this.options.routeCacheEntriesMax) {
      const oldest = this.routes.keys().next();
      if (oldest.done === true) break;
      this.routes.delete(oldest.value);
    }
    this.routes.set(topic, { view, expiresMs: nowMs + this.options.routeTtlMs });
    return view;
  }

  /**
   * Reads up to `countMax` committed messages of queue `queueId` from `offset`. Resolves with
   * the messages (in offset order) and the offset to pull next.
   */
  async pull(
    topic: string,
    queueId: number,
    offset: number,
    countMax: number,
    options: PullCallOptions = {},
  ): Promise<PullResult> {
    checkInt(queueId, 'queueId', 0, 65_535);
    checkInt(offset, 'offset', 0, Number.MAX_SAFE_INTEGER);
    checkInt(countMax, 'countMax', 1, PULL_COUNT_MAX);
    const awaitMs = options.awaitMs ?? 0;
    checkInt(awaitMs, 'awaitMs', 0, AWAIT_MS_MAX);
    const expression = options.tagExpression ?? '*';
    checkArg(
      typeof expression === 'string' && expression.trim() !== '',
      'tagExpression',
      'must not be blank',
    );
    const deadlineMs = Date.now() + awaitMs + this.options.callTimeoutMs;
    return this.withNode(topic, options, deadlineMs, async (endpoint) => {
      if (this.options.pullProtocol === 'fetch' && !this.noFetch.has(endpoint)) {
        const fetched = await this.fetch(endpoint, topic, queueId, offset, countMax, {
          awaitMs,
          expression,
          deadlineMs,
        });
        if (fetched !== undefined) return fetched;
      }
      const request = {
        group: this.resource(this.options.consumerGroup),
        messageQueue: { topic: this.resource(topic), id: queueId },
        offset,
        batchSize: countMax,
        filterExpression: { type: 'TAG', expression },
        longPollingTimeout: msToWire(awaitMs),
      };
      const frames = await this.stream(endpoint, request, countMax + 2, deadlineMs);
      return this.pullResult(topic, frames, endpoint);
    });
  }

  /** The offset `group` committed on the queue, or undefined when it has none. */
  async getOffset(
    group: string,
    topic: string,
    queueId: number,
    options: ReadTarget = {},
  ): Promise<number | undefined> {
    checkArg(typeof group === 'string' && group !== '', 'group', 'must be a non-empty string');
    checkInt(queueId, 'queueId', 0, 65_535);
    const request = {
      group: this.resource(group),
      messageQueue: { topic: this.resource(topic), id: queueId },
    };
    const deadlineMs = Date.now() + this.options.callTimeoutMs;
    return this.withNode(topic, options, deadlineMs, async (endpoint) => {
      const res = await this.unary(endpoint, 'GetOffset', request, deadlineMs);
      const status = res.status as WireStatus | undefined;
      if (codeName(status) === 'OFFSET_NOT_FOUND') return undefined;
      if (codeName(status) !== 'OK') throw statusError('GetOffset', status, endpoint);
      return Number(res.offset ?? 0);
    });
  }

  /** Commits `offset` for `group` on the queue (through the group's Raft log). */
  async updateOffset(
    group: string,
    topic: string,
    queueId: number,
    offset: number,
    options: ReadTarget = {},
  ): Promise<void> {
    checkArg(typeof group === 'string' && group !== '', 'group', 'must be a non-empty string');
    checkInt(queueId, 'queueId', 0, 65_535);
    checkInt(offset, 'offset', 0, Number.MAX_SAFE_INTEGER);
    const request = {
      group: this.resource(group),
      messageQueue: { topic: this.resource(topic), id: queueId },
      offset,
    };
    const deadlineMs = Date.now() + this.options.callTimeoutMs;
    await this.withNode(topic, options, deadlineMs, async (endpoint) => {
      const res = await this.unary(endpoint, 'UpdateOffset', request, deadlineMs);
      const status = res.status as WireStatus | undefined;
      if (codeName(status) !== 'OK') throw statusError('UpdateOffset', status, endpoint);
    });
  }

  /**
   * The queue's first offset (BEGINNING), its end (END: the offset the next message gets) or
   * the first offset stored at or after `timestampMs` (TIMESTAMP).
   */
  async queryOffset(
    topic: string,
    queueId: number,
    policy: QueryOffsetPolicy,
    options: ReadTarget & { timestampMs?: number } = {},
  ): Promise<number> {
    checkInt(queueId, 'queueId', 0, 65_535);
    checkArg(
      ['BEGINNING', 'END', 'TIMESTAMP'].includes(policy),
      'policy',
      `unknown: ${String(policy)}`,
    );
    const ts = options.timestampMs;
    checkArg(
      policy !== 'TIMESTAMP' || (ts !== undefined && Number.isSafeInteger(ts) && ts >= 0),
      'timestampMs',
      'must be a non-negative integer with policy TIMESTAMP',
    );
    const request = {
      messageQueue: { topic: this.resource(topic), id: queueId },
      queryOffsetPolicy: policy,
      ...(policy === 'TIMESTAMP' && ts !== undefined ? { timestamp: msToWire(ts) } : {}),
    };
    const deadlineMs = Date.now() + this.options.callTimeoutMs;
    return this.withNode(topic, options, deadlineMs, async (endpoint) => {
      const res = await this.unary(endpoint, 'QueryOffset', request, deadlineMs);
      const status = res.status as WireStatus | undefined;
      if (codeName(status) !== 'OK') throw statusError('QueryOffset', status, endpoint);
      return Number(res.offset ?? 0);
    });
  }

  /** Closes every channel; later calls reject. Idempotent. */
  close(): void {
    this.closed = true;
    for (const stub of this.stubs.values()) stub.close();
    this.stubs.clear();
    this.routes.clear();
  }

  private resource(name: string): { resourceNamespace: string; name: string } {
    return { resourceNamespace: this.options.namespace, name };
  }

  /**
   * Runs `body` against the node `target` names, or the queue group's leader. Without an
   * explicit endpoint, a retryable failure refreshes the route and tries again until the deadline.
   */
  private async withNode<T>(
    topic: string,
    target: ReadTarget,
    deadlineMs: number,
    body: (endpoint: string) => Promise<T>,
  ): Promise<T> {
    if (target.endpoint !== undefined) {
      checkEndpoint(target.endpoint, 'endpoint', 'INVALID_ARGUMENT');
      return body(target.endpoint);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        return await body(await this.leaderOf(topic, target.brokerGroup, attempt > 0));
      } catch (err) {
        const retryable = err instanceof RaftmqError && err.retryable;
        const delayMs = Math.min(25 * 2 ** attempt, RETRY_DELAY_MS_MAX);
        if (!retryable || this.closed || Date.now() + delayMs >= deadlineMs) throw err;
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
  }

  private async leaderOf(
    topic: string,
    brokerGroup: string | undefined,
    refresh: boolean,
  ): Promise<string> {
    const view = await this.route(topic, refresh);
    const candidates = view.groups.filter(
      (g) => brokerGroup === undefined || g.name === brokerGroup,
    );
    if (candidates.length !== 1) {
      const names = view.groups.map((g) => g.name).join(', ');
      throw new RaftmqError(
        brokerGroup === undefined ? 'INVALID_ARGUMENT' : 'TOPIC_NOT_FOUND',
        brokerGroup === undefined
          ? `brokerGroup: ${topic} is hosted by several groups (${names}); name one`
          : `brokerGroup: ${brokerGroup} does not host ${topic} (hosts: ${names})`,
        { details: { field: 'brokerGroup' } },
      );
    }
    const leader = candidates[0]?.leaderEndpoint;
    if (leader === undefined) {
      throw new RaftmqError(
        'NOT_LEADER',
        `group ${candidates[0]?.name} of ${topic} has no leader yet`,
      );
    }
    return leader;
  }

  /**
   * One pull by FetchQueue; undefined when the endpoint does not implement it (remembered, so
   * the caller and later pulls use PullMessage there).
   */
  private async fetch(
    endpoint: string,
    topic: string,
    queueId: number,
    offset: number,
    countMax: number,
    call: { awaitMs: number; expression: string; deadlineMs: number },
  ): Promise<PullResult | undefined> {
    const request = {
      namespace: this.options.namespace,
      group: this.options.consumerGroup,
      topic,
      queueId,
      offset,
      countMax,
      // A reply larger than the channel receives would fail however often it is retried.
      bytesMax: Math.max(1, this.options.receiveMessageBytesMax - FETCH_REPLY_OVERHEAD_BYTES),
      tagExpression: call.expression,
      awaitMs: call.awaitMs,
    };
    let res: FetchReply;
    try {
      res = await this.unary<FetchReply>(endpoint, 'FetchQueue', request, call.deadlineMs);
    } catch (err) {
      if (!(err instanceof RaftmqError) || err.details?.grpcCode !== grpc.status.UNIMPLEMENTED) {
        throw err;
      }
      if (this.noFetch.size >= NO_FETCH_ENDPOINTS_MAX) this.noFetch.clear();
      this.noFetch.add(endpoint);
      return undefined;
    }
    return fetchResult(res, {
      endpoint,
      topic,
      storedTopic: this.storedName(topic),
      queueId,
      offset,
      countMax,
    });
  }

  /** The broker's name of `name` in this consumer's namespace (`ns%name`). */
  private storedName(name: string): string {
    return this.options.namespace === '' ? name : `${this.options.namespace}%${name}`;
  }

  private pullResult(topic: string, frames: readonly PullFrame[], endpoint: string): PullResult {
    const status = frames.find((f) => f.status !== undefined && f.status !== null)?.status;
    const last = frames.at(-1);
    const nextOffset = last?.nextOffset;
    const messages = frames.flatMap((f) => (f.message ? [pulledMessage(f.message, topic)] : []));
    if (status === undefined) {
      throw new RaftmqError(
        'INTERNAL',
        `malformed PullMessage response from ${endpoint}: no status`,
      );
    }
    const name = codeName(status);
    if (name !== 'OK' && name !== 'MESSAGE_NOT_FOUND' && name !== 'ILLEGAL_OFFSET') {
      throw statusError('PullMessage', status, endpoint);
    }
    if (typeof nextOffset !== 'number') {
      throw new RaftmqError(
        'INTERNAL',
        `malformed PullMessage response from ${endpoint}: no next offset`,
      );
    }
    if (name === 'ILLEGAL_OFFSET') return { status: 'OFFSET_ILLEGAL', messages: [], nextOffset };
    if (name === 'MESSAGE_NOT_FOUND') return { status: 'NO_NEW_MSG', messages: [], nextOffset };
    return { status: messages.length > 0 ? 'FOUND' : 'NO_MATCHED_MSG', messages, nextOffset };
  }

  private stub(endpoint: string): Stub {
    if (this.closed) throw new RaftmqError('INVALID_ARGUMENT', 'the pull consumer is closed');
    let stub = this.stubs.get(endpoint);
    if (stub !== undefined) {
      this.stubs.delete(endpoint);
    } else {
      if (this.stubs.size >= this.options.channelsMax) {
        const [oldest, oldStub] = this.stubs.entries().next().value as [string, Stub];
        this.stubs.delete(oldest);
        oldStub.close();
      }
      stub = new this.Ctor(endpoint, grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': this.options.receiveMessageBytesMax,
      });
    }
    this.stubs.set(endpoint, stub); // most recently used last
    return stub;
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('x-mq-client-id', this.clientId);
    md.set('x-mq-protocol', 'v2');
    if (this.options.namespace !== '') md.set('x-mq-namespace', this.options.namespace);
    return md;
  }

  /** One unary call; `T` is what the method's response deserializer makes (a Reply by default). */
  private unary<T = Reply>(
    endpoint: string,
    method: string,
    request: object,
    deadlineMs: number,
  ): Promise<T> {
    const stub = this.stub(endpoint);
    const fn = (stub[method] as UnaryFn).bind(stub);
    return new Promise((resolve, reject) => {
      fn(request, this.metadata(), { deadline: deadlineMs }, (err, res) => {
        if (err) reject(grpcError(method, endpoint, err));
        else resolve((res ?? {}) as T);
      });
    });
  }

  /** Reads a PullMessage stream to its end; refuses more than `framesMax` frames. */
  private stream(
    endpoint: string,
    request: object,
    framesMax: number,
    deadlineMs: number,
  ): Promise<PullFrame[]> {
    const stub = this.stub(endpoint);
    const fn = (stub.PullMessage as StreamFn).bind(stub);
    return new Promise((resolve, reject) => {
      const frames: PullFrame[] = [];
      let failed = false;
      const call = fn(request, this.metadata(), { deadline: deadlineMs });
      call.on('data', (frame: PullFrame) => {
        frames.push(frame);
        if (frames.length > framesMax && !failed) {
          failed = true;
          call.cancel();
          reject(
            new RaftmqError(
              'INTERNAL',
              `PullMessage from ${endpoint}: more than ${framesMax} frames`,
            ),
          );
        }
      });
      call.on('error', (err: grpc.ServiceError) => {
        if (!failed) reject(grpcError('PullMessage', endpoint, err));
        failed = true;
      });
      call.on('end', () => {
        if (!failed) resolve(frames);
      });
    });
  }
}
