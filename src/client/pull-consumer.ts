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
import * as grpc from '@grpc/grpc-js';
import { RaftmqError } from '../common/errors';
import { isString, oneOf, type OptionSpec, resolveOptions } from '../common/options';
import { decodeMessage, type StoredMessage } from '../store/message-codec';
import {
  decodeFetchReply,
  decodePullFrame,
  type FetchReply,
  type PullFrame,
  type PullFrameMessage,
} from './pull-wire';
import {
  type BodyEncoding,
  AWAIT_MS_MAX,
  checkArg,
  checkInt,
  checkTagExpression,
  codeName,
  loadClientCtor,
  plainBody,
  type ReadTarget,
  RMQ_CLIENT_DEFAULTS,
  RMQ_CLIENT_OPTION_SPEC,
  RmqClient,
  type RmqClientOptions,
  type StreamFn,
  statusError,
  grpcError,
  type StubCtor,
  type WireStatus,
} from './rmq-client';

export type { ReadTarget, RouteGroup, TopicRouteView } from './rmq-client';

/** How pulls travel: raftmq's Fetch (stored records, one frame per reply) or PullMessage. */
export type PullProtocol = 'fetch' | 'pull-message';

/** Options of a {@link PullConsumer} (a pull adds its `awaitMs` to `callTimeoutMs`). */
export interface PullConsumerOptions extends RmqClientOptions {
  /** Consumer group named in PullMessage (offsets take the group per call). */
  consumerGroup: string;
  /** How pulls travel (see the file comment); 'fetch' falls back to PullMessage by itself. */
  pullProtocol: PullProtocol;
}

export const PULL_CONSUMER_DEFAULTS: Readonly<Omit<PullConsumerOptions, 'endpoint'>> =
  Object.freeze({
    ...RMQ_CLIENT_DEFAULTS,
    consumerGroup: 'raftmq_pull_consumer',
    pullProtocol: 'fetch',
  });

const OPTION_SPEC: OptionSpec<PullConsumerOptions> = {
  ...RMQ_CLIENT_OPTION_SPEC,
  consumerGroup: isString(true),
  pullProtocol: oneOf('fetch', 'pull-message'),
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
  /**
   * IDENTITY: `body` is the message's bytes (a GZIP body, as Java producers may send, is
   * inflated by the SDK, into a buffer of its own). GZIP only when such a body did not inflate
   * (damaged, or larger than 64 MiB inflated): `body` is then as stored.
   */
  readonly bodyEncoding: BodyEncoding;
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

/**
 * What a FetchQueue reply adds to its records, at most: a status and the next offset, and per
 * record a tag and length and its offset (under 20 bytes each, at most 1,024 records).
 */
const FETCH_REPLY_OVERHEAD_BYTES = 32 * 1024;
/** Endpoints remembered as not serving Fetch, at most (forgotten all at once past it). */
const NO_FETCH_ENDPOINTS_MAX = 1_024;

/**
 * Message bytes one PullMessage answer may carry, at most: a raftmq broker's largest
 * `pullBytesMax`. Beyond it the pull fails (RECORD_TOO_LARGE) instead of buffering what a
 * lying server sends.
 */
const PULL_MESSAGE_BYTES_MAX = 256 * 1024 * 1024;

function msToWire(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

function pulledMessage(m: PullFrameMessage, topic: string): PulledMessage {
  const offset = m.queueOffset;
  if (offset === undefined || m.messageId === '') {
    throw new RaftmqError('INTERNAL', 'malformed PullMessage response: message without offset');
  }
  const plain = plainBody(m.body, m.bodyEncoding);
  // Field by field: object rest and spread took a twentieth of the consumer's CPU here.
  return {
    messageId: m.messageId,
    topic,
    queueId: m.queueId,
    offset,
    body: plain ?? m.body,
    bodyEncoding: plain === undefined ? 'GZIP' : 'IDENTITY',
    tag: m.tag,
    keys: m.keys,
    properties: m.properties,
    messageGroup: m.messageGroup,
    bornTimestampMs: m.bornTimestampMs,
    storeTimestampMs: m.storeTimestampMs,
  };
}

/**
 * The message a consumer gets of a stored message decoded from a reply (its body a view of
 * the reply, or inflated), named by `topic` as the caller names it.
 */
export function pulledFromStored(m: StoredMessage, topic: string, offset: number): PulledMessage {
  const plain = plainBody(m.body as Buffer, m.bodyEncoding);
  // Field by field: object rest and spread took a twentieth of the consumer's CPU here.
  return {
    messageId: m.messageId,
    topic,
    queueId: m.queueId,
    offset,
    body: plain ?? (m.body as Buffer),
    bodyEncoding: plain === undefined ? 'GZIP' : 'IDENTITY',
    tag: m.tag,
    keys: m.keys,
    properties: m.userProperties,
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
/** A pull answer's failure, naming what was wrong. */
type Malformed = (why: string) => RaftmqError;

/** The next offset of a pull answer: a safe integer, not negative. */
function checkNextOffset(nextOffset: number, malformed: Malformed): void {
  if (!Number.isSafeInteger(nextOffset) || nextOffset < 0) {
    throw malformed(`next offset ${nextOffset}`);
  }
}

/**
 * What both pull paths check of an OK answer of `count` messages: at most the count asked, and
 * one without messages moves past the offset asked (the broker answers MESSAGE_NOT_FOUND when it
 * read nothing; an OK answer that did not move on would have its consumer pull the same offset
 * forever).
 */
function checkPulledCount(
  count: number,
  asked: { readonly offset: number; readonly countMax: number },
  nextOffset: number,
  malformed: Malformed,
): void {
  if (count > asked.countMax) throw malformed(`${count} messages, ${asked.countMax} asked`);
  if (count === 0 && nextOffset <= asked.offset) {
    throw malformed(`next offset ${nextOffset} does not move past ${asked.offset}`);
  }
}

/** A pulled message's offset: above the one before it (or below the one asked) and the next. */
function checkPulledOffset(
  offset: number,
  previous: number,
  nextOffset: number,
  malformed: Malformed,
): void {
  if (!(offset > previous && offset < nextOffset)) {
    throw malformed(`offset ${offset} out of order (next offset ${nextOffset})`);
  }
}

/**
 * The offset of an OK GetOffset or QueryOffset answer (absent: 0, protobuf's default), refused
 * as malformed unless it can be a queue offset: a consumer would otherwise go on from a
 * negative or unsafe position a faulty server gave.
 */
function answeredOffset(rpc: string, offset: unknown, endpoint: string): number {
  const value = Number(offset ?? 0);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RaftmqError(
      'INTERNAL',
      `malformed ${rpc} response from ${endpoint}: offset ${String(offset)}`,
      { details: { endpoint } },
    );
  }
  return value;
}

function fetchResult(res: FetchReply, asked: FetchAsked): PullResult {
  const { endpoint } = asked;
  const malformed: Malformed = (why) =>
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
  checkNextOffset(nextOffset, malformed);
  if (name === 'ILLEGAL_OFFSET') return { status: 'OFFSET_ILLEGAL', messages: [], nextOffset };
  if (name === 'MESSAGE_NOT_FOUND') return { status: 'NO_NEW_MSG', messages: [], nextOffset };
  const { records, offsets } = res;
  if (records.length !== offsets.length) {
    throw malformed(`${records.length} records with ${offsets.length} offsets`);
  }
  checkPulledCount(records.length, asked, nextOffset, malformed);
  const messages = new Array<PulledMessage>(records.length);
  const context = { file: `FetchQueue reply from ${endpoint}` };
  let previous = asked.offset - 1;
  for (let i = 0; i < records.length; i++) {
    const offset = offsets[i] as number;
    checkPulledOffset(offset, previous, nextOffset, malformed);
    previous = offset;
    const m = decodeMessage(records[i] as Buffer, context, true);
    if (m.topic !== asked.storedTopic || m.queueId !== asked.queueId) {
      throw malformed(
        `a record of ${m.topic}:${m.queueId} for ${asked.storedTopic}:${asked.queueId}`,
      );
    }
    messages[i] = pulledFromStored(m, asked.topic, offset);
  }
  return { status: messages.length > 0 ? 'FOUND' : 'NO_MATCHED_MSG', messages, nextOffset };
}

/** Reads queues by offset; see the file comment. */
export class PullConsumer extends RmqClient {
  /** Endpoints that answered FetchQueue UNIMPLEMENTED: pulls there use PullMessage. */
  private readonly noFetch = new Set<string>();

  private constructor(
    Ctor: StubCtor,
    readonly options: Readonly<PullConsumerOptions>,
  ) {
    super(Ctor, options, 'pull consumer');
  }

  /** Checks the options and loads the protocol; connects lazily. */
  static async create(
    options: Partial<PullConsumerOptions> & { endpoint: string },
  ): Promise<PullConsumer> {
    const resolved = resolvePullConsumerOptions(options);
    // PullMessage frames and FetchQueue replies go through hand-written decoders (pull-wire.ts).
    const Ctor = await loadClientCtor(resolved.protoDir, {
      PullMessage: decodePullFrame,
      FetchQueue: decodeFetchReply,
    });
    return new PullConsumer(Ctor, resolved);
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
    const expression = checkTagExpression(options.tagExpression);
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
      return this.pullResult(topic, frames, endpoint, { queueId, offset, countMax });
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
      return answeredOffset('GetOffset', res.offset, endpoint);
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
      return answeredOffset('QueryOffset', res.offset, endpoint);
    });
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

  /**
   * The result of a PullMessage stream, checked as a Fetch reply is (`fetchResult`): at most
   * `countMax` messages, all of the queue asked, at increasing offsets from the one asked and
   * below the next offset, which an OK answer without messages must move past the one asked
   * (else the consumer would pull the same offset for ever).
   */
  private pullResult(
    topic: string,
    frames: readonly PullFrame[],
    endpoint: string,
    asked: { queueId: number; offset: number; countMax: number },
  ): PullResult {
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
    const malformed: Malformed = (why) =>
      new RaftmqError('INTERNAL', `malformed PullMessage response from ${endpoint}: ${why}`);
    if (typeof nextOffset !== 'number') throw malformed('no next offset');
    checkNextOffset(nextOffset, malformed);
    if (name === 'ILLEGAL_OFFSET') return { status: 'OFFSET_ILLEGAL', messages: [], nextOffset };
    if (name === 'MESSAGE_NOT_FOUND') return { status: 'NO_NEW_MSG', messages: [], nextOffset };
    checkPulledCount(messages.length, asked, nextOffset, malformed);
    let previous = asked.offset - 1;
    for (const m of messages) {
      if (m.queueId !== asked.queueId) {
        throw malformed(`a message of queue ${m.queueId}, not ${asked.queueId}`);
      }
      checkPulledOffset(m.offset, previous, nextOffset, malformed);
      previous = m.offset;
    }
    return { status: messages.length > 0 ? 'FOUND' : 'NO_MATCHED_MSG', messages, nextOffset };
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
      // Each frame is bounded by the channel's receive limit; the stream as a whole, here, by
      // what a broker may answer (it cannot be told a byte limit, as FetchQueue can).
      let bodyBytes = 0;
      const bodyBytesMax = Math.max(this.options.receiveMessageBytesMax, PULL_MESSAGE_BYTES_MAX);
      const call = fn(request, this.metadata(), { deadline: deadlineMs });
      call.on('data', (frame: PullFrame) => {
        frames.push(frame);
        bodyBytes += frame.message?.body.length ?? 0;
        if (bodyBytes > bodyBytesMax && !failed) {
          failed = true;
          call.cancel();
          reject(
            new RaftmqError(
              'RECORD_TOO_LARGE',
              `PullMessage from ${endpoint}: more than ${bodyBytesMax} bytes of messages`,
            ),
          );
          return;
        }
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
