/**
 * Delivery frames (`PullMessageResponse` / `ReceiveMessageResponse` holding `Message message =
 * 2` in their oneof) written straight from a stored record, without decoding it into a
 * StoredMessage or building the object tree @grpc/proto-loader's serializer wants: strings,
 * keys, properties and body are copied from the record's bytes (UTF-8 in both), the numbers
 * read from its header, and one buffer is written in order. A pull or receive answers up to
 * a thousand messages, one frame each; decoding each record and encoding the frame through
 * objects cost more than reading the records from disk.
 *
 * Field numbers are those of `definition.proto`: Message {topic 1, user_properties 2,
 * system_properties 3, body 4}; SystemProperties {tag 1, keys 2, message_id 3, body_digest 4,
 * body_encoding 5, message_type 6, born_timestamp 7, born_host 8, store_timestamp 9,
 * store_host 10, delivery_timestamp 11, receipt_handle 12, queue_id 13, queue_offset 14,
 * invisible_duration 15, delivery_attempt 16, message_group 17, trace_context 18}; Resource
 * {resource_namespace 1, name 2}; Digest {type 1, checksum 2}; Timestamp and Duration
 * {seconds 1, nanos 2}; a map entry {key 1, value 2}. The record's layout is in
 * message-format.ts. `test/broker/rmq-message-encode.test.ts` decodes the frames with the
 * project's `.proto` files and compares them with what the generic encoder writes for the
 * decoded record.
 *
 * The record must have been checked already (magic, length and CRC32C: the store's
 * `readQueueRecords` does it); the walk here still checks every length and code it uses, and
 * throws CORRUPT_RECORD rather than write past a field.
 */
import { RaftmqError } from '../common/errors';
import * as format from '../store/message-format';
import {
  LEN,
  lenFieldSize,
  secondsNanos,
  VARINT,
  varintFieldSize,
  Writer,
} from '../common/proto-writer';
import { bodyMd5Hex, type DeliveryOptions } from './rmq-convert';
import { EncodedFrame, ENCODING_NUMBERS, MESSAGE_TYPE_NUMBERS } from './rmq-message-encode';
import { wrapNamespace } from './rmq-validate';

// Module-level copies: see message-decode.ts for why.
const {
  BODY_ENCODINGS,
  BODY_OFFSET,
  BODY_SIZE_OFFSET,
  HAS_DELIVERY,
  HAS_GROUP,
  HAS_TAG,
  HAS_TRACE,
  LEN16,
  MESSAGE_TYPES,
  TIMESTAMP_HIGH_MAX,
  TWO_POW_32,
  readU32,
} = format;

/** `DigestType.MD5`, and the length of its uppercase hex checksum. */
const DIGEST_MD5 = 2;
const MD5_HEX_LENGTH = 32;
const INT31_MAX = 0x7fff_ffff;

/** The fixed strings of a record, in stored order. */
const TOPIC = 0;
const TAG = 1;
const MESSAGE_ID = 2;
const BORN_HOST = 3;
const STORE_HOST = 4;
const GROUP = 5;
const TRACE = 6;
const FIXED_STRINGS = 7;

function corrupt(reason: string): never {
  throw new RaftmqError('CORRUPT_RECORD', `stored record for delivery: ${reason}`);
}

function timestamp(b: Uint8Array, at: number): number {
  const high = readU32(b, at);
  if (high > TIMESTAMP_HIGH_MAX) corrupt(`timestamp at ${at} is not a safe integer`);
  return high * TWO_POW_32 + readU32(b, at + 4);
}

/**
 * Where the strings of a record lie: `starts[i]` and `lens[i]` of string i (the seven fixed
 * ones, then the keys, then each property's key and value). Reused from call to call.
 */
let starts = new Int32Array(64);
let lens = new Int32Array(64);

/** Walks the string area `[from, end)`; returns the key and property counts. */
function walkStrings(b: Uint8Array, from: number, end: number): { keys: number; props: number } {
  let at = from;
  let n = 0;
  const next = (): void => {
    if (end - at < LEN16) corrupt('a string length runs past the end');
    const len = ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
    at += LEN16;
    if (end - at < len) corrupt(`a string of ${len} bytes runs past the end`);
    if (n === starts.length) {
      const grown = new Int32Array(n * 2);
      grown.set(starts);
      starts = grown;
      const grownLens = new Int32Array(n * 2);
      grownLens.set(lens);
      lens = grownLens;
    }
    starts[n] = at;
    lens[n] = len;
    n++;
    at += len;
  };
  const count = (): number => {
    if (end - at < LEN16) corrupt('a count runs past the end');
    const c = ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
    at += LEN16;
    return c;
  };
  for (let i = 0; i < FIXED_STRINGS; i++) next();
  const keys = count();
  for (let i = 0; i < keys; i++) next();
  const props = count();
  for (let i = 0; i < 2 * props; i++) next();
  if (at !== end) corrupt(`${end - at} bytes after the properties`);
  return { keys, props };
}

/** The length of the stored topic's namespace prefix `ns%` when it has one, else 0. */
function namespacePrefixLength(b: Uint8Array, ns: string): number {
  if (ns === '') return 0;
  const prefix = Buffer.from(wrapNamespace(ns, ''), 'utf8');
  const start = starts[TOPIC] ?? 0;
  if ((lens[TOPIC] ?? 0) < prefix.length) return 0;
  for (let i = 0; i < prefix.length; i++) if (b[start + i] !== prefix[i]) return 0;
  return prefix.length;
}

/**
 * The delivery frame of the checked stored `record` at `queueOffset`, with what `options`
 * adds (namespace, attempt, receipt handle, invisibility).
 */
export function encodeStoredFrame(
  record: Buffer,
  queueOffset: number | undefined,
  options: DeliveryOptions = {},
): EncodedFrame {
  const end = record.length;
  if (end < BODY_OFFSET) corrupt(`only ${end} bytes`);
  const presence = record[9] ?? 0;
  const encodingName = BODY_ENCODINGS[record[10] ?? 0];
  const typeName = MESSAGE_TYPES[record[11] ?? 0];
  if (encodingName === undefined || typeName === undefined) corrupt('unknown enum code');
  const queueId = readU32(record, 13);
  const reconsumeCount = readU32(record, 21);
  if (queueId > INT31_MAX || reconsumeCount > INT31_MAX) corrupt('a count exceeds 2^31 - 1');
  const born = secondsNanos(timestamp(record, 25));
  const store = secondsNanos(timestamp(record, 33));
  const deliveryMs = timestamp(record, 41);
  const delivery = (presence & HAS_DELIVERY) !== 0 ? secondsNanos(deliveryMs) : undefined;
  const bodySize = readU32(record, BODY_SIZE_OFFSET);
  const stringsStart = BODY_OFFSET + bodySize;
  if (stringsStart > end) corrupt(`a body of ${bodySize} bytes runs past the end`);
  const { keys, props } = walkStrings(record, stringsStart, end);
  const hasTag = (presence & HAS_TAG) !== 0;
  const hasGroup = (presence & HAS_GROUP) !== 0;
  const hasTrace = (presence & HAS_TRACE) !== 0;
  if (
    (!hasTag && lens[TAG] !== 0) ||
    (!hasGroup && lens[GROUP] !== 0) ||
    (!hasTrace && lens[TRACE] !== 0) ||
    (delivery === undefined && deliveryMs !== 0)
  ) {
    corrupt('a field marked absent is not empty');
  }
  if (lens[TOPIC] === 0) corrupt('empty topic');

  const ns = options.namespace ?? '';
  const nsLen = Buffer.byteLength(ns, 'utf8');
  const cut = namespacePrefixLength(record, ns);
  const topicStart = (starts[TOPIC] ?? 0) + cut;
  const topicLen = (lens[TOPIC] ?? 0) - cut;
  const attempt = options.deliveryAttempt ?? reconsumeCount + 1;
  if (!Number.isSafeInteger(attempt) || attempt < 0) corrupt(`delivery attempt ${attempt}`);
  if (queueOffset !== undefined && (!Number.isSafeInteger(queueOffset) || queueOffset < 0)) {
    throw new RaftmqError('INTERNAL', `cannot encode queue offset ${queueOffset}`);
  }
  const handle = options.receiptHandle;
  const handleLen = handle === undefined ? 0 : Buffer.byteLength(handle, 'utf8');
  const invisibleMs = options.invisibleDurationMs;
  if (invisibleMs !== undefined && (!Number.isSafeInteger(invisibleMs) || invisibleMs < 0)) {
    throw new RaftmqError('INTERNAL', `cannot encode invisible duration ${invisibleMs}`);
  }
  const invisible = invisibleMs === undefined ? undefined : secondsNanos(invisibleMs);
  const encoding = ENCODING_NUMBERS[encodingName];
  const messageType = MESSAGE_TYPE_NUMBERS[typeName];
  const len = (i: number): number => lens[i] ?? 0;

  const topicSize = lenFieldSize(nsLen) + lenFieldSize(topicLen);
  const digestSize = varintFieldSize(DIGEST_MD5) + lenFieldSize(MD5_HEX_LENGTH);
  let spSize =
    lenFieldSize(len(MESSAGE_ID)) +
    lenFieldSize(digestSize) +
    varintFieldSize(encoding) +
    varintFieldSize(messageType) +
    lenFieldSize(born.size) +
    lenFieldSize(len(BORN_HOST)) +
    lenFieldSize(store.size) +
    lenFieldSize(len(STORE_HOST)) +
    varintFieldSize(queueId) +
    // delivery_attempt = 16: a two-byte tag.
    1 +
    varintFieldSize(attempt);
  if (hasTag) spSize += lenFieldSize(len(TAG));
  for (let k = 0; k < keys; k++) spSize += lenFieldSize(len(FIXED_STRINGS + k));
  if (delivery !== undefined) spSize += lenFieldSize(delivery.size);
  if (handle !== undefined) spSize += lenFieldSize(handleLen);
  if (queueOffset !== undefined) spSize += varintFieldSize(queueOffset);
  if (invisible !== undefined) spSize += lenFieldSize(invisible.size);
  // message_group = 17 and trace_context = 18: two-byte tags.
  if (hasGroup) spSize += 1 + lenFieldSize(len(GROUP));
  if (hasTrace) spSize += 1 + lenFieldSize(len(TRACE));

  const firstProp = FIXED_STRINGS + keys;
  let messageSize = lenFieldSize(topicSize) + lenFieldSize(spSize) + lenFieldSize(bodySize);
  for (let p = 0; p < props; p++) {
    const size = lenFieldSize(len(firstProp + 2 * p)) + lenFieldSize(len(firstProp + 2 * p + 1));
    messageSize += lenFieldSize(size);
  }

  const w = new Writer(Buffer.allocUnsafe(lenFieldSize(messageSize)));
  const field = (f: number, i: number): void => w.copyField(f, record, starts[i] ?? 0, len(i));
  w.messageHeader(2, messageSize);
  w.messageHeader(1, topicSize);
  w.stringField(1, ns, nsLen);
  w.copyField(2, record, topicStart, topicLen);
  for (let p = 0; p < props; p++) {
    const k = firstProp + 2 * p;
    w.messageHeader(2, lenFieldSize(len(k)) + lenFieldSize(len(k + 1)));
    field(1, k);
    field(2, k + 1);
  }
  w.messageHeader(3, spSize);
  if (hasTag) field(1, TAG);
  for (let k = 0; k < keys; k++) field(2, FIXED_STRINGS + k);
  field(3, MESSAGE_ID);
  w.messageHeader(4, digestSize);
  w.varintField(1, DIGEST_MD5);
  w.stringField(2, bodyMd5Hex(record.subarray(BODY_OFFSET, stringsStart)), MD5_HEX_LENGTH);
  w.varintField(5, encoding);
  w.varintField(6, messageType);
  w.secondsNanos(7, born);
  field(8, BORN_HOST);
  w.secondsNanos(9, store);
  field(10, STORE_HOST);
  if (delivery !== undefined) w.secondsNanos(11, delivery);
  if (handle !== undefined) w.stringField(12, handle, handleLen);
  w.varintField(13, queueId);
  if (queueOffset !== undefined) w.varintField(14, queueOffset);
  if (invisible !== undefined) w.secondsNanos(15, invisible);
  // Fields 16 and up: the tag is a two-byte varint.
  w.varint((16 << 3) | VARINT);
  w.varint(attempt);
  if (hasGroup) {
    w.varint((17 << 3) | LEN);
    w.copy(record, starts[GROUP] ?? 0, len(GROUP));
  }
  if (hasTrace) {
    w.varint((18 << 3) | LEN);
    w.copy(record, starts[TRACE] ?? 0, len(TRACE));
  }
  w.copyField(4, record, BODY_OFFSET, bodySize);
  if (w.pos !== w.buf.length) {
    throw new RaftmqError('INTERNAL', `stored frame sized ${w.buf.length}, wrote ${w.pos}`);
  }
  return new EncodedFrame(w.buf);
}
