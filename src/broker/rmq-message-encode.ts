/**
 * Delivered messages encoded straight to protobuf bytes, without building the object tree that
 * @grpc/proto-loader's serializer wants (and then converts field by field). A pull or receive
 * answers up to hundreds of messages per request, one response frame each; on that path the
 * generic serializer cost more than reading the message from disk.
 *
 * The bytes are the `apache.rocketmq.v2.Message` that `toWireMessage` (rmq-convert.ts)
 * describes, field for field; `test/broker/rmq-message-encode.test.ts` decodes both with the
 * project's `.proto` files and compares them. Field numbers are those of `definition.proto`:
 * Message {topic 1, user_properties 2, system_properties 3, body 4}; SystemProperties {tag 1,
 * keys 2, message_id 3, body_digest 4, body_encoding 5, message_type 6, born_timestamp 7,
 * born_host 8, store_timestamp 9, store_host 10, delivery_timestamp 11, receipt_handle 12,
 * queue_id 13, queue_offset 14, invisible_duration 15, delivery_attempt 16, message_group 17,
 * trace_context 18}; Resource {resource_namespace 1, name 2}; Digest {type 1, checksum 2};
 * Timestamp and Duration {seconds 1, nanos 2}; a map entry {key 1, value 2}.
 *
 * A frame that is already bytes travels as an {@link EncodedFrame}; messaging-proto.ts lets
 * such a frame through the response serializer untouched.
 */
import { RaftmqError, RmqCode } from '../common/errors';
import type { LocatedMessage } from '../store/message-store';
import type { BodyEncoding, MessageType } from '../store/message-format';
import { bodyMd5Hex, type DeliveryOptions } from './rmq-convert';
import { unwrapNamespace } from './rmq-validate';
import type { WireStatus } from './rmq-wire';

/** A response frame already encoded: the serializer sends `bytes` as they are. */
export class EncodedFrame {
  constructor(readonly bytes: Buffer) {}
}

/** Wire types. */
const VARINT = 0;
const LEN = 2;

/** `Encoding` enum numbers. */
const ENCODING_NUMBERS: Readonly<Record<BodyEncoding, number>> = { IDENTITY: 1, GZIP: 2 };
/** `MessageType` enum numbers. */
const MESSAGE_TYPE_NUMBERS: Readonly<Record<MessageType, number>> = {
  NORMAL: 1,
  FIFO: 2,
  DELAY: 3,
  TRANSACTION: 4,
};
/** `DigestType.MD5`. */
const DIGEST_MD5 = 2;

/** Bytes of a varint of a non-negative safe integer. */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Bytes of a length-delimited field (tags here are all below 16: one byte). */
function lenFieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

function varintFieldSize(n: number): number {
  return 1 + varintSize(n);
}

/** A Timestamp or Duration of `ms` milliseconds (ms >= 0): its size and its two fields. */
interface SecondsNanos {
  readonly seconds: number;
  readonly nanos: number;
  readonly size: number;
}

function secondsNanos(ms: number): SecondsNanos {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const size =
    (seconds !== 0 ? varintFieldSize(seconds) : 0) + (nanos !== 0 ? varintFieldSize(nanos) : 0);
  return { seconds, nanos, size };
}

/** Writes into one buffer of a size computed beforehand. */
class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(n: number): void {
    const buf = this.buf;
    while (n >= 128) {
      buf[this.pos++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    buf[this.pos++] = n;
  }

  tag(field: number, wireType: number): void {
    this.buf[this.pos++] = (field << 3) | wireType;
  }

  varintField(field: number, n: number): void {
    this.tag(field, VARINT);
    this.varint(n);
  }

  /** A string field whose UTF-8 length is `len`. */
  stringField(field: number, s: string, len: number): void {
    this.tag(field, LEN);
    this.varint(len);
    this.pos += this.buf.write(s, this.pos, len, 'utf8');
  }

  bytesField(field: number, b: Uint8Array): void {
    this.tag(field, LEN);
    this.varint(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }

  /** The header of an embedded message of `len` bytes; its fields follow. */
  messageHeader(field: number, len: number): void {
    this.tag(field, LEN);
    this.varint(len);
  }

  secondsNanos(field: number, t: SecondsNanos): void {
    this.messageHeader(field, t.size);
    if (t.seconds !== 0) this.varintField(1, t.seconds);
    if (t.nanos !== 0) this.varintField(2, t.nanos);
  }
}

/** An optional string with its UTF-8 length (undefined when absent). */
interface Str {
  readonly s: string;
  readonly len: number;
}

function str(s: string): Str {
  return { s, len: Buffer.byteLength(s, 'utf8') };
}

function optStr(s: string | undefined): Str | undefined {
  return s === undefined ? undefined : str(s);
}

function checkCount(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RaftmqError('INTERNAL', `cannot encode ${what} ${n}`);
  }
}

/**
 * The bytes of one delivery frame of PullMessageResponse or ReceiveMessageResponse (both hold
 * `Message message = 2` in their oneof): the same message that `toWireMessage` describes.
 */
export function encodeMessageFrame(
  located: LocatedMessage,
  options: DeliveryOptions = {},
): EncodedFrame {
  const m = located.message;
  const ns = options.namespace ?? '';
  const attempt = options.deliveryAttempt ?? m.reconsumeCount + 1;
  checkCount(m.queueId, 'queue id');
  checkCount(attempt, 'delivery attempt');
  if (located.queueOffset !== undefined) checkCount(located.queueOffset, 'queue offset');
  checkCount(m.bornTimestampMs, 'born timestamp');
  checkCount(m.storeTimestampMs, 'store timestamp');

  // Resource topic = 1.
  const nsStr = str(ns);
  const topicName = str(unwrapNamespace(ns, m.topic));
  const topicSize = lenFieldSize(nsStr.len) + lenFieldSize(topicName.len);

  // map<string, string> user_properties = 2: one entry message per pair.
  const props: { key: Str; value: Str; size: number }[] = [];
  for (const [k, v] of m.userProperties) {
    const key = str(k);
    const value = str(v);
    props.push({ key, value, size: lenFieldSize(key.len) + lenFieldSize(value.len) });
  }

  // SystemProperties system_properties = 3.
  const tag = optStr(m.tag);
  const keys = m.keys.map(str);
  const messageId = str(m.messageId);
  const checksum = str(bodyMd5Hex(m.body));
  const digestSize = varintFieldSize(DIGEST_MD5) + lenFieldSize(checksum.len);
  const encoding = ENCODING_NUMBERS[m.bodyEncoding];
  const messageType = MESSAGE_TYPE_NUMBERS[m.messageType];
  const born = secondsNanos(m.bornTimestampMs);
  const bornHost = str(m.bornHost);
  const store = secondsNanos(m.storeTimestampMs);
  const storeHost = str(m.storeHost);
  if (m.deliveryTimestampMs !== undefined) checkCount(m.deliveryTimestampMs, 'delivery time');
  const delivery =
    m.deliveryTimestampMs === undefined ? undefined : secondsNanos(m.deliveryTimestampMs);
  const receiptHandle = optStr(options.receiptHandle);
  if (options.invisibleDurationMs !== undefined) {
    checkCount(options.invisibleDurationMs, 'invisible duration');
  }
  const invisible =
    options.invisibleDurationMs === undefined
      ? undefined
      : secondsNanos(options.invisibleDurationMs);
  const group = optStr(m.messageGroup);
  const trace = optStr(m.traceContext);

  let spSize =
    lenFieldSize(messageId.len) +
    lenFieldSize(digestSize) +
    varintFieldSize(encoding) +
    varintFieldSize(messageType) +
    lenFieldSize(born.size) +
    lenFieldSize(bornHost.len) +
    lenFieldSize(store.size) +
    lenFieldSize(storeHost.len) +
    varintFieldSize(m.queueId) +
    // delivery_attempt = 16: a two-byte tag.
    1 +
    varintFieldSize(attempt);
  if (tag !== undefined) spSize += lenFieldSize(tag.len);
  for (const k of keys) spSize += lenFieldSize(k.len);
  if (delivery !== undefined) spSize += lenFieldSize(delivery.size);
  if (receiptHandle !== undefined) spSize += lenFieldSize(receiptHandle.len);
  if (located.queueOffset !== undefined) spSize += varintFieldSize(located.queueOffset);
  if (invisible !== undefined) spSize += lenFieldSize(invisible.size);
  // message_group = 17 and trace_context = 18: two-byte tags.
  if (group !== undefined) spSize += 1 + lenFieldSize(group.len);
  if (trace !== undefined) spSize += 1 + lenFieldSize(trace.len);

  let messageSize =
    lenFieldSize(topicSize) + lenFieldSize(spSize) + lenFieldSize(m.body.byteLength);
  for (const p of props) messageSize += lenFieldSize(p.size);

  const w = new Writer(Buffer.allocUnsafe(lenFieldSize(messageSize)));
  // The response's `Message message = 2`.
  w.messageHeader(2, messageSize);
  w.messageHeader(1, topicSize);
  w.stringField(1, nsStr.s, nsStr.len);
  w.stringField(2, topicName.s, topicName.len);
  for (const p of props) {
    w.messageHeader(2, p.size);
    w.stringField(1, p.key.s, p.key.len);
    w.stringField(2, p.value.s, p.value.len);
  }
  w.messageHeader(3, spSize);
  if (tag !== undefined) w.stringField(1, tag.s, tag.len);
  for (const k of keys) w.stringField(2, k.s, k.len);
  w.stringField(3, messageId.s, messageId.len);
  w.messageHeader(4, digestSize);
  w.varintField(1, DIGEST_MD5);
  w.stringField(2, checksum.s, checksum.len);
  w.varintField(5, encoding);
  w.varintField(6, messageType);
  w.secondsNanos(7, born);
  w.stringField(8, bornHost.s, bornHost.len);
  w.secondsNanos(9, store);
  w.stringField(10, storeHost.s, storeHost.len);
  if (delivery !== undefined) w.secondsNanos(11, delivery);
  if (receiptHandle !== undefined) w.stringField(12, receiptHandle.s, receiptHandle.len);
  w.varintField(13, m.queueId);
  if (located.queueOffset !== undefined) w.varintField(14, located.queueOffset);
  if (invisible !== undefined) w.secondsNanos(15, invisible);
  // Fields 16 and up: the tag is a two-byte varint.
  w.varint((16 << 3) | VARINT);
  w.varint(attempt);
  if (group !== undefined) {
    w.varint((17 << 3) | LEN);
    w.varint(group.len);
    w.pos += w.buf.write(group.s, w.pos, group.len, 'utf8');
  }
  if (trace !== undefined) {
    w.varint((18 << 3) | LEN);
    w.varint(trace.len);
    w.pos += w.buf.write(trace.s, w.pos, trace.len, 'utf8');
  }
  w.bytesField(4, m.body);
  if (w.pos !== w.buf.length) {
    throw new RaftmqError('INTERNAL', `message frame sized ${w.buf.length}, wrote ${w.pos}`);
  }
  return new EncodedFrame(w.buf);
}

/** One stored message of a SendMessage answer. */
export interface AcceptedSend {
  readonly messageId: string;
  /** Its queue offset (a non-negative safe integer). */
  readonly offset: number;
}

/**
 * The `SendMessageResponse` of a request whose messages were all stored: the status `code`
 * with `message`, and per message an entry with the same status, its id and queue offset
 * (`SendResultEntry`: status 1, message_id 2, offset 4; the empty transaction id and recall
 * handle are left out, as proto3 allows). Every stored send is answered this way, so it is
 * encoded directly rather than through protobufjs objects, like delivered messages.
 */
export function encodeSendAccepted(
  entries: readonly AcceptedSend[],
  code: number,
  message: string,
): EncodedFrame {
  const messageLen = Buffer.byteLength(message, 'utf8');
  const statusSize = varintFieldSize(code) + lenFieldSize(messageLen);
  const idLens = new Array<number>(entries.length);
  const entrySizes = new Array<number>(entries.length);
  let size = lenFieldSize(statusSize);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AcceptedSend;
    if (!Number.isSafeInteger(e.offset) || e.offset < 0) {
      throw new RaftmqError('INTERNAL', `send answer: queue offset ${e.offset} is not valid`);
    }
    const idLen = Buffer.byteLength(e.messageId, 'utf8');
    const entrySize =
      lenFieldSize(statusSize) +
      (idLen > 0 ? lenFieldSize(idLen) : 0) +
      (e.offset > 0 ? varintFieldSize(e.offset) : 0);
    idLens[i] = idLen;
    entrySizes[i] = entrySize;
    size += lenFieldSize(entrySize);
  }
  const w = new Writer(Buffer.allocUnsafe(size));
  const status = (): void => {
    w.messageHeader(1, statusSize);
    w.varintField(1, code);
    w.stringField(2, message, messageLen);
  };
  status();
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AcceptedSend;
    w.messageHeader(2, entrySizes[i] as number);
    status();
    if ((idLens[i] as number) > 0) w.stringField(2, e.messageId, idLens[i] as number);
    if (e.offset > 0) w.varintField(4, e.offset);
  }
  if (w.pos !== size) throw new RaftmqError('INTERNAL', 'encodeSendAccepted: size mismatch');
  return new EncodedFrame(w.buf);
}

/** One entry of an AckMessage answer (`AckMessageResultEntry`). */
export interface AckAnswerEntry {
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly status: WireStatus;
}

/** A status code as its number (a `Code` name is looked up). */
function codeNumber(code: number | string): number {
  if (typeof code === 'number') return code;
  const n = (RmqCode as Readonly<Record<string, number>>)[code];
  if (n === undefined) throw new RaftmqError('INTERNAL', `unknown status code ${code}`);
  return n;
}

/**
 * The bytes of an AckMessageResponse: `status = 1`, then per entry `entries = 2`
 * (`AckMessageResultEntry`: message_id 1, receipt_handle 2, status 3). An AckMessage of a
 * thousand receipts is answered with a thousand entries, which protobufjs builds as objects
 * and writes string by string; this writes them at once. Empty strings and a zero code are
 * left out, as proto3 allows.
 */
export function encodeAckAnswer(
  status: WireStatus,
  entries: readonly AckAnswerEntry[],
): EncodedFrame {
  const statusSize = (s: WireStatus): number => {
    const len = Buffer.byteLength(s.message, 'utf8');
    const code = codeNumber(s.code);
    return (code !== 0 ? varintFieldSize(code) : 0) + (len > 0 ? lenFieldSize(len) : 0);
  };
  const sizes = new Array<number>(entries.length * 4);
  let size = lenFieldSize(statusSize(status));
  // Consecutive entries usually share one status: its size is computed once per run.
  let last: AckAnswerEntry['status'] | undefined;
  let lastSize = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AckAnswerEntry;
    if (last === undefined || e.status.code !== last.code || e.status.message !== last.message) {
      last = e.status;
      lastSize = statusSize(last);
    }
    const idLen = Buffer.byteLength(e.messageId, 'utf8');
    const handleLen = Buffer.byteLength(e.receiptHandle, 'utf8');
    const entrySize =
      (idLen > 0 ? lenFieldSize(idLen) : 0) +
      (handleLen > 0 ? lenFieldSize(handleLen) : 0) +
      lenFieldSize(lastSize);
    sizes[i * 4] = idLen;
    sizes[i * 4 + 1] = handleLen;
    sizes[i * 4 + 2] = lastSize;
    sizes[i * 4 + 3] = entrySize;
    size += lenFieldSize(entrySize);
  }
  const w = new Writer(Buffer.allocUnsafe(size));
  const writeStatus = (field: number, s: AckAnswerEntry['status'], sSize: number): void => {
    w.messageHeader(field, sSize);
    const code = codeNumber(s.code);
    if (code !== 0) w.varintField(1, code);
    if (s.message !== '') w.stringField(2, s.message, Buffer.byteLength(s.message, 'utf8'));
  };
  writeStatus(1, status, statusSize(status));
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AckAnswerEntry;
    const idLen = sizes[i * 4] as number;
    const handleLen = sizes[i * 4 + 1] as number;
    w.messageHeader(2, sizes[i * 4 + 3] as number);
    if (idLen > 0) w.stringField(1, e.messageId, idLen);
    if (handleLen > 0) w.stringField(2, e.receiptHandle, handleLen);
    writeStatus(3, e.status, sizes[i * 4 + 2] as number);
  }
  if (w.pos !== size) throw new RaftmqError('INTERNAL', 'encodeAckAnswer: size mismatch');
  return new EncodedFrame(w.buf);
}
