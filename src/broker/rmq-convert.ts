/**
 * Conversions between the RocketMQ 5 wire shapes and the broker's: a producer's `Message` to a
 * checked `ProduceMessage`, the body digest of a delivered one (rmq-message-encode.ts writes
 * delivered messages), and errors to a RocketMQ `Status`. The field rules live in
 * rmq-validate.ts; the wire shapes in rmq-wire.ts.
 */
import { hash } from 'node:crypto';
import { RaftmqError, RmqCode } from '../common/errors';
import type { Logger } from '../common/logger';
import type { BodyEncoding, MessageType } from '../store/message-format';
import { MESSAGE_LIMITS } from '../store/message-limits';
import type { ProduceMessage } from './broker-types';
import { checkDeliveryFrameSize } from './delivery-frame-limit';
import {
  checkBody,
  checkDeliveryTime,
  checkFreeText,
  checkKeys,
  checkMessageGroup,
  checkMessageId,
  checkTag,
  checkTopic,
  checkUserProperties,
  effectiveNamespace,
} from './rmq-validate';
import {
  timestampToMs,
  type WireMessage,
  type WireSecondsNanos,
  type WireStatus,
  type WireSystemProperties,
} from './rmq-wire';

/** What converting a producer's message needs besides the message. */
export interface ProduceContext {
  /** The `x-mq-namespace` header, when the call had one. */
  readonly namespaceHeader: string | undefined;
  readonly maxBodyBytes: number;
  /** How far ahead a delay message's delivery time may be. */
  readonly maxDelayMs: number;
  /** Wall-clock now (the born time of a message that has none; the delay reference). */
  readonly nowMs: number;
  /** The caller's address: the born host of a message whose client sent none. */
  readonly peer: string;
}

const TYPE_FROM_WIRE: Readonly<Record<string, MessageType>> = {
  NORMAL: 'NORMAL',
  FIFO: 'FIFO',
  DELAY: 'DELAY',
  TRANSACTION: 'TRANSACTION',
};

function fieldError(
  code: 'INVALID_ARGUMENT' | 'MESSAGE_TYPE_MISMATCH',
  field: string,
  why: string,
) {
  return new RaftmqError(code, `${field} ${why}`, { details: { field } });
}

/** A Timestamp as ms; throws INVALID_ARGUMENT naming `field` when it is not a valid instant. */
export function instantMs(t: WireSecondsNanos, field: string): number {
  if (t.nanos < 0 || t.nanos > 999_999_999)
    throw fieldError('INVALID_ARGUMENT', field, 'has nanos out of range');
  const ms = timestampToMs(t);
  if (!Number.isSafeInteger(ms)) throw fieldError('INVALID_ARGUMENT', field, 'is out of range');
  return ms;
}

/**
 * The message type the properties ask for, checked against them: FIFO needs a message group,
 * DELAY a delivery time, and neither may appear with another type. An unspecified type is
 * inferred from them (group: FIFO, delivery time: DELAY, else NORMAL).
 */
function messageTypeOf(sp: WireSystemProperties): MessageType {
  const hasGroup = sp.messageGroup !== undefined;
  const hasDelivery = sp.deliveryTimestamp !== undefined && sp.deliveryTimestamp !== null;
  const field = 'system_properties.message_type';
  let type: MessageType | undefined = TYPE_FROM_WIRE[sp.messageType];
  if (sp.messageType === 'MESSAGE_TYPE_UNSPECIFIED') {
    type = hasGroup ? 'FIFO' : hasDelivery ? 'DELAY' : 'NORMAL';
  } else if (sp.messageType === 'LITE' || sp.messageType === 'PRIORITY') {
    throw new RaftmqError('UNSUPPORTED', `${field} ${sp.messageType} is not supported by raftmq`, {
      details: { field },
    });
  }
  if (type === undefined) {
    throw fieldError('MESSAGE_TYPE_MISMATCH', field, `${String(sp.messageType)} is unknown`);
  }
  if (hasGroup && type !== 'FIFO') {
    throw fieldError('MESSAGE_TYPE_MISMATCH', field, `${type} must not have a message_group`);
  }
  if (!hasGroup && type === 'FIFO') {
    throw fieldError('MESSAGE_TYPE_MISMATCH', field, 'FIFO needs system_properties.message_group');
  }
  if (hasDelivery && type !== 'DELAY') {
    throw fieldError('MESSAGE_TYPE_MISMATCH', field, `${type} must not have a delivery_timestamp`);
  }
  if (!hasDelivery && type === 'DELAY') {
    throw new RaftmqError(
      'ILLEGAL_DELIVERY_TIME',
      `${field} DELAY needs system_properties.delivery_timestamp`,
      { details: { field: 'system_properties.delivery_timestamp' } },
    );
  }
  return type;
}

function bodyEncodingOf(wire: string): BodyEncoding {
  if (wire === 'GZIP') return 'GZIP';
  if (wire === 'IDENTITY' || wire === 'ENCODING_UNSPECIFIED') return 'IDENTITY';
  throw fieldError('INVALID_ARGUMENT', 'system_properties.body_encoding', `${wire} is unknown`);
}

/**
 * Checks a producer's message and turns it into what the broker stores. The topic is the
 * broker's name (namespace applied); the queue id the client chose is ignored (the broker
 * picks). Besides each field's limit, the message as a whole must fit the frame it will be
 * delivered in (delivery-frame-limit.ts). Throws the RaftmqError of the first rule broken,
 * naming the field.
 */
export function toProduceMessage(wire: WireMessage, ctx: ProduceContext): ProduceMessage {
  if (wire.topic === null) {
    throw new RaftmqError('ILLEGAL_TOPIC', 'topic is missing', { details: { field: 'topic' } });
  }
  const ns = effectiveNamespace(ctx.namespaceHeader, wire.topic.resourceNamespace);
  const topic = checkTopic(wire.topic.name, ns, 'topic.name');
  const sp = wire.systemProperties;
  if (sp === null) {
    throw new RaftmqError('ILLEGAL_MESSAGE_ID', 'system_properties is missing', {
      details: { field: 'system_properties' },
    });
  }
  checkMessageId(sp.messageId);
  checkBody(wire.body, ctx.maxBodyBytes);
  if (sp.tag !== undefined) checkTag(sp.tag);
  checkKeys(sp.keys);
  if (sp.messageGroup !== undefined) checkMessageGroup(sp.messageGroup);
  const userProperties = checkUserProperties(wire.userProperties);
  checkDeliveryFrameSize(wire.body, sp.keys, userProperties);
  const messageType = messageTypeOf(sp);
  let deliveryTimestampMs: number | undefined;
  if (sp.deliveryTimestamp !== undefined && sp.deliveryTimestamp !== null) {
    const field = 'system_properties.delivery_timestamp';
    deliveryTimestampMs = instantMs(sp.deliveryTimestamp, field);
    checkDeliveryTime(deliveryTimestampMs, ctx.nowMs, ctx.maxDelayMs);
  }
  const born = sp.bornTimestamp;
  const bornTimestampMs =
    born === null || born === undefined
      ? ctx.nowMs
      : instantMs(born, 'system_properties.born_timestamp');
  if (bornTimestampMs < 0) {
    throw fieldError('INVALID_ARGUMENT', 'system_properties.born_timestamp', 'is before 1970');
  }
  const bornHost = sp.bornHost !== '' ? sp.bornHost : ctx.peer;
  checkFreeText(bornHost, MESSAGE_LIMITS.hostSizeBytesMax, 'system_properties.born_host');
  if (sp.traceContext !== undefined) {
    checkFreeText(
      sp.traceContext,
      MESSAGE_LIMITS.traceContextSizeBytesMax,
      'system_properties.trace_context',
    );
  }
  return {
    topic,
    body: wire.body,
    bodyEncoding: bodyEncodingOf(sp.bodyEncoding),
    tag: sp.tag,
    // The decoded list is the request's own and nothing changes it: no copy.
    keys: sp.keys,
    userProperties,
    messageId: sp.messageId,
    bornTimestampMs,
    deliveryTimestampMs,
    bornHost,
    flags: 0,
    reconsumeCount: 0,
    messageGroup: sp.messageGroup,
    messageType,
    transactionState: messageType === 'TRANSACTION' ? 'PREPARED' : 'NONE',
    traceContext: sp.traceContext,
  };
}

/** What a delivery adds to a stored message. */
export interface DeliveryOptions {
  /** The consumer's namespace: the delivered topic name is the stored one without it. */
  readonly namespace?: string;
  /** 1 on the first delivery. Default: the stored reconsume count + 1. */
  readonly deliveryAttempt?: number;
  /** Set for pop deliveries (issue 5). */
  readonly receiptHandle?: string;
  readonly invisibleDurationMs?: number;
}

/** Uppercase hex MD5 of `body`: the digest every official client checks (never CRC32). */
export function bodyMd5Hex(body: Uint8Array): string {
  return hash('md5', body, 'hex').toUpperCase();
}

/** The OK status. */
export function okStatus(message = 'OK'): WireStatus {
  return { code: RmqCode.OK, message };
}

/**
 * The RocketMQ status of a failure: a RaftmqError's own code and message; anything else is an
 * unexpected failure, logged with its cause and answered INTERNAL_SERVER_ERROR with a generic
 * message (internals stay in the log). Never code 0.
 */
export function toStatus(err: unknown, log?: Logger): WireStatus {
  if (err instanceof RaftmqError) {
    if (err.code === 'INTERNAL' || err.fatal) log?.error({ err }, 'request failed');
    return { code: err.rmqCode, message: err.message };
  }
  log?.error({ err }, 'unexpected error in a client request');
  return {
    code: RmqCode.INTERNAL_SERVER_ERROR,
    message: 'internal error; the broker log has the cause',
  };
}
