/**
 * A hand-written decoder of SendMessageRequest, the broker's busiest request: the generic
 * decoder built a message object per message and per sub-message, then copied each into the
 * plain shape handlers read (toObject); at 128 messages per request that was a tenth of the
 * leader's CPU under load. This one builds that plain shape directly: the same object the
 * generic decoder gives under PROTO_LOADER_OPTIONS (rmq-wire.ts: camelCase names, defaults
 * filled in, message fields null when absent, proto3 `optional` fields left out when absent,
 * enums by name and an unknown enum number as the number, 64-bit integers as numbers, a map as
 * a plain object, the body a view of the request's bytes), without the `_field` names the
 * generic decoder adds for present `optional` fields, which nothing reads.
 *
 * Stricter in one way: a known field with the wrong wire type is an error here (the generic
 * decoder read it as its declared type and made garbage of it). Unknown fields are skipped,
 * groups included. Errors throw; messaging-proto.ts turns them into a BAD_REQUEST answer.
 *
 * Schema (definition.proto): Message {topic 1, user_properties 2, system_properties 3, body
 * 4}; Resource {resource_namespace 1, name 2}; SystemProperties {tag 1 (optional), keys 2,
 * message_id 3, body_digest 4, body_encoding 5, message_type 6, born_timestamp 7, born_host 8,
 * store_timestamp 9, store_host 10, delivery_timestamp 11, receipt_handle 12, queue_id 13,
 * queue_offset 14, invisible_duration 15, delivery_attempt 16, message_group 17,
 * trace_context 18, orphaned_transaction_recovery_duration 19, dead_letter_queue 20,
 * lite_topic 21, priority 22; 9 and 11-22 optional}; Digest {type 1, checksum 2};
 * DeadLetterQueue {topic 1, message_id 2}; Timestamp and Duration {seconds 1, nanos 2}.
 */
import { Reader, WIRE_LEN, WIRE_VARINT } from '../common/proto-reader';
import { MESSAGE_LIMITS } from '../store/message-limits';

const ENCODING_NAMES = ['ENCODING_UNSPECIFIED', 'IDENTITY', 'GZIP'];
const MESSAGE_TYPE_NAMES = [
  'MESSAGE_TYPE_UNSPECIFIED',
  'NORMAL',
  'FIFO',
  'DELAY',
  'TRANSACTION',
  'LITE',
  'PRIORITY',
];
const DIGEST_TYPE_NAMES = ['DIGEST_TYPE_UNSPECIFIED', 'CRC32', 'MD5', 'SHA1'];

/** An enum value by name; a number the schema does not name stays a number. */
function enumName(names: readonly string[], n: number): string | number {
  return names[n] ?? n;
}

/**
 * Most messages one SendMessage may carry (the largest `messagesPerSendMax` an operator may
 * set). The decoder stops past it, and past {@link DECODE_REPEATS_MAX} keys or user properties
 * in one message: a request is decoded before any handler sees it, and a compressed one is
 * inflated first, so without these bounds a request of a few KiB (millions of empty messages)
 * became gigabytes of objects. Counts between the checked limits and these bounds still reach
 * the handler, which answers them with their own status codes.
 */
export const SEND_MESSAGES_MAX = 65_536;

/** Keys, and user properties, of one message the decoder takes: four times the limits. */
export const DECODE_REPEATS_MAX =
  4 * Math.max(MESSAGE_LIMITS.keyCountMax, MESSAGE_LIMITS.propertyCountMax);

/** Entries in one AckMessage, at most (the handler's check). */
export const ACK_ENTRIES_MAX = 1024;

/** Entries of one AckMessage the decoder takes; past it the request is undecodable. */
export const ACK_DECODE_ENTRIES_MAX = 4 * ACK_ENTRIES_MAX;

/** A decoding bound passed: the request is refused as undecodable. */
function tooMany(what: string, max: number): Error {
  return new Error(`more than ${max} ${what}`);
}

/** The decoded request: what the SendMessage handler reads (rmq-wire.ts WireMessage). */
export interface DecodedSendRequest {
  messages: Record<string, unknown>[];
}

/** Decodes a SendMessageRequest; throws on bytes that are not one. */
export function decodeSendRequest(bytes: Buffer): DecodedSendRequest {
  const r = new Reader(bytes, 0, bytes.length);
  const messages: Record<string, unknown>[] = [];
  while (!r.done) {
    if (r.key() === 1) {
      r.expect(WIRE_LEN);
      if (messages.length === SEND_MESSAGES_MAX) throw tooMany('messages', SEND_MESSAGES_MAX);
      messages.push(message(r.sub()));
    } else {
      r.skip(r.wireType);
    }
  }
  return { messages };
}

function message(c: Reader): Record<string, unknown> {
  let topic: Record<string, unknown> | null = null;
  const userProperties: Record<string, string> = {};
  let systemProperties: Record<string, unknown> | null = null;
  let body = EMPTY;
  let entries = 0;
  while (!c.done) {
    const field = c.key();
    switch (field) {
      case 1:
        c.expect(WIRE_LEN);
        topic = resource(c.sub());
        break;
      case 2:
        c.expect(WIRE_LEN);
        if (entries++ === DECODE_REPEATS_MAX) {
          throw tooMany('user properties in a message', DECODE_REPEATS_MAX);
        }
        mapEntry(c.sub(), userProperties);
        break;
      case 3:
        c.expect(WIRE_LEN);
        systemProperties = sysProps(c.sub());
        break;
      case 4:
        c.expect(WIRE_LEN);
        body = c.bytes();
        break;
      default:
        c.skip(c.wireType);
    }
  }
  return { topic, userProperties, systemProperties, body };
}

const EMPTY: Buffer = Buffer.alloc(0);

function resource(c: Reader): Record<string, unknown> {
  let resourceNamespace = '';
  let name = '';
  while (!c.done) {
    const field = c.key();
    if (field === 1) {
      c.expect(WIRE_LEN);
      resourceNamespace = c.string();
    } else if (field === 2) {
      c.expect(WIRE_LEN);
      name = c.string();
    } else {
      c.skip(c.wireType);
    }
  }
  return { resourceNamespace, name };
}

/** A map<string, string> entry {key 1, value 2}; a repeated key keeps its last value. */
function mapEntry(c: Reader, into: Record<string, string>): void {
  let key = '';
  let value = '';
  while (!c.done) {
    const field = c.key();
    if (field === 1) {
      c.expect(WIRE_LEN);
      key = c.string();
    } else if (field === 2) {
      c.expect(WIRE_LEN);
      value = c.string();
    } else {
      c.skip(c.wireType);
    }
  }
  if (key === '__proto__') {
    // As protobuf.js keeps it: an own property (assigning would set the object's prototype).
    Object.defineProperty(into, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else {
    into[key] = value;
  }
}

/** A Timestamp or Duration. */
function secondsNanos(c: Reader): Record<string, unknown> {
  let seconds = 0;
  let nanos = 0;
  while (!c.done) {
    const field = c.key();
    if (field === 1) {
      c.expect(WIRE_VARINT);
      seconds = c.int64();
    } else if (field === 2) {
      c.expect(WIRE_VARINT);
      nanos = c.int32();
    } else {
      c.skip(c.wireType);
    }
  }
  return { seconds, nanos };
}

function digest(c: Reader): Record<string, unknown> {
  let type: string | number = DIGEST_TYPE_NAMES[0] as string;
  let checksum = '';
  while (!c.done) {
    const field = c.key();
    if (field === 1) {
      c.expect(WIRE_VARINT);
      type = enumName(DIGEST_TYPE_NAMES, c.int32());
    } else if (field === 2) {
      c.expect(WIRE_LEN);
      checksum = c.string();
    } else {
      c.skip(c.wireType);
    }
  }
  return { type, checksum };
}

function deadLetterQueue(c: Reader): Record<string, unknown> {
  let topic = '';
  let messageId = '';
  while (!c.done) {
    const field = c.key();
    if (field === 1) {
      c.expect(WIRE_LEN);
      topic = c.string();
    } else if (field === 2) {
      c.expect(WIRE_LEN);
      messageId = c.string();
    } else {
      c.skip(c.wireType);
    }
  }
  return { topic, messageId };
}

function sysProps(c: Reader): Record<string, unknown> {
  // Fields in schema order, so every decoded object has one shape; optional ones are added
  // only when present.
  const sp: Record<string, unknown> = {
    keys: [] as string[],
    messageId: '',
    bodyDigest: null,
    bodyEncoding: ENCODING_NAMES[0],
    messageType: MESSAGE_TYPE_NAMES[0],
    bornTimestamp: null,
    bornHost: '',
    storeHost: '',
    queueId: 0,
  };
  const keys = sp.keys as string[];
  while (!c.done) {
    const field = c.key();
    switch (field) {
      case 1:
        c.expect(WIRE_LEN);
        sp.tag = c.string();
        break;
      case 2:
        c.expect(WIRE_LEN);
        if (keys.length === DECODE_REPEATS_MAX) {
          throw tooMany('keys in a message', DECODE_REPEATS_MAX);
        }
        keys.push(c.string());
        break;
      case 3:
        c.expect(WIRE_LEN);
        sp.messageId = c.string();
        break;
      case 4:
        c.expect(WIRE_LEN);
        sp.bodyDigest = digest(c.sub());
        break;
      case 5:
        c.expect(WIRE_VARINT);
        sp.bodyEncoding = enumName(ENCODING_NAMES, c.int32());
        break;
      case 6:
        c.expect(WIRE_VARINT);
        sp.messageType = enumName(MESSAGE_TYPE_NAMES, c.int32());
        break;
      case 7:
        c.expect(WIRE_LEN);
        sp.bornTimestamp = secondsNanos(c.sub());
        break;
      case 8:
        c.expect(WIRE_LEN);
        sp.bornHost = c.string();
        break;
      case 9:
        c.expect(WIRE_LEN);
        sp.storeTimestamp = secondsNanos(c.sub());
        break;
      case 10:
        c.expect(WIRE_LEN);
        sp.storeHost = c.string();
        break;
      case 11:
        c.expect(WIRE_LEN);
        sp.deliveryTimestamp = secondsNanos(c.sub());
        break;
      case 12:
        c.expect(WIRE_LEN);
        sp.receiptHandle = c.string();
        break;
      case 13:
        c.expect(WIRE_VARINT);
        sp.queueId = c.int32();
        break;
      case 14:
        c.expect(WIRE_VARINT);
        sp.queueOffset = c.int64();
        break;
      case 15:
        c.expect(WIRE_LEN);
        sp.invisibleDuration = secondsNanos(c.sub());
        break;
      case 16:
        c.expect(WIRE_VARINT);
        sp.deliveryAttempt = c.int32();
        break;
      case 17:
        c.expect(WIRE_LEN);
        sp.messageGroup = c.string();
        break;
      case 18:
        c.expect(WIRE_LEN);
        sp.traceContext = c.string();
        break;
      case 19:
        c.expect(WIRE_LEN);
        sp.orphanedTransactionRecoveryDuration = secondsNanos(c.sub());
        break;
      case 20:
        c.expect(WIRE_LEN);
        sp.deadLetterQueue = deadLetterQueue(c.sub());
        break;
      case 21:
        c.expect(WIRE_LEN);
        sp.liteTopic = c.string();
        break;
      case 22:
        c.expect(WIRE_VARINT);
        sp.priority = c.int32();
        break;
      default:
        c.skip(c.wireType);
    }
  }
  return sp;
}

/**
 * AckMessageRequest {group 1, topic 2, entries 3}; AckMessageEntry {message_id 1,
 * receipt_handle 2, lite_topic 3 (optional)}: decoded by hand for the same reason (up to 1,024
 * entries, an object each from the generic decoder and another from its toObject), into the
 * shape the generic decoder made (without its `_liteTopic` oneof names).
 */
export function decodeAckRequest(bytes: Buffer): Record<string, unknown> {
  const r = new Reader(bytes, 0, bytes.length);
  let group: Record<string, unknown> | null = null;
  let topic: Record<string, unknown> | null = null;
  const entries: Record<string, unknown>[] = [];
  while (!r.done) {
    const field = r.key();
    if (field === 1) {
      r.expect(WIRE_LEN);
      group = resource(r.sub());
    } else if (field === 2) {
      r.expect(WIRE_LEN);
      topic = resource(r.sub());
    } else if (field === 3) {
      r.expect(WIRE_LEN);
      if (entries.length === ACK_DECODE_ENTRIES_MAX) {
        throw tooMany('entries', ACK_DECODE_ENTRIES_MAX);
      }
      entries.push(ackEntry(r.sub()));
    } else {
      r.skip(r.wireType);
    }
  }
  return { group, topic, entries };
}

function ackEntry(c: Reader): Record<string, unknown> {
  const entry: Record<string, unknown> = { messageId: '', receiptHandle: '' };
  while (!c.done) {
    const field = c.key();
    if (field === 1) {
      c.expect(WIRE_LEN);
      entry.messageId = c.string();
    } else if (field === 2) {
      c.expect(WIRE_LEN);
      entry.receiptHandle = c.string();
    } else if (field === 3) {
      c.expect(WIRE_LEN);
      entry.liteTopic = c.string();
    } else {
      c.skip(c.wireType);
    }
  }
  return entry;
}
