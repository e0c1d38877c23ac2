/**
 * raftmq's producer: the RocketMQ 5 protocol (`SendMessage`, `QueryRoute`) with what the
 * official Node client lacks — many messages in one request, and failover that follows the
 * group's leader. It asks the access point (a NameServer or any broker) for the topic's route,
 * sends to the leader of a group (Broker id 0), and on a "not leader", unavailable or timed-out
 * answer refreshes the route and tries again until the send's deadline, so a leader change
 * costs a send the election time and no error.
 *
 * A send of several messages is stored whole or not at all (one Raft entry). Retrying a send
 * whose answer was lost may store it twice (at-least-once, as in RocketMQ); message ids are
 * kept across retries so consumers can de-duplicate.
 */
import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { RaftmqError } from '../common/errors';
import { findProtoDir, PROTO_LOADER_OPTIONS } from '../common/proto-files';
import { newMessageId } from './message-id';

export interface ProducerOptions {
  /** Access point, `host:port` of a NameServer or a broker. */
  endpoint: string;
  /** Deadline of one send, retries included. */
  sendTimeoutMs: number;
  /** Deadline of one RPC attempt. */
  attemptTimeoutMs: number;
  /** Sent as `x-mq-client-id`. */
  clientId: string;
}

export interface OutgoingMessage {
  body: Uint8Array;
  tag?: string;
  keys?: readonly string[];
  properties?: ReadonlyMap<string, string>;
  /** Set for FIFO messages: one group keeps its order. */
  messageGroup?: string;
  messageId?: string;
}

export interface SendResult {
  messageId: string;
  /** Queue offset the broker assigned. */
  offset: number;
}

interface WireStatus {
  code?: string | number;
  message?: string;
}

interface RouteQueue {
  broker?: {
    name?: string;
    id?: number;
    endpoints?: { addresses?: { host: string; port: number }[] };
  };
}

type UnaryFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Record<string, unknown>) => void,
) => void;
type Stub = grpc.Client & Record<string, UnaryFn>;
type StubCtor = new (address: string, creds: grpc.ChannelCredentials, opts?: object) => Stub;

const RETRYABLE_STATUS = new Set([
  'HA_NOT_AVAILABLE',
  'PROXY_TIMEOUT',
  'TOO_MANY_REQUESTS',
  'INTERNAL_ERROR',
  'MASTER_PERSISTENCE_TIMEOUT',
]);
const RETRY_DELAY_MS = 50;
const CHANNEL_OPTIONS = { 'grpc.max_send_message_length': 130 * 1024 * 1024 };

let clientCount = 0;
/** `born_host` of every message sent (asked of the OS once: a call per message cost 5% here). */
const BORN_HOST = os.hostname();

export class Producer {
  readonly options: Readonly<ProducerOptions>;
  private readonly stubs = new Map<string, Stub>();
  private readonly leaders = new Map<string, string[]>();
  private next = 0;

  private constructor(
    private readonly Ctor: StubCtor,
    options: ProducerOptions,
  ) {
    this.options = options;
  }

  static async create(options: Partial<ProducerOptions> & { endpoint: string }): Promise<Producer> {
    const file = 'apache/rocketmq/v2/service.proto';
    // service.proto imports definition.proto by its path under the proto directory, so that
    // directory must be an include path (loading the file by its full path cannot resolve it).
    const def = await protoLoader.load(file, {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [findProtoDir(file)],
    });
    const loaded = grpc.loadPackageDefinition(def) as unknown as {
      apache: { rocketmq: { v2: { MessagingService: StubCtor } } };
    };
    return new Producer(loaded.apache.rocketmq.v2.MessagingService, {
      sendTimeoutMs: 10_000,
      attemptTimeoutMs: 3_000,
      clientId: `${os.hostname()}@${process.pid}@raftmq${clientCount++}@${Date.now().toString(36)}`,
      ...options,
    });
  }

  /** Sends `messages` to `topic` in one request; resolves once stored on a majority. */
  async send(topic: string, messages: readonly OutgoingMessage[]): Promise<SendResult[]> {
    if (messages.length === 0) throw new RaftmqError('INVALID_ARGUMENT', 'nothing to send');
    const nowMs = Date.now();
    const ids = messages.map((m) => m.messageId ?? newMessageId(nowMs));
    const request = {
      messages: messages.map((m, i) => ({
        topic: { name: topic },
        body: Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength),
        userProperties: Object.fromEntries(m.properties ?? []),
        systemProperties: {
          tag: m.tag,
          keys: [...(m.keys ?? [])],
          messageId: ids[i],
          bodyEncoding: 'IDENTITY',
          messageType: m.messageGroup === undefined ? 'NORMAL' : 'FIFO',
          bornTimestamp: { seconds: Math.floor(nowMs / 1000), nanos: (nowMs % 1000) * 1e6 },
          bornHost: BORN_HOST,
          messageGroup: m.messageGroup,
        },
      })),
    };
    const deadlineMs = nowMs + this.options.sendTimeoutMs;
    let lastError: Error | undefined;
    for (let attempt = 0; Date.now() < deadlineMs; attempt++) {
      try {
        const endpoint = await this.pickLeader(topic, attempt > 0);
        const res = await this.call(endpoint, 'SendMessage', request, deadlineMs);
        const entries = (res.entries ?? []) as { status?: WireStatus; offset?: number }[];
        const failed = entries.find((e) => codeName(e.status) !== 'OK');
        const status = failed?.status ?? (res.status as WireStatus | undefined);
        if (codeName(status) === 'OK' || codeName(status) === undefined) {
          return entries.map((e, i) => ({ messageId: ids[i] as string, offset: e.offset ?? 0 }));
        }
        lastError = new RaftmqError(
          RETRYABLE_STATUS.has(String(codeName(status))) ? 'NOT_LEADER' : 'INVALID_ARGUMENT',
          `send failed: ${String(codeName(status))}: ${status?.message ?? ''}`,
          { details: { status: codeName(status) } },
        );
        if (!RETRYABLE_STATUS.has(String(codeName(status)))) throw lastError;
      } catch (err) {
        if (err instanceof RaftmqError && !err.retryable) throw err;
        lastError = err instanceof Error ? err : new Error(String(err));
      }
      this.leaders.delete(topic);
      await new Promise((r) => setTimeout(r, Math.min(RETRY_DELAY_MS * (attempt + 1), 200)));
    }
    throw lastError ?? new RaftmqError('TIMEOUT', 'send timed out');
  }

  /** The endpoint of a group leader for `topic` (round-robin over groups). */
  private async pickLeader(topic: string, refresh: boolean): Promise<string> {
    let leaders = refresh ? undefined : this.leaders.get(topic);
    if (leaders === undefined || leaders.length === 0) {
      const res = await this.call(
        this.options.endpoint,
        'QueryRoute',
        { topic: { name: topic } },
        Date.now() + this.options.attemptTimeoutMs,
      );
      const status = res.status as WireStatus | undefined;
      if (codeName(status) !== 'OK') {
        throw new RaftmqError(
          codeName(status) === 'TOPIC_NOT_FOUND' ? 'TOPIC_NOT_FOUND' : 'NOT_LEADER',
          `route of ${topic}: ${String(codeName(status))}: ${status?.message ?? ''}`,
        );
      }
      const found = new Set<string>();
      for (const q of (res.messageQueues ?? []) as RouteQueue[]) {
        const a = q.broker?.endpoints?.addresses?.[0];
        if (q.broker?.id === 0 && a) found.add(`${a.host}:${a.port}`);
      }
      leaders = [...found];
      if (leaders.length === 0) throw new RaftmqError('NOT_LEADER', `no leader for ${topic} yet`);
      this.leaders.set(topic, leaders);
    }
    return leaders[this.next++ % leaders.length] as string;
  }

  private call(
    endpoint: string,
    method: string,
    request: object,
    deadlineMs: number,
  ): Promise<Record<string, unknown>> {
    let stub = this.stubs.get(endpoint);
    if (stub === undefined) {
      stub = new this.Ctor(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      this.stubs.set(endpoint, stub);
    }
    const md = new grpc.Metadata();
    md.set('x-mq-client-id', this.options.clientId);
    md.set('x-mq-protocol', 'v2');
    const fn = (stub[method] as UnaryFn).bind(stub);
    const deadline = Math.min(deadlineMs, Date.now() + this.options.attemptTimeoutMs);
    return new Promise((resolve, reject) => {
      fn(request, md, { deadline }, (err, res) => {
        if (err) reject(new RaftmqError('NOT_LEADER', `${method} to ${endpoint}: ${err.message}`));
        else resolve(res ?? {});
      });
    });
  }

  close(): void {
    for (const s of this.stubs.values()) s.close();
    this.stubs.clear();
  }
}

function codeName(status: WireStatus | undefined): string | undefined {
  if (status?.code === undefined) return undefined;
  return String(status.code);
}
