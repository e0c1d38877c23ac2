/**
 * The stored-message limits (MESSAGE_LIMITS), which the encoder enforces, and the largest
 * encoding that follows from them. Decoding checks structure only: the limits are the writer's.
 */
import { assert } from '../common/assert';
import { EMPTY_RECORD_SIZE_BYTES, LEN16 } from './message-format';

/**
 * What encoding accepts. Sizes are UTF-8 bytes, except the topic's: UTF-16 code units, as
 * RocketMQ's Java `String.length()` counts (RocketMQ's own topic limit is 127). Where the
 * RocketMQ 5 proxy has a default the store accepts at least as much: body 4 MiB
 * (`maxMessageSize`), 136 properties and 17 KiB of property keys plus values (UTF-8 lengths of
 * keys and values summed, framing not counted): the producer's 128 and 16 KiB
 * (`USER_PROPERTY_LIMITS`) and room for the broker's own,
 * message group 64 bytes (the proxy refuses 64 or more). Ours: tag 255, each key 1024, 128 keys,
 * message id 128, each host 255, trace context 4096. Topic, tag, keys and message group must
 * not contain NUL (the metadata store separates key parts with it); topic, message id, and a
 * present tag, key, message group or property key must not be empty. Every string must be
 * well-formed UTF-16 (no lone surrogates) so that it round-trips exactly. Queue id and
 * reconsume count are Java ints.
 */
/**
 * The user properties a producer may set (the RocketMQ 5 proxy's `userPropertyMaxNum` 128 and
 * `maxUserPropertySize` 16 KiB). The store takes a few more ({@link MESSAGE_LIMITS}
 * `propertyCountMax` and `propertiesSizeBytesMax`): room for the properties the broker adds to
 * copies it makes itself (a dead-letter copy's origin topic, message id and queue, about 600
 * bytes at most), so that a message at the producer's limits can always be copied. Before
 * 2026-12-04 the two were equal, and a message with more than 125 properties could not be
 * dead-lettered: every receive of its group then failed.
 */
export const USER_PROPERTY_LIMITS = Object.freeze({
  countMax: 128,
  sizeBytesMax: 16 * 1024,
});

export const MESSAGE_LIMITS = Object.freeze({
  topicLengthCharsMax: 127,
  tagSizeBytesMax: 255,
  keySizeBytesMax: 1024,
  keyCountMax: 128,
  messageIdSizeBytesMax: 128,
  hostSizeBytesMax: 255,
  messageGroupSizeBytesMax: 64,
  traceContextSizeBytesMax: 4096,
  propertyCountMax: USER_PROPERTY_LIMITS.countMax + 8,
  propertiesSizeBytesMax: USER_PROPERTY_LIMITS.sizeBytesMax + 1024,
  bodySizeBytesMax: 4 * 1024 * 1024,
  queueIdMax: 0x7fff_ffff,
  reconsumeCountMax: 0x7fff_ffff,
});

const L = MESSAGE_LIMITS;

/** The largest encoding of any valid message (every limit reached), to size batch buffers. */
export const ENCODED_MESSAGE_SIZE_MAX_BYTES =
  EMPTY_RECORD_SIZE_BYTES +
  L.topicLengthCharsMax * 3 +
  L.tagSizeBytesMax +
  L.messageIdSizeBytesMax +
  2 * L.hostSizeBytesMax +
  L.messageGroupSizeBytesMax +
  L.traceContextSizeBytesMax +
  L.keyCountMax * (LEN16 + L.keySizeBytesMax) +
  L.propertyCountMax * 2 * LEN16 +
  L.propertiesSizeBytesMax +
  L.bodySizeBytesMax;

// Every string length and count fits its u16 field, and the largest record its u32 length.
assert(
  Math.max(
    L.topicLengthCharsMax * 3,
    L.tagSizeBytesMax,
    L.keySizeBytesMax,
    L.messageIdSizeBytesMax,
    L.hostSizeBytesMax,
    L.messageGroupSizeBytesMax,
    L.traceContextSizeBytesMax,
    L.propertiesSizeBytesMax,
    L.keyCountMax,
    L.propertyCountMax,
  ) <= 0xffff && ENCODED_MESSAGE_SIZE_MAX_BYTES <= 0xffff_ffff,
  'message limits exceed the width of their length fields',
);
