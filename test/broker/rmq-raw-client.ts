/**
 * A raw gRPC client of `apache.rocketmq.v2.MessagingService` for the broker tests that talk to a
 * live broker node: requests are plain objects encoded by proto-loader from the project's
 * `.proto` files, so they can be anything a client might send (fields missing, the client-id
 * header left out, bytes that decode to nothing). Helpers read a queue back with QueryOffset and
 * PullMessage, build valid messages, and compare status codes with the numbers of the contract
 * (section 6.6), written out here rather than taken from the code under test. A few helpers
 * for tests on a LocalCluster: create a topic on the leader, wait for the NameServer's route,
 * print the nodes' log tails when a test failed.
 */
import { format } from 'node:util';
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as fs from 'node:fs';
import type { CreateTopicInput } from '../../src/broker/admin-client';
import { findProtoDir, PROTO_LOADER_OPTIONS } from '../../src/common/proto-files';
import { isRaftmqError } from '../../src/common/errors';
import type { LocalCluster } from '../../src/cli/local-cluster';
import { waitUntil } from '../../src/cli/raft-node-client';
import {
  loadMessagingDefinition,
  MESSAGING_SERVICE_NAME,
  RMQ_SERVICE_PROTO_FILE,
} from '../../src/broker/messaging-proto';

/** RocketMQ v2 `Code` numbers the tests expect (rocketmq-v2-contract.md §5.4, §6.6, §8). */
export const CODE = Object.freeze({
  OK: 20000,
  MULTIPLE_RESULTS: 30000,
  BAD_REQUEST: 40000,
  ILLEGAL_TOPIC: 40002,
  ILLEGAL_MESSAGE_TAG: 40004,
  ILLEGAL_MESSAGE_KEY: 40005,
  ILLEGAL_MESSAGE_GROUP: 40006,
  ILLEGAL_MESSAGE_PROPERTY_KEY: 40007,
  ILLEGAL_MESSAGE_ID: 40009,
  MESSAGE_PROPERTY_CONFLICT_WITH_TYPE: 40014,
  CLIENT_ID_REQUIRED: 40017,
  MESSAGE_NOT_FOUND: 40401,
  TOPIC_NOT_FOUND: 40402,
  MESSAGE_BODY_TOO_LARGE: 41301,
  MESSAGE_BODY_EMPTY: 41302,
  TOO_MANY_REQUESTS: 42900,
  MESSAGE_PROPERTIES_TOO_LARGE: 43101,
  INTERNAL_ERROR: 50000,
  HA_NOT_AVAILABLE: 50002,
  PROXY_TIMEOUT: 50400,
  MASTER_PERSISTENCE_TIMEOUT: 50401,
} as const);

/**
 * Codes that say "try again" (the node could not tell whether, or could not yet, store the
 * message): busy, internal/HA unavailable, timeouts.
 */
export const RETRYABLE_CODES: ReadonlySet<number> = new Set([
  CODE.TOO_MANY_REQUESTS,
  CODE.INTERNAL_ERROR,
  CODE.HA_NOT_AVAILABLE,
  CODE.PROXY_TIMEOUT,
  CODE.MASTER_PERSISTENCE_TIMEOUT,
]);

/** The headers the official Node client sends (contract §2); only the client id is required. */
export function clientHeaders(clientId = 'raw-test@1@0@raw'): Record<string, string> {
  return {
    'x-mq-client-id': clientId,
    'x-mq-protocol': 'v2',
    'x-mq-language': 'HTTP',
    'x-mq-client-version': '1.0.8',
    'x-mq-request-id': randomBytes(8).toString('hex'),
  };
}

/** A status with its code as a number. */
export interface RawStatus {
  readonly code: number;
  readonly message: string;
}

export interface RawSendEntry {
  readonly status: RawStatus;
  readonly messageId: string;
  readonly offset: number;
}

export interface RawSendResult {
  readonly status: RawStatus;
  readonly entries: readonly RawSendEntry[];
}

/** A message as PullMessage delivered it. */
export interface PulledMessage {
  readonly topic: string;
  readonly body: Buffer;
  readonly messageId: string;
  readonly messageType: string;
  readonly tag: string | undefined;
  readonly keys: readonly string[];
  readonly messageGroup: string | undefined;
  readonly userProperties: Readonly<Record<string, string>>;
  readonly queueId: number;
  readonly queueOffset: number;
  readonly bodyDigest: string;
}

export interface RawPullResult {
  readonly status: RawStatus;
  readonly messages: readonly PulledMessage[];
  readonly nextOffset: number | undefined;
}

export interface RawCallOptions {
  /** Request metadata; default {@link clientHeaders}. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 5_000;
/** Large enough for a PullMessage frame carrying a 4 MiB message. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.max_send_message_length': 16 * 1024 * 1024,
};

type Decoded = Record<string, unknown>;

let codeNumbers: Promise<ReadonlyMap<string, number>> | undefined;

/** The `apache.rocketmq.v2.Code` enum by name, read from the `.proto` file. */
function loadCodeNumbers(): Promise<ReadonlyMap<string, number>> {
  codeNumbers ??= protoLoader
    .load(RMQ_SERVICE_PROTO_FILE, {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [findProtoDir(RMQ_SERVICE_PROTO_FILE)],
    })
    .then((pkg) => {
      const code = pkg['apache.rocketmq.v2.Code'] as
        { type: { value: { name: string; number: number }[] } } | undefined;
      assert.ok(code !== undefined, 'no apache.rocketmq.v2.Code in the proto files');
      return new Map(code.type.value.map((v) => [v.name, v.number]));
    });
  return codeNumbers;
}

function headersOf(options: RawCallOptions): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(options.headers ?? clientHeaders())) {
    metadata.set(key, value);
  }
  return metadata;
}

function resource(name: string): object {
  return { resourceNamespace: '', name };
}

function queue(topic: string, queueId: number): object {
  return { topic: resource(topic), id: queueId };
}

/** A raw client of one node's client endpoint. */
export class RmqRawClient {
  private constructor(
    readonly endpoint: string,
    private readonly client: grpc.Client,
    private readonly service: grpc.ServiceDefinition,
    private readonly codes: ReadonlyMap<string, number>,
  ) {}

  static async connect(endpoint: string): Promise<RmqRawClient> {
    const service = await loadMessagingDefinition();
    const codes = await loadCodeNumbers();
    const client = new grpc.Client(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    return new RmqRawClient(endpoint, client, service, codes);
  }

  /** A decoded `Status` with its code as a number (an unknown code stays as sent). */
  status(wire: unknown): RawStatus {
    assert.ok(typeof wire === 'object' && wire !== null, 'the response has no status');
    const { code, message } = wire as { code: unknown; message: unknown };
    const number = typeof code === 'number' ? code : this.codes.get(String(code));
    assert.ok(number !== undefined, `status code ${String(code)} is not a Code`);
    return { code: number, message: String(message) };
  }

  /** Calls unary `rpc`; rejects with the gRPC error if the call fails. */
  unary(rpc: string, request: object, options: RawCallOptions = {}): Promise<Decoded> {
    const method = this.method(rpc);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        headersOf(options),
        { deadline: Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS) },
        (err, response) => {
          if (err === null) resolve(response as Decoded);
          else reject(err);
        },
      );
    });
  }

  /** Sends `bytes` as the request of unary `rpc`, unchecked. */
  rawBytes(rpc: string, bytes: Buffer, options: RawCallOptions = {}): Promise<Decoded> {
    const method = this.method(rpc);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        method.path,
        (b: Buffer) => b,
        method.responseDeserialize,
        bytes,
        headersOf(options),
        { deadline: Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS) },
        (err, response) => {
          if (err === null) resolve(response as Decoded);
          else reject(err);
        },
      );
    });
  }

  /** SendMessage with `messages` (wire objects, see {@link wireMessage}). */
  async send(messages: readonly object[], options: RawCallOptions = {}): Promise<RawSendResult> {
    const res = await this.unary('SendMessage', { messages }, options);
    const entries = (Array.isArray(res.entries) ? res.entries : []) as Decoded[];
    return {
      status: this.status(res.status),
      entries: entries.map((e) => ({
        status: this.status(e.status),
        messageId: String(e.messageId),
        offset: Number(e.offset),
      })),
    };
  }

  /** QueryOffset END (or BEGINNING) of one queue. */
  async queueOffset(
    topic: string,
    queueId: number,
    policy: 'BEGINNING' | 'END' = 'END',
  ): Promise<number> {
    const res = await this.unary('QueryOffset', {
      messageQueue: queue(topic, queueId),
      queryOffsetPolicy: policy,
    });
    const status = this.status(res.status);
    assert.equal(status.code, CODE.OK, `QueryOffset ${topic}/${queueId}: ${status.message}`);
    return Number(res.offset);
  }

  /** One PullMessage without long polling. */
  pull(topic: string, queueId: number, offset: number, batchSize = 32): Promise<RawPullResult> {
    const method = this.method('PullMessage');
    const request = {
      group: resource('raw-test-group'),
      messageQueue: queue(topic, queueId),
      offset,
      batchSize,
      longPollingTimeout: { seconds: 0, nanos: 0 },
    };
    return new Promise((resolve, reject) => {
      const frames: Decoded[] = [];
      const call = this.client.makeServerStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        headersOf({}),
        { deadline: Date.now() + DEFAULT_TIMEOUT_MS },
      );
      call.on('data', (frame: Decoded) => frames.push(frame));
      call.on('error', reject);
      call.on('end', () => {
        try {
          resolve(this.pullResult(frames));
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
  }

  /** Every message of a queue, read with PullMessage from its first offset to its end. */
  async readQueue(topic: string, queueId: number): Promise<PulledMessage[]> {
    const end = await this.queueOffset(topic, queueId, 'END');
    let offset = await this.queueOffset(topic, queueId, 'BEGINNING');
    const out: PulledMessage[] = [];
    while (offset < end) {
      const res = await this.pull(topic, queueId, offset, 8);
      assert.equal(
        res.status.code,
        CODE.OK,
        `pull ${topic}/${queueId}@${offset}: ${res.status.message}`,
      );
      assert.ok(res.nextOffset !== undefined && res.nextOffset > offset, 'pull made no progress');
      out.push(...res.messages);
      offset = res.nextOffset;
    }
    return out;
  }

  /** Every message of every queue `0..queueCount-1` of `topic`. */
  async readTopic(topic: string, queueCount: number): Promise<PulledMessage[]> {
    const out: PulledMessage[] = [];
    for (let q = 0; q < queueCount; q++) out.push(...(await this.readQueue(topic, q)));
    return out;
  }

  close(): void {
    this.client.close();
  }

  private method(rpc: string): grpc.MethodDefinition<object, unknown> {
    const method = this.service[rpc];
    assert.ok(method !== undefined, `no RPC ${rpc} in ${MESSAGING_SERVICE_NAME}`);
    return method as grpc.MethodDefinition<object, unknown>;
  }

  private pullResult(frames: readonly Decoded[]): RawPullResult {
    const statuses = frames.filter((f) => f.content === 'status');
    assert.equal(statuses.length, 1, 'a PullMessage answer has exactly one status frame');
    const messages = frames.filter((f) => f.content === 'message').map((f) => pulled(f.message));
    const next = frames.find((f) => f.content === 'nextOffset');
    return {
      status: this.status(statuses[0]?.status),
      messages,
      nextOffset: next === undefined ? undefined : Number(next.nextOffset),
    };
  }
}

function pulled(wire: unknown): PulledMessage {
  const m = wire as {
    topic: { name: string };
    body: Buffer;
    userProperties: Record<string, string>;
    systemProperties: {
      messageId: string;
      messageType: string;
      tag?: string;
      keys: string[];
      messageGroup?: string;
      queueId: number;
      queueOffset?: number;
      bodyDigest: { checksum: string } | null;
    };
  };
  const sp = m.systemProperties;
  return {
    topic: m.topic.name,
    body: Buffer.from(m.body),
    messageId: sp.messageId,
    messageType: sp.messageType,
    tag: sp.tag,
    keys: sp.keys,
    messageGroup: sp.messageGroup,
    userProperties: { ...m.userProperties },
    queueId: sp.queueId,
    queueOffset: Number(sp.queueOffset),
    bodyDigest: sp.bodyDigest?.checksum ?? '',
  };
}

/** A fresh message id in the shape of the Node client's (34 uppercase hex characters). */
export function newMessageId(): string {
  return `01${randomBytes(16).toString('hex').toUpperCase()}`;
}

/** What {@link wireMessage} may set or override. */
export interface WireMessageInput {
  readonly topic?: string | null;
  readonly body?: Buffer;
  readonly messageId?: string;
  readonly tag?: string;
  readonly keys?: readonly string[];
  readonly messageGroup?: string;
  readonly userProperties?: Readonly<Record<string, string>>;
  /** Replaces the whole system_properties (null: left out). */
  readonly systemProperties?: object | null;
}

/** A SendMessage `Message` as the Node client builds it (contract §5.4), valid by default. */
export function wireMessage(topic: string, input: WireMessageInput = {}): object {
  const nowMs = Date.now();
  const systemProperties =
    input.systemProperties !== undefined
      ? input.systemProperties
      : {
          messageId: input.messageId ?? newMessageId(),
          keys: [...(input.keys ?? [])],
          bodyEncoding: 'IDENTITY',
          messageType: input.messageGroup === undefined ? 'NORMAL' : 'FIFO',
          bornTimestamp: { seconds: Math.floor(nowMs / 1000), nanos: (nowMs % 1000) * 1e6 },
          bornHost: 'raw-test-host',
          queueId: 0,
          ...(input.tag === undefined ? {} : { tag: input.tag }),
          ...(input.messageGroup === undefined ? {} : { messageGroup: input.messageGroup }),
        };
  const t = input.topic === undefined ? topic : input.topic;
  return {
    ...(t === null ? {} : { topic: resource(t) }),
    ...(systemProperties === null ? {} : { systemProperties }),
    userProperties: { ...(input.userProperties ?? {}) },
    body: input.body ?? Buffer.from(`body-${randomBytes(4).toString('hex')}`),
  };
}

/**
 * Creates `topic` through the group's leader. A leader is reported by NodeStatus a moment before
 * it accepts writes (it must first apply an entry of its term), so NOT_LEADER is retried until
 * `timeoutMs`; nothing is proposed by a refused call, so the retry cannot create it twice.
 */
export async function createTopic(
  cluster: LocalCluster,
  topic: CreateTopicInput,
  timeoutMs = 10_000,
): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  for (;;) {
    const leader = await cluster.waitForLeader(Math.max(1, deadlineMs - Date.now()));
    try {
      await (await cluster.admin(leader.nodeId)).createTopic(topic);
      return;
    } catch (err) {
      if (!isRaftmqError(err, 'NOT_LEADER') || Date.now() > deadlineMs) throw err;
    }
    await new Promise<void>((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Waits until the NameServer routes `topic` to a leader (a `Broker` with id 0 and queue 0), so
 * a client using it as access point finds the topic at once.
 */
export async function waitForNameServerRoute(
  namesrv: RmqRawClient,
  topic: string,
  timeoutMs = 10_000,
): Promise<void> {
  await waitUntil(`the NameServer's route of ${topic}`, timeoutMs, async () => {
    const res = await namesrv.unary('QueryRoute', { topic: resource(topic) });
    if (namesrv.status(res.status).code !== CODE.OK) return undefined;
    const queues = (res.messageQueues ?? []) as { id: number; broker: { id: number } }[];
    return queues.some((q) => q.id === 0 && q.broker.id === 0) ? true : undefined;
  });
}

/** Prints the last lines of every process's log (for a failed test). */
export function printLogTails(cluster: LocalCluster | undefined, bytes = 3000): void {
  if (cluster === undefined) return;
  for (const broker of cluster.brokers) {
    const text = fs.existsSync(broker.logPath) ? fs.readFileSync(broker.logPath, 'utf8') : '';
    console.error(`---- ${broker.id} log tail ----\n${text.slice(-bytes)}`);
  }
}

/** A logger for the official clients that keeps what they say, for a failed test to print. */
export class QuietLogger {
  readonly lines: string[] = [];
  info(...args: unknown[]): void {
    this.keep('info', args);
  }
  warn(...args: unknown[]): void {
    this.keep('warn', args);
  }
  error(...args: unknown[]): void {
    this.keep('error', args);
  }
  debug(): void {
    // Per-request chatter: not kept.
  }
  close(): void {
    // Nothing to release.
  }
  private keep(level: string, args: unknown[]): void {
    if (this.lines.length < 500) this.lines.push(`${level} ${format(...args)}`);
  }
}
