/**
 * What raftmq's SDK clients share (pull-consumer.ts, simple-consumer.ts): their options of
 * access point and channels, one gRPC stub per endpoint (least recently used closed first),
 * the RocketMQ 5 headers of every call, unary calls with typed errors, topic routes from the
 * access point (a NameServer or any broker) cached for `routeTtlMs`, and calls run against a
 * queue group's leader that refresh the route and try again on a retryable failure until their
 * deadline. The stub calls both `apache.rocketmq.v2.MessagingService` and raftmq's
 * `raftmq.fetch.v1.Fetch` (a method is known by its path), with hand-written decoders for the
 * replies a client reads in bulk; a request given as bytes is sent as they are.
 */
import * as os from 'node:os';
import * as zlib from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { type ErrorCode, RaftmqError } from '../common/errors';
import { intInRange, isString, type OptionSpec } from '../common/options';
import { findProtoDir, PROTO_LOADER_OPTIONS } from '../common/proto-files';

const SERVICE_PROTO = 'apache/rocketmq/v2/service.proto';
const SERVICE_NAME = 'apache.rocketmq.v2.MessagingService';
const FETCH_PROTO = 'fetch.proto';
const FETCH_SERVICE_NAME = 'raftmq.fetch.v1.Fetch';

/** Options every SDK client has. */
export interface RmqClientOptions {
  /** Access point, `host:port` of a NameServer or of any broker node. */
  endpoint: string;
  /** Namespace of topics and groups (RocketMQ 5 `resource_namespace`); empty for none. */
  namespace: string;
  /** Deadline of one call, retries included (a long poll adds its wait). */
  callTimeoutMs: number;
  /** Route answers are reused for this long, then asked again. */
  routeTtlMs: number;
  /** Topics whose route is kept at most (oldest dropped first). */
  routeCacheEntriesMax: number;
  /** gRPC channels kept open at most (least recently used closed first). */
  channelsMax: number;
  /** Largest response frame accepted (a Fetch reply holds up to 4 MiB of records). */
  receiveMessageBytesMax: number;
  /** Sent as `x-mq-client-id`; empty: generated. */
  clientId: string;
  /** Directory of the `.proto` files; empty: `$RAFTMQ_PROTO_DIR`, else the package's. */
  protoDir: string;
}

export const RMQ_CLIENT_DEFAULTS: Readonly<Omit<RmqClientOptions, 'endpoint'>> = Object.freeze({
  namespace: '',
  callTimeoutMs: 5_000,
  routeTtlMs: 30_000,
  routeCacheEntriesMax: 1_024,
  channelsMax: 32,
  receiveMessageBytesMax: 8 * 1024 * 1024,
  clientId: '',
  protoDir: '',
});

export const RMQ_CLIENT_OPTION_SPEC: OptionSpec<RmqClientOptions> = {
  endpoint: (value, path) => checkEndpoint(value, path, 'INVALID_OPTION'),
  namespace: isString(false),
  callTimeoutMs: intInRange(10, 600_000),
  routeTtlMs: intInRange(0, 3_600_000),
  routeCacheEntriesMax: intInRange(1, 1_000_000),
  channelsMax: intInRange(1, 1_024),
  receiveMessageBytesMax: intInRange(64 * 1024, 256 * 1024 * 1024),
  clientId: isString(false),
  protoDir: isString(false),
};

/** Per-call choices of a call that goes to one node of a topic's route. */
export interface ReadTarget {
  /** `host:port` of the node to ask; default: the leader of the queue's group (from the route). */
  endpoint?: string;
  /** Broker group owning the queue; needed only when several groups host the topic. */
  brokerGroup?: string;
}

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

export interface WireStatus {
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
export type Reply = Record<string, unknown>;

/** RocketMQ status codes mapped to raftmq error codes (anything else is INTERNAL). */
const STATUS_ERRORS: Readonly<Record<string, ErrorCode>> = {
  BAD_REQUEST: 'INVALID_ARGUMENT',
  ILLEGAL_TOPIC: 'ILLEGAL_TOPIC',
  ILLEGAL_CONSUMER_GROUP: 'ILLEGAL_CONSUMER_GROUP',
  ILLEGAL_FILTER_EXPRESSION: 'ILLEGAL_FILTER_EXPRESSION',
  ILLEGAL_INVISIBLE_TIME: 'ILLEGAL_INVISIBLE_TIME',
  INVALID_RECEIPT_HANDLE: 'INVALID_RECEIPT_HANDLE',
  ILLEGAL_OFFSET: 'OUT_OF_RANGE',
  CLIENT_ID_REQUIRED: 'CLIENT_ID_REQUIRED',
  FORBIDDEN: 'PERMISSION_DENIED',
  TOPIC_NOT_FOUND: 'TOPIC_NOT_FOUND',
  CONSUMER_GROUP_NOT_FOUND: 'GROUP_NOT_FOUND',
  TOO_MANY_REQUESTS: 'BUSY',
  HA_NOT_AVAILABLE: 'NOT_LEADER',
  // A node whose store closed (it is stopping), failed or filled up: retryable, as the official
  // clients take it, so the call refreshes the route and goes to the group's current leader.
  // INTERNAL_SERVER_ERROR (an unexpected failure) stays INTERNAL.
  INTERNAL_ERROR: 'STORE_CLOSED',
  PROXY_TIMEOUT: 'TIMEOUT',
  MASTER_PERSISTENCE_TIMEOUT: 'TIMEOUT',
  UNSUPPORTED: 'UNSUPPORTED',
};
const RETRY_DELAY_MS_MAX = 200;
let clientCount = 0;

export function checkEndpoint(value: unknown, path: string, code: ErrorCode): void {
  const ok = typeof value === 'string' && /^[^\s:/]+:[0-9]{1,5}$/.test(value);
  if (!ok || Number(value.slice(value.lastIndexOf(':') + 1)) > 65_535) {
    throw new RaftmqError(code, `${path}: must be host:port, got ${JSON.stringify(value)}`, {
      details: code === 'INVALID_OPTION' ? { option: path } : { field: path },
    });
  }
}

export function checkArg(ok: boolean, field: string, message: string): void {
  if (!ok) {
    throw new RaftmqError('INVALID_ARGUMENT', `${field}: ${message}`, { details: { field } });
  }
}

/** Longest long poll a pull or receive may ask for. */
export const AWAIT_MS_MAX = 600_000;

/** A call's tag expression (`*` when absent); INVALID_ARGUMENT when blank. */
export function checkTagExpression(expression: string | undefined): string {
  const value = expression ?? '*';
  checkArg(typeof value === 'string' && value.trim() !== '', 'tagExpression', 'must not be blank');
  return value;
}

export function checkInt(value: number, field: string, min: number, max: number): void {
  checkArg(
    Number.isSafeInteger(value) && value >= min && value <= max,
    field,
    `must be an integer in [${min}, ${max}], got ${String(value)}`,
  );
}

/** `Code` names by number, from the loaded schema (PullMessage frames carry numbers). */
export const CODE_NAMES = new Map<number, string>();

export function codeName(status: WireStatus | undefined): string {
  const code = status?.code;
  if (code === undefined) return 'OK';
  return typeof code === 'number' ? (CODE_NAMES.get(code) ?? String(code)) : code;
}

/** The typed error of a non-OK RocketMQ status. */
export function statusError(
  what: string,
  status: WireStatus | undefined,
  endpoint: string,
): RaftmqError {
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
export function grpcError(what: string, endpoint: string, err: grpc.ServiceError): RaftmqError {
  const details = { endpoint, grpcCode: err.code };
  if (err.code === grpc.status.RESOURCE_EXHAUSTED && /message larger than max/.test(err.details)) {
    // A frame over a channel's limit fails the same way however often it is sent: the message
    // would come back until it is dead-lettered, unseen. Not retried; the caller is told why.
    return new RaftmqError(
      'RECORD_TOO_LARGE',
      `${what} to ${endpoint}: ${err.details}; a reply holds at least one message, so ` +
        'receiveMessageBytesMax must exceed the largest message stored',
      { details, cause: err },
    );
  }
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

/** How a delivered body is encoded (RocketMQ 5 `Encoding`; Java producers may send GZIP). */
export type BodyEncoding = 'IDENTITY' | 'GZIP';

/** Bytes a GZIP body may inflate to at most (a larger one is left compressed). */
const GUNZIP_BYTES_MAX = 64 * 1024 * 1024;

/**
 * The body a consumer gets of a body stored with `encoding`: a GZIP one inflated (a new buffer),
 * any other as it is; undefined for a GZIP body that does not inflate (damaged, or past 64 MiB),
 * which the consumer then gets as stored, marked GZIP. No allocation for a plain body.
 */
export function plainBody(body: Buffer, encoding: BodyEncoding): Buffer | undefined {
  if (encoding !== 'GZIP') return body;
  try {
    return zlib.gunzipSync(body, { maxOutputLength: GUNZIP_BYTES_MAX });
  } catch {
    return undefined;
  }
}

/** The route a QueryRouteResponse describes (leaders are broker id 0, followers `group@node`). */
export function routeFromQueues(topic: string, queues: readonly WireQueue[]): TopicRouteView {
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

export type UnaryFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Reply) => void,
) => grpc.ClientUnaryCall;
export type StreamFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
) => grpc.ClientReadableStream<unknown>;
export type Stub = grpc.Client & Record<string, UnaryFn | StreamFn>;
export type StubCtor = new (address: string, creds: grpc.ChannelCredentials, opts?: object) => Stub;

/**
 * The HTTP/2 receive window the consumers' channels grant per stream and per connection
 * (grpc-js's `grpc-node.flow_control_window`; Node's default is 64 KiB). A FetchQueue or
 * ReceiveStored reply of a thousand 1 KiB messages is about 1.2 MiB: with the default window
 * the broker sends 64 KiB of it per round trip, waiting for this process to read them.
 */
export const RECEIVE_WINDOW_BYTES = 8 * 1024 * 1024;

/**
 * The stub constructor of both services, loaded from the `.proto` files under `protoDir`;
 * `deserializers` replace the generic decoder of the methods they name.
 */
export async function loadClientCtor(
  protoDir: string,
  deserializers: Readonly<Record<string, (bytes: Buffer) => object>>,
): Promise<StubCtor> {
  // service.proto imports definition.proto by its path under the directory: an include path.
  const def = await protoLoader.load(SERVICE_PROTO, {
    ...PROTO_LOADER_OPTIONS,
    includeDirs: [findProtoDir(SERVICE_PROTO, protoDir)],
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
    includeDirs: [findProtoDir(FETCH_PROTO, protoDir)],
  });
  const fetchService = fetchDef[FETCH_SERVICE_NAME];
  if (fetchService === undefined || 'format' in fetchService || !fetchService.FetchQueue) {
    throw new RaftmqError('INTERNAL', `${FETCH_PROTO} has no ${FETCH_SERVICE_NAME}.FetchQueue`);
  }
  const methods: Record<string, protoLoader.MethodDefinition<object, object>> = {
    ...service,
    ...fetchService,
  };
  for (const [name, responseDeserialize] of Object.entries(deserializers)) {
    const method = methods[name];
    if (method === undefined) throw new RaftmqError('INTERNAL', `no method ${name} to decode`);
    methods[name] = { ...method, responseDeserialize };
  }
  // A request that is already bytes (a hand-encoded one, pop-wire.ts) travels as it is.
  for (const [name, method] of Object.entries(methods)) {
    const serialize = method.requestSerialize;
    methods[name] = {
      ...method,
      requestSerialize: (value: object) => (Buffer.isBuffer(value) ? value : serialize(value)),
    };
  }
  return grpc.makeGenericClientConstructor(methods, 'MessagingService') as unknown as StubCtor;
}

/** Channels, headers, routes and leader-following calls of an SDK client; see the file comment. */
export class RmqClient {
  protected readonly clientId: string;
  private readonly stubs = new Map<string, Stub>();
  private readonly routes = new Map<string, { view: TopicRouteView; expiresMs: number }>();
  protected closed = false;

  protected constructor(
    private readonly Ctor: StubCtor,
    private readonly base: Readonly<RmqClientOptions>,
    /** What the client is, in messages (`pull consumer`). */
    private readonly kind: string,
  ) {
    const name = kind.replace(/ /g, '-');
    this.clientId =
      base.clientId !== ''
        ? base.clientId
        : `${os.hostname()}@${process.pid}@raftmq-${name}${clientCount++}@${Date.now().toString(36)}`;
  }

  /** The route of `topic`, from the cache unless `refresh` or expired. */
  async route(topic: string, refresh = false): Promise<TopicRouteView> {
    checkArg(typeof topic === 'string' && topic !== '', 'topic', 'must be a non-empty string');
    const nowMs = Date.now();
    const cached = this.routes.get(topic);
    if (!refresh && cached !== undefined && cached.expiresMs > nowMs) return cached.view;
    const deadlineMs = nowMs + this.base.callTimeoutMs;
    const res = await this.unary(
      this.base.endpoint,
      'QueryRoute',
      {
        topic: this.resource(topic),
        endpoints: { scheme: 'IPv4', addresses: [] },
      },
      deadlineMs,
    );
    const status = res.status as WireStatus | undefined;
    if (codeName(status) !== 'OK')
      throw statusError(`route of ${topic}`, status, this.base.endpoint);
    const view = routeFromQueues(topic, (res.messageQueues ?? []) as WireQueue[]);
    this.routes.delete(topic);
    while (this.routes.size >= this.base.routeCacheEntriesMax) {
      const oldest = this.routes.keys().next();
      if (oldest.done === true) break;
      this.routes.delete(oldest.value);
    }
    this.routes.set(topic, { view, expiresMs: nowMs + this.base.routeTtlMs });
    return view;
  }

  /** Closes every channel; later calls reject. Idempotent. */
  close(): void {
    this.closed = true;
    for (const stub of this.stubs.values()) stub.close();
    this.stubs.clear();
    this.routes.clear();
  }

  protected resource(name: string): { resourceNamespace: string; name: string } {
    return { resourceNamespace: this.base.namespace, name };
  }

  /**
   * Runs `body` against the node `target` names, or the queue group's leader. Without an
   * explicit endpoint, a retryable failure refreshes the route and tries again until the deadline.
   */
  protected async withNode<T>(
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

  protected async leaderOf(
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

  /** The broker's name of `name` in this consumer's namespace (`ns%name`). */
  protected storedName(name: string): string {
    return this.base.namespace === '' ? name : `${this.base.namespace}%${name}`;
  }

  protected stub(endpoint: string): Stub {
    if (this.closed) throw new RaftmqError('INVALID_ARGUMENT', `the ${this.kind} is closed`);
    let stub = this.stubs.get(endpoint);
    if (stub !== undefined) {
      this.stubs.delete(endpoint);
    } else {
      if (this.stubs.size >= this.base.channelsMax) {
        const [oldest, oldStub] = this.stubs.entries().next().value as [string, Stub];
        this.stubs.delete(oldest);
        oldStub.close();
      }
      stub = new this.Ctor(endpoint, grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': this.base.receiveMessageBytesMax,
        'grpc-node.flow_control_window': RECEIVE_WINDOW_BYTES,
      });
    }
    this.stubs.set(endpoint, stub); // most recently used last
    return stub;
  }

  protected metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('x-mq-client-id', this.clientId);
    md.set('x-mq-protocol', 'v2');
    if (this.base.namespace !== '') md.set('x-mq-namespace', this.base.namespace);
    return md;
  }

  /** One unary call; `T` is what the method's response deserializer makes (a Reply by default). */
  protected unary<T = Reply>(
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
}
