/**
 * The largest message a RocketMQ client can be handed. ReceiveMessage and PullMessage deliver
 * each message in one gRPC frame (`ReceiveMessageResponse{message}`), and grpc-js clients, the
 * official Node client among them, refuse a frame over 4 MiB with RESOURCE_EXHAUSTED (contract
 * §2). Such a message cannot be received at all: it comes back after every invisibility period
 * until it is dead-lettered. The body limit (`maxBodyBytes`, 4 MiB - 64 KiB) leaves room for the
 * other fields, but keys (up to 128 of 1 KiB) and user properties (16 KiB) may take more than
 * that room, so SendMessage also refuses a message whose delivery frame could exceed 4 MiB.
 *
 * The check must cost next to nothing per message, so it does not encode anything: it adds the
 * body, the keys and the properties (each with the most framing protobuf gives it) to a fixed
 * bound on everything else a delivery frame can carry, each field at the largest the store or
 * the broker allows (tag, message id, hosts, message group, trace context, timestamps, receipt
 * handle, namespace and topic, and the three properties a dead-letter copy adds). A message
 * whose body is small enough that even the largest keys and properties fit is passed on one
 * comparison. `test/broker/delivery-frame-limit.test.ts` checks that real frames stay within
 * the bound.
 */
import { RaftmqError } from '../common/errors';
import { lenFieldSize, utf8Length, varintFieldSize, varintSize } from '../common/proto-writer';
import { MESSAGE_LIMITS, USER_PROPERTY_LIMITS } from '../store/message-limits';
import {
  DLQ_ORIGIN_MESSAGE_ID,
  DLQ_ORIGIN_QUEUE,
  DLQ_ORIGIN_TOPIC,
} from './dead-letter-properties';
import { RECEIPT_HANDLE_LENGTH_MAX } from './receipt-handle';

const L = MESSAGE_LIMITS;
/** What a producer's properties may take (the store's limits leave room for the broker's). */
const U = USER_PROPERTY_LIMITS;

/** The largest delivery frame a client receives: grpc-js's default receive limit, 4 MiB. */
export const DELIVERY_FRAME_SIZE_BYTES_MAX = 4 * 1024 * 1024;

/** A topic name's UTF-8 size, at most (its limit is in UTF-16 code units). */
const TOPIC_NAME_SIZE_BYTES_MAX = L.topicLengthCharsMax * 3;
/** A length-delimited field whose content can be up to the whole frame: tag and 4-byte length. */
const LARGE_FIELD_HEADER_BYTES_MAX = 1 + varintSize(DELIVERY_FRAME_SIZE_BYTES_MAX);
/** A Timestamp or Duration field of any safe number of milliseconds. */
const TIME_FIELD_BYTES_MAX = lenFieldSize(
  varintFieldSize(Math.floor(Number.MAX_SAFE_INTEGER / 1000)) + varintFieldSize(999_999_999),
);
/** The longest checksum of a `Digest` is SHA1's 40 hex digits (MD5: 32, CRC32: 10). */
const DIGEST_FIELD_BYTES_MAX = lenFieldSize(varintFieldSize(3) + lenFieldSize(40));
/** An enum field (Encoding, MessageType: below 128). */
const ENUM_FIELD_BYTES_MAX = varintFieldSize(127);

/** Framing of one key in `system_properties.keys`: its tag and length. */
const KEY_FRAMING_BYTES = 1 + varintSize(L.keySizeBytesMax);
/**
 * Framing of one user property, a map entry `{key 1, value 2}`: the entry's tag and length,
 * and the key's and the value's. A key or value is at most the properties' 16 KiB in all.
 */
const PROPERTY_FRAMING_BYTES_MAX =
  1 + varintSize(L.propertiesSizeBytesMax + 6) + 2 * (1 + varintSize(L.propertiesSizeBytesMax));

/**
 * The properties a dead-letter copy adds (broker.ts `storeDeadLetterOnce`): the origin topic,
 * message id and `queueId:offset`. A consumer of the dead-letter topic receives them too.
 */
const DEAD_LETTER_PROPERTIES_BYTES_MAX =
  3 * PROPERTY_FRAMING_BYTES_MAX +
  DLQ_ORIGIN_TOPIC.length +
  TOPIC_NAME_SIZE_BYTES_MAX +
  DLQ_ORIGIN_MESSAGE_ID.length +
  L.messageIdSizeBytesMax +
  DLQ_ORIGIN_QUEUE.length +
  `${L.queueIdMax}:${Number.MAX_SAFE_INTEGER}`.length;

/** `system_properties` without keys, every field at its largest (rmq-stored-frame.ts). */
const SYSTEM_PROPERTIES_BYTES_MAX =
  lenFieldSize(L.tagSizeBytesMax) +
  lenFieldSize(L.messageIdSizeBytesMax) +
  DIGEST_FIELD_BYTES_MAX +
  2 * ENUM_FIELD_BYTES_MAX +
  // born, store and delivery timestamps, invisible duration
  4 * TIME_FIELD_BYTES_MAX +
  // born and store hosts
  2 * lenFieldSize(L.hostSizeBytesMax) +
  lenFieldSize(RECEIPT_HANDLE_LENGTH_MAX) +
  varintFieldSize(L.queueIdMax) +
  varintFieldSize(Number.MAX_SAFE_INTEGER) +
  // delivery_attempt, message_group and trace_context have two-byte tags
  1 +
  varintFieldSize(0xffff_ffff) +
  1 +
  lenFieldSize(L.messageGroupSizeBytesMax) +
  1 +
  lenFieldSize(L.traceContextSizeBytesMax);

/**
 * Everything a delivery frame can hold besides the body's bytes, the keys and the user
 * properties: the frame's `message` header, the topic (namespace and name), the
 * `system_properties` header and fields, the body's header, the dead-letter properties.
 */
export const DELIVERY_FRAME_FIXED_BYTES_MAX =
  LARGE_FIELD_HEADER_BYTES_MAX +
  lenFieldSize(2 * lenFieldSize(TOPIC_NAME_SIZE_BYTES_MAX)) +
  LARGE_FIELD_HEADER_BYTES_MAX +
  SYSTEM_PROPERTIES_BYTES_MAX +
  LARGE_FIELD_HEADER_BYTES_MAX +
  DEAD_LETTER_PROPERTIES_BYTES_MAX;

/**
 * A body at most this large is deliverable whatever its keys and properties (within their
 * limits): the check stops there.
 */
export const DELIVERABLE_BODY_SIZE_BYTES_ANY =
  DELIVERY_FRAME_SIZE_BYTES_MAX -
  DELIVERY_FRAME_FIXED_BYTES_MAX -
  L.keyCountMax * (KEY_FRAMING_BYTES + L.keySizeBytesMax) -
  (U.countMax * PROPERTY_FRAMING_BYTES_MAX + U.sizeBytesMax);

/**
 * The most bytes a message of `body`, `keys` and `properties` (already checked against their
 * own limits) can take in a delivery frame.
 */
export function deliveryFrameSizeBytesMax(
  body: Uint8Array,
  keys: readonly string[],
  properties: ReadonlyMap<string, string>,
): number {
  return (
    DELIVERY_FRAME_FIXED_BYTES_MAX + body.length + keysBytes(keys) + propertiesBytes(properties)
  );
}

function keysBytes(keys: readonly string[]): number {
  let size = 0;
  for (let i = 0; i < keys.length; i++) size += KEY_FRAMING_BYTES + utf8Length(keys[i] as string);
  return size;
}

function propertiesBytes(properties: ReadonlyMap<string, string>): number {
  let size = 0;
  for (const [key, value] of properties) {
    size += PROPERTY_FRAMING_BYTES_MAX + utf8Length(key) + utf8Length(value);
  }
  return size;
}

/**
 * Refuses a message that a client might not be able to receive: one whose delivery frame could
 * exceed {@link DELIVERY_FRAME_SIZE_BYTES_MAX}. MESSAGE_BODY_TOO_LARGE when the body alone
 * leaves too little room for the fields every message may carry, else
 * MESSAGE_PROPERTIES_TOO_LARGE (the keys and properties are what does not fit); the message
 * says by how many bytes. Keys and properties must have passed their own checks.
 */
export function checkDeliveryFrameSize(
  body: Uint8Array,
  keys: readonly string[],
  properties: ReadonlyMap<string, string>,
): void {
  if (body.length <= DELIVERABLE_BODY_SIZE_BYTES_ANY) return;
  const keysSize = keysBytes(keys);
  const propertiesSize = propertiesBytes(properties);
  const frameBytes = DELIVERY_FRAME_FIXED_BYTES_MAX + body.length + keysSize + propertiesSize;
  const overBytes = frameBytes - DELIVERY_FRAME_SIZE_BYTES_MAX;
  if (overBytes <= 0) return;
  const limit =
    `a message is delivered in one gRPC frame, clients receive at most ` +
    `${DELIVERY_FRAME_SIZE_BYTES_MAX} bytes (4 MiB) in one, and the other fields of a ` +
    `message may take up to ${DELIVERY_FRAME_FIXED_BYTES_MAX} bytes of it`;
  const details = { sizeBytes: frameBytes, sizeBytesMax: DELIVERY_FRAME_SIZE_BYTES_MAX };
  if (DELIVERY_FRAME_FIXED_BYTES_MAX + body.length > DELIVERY_FRAME_SIZE_BYTES_MAX) {
    throw new RaftmqError(
      'MESSAGE_BODY_TOO_LARGE',
      `body is ${body.length} bytes; at most ${body.length - overBytes} with these keys and ` +
        `properties (${overBytes} bytes less): ${limit}`,
      { details: { field: 'body', ...details } },
    );
  }
  throw new RaftmqError(
    'MESSAGE_PROPERTIES_TOO_LARGE',
    `system_properties.keys (${keysSize} bytes with framing) and user_properties ` +
      `(${propertiesSize}) are ${overBytes} bytes more than a body of ${body.length} bytes ` +
      `leaves room for: ${limit}`,
    {
      details: {
        field: keysSize >= propertiesSize ? 'system_properties.keys' : 'user_properties',
        ...details,
      },
    },
  );
}
