/**
 * raftmq's simple consumer: pop consumption for a consumer group, as RocketMQ 5's
 * SimpleConsumer does it (receive messages that then stay invisible to the group for a while,
 * acknowledge them, or change how long they stay invisible), in batches of up to 1,024.
 *
 * A receive goes by raftmq's `ReceiveStored` (`proto/fetch.proto`) to the leader of one of the
 * topic's broker groups (the one named, else each in turn): one reply carries the messages as
 * the broker stores them, each checked here by its CRC32C, format and topic before it is
 * decoded, with its receipt handle and delivery attempt. Acknowledgements and invisibility
 * changes use RocketMQ 5 `AckMessage` (up to 1,024 per request, encoded by pop-wire.ts) and
 * `ChangeInvisibleDuration`, sent to the leader of the group that handed the message out; the
 * pop state is replicated, so a handle stays good across a change of leader. A server that does
 * not implement ReceiveStored (a RocketMQ proxy) is refused with UNSUPPORTED: use the official
 * client there.
 *
 * Every call has a deadline (`callTimeoutMs`, plus the long poll's `awaitMs` for a receive);
 * a call that finds its node unreachable or not leading refreshes the route and tries again
 * until then. A message is handed out again when its invisibility ends unacknowledged, up to the
 * group's maximum delivery attempts, then moved to the group's dead-letter topic (broker.md).
 */
import * as grpc from '@grpc/grpc-js';
import { RaftmqError } from '../common/errors';
import { intInRange, isString, type OptionSpec, resolveOptions } from '../common/options';
import { decodeMessage } from '../store/message-codec';
import { type AckEntry, type AckReply, decodeAckReply, encodeAckRequest } from './pop-wire';
import { type PulledMessage, pulledFromStored } from './pull-consumer';
import { decodeReceiveStoredReply, type ReceiveStoredReply } from './pull-wire';
import {
  AWAIT_MS_MAX,
  checkArg,
  checkInt,
  checkTagExpression,
  codeName,
  loadClientCtor,
  RMQ_CLIENT_DEFAULTS,
  RMQ_CLIENT_OPTION_SPEC,
  RmqClient,
  type RmqClientOptions,
  statusError,
  type StubCtor,
  type WireStatus,
} from './rmq-client';

/** Options of a {@link SimpleConsumer}. */
export interface SimpleConsumerOptions extends RmqClientOptions {
  /** The consumer group receiving (the broker creates it when it auto-creates groups). */
  consumerGroup: string;
  /** How long received messages stay invisible to the group, unless a receive says. */
  invisibleMs: number;
  /** How long a receive waits for a message when none is ready, unless it says. */
  awaitMs: number;
}

export const SIMPLE_CONSUMER_DEFAULTS: Readonly<
  Omit<SimpleConsumerOptions, 'endpoint' | 'consumerGroup'>
> = Object.freeze({ ...RMQ_CLIENT_DEFAULTS, invisibleMs: 30_000, awaitMs: 5_000 });

/** The longest invisibility the broker grants (RocketMQ's proxy: 12 h). */
export const INVISIBLE_MS_MAX = 12 * 3600 * 1000;
/** Messages one receive asks for at most (the broker's batch maximum). */
export const RECEIVE_BATCH_MAX = 1_024;
/** Messages one AckMessage carries at most (the broker refuses more). */
const ACK_ENTRIES_MAX = 1_024;
/**
 * What a ReceiveStored reply adds to its records, at most: a status, and per record its offset,
 * receipt handle and attempt (under 200 bytes each, at most 1,024 records).
 */
const RECEIVE_REPLY_OVERHEAD_BYTES = 256 * 1024;

const OPTION_SPEC: OptionSpec<SimpleConsumerOptions> = {
  ...RMQ_CLIENT_OPTION_SPEC,
  consumerGroup: isString(true),
  invisibleMs: intInRange(0, INVISIBLE_MS_MAX),
  awaitMs: intInRange(0, AWAIT_MS_MAX),
};

/** Checks the options and fills defaults; throws INVALID_OPTION naming the field. */
export function resolveSimpleConsumerOptions(
  input: Partial<SimpleConsumerOptions> & { endpoint: string; consumerGroup: string },
): Readonly<SimpleConsumerOptions> {
  const defaults = { endpoint: '', consumerGroup: '', ...SIMPLE_CONSUMER_DEFAULTS };
  return resolveOptions('simpleConsumer', defaults, OPTION_SPEC, input);
}

/** A message a receive handed out: what a pull gives, and what settling it needs. */
export interface ReceivedMessage extends PulledMessage {
  /** Names this delivery to AckMessage and ChangeInvisibleDuration. */
  readonly receiptHandle: string;
  /** 1 for the first delivery, then one more for each time the message came back. */
  readonly deliveryAttempt: number;
  /** The broker group that handed it out; its leader settles it. */
  readonly brokerGroup: string;
}

/** Per-call choices of a receive. */
export interface ReceiveOptions {
  /** Messages wanted at most, 1 to 1,024 (default 32). */
  batchSize?: number;
  /** How long they stay invisible (default: the consumer's `invisibleMs`). */
  invisibleMs?: number;
  /** How long to wait when none is ready (default: the consumer's `awaitMs`). */
  awaitMs?: number;
  /** RocketMQ tag expression (`*`, or tags joined by `||`); default `*`. */
  tagExpression?: string;
  /** The broker group to receive from; default: each group of the topic in turn. */
  brokerGroup?: string;
}

/** What an acknowledgement of many messages settled, and what it could not. */
export interface AckResult {
  readonly acked: number;
  /** The messages not settled, each with why (INVALID_RECEIPT_HANDLE: handed out again). */
  readonly failures: readonly { readonly message: ReceivedMessage; readonly error: RaftmqError }[];
}

/** Receives and settles messages of a consumer group; see the file comment. */
export class SimpleConsumer extends RmqClient {
  /** Where the next receive without a named group starts, per topic. */
  private readonly nextGroup = new Map<string, number>();

  private constructor(
    Ctor: StubCtor,
    readonly options: Readonly<SimpleConsumerOptions>,
  ) {
    super(Ctor, options, 'simple consumer');
  }

  /** Checks the options and loads the protocol; connects lazily. */
  static async create(
    options: Partial<SimpleConsumerOptions> & { endpoint: string; consumerGroup: string },
  ): Promise<SimpleConsumer> {
    const resolved = resolveSimpleConsumerOptions(options);
    const Ctor = await loadClientCtor(resolved.protoDir, {
      ReceiveStored: decodeReceiveStoredReply,
      AckMessage: decodeAckReply,
    });
    return new SimpleConsumer(Ctor, resolved);
  }

  /**
   * Receives up to `batchSize` messages of `topic` for the group; resolves with none when none
   * became ready within `awaitMs`.
   */
  async receive(topic: string, options: ReceiveOptions = {}): Promise<ReceivedMessage[]> {
    const batchSize = options.batchSize ?? 32;
    checkInt(batchSize, 'batchSize', 1, RECEIVE_BATCH_MAX);
    const invisibleMs = options.invisibleMs ?? this.options.invisibleMs;
    checkInt(invisibleMs, 'invisibleMs', 0, INVISIBLE_MS_MAX);
    const awaitMs = options.awaitMs ?? this.options.awaitMs;
    checkInt(awaitMs, 'awaitMs', 0, AWAIT_MS_MAX);
    const expression = checkTagExpression(options.tagExpression);
    const brokerGroup = options.brokerGroup ?? (await this.pickGroup(topic));
    const request = {
      namespace: this.options.namespace,
      group: this.options.consumerGroup,
      topic,
      batchSize,
      invisibleMs,
      tagExpression: expression,
      awaitMs,
      // A reply larger than the channel receives would fail however often it is retried.
      bytesMax: Math.max(1, this.options.receiveMessageBytesMax - RECEIVE_REPLY_OVERHEAD_BYTES),
    };
    const deadlineMs = Date.now() + awaitMs + this.options.callTimeoutMs;
    return this.withNode(topic, { brokerGroup }, deadlineMs, async (endpoint) => {
      let reply: ReceiveStoredReply;
      try {
        reply = await this.unary<ReceiveStoredReply>(
          endpoint,
          'ReceiveStored',
          request,
          deadlineMs,
        );
      } catch (err) {
        if (err instanceof RaftmqError && err.details?.grpcCode === grpc.status.UNIMPLEMENTED) {
          throw new RaftmqError(
            'UNSUPPORTED',
            `${endpoint} does not serve raftmq's ReceiveStored; use the official client there`,
            { details: { endpoint }, cause: err },
          );
        }
        throw err;
      }
      return this.received(reply, { endpoint, topic, brokerGroup, batchSize });
    });
  }

  /**
   * Acknowledges `messages` (any number, of any topics): each is settled for the group and never
   * handed out again. Resolves with how many were settled and why the others were not: a stale
   * handle (the message was handed out again), or the failure of the whole request that carried
   * it (NOT_LEADER past the deadline, say: such messages come back unless the broker applied the
   * ack before failing, and acknowledging one again is harmless).
   */
  async ack(messages: readonly ReceivedMessage[]): Promise<AckResult> {
    // By topic, then broker group; a run of messages of the same pair (the usual case: one
    // receive's) skips the lookups.
    const batches = new Map<string, Map<string, ReceivedMessage[]>>();
    let runTopic: string | undefined;
    let runGroup: string | undefined;
    let run: ReceivedMessage[] = [];
    for (const m of messages) {
      checkArg(
        typeof m?.receiptHandle === 'string' &&
          m.receiptHandle !== '' &&
          typeof m.messageId === 'string' &&
          typeof m.topic === 'string' &&
          typeof m.brokerGroup === 'string',
        'messages',
        'each must be a message a receive returned',
      );
      if (m.topic !== runTopic || m.brokerGroup !== runGroup) {
        runTopic = m.topic;
        runGroup = m.brokerGroup;
        let byGroup = batches.get(runTopic);
        if (byGroup === undefined)
          batches.set(runTopic, (byGroup = new Map<string, ReceivedMessage[]>()));
        let batch = byGroup.get(runGroup);
        if (batch === undefined) byGroup.set(runGroup, (batch = []));
        run = batch;
      }
      run.push(m);
    }
    const deadlineMs = Date.now() + this.options.callTimeoutMs;
    const slices: ReceivedMessage[][] = [];
    for (const byGroup of batches.values()) {
      for (const batch of byGroup.values()) {
        for (let i = 0; i < batch.length; i += ACK_ENTRIES_MAX) {
          slices.push(batch.slice(i, i + ACK_ENTRIES_MAX));
        }
      }
    }
    const settled = await Promise.allSettled(slices.map((b) => this.ackBatch(b, deadlineMs)));
    let acked = 0;
    const failures: { message: ReceivedMessage; error: RaftmqError }[] = [];
    settled.forEach((outcome, k) => {
      if (outcome.status === 'fulfilled') {
        acked += outcome.value.acked;
        failures.push(...outcome.value.failures);
        return;
      }
      // The request as a whole failed: each of its messages with that error (still unsettled
      // unless the broker applied it before the failure; an ack sent again is harmless).
      const reason: unknown = outcome.reason;
      const error =
        reason instanceof RaftmqError
          ? reason
          : new RaftmqError('INTERNAL', `AckMessage failed: ${String(reason)}`);
      for (const message of slices[k] ?? []) failures.push({ message, error });
    });
    return { acked, failures };
  }

  /**
   * Makes `message` invisible for `invisibleMs` from now (0: hands it out again at once).
   * Resolves with the message under its new receipt handle; the old one still acknowledges it.
   */
  async changeInvisibleDuration(
    message: ReceivedMessage,
    invisibleMs: number,
  ): Promise<ReceivedMessage> {
    checkArg(
      typeof message?.receiptHandle === 'string' && message.receiptHandle !== '',
      'message',
      'must be a message a receive returned',
    );
    checkInt(invisibleMs, 'invisibleMs', 0, INVISIBLE_MS_MAX);
    const seconds = Math.floor(invisibleMs / 1000);
    const request = {
      group: this.resource(this.options.consumerGroup),
      topic: this.resource(message.topic),
      receiptHandle: message.receiptHandle,
      invisibleDuration: { seconds, nanos: (invisibleMs - seconds * 1000) * 1e6 },
      messageId: message.messageId,
    };
    const deadlineMs = Date.now() + this.options.callTimeoutMs;
    const target = { brokerGroup: message.brokerGroup };
    return this.withNode(message.topic, target, deadlineMs, async (endpoint) => {
      const res = await this.unary(endpoint, 'ChangeInvisibleDuration', request, deadlineMs);
      const status = res.status as WireStatus | null | undefined;
      if (status === undefined || status === null) {
        throw new RaftmqError(
          'INTERNAL',
          `malformed ChangeInvisibleDuration response from ${endpoint}: no status`,
        );
      }
      if (codeName(status) !== 'OK') throw statusError('ChangeInvisibleDuration', status, endpoint);
      const handle = res.receiptHandle;
      if (typeof handle !== 'string' || handle === '') {
        throw new RaftmqError(
          'INTERNAL',
          `malformed ChangeInvisibleDuration response from ${endpoint}: no receipt handle`,
        );
      }
      return { ...message, receiptHandle: handle };
    });
  }

  /** The next broker group of `topic` to receive from (round robin over the route's groups). */
  private async pickGroup(topic: string): Promise<string> {
    const all = (await this.route(topic)).groups;
    if (all.length === 0) {
      throw new RaftmqError('TOPIC_NOT_FOUND', `topic ${topic} has no broker group`, {
        details: { topic },
      });
    }
    // Groups without a leader now are passed over while another has one (a receive there
    // would wait out its deadline for an election while other groups have messages).
    const leading = all.filter((g) => g.leaderEndpoint !== undefined);
    const groups = leading.length > 0 ? leading : all;
    const at = this.nextGroup.get(topic) ?? 0;
    if (!this.nextGroup.has(topic) && this.nextGroup.size >= this.options.routeCacheEntriesMax) {
      this.nextGroup.clear();
    }
    this.nextGroup.set(topic, (at + 1) % groups.length);
    return (groups[at % groups.length] as { name: string }).name;
  }

  /** One AckMessage of at most 1,024 messages of one topic and broker group. */
  private ackBatch(batch: readonly ReceivedMessage[], deadlineMs: number): Promise<AckResult> {
    const first = batch[0] as ReceivedMessage;
    const entries: readonly AckEntry[] = batch;
    const request = encodeAckRequest(
      this.options.namespace,
      this.options.consumerGroup,
      first.topic,
      entries,
    );
    const target = { brokerGroup: first.brokerGroup };
    return this.withNode(first.topic, target, deadlineMs, async (endpoint) => {
      const res = await this.unary<AckReply>(endpoint, 'AckMessage', request, deadlineMs);
      const status = res.status;
      // Settled is what the broker says it settled: an answer without statuses says nothing.
      if (status === undefined) {
        throw new RaftmqError(
          'INTERNAL',
          `malformed AckMessage response from ${endpoint}: no status`,
        );
      }
      const name = codeName(status);
      const results = res.entries;
      if (name !== 'OK' && name !== 'MULTIPLE_RESULTS') {
        // Every entry failed alike (stale handles: per entry below), or the request as a whole
        // did (NOT_LEADER and the like: tried again by withNode).
        const err = statusError('AckMessage', status, endpoint);
        if (err.retryable || results.length !== batch.length) throw err;
      }
      if (results.length !== batch.length) {
        throw new RaftmqError(
          'INTERNAL',
          `malformed AckMessage response from ${endpoint}: ${results.length} results for ` +
            `${batch.length} entries`,
        );
      }
      let acked = 0;
      const failures: { message: ReceivedMessage; error: RaftmqError }[] = [];
      for (let i = 0; i < batch.length; i++) {
        const s = results[i]?.status ?? undefined;
        if (s === undefined) {
          throw new RaftmqError(
            'INTERNAL',
            `malformed AckMessage response from ${endpoint}: entry ${i} has no status`,
          );
        }
        const echoed = results[i]?.receiptHandle;
        if (echoed !== undefined && echoed !== '' && echoed !== batch[i]?.receiptHandle) {
          throw new RaftmqError(
            'INTERNAL',
            `malformed AckMessage response from ${endpoint}: entry ${i} answers another handle`,
          );
        }
        if (codeName(s) === 'OK') acked++;
        else
          failures.push({
            message: batch[i] as ReceivedMessage,
            error: statusError('AckMessage', s, endpoint),
          });
      }
      return { acked, failures };
    });
  }

  /** The messages of a ReceiveStored reply, every record checked; see the file comment. */
  private received(
    reply: ReceiveStoredReply,
    asked: { endpoint: string; topic: string; brokerGroup: string; batchSize: number },
  ): ReceivedMessage[] {
    const { endpoint } = asked;
    const malformed = (why: string): RaftmqError =>
      new RaftmqError('INTERNAL', `malformed ReceiveStored response from ${endpoint}: ${why}`, {
        details: { endpoint },
      });
    const status = reply.status;
    if (status === undefined) throw malformed('no status');
    const name = codeName(status);
    if (name === 'MESSAGE_NOT_FOUND') {
      // Records beside it would be messages made invisible and then never seen.
      if (reply.records.length > 0) throw malformed('records with MESSAGE_NOT_FOUND');
      return [];
    }
    if (name !== 'OK') throw statusError('ReceiveStored', status, endpoint);
    const { records, offsets, receiptHandles, attempts } = reply;
    const n = records.length;
    if (offsets.length !== n || receiptHandles.length !== n || attempts.length !== n) {
      throw malformed(
        `${n} records with ${offsets.length} offsets, ${receiptHandles.length} handles and ` +
          `${attempts.length} attempts`,
      );
    }
    if (n > asked.batchSize) throw malformed(`${n} records, ${asked.batchSize} asked`);
    const storedTopic = this.storedName(asked.topic);
    const context = { file: `ReceiveStored reply from ${endpoint}` };
    const messages = new Array<ReceivedMessage>(n);
    for (let i = 0; i < n; i++) {
      const offset = offsets[i] as number;
      const handle = receiptHandles[i] as string;
      const attempt = attempts[i] as number;
      if (!Number.isSafeInteger(offset)) throw malformed(`offset ${offset}`);
      if (handle === '') throw malformed('an empty receipt handle');
      if (!(attempt >= 1 && attempt <= 0xffff_ffff)) throw malformed(`attempt ${attempt}`);
      const m = decodeMessage(records[i] as Buffer, context, true);
      if (m.topic !== storedTopic) throw malformed(`a record of ${m.topic} for ${storedTopic}`);
      messages[i] = Object.assign(pulledFromStored(m, asked.topic, offset), {
        receiptHandle: handle,
        deliveryAttempt: attempt,
        brokerGroup: asked.brokerGroup,
      });
    }
    return messages;
  }
}
