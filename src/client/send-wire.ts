/**
 * A hand-written encoder of the producer's request and decoder of its answer. The generic codec
 * built a wire object per message, converted it field by field (fromObject) and measured every
 * string before writing it; at 128 messages per send that was a quarter of the sending
 * process's CPU, and most of its garbage.
 *
 * definition.proto: Message {topic 1, user_properties 2 (map entry {key 1, value 2}),
 * system_properties 3, body 4}; Resource {resource_namespace 1, name 2}; SystemProperties
 * {tag 1 (optional), keys 2, message_id 3, body_encoding 5, message_type 6, born_timestamp 7,
 * born_host 8, message_group 17 (optional)}; Timestamp {seconds 1, nanos 2}. service.proto:
 * SendMessageRequest {messages 1}; SendMessageResponse {status 1, entries 2}; SendResultEntry
 * {status 1, message_id 2, transaction_id 3, offset 4, recall_handle 5}; Status {code 1,
 * message 2}.
 */
import {
  lenFieldSize,
  secondsNanos,
  utf8Length,
  varintFieldSize,
  Writer,
} from '../common/proto-writer';
import { Reader, WIRE_LEN, WIRE_VARINT } from '../common/proto-reader';
import { decodeStatusEntries, readStatus, type StatusEntriesReply } from './pull-wire';

/** `Encoding.IDENTITY`. */
const ENCODING_IDENTITY = 1;
/** `MessageType.NORMAL` and `MessageType.FIFO`. */
const TYPE_NORMAL = 1;
const TYPE_FIFO = 2;
/** The key of SystemProperties.message_group (field 17, length-delimited): a two-byte varint. */
const MESSAGE_GROUP_KEY = (17 << 3) | 2;

/** One message of a send, as the producer's caller gave it; a null tag or group is absent. */
export interface SendWireMessage {
  readonly body: Uint8Array;
  readonly tag?: string | null | undefined;
  readonly keys?: readonly string[] | undefined;
  readonly properties?: ReadonlyMap<string, string> | undefined;
  readonly messageGroup?: string | null | undefined;
}

/** What every message of one send shares. */
export interface SendWireCommon {
  readonly topic: string;
  readonly bornTimestampMs: number;
  readonly bornHost: string;
}

/**
 * Scratch of {@link encodeSendRequest}, reused by every call (it never awaits): the byte length
 * of every string of the request in the order they are written, and per message the sizes of
 * its SystemProperties and of the whole Message. Arrays and objects made per message were a
 * good part of a producer's garbage.
 */
let lensScratch = new Int32Array(4096);
let sizesScratch = new Int32Array(2 * 256);

/** Grows the lengths scratch to hold `needed`, keeping what it holds. */
function ensureLens(needed: number): void {
  if (needed <= lensScratch.length) return;
  const grown = new Int32Array(Math.max(needed, 2 * lensScratch.length));
  grown.set(lensScratch);
  lensScratch = grown;
}

/** The keys of a message without any. */
const NO_KEYS: readonly string[] = Object.freeze([]);

/**
 * The bytes of a SendMessageRequest of `messages` with ids `ids` (one per message). Throws on
 * a count mismatch; everything else is the caller's to have checked.
 */
export function encodeSendRequest(
  common: SendWireCommon,
  messages: readonly SendWireMessage[],
  ids: readonly string[],
): Buffer {
  if (ids.length !== messages.length) {
    throw new Error(`encodeSendRequest: ${ids.length} ids for ${messages.length} messages`);
  }
  const topicLen = utf8Length(common.topic);
  const topicSize = lenFieldSize(topicLen);
  const hostLen = utf8Length(common.bornHost);
  const born = secondsNanos(common.bornTimestampMs);
  // Fields of SystemProperties every message has alike.
  const sysCommon =
    varintFieldSize(ENCODING_IDENTITY) +
    varintFieldSize(TYPE_NORMAL) +
    lenFieldSize(born.size) +
    (hostLen > 0 ? lenFieldSize(hostLen) : 0);
  if (2 * messages.length > sizesScratch.length) sizesScratch = new Int32Array(2 * messages.length);
  let nLens = 0;
  let total = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as SendWireMessage;
    const keys = m.keys ?? NO_KEYS;
    const properties = m.properties;
    // At most: tag, keys, id, group, and a key and value per property.
    ensureLens(nLens + keys.length + 3 + 2 * (properties === undefined ? 0 : properties.size));
    const lens = lensScratch;
    let sysSize = sysCommon;
    if (m.tag !== undefined && m.tag !== null) {
      const n = utf8Length(m.tag);
      lens[nLens++] = n;
      sysSize += lenFieldSize(n);
    }
    for (let k = 0; k < keys.length; k++) {
      const n = utf8Length(keys[k] as string);
      lens[nLens++] = n;
      sysSize += lenFieldSize(n);
    }
    const idLen = utf8Length(ids[i] as string);
    lens[nLens++] = idLen;
    if (idLen > 0) sysSize += lenFieldSize(idLen);
    if (m.messageGroup !== undefined && m.messageGroup !== null) {
      const n = utf8Length(m.messageGroup);
      lens[nLens++] = n;
      sysSize += 1 + lenFieldSize(n);
    }
    let size = lenFieldSize(topicSize) + lenFieldSize(sysSize);
    if (properties !== undefined) {
      for (const [k, v] of properties) {
        const kn = utf8Length(k);
        const vn = utf8Length(v);
        lens[nLens++] = kn;
        lens[nLens++] = vn;
        size += lenFieldSize(lenFieldSize(kn) + lenFieldSize(vn));
      }
    }
    const bodyBytes = m.body.length;
    if (bodyBytes > 0) size += lenFieldSize(bodyBytes);
    sizesScratch[2 * i] = sysSize;
    sizesScratch[2 * i + 1] = size;
    total += lenFieldSize(size);
  }
  const w = new Writer(Buffer.allocUnsafe(total));
  const lens = lensScratch;
  let at = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as SendWireMessage;
    const keys = m.keys ?? NO_KEYS;
    w.messageHeader(1, sizesScratch[2 * i + 1] as number);
    w.messageHeader(1, topicSize);
    w.stringField(2, common.topic, topicLen);
    w.messageHeader(3, sizesScratch[2 * i] as number);
    if (m.tag !== undefined && m.tag !== null) w.stringField(1, m.tag, lens[at++] as number);
    for (let k = 0; k < keys.length; k++) w.stringField(2, keys[k] as string, lens[at++] as number);
    const idLen = lens[at++] as number;
    if (idLen > 0) w.stringField(3, ids[i] as string, idLen);
    const fifo = m.messageGroup !== undefined && m.messageGroup !== null;
    w.varintField(5, ENCODING_IDENTITY);
    w.varintField(6, fifo ? TYPE_FIFO : TYPE_NORMAL);
    w.secondsNanos(7, born);
    if (hostLen > 0) w.stringField(8, common.bornHost, hostLen);
    if (fifo) {
      // A key of two varint bytes; stringField writes one-byte keys only.
      const n = lens[at++] as number;
      w.varint(MESSAGE_GROUP_KEY);
      w.string(m.messageGroup, n);
    }
    // Field order on the wire does not matter to a decoder: properties after the system ones.
    if (m.properties !== undefined) {
      for (const [k, v] of m.properties) {
        const kn = lens[at++] as number;
        const vn = lens[at++] as number;
        w.messageHeader(2, lenFieldSize(kn) + lenFieldSize(vn));
        w.stringField(1, k, kn);
        w.stringField(2, v, vn);
      }
    }
    if (m.body.length > 0) w.bytesField(4, m.body);
  }
  if (at !== nLens) throw new Error(`encodeSendRequest: wrote ${at} of ${nLens} strings`);
  if (w.pos !== total) throw new Error(`encodeSendRequest: wrote ${w.pos} of ${total} bytes`);
  return w.buf;
}

/** A decoded SendMessageResponse: codes as on the wire; an absent status is undefined. */
export type SendReply = StatusEntriesReply<{
  status: { code: number; message: string } | undefined;
  messageId: string;
  offset: number;
}>;

/** Decodes a SendMessageResponse; bytes that are not one throw (grpc-js fails the call). */
export function decodeSendReply(bytes: Buffer): SendReply {
  return decodeStatusEntries(bytes, readSendEntry);
}

/** A SendResultEntry: its status, message id and offset. */
function readSendEntry(e: Reader): SendReply['entries'][number] {
  const entry: SendReply['entries'][number] = { status: undefined, messageId: '', offset: 0 };
  while (!e.done) {
    const f = e.key();
    const t = e.wireType;
    if (f === 1 && t === WIRE_LEN) entry.status = readStatus(e.sub());
    else if (f === 2 && t === WIRE_LEN) entry.messageId = e.string();
    else if (f === 4 && t === WIRE_VARINT) entry.offset = e.int64();
    else e.skip(t);
  }
  return entry;
}
