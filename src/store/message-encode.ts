/**
 * The stored-message encoder (format in message-format.ts). Every field is checked before a
 * byte is written: a bad field is MESSAGE_MALFORMED naming it, an oversized body or property set
 * RECORD_TOO_LARGE. The size is computed exactly first, so one buffer can hold many messages.
 * Short ASCII strings are written in JavaScript (see the measured choices in message-format.ts).
 */
import { assert } from '../common/assert';
import { copyBytes } from '../common/bytes';
import { crc32cRange } from '../common/crc32c';
import { RaftmqError } from '../common/errors';
import { isWellFormed } from '../common/text';
import * as format from './message-format';
import type { StoredMessage } from './message-format';
import { MESSAGE_LIMITS } from './message-limits';

// Module-level copies on purpose: TypeScript compiles an imported binding to a property load at
// each use, which the JIT does not fold into a constant as it does a module-level const
// (measured with callgrind: about 4% of a whole encode or decode).
const {
  BODY_ENCODINGS,
  BODY_OFFSET,
  BODY_SIZE_OFFSET,
  CRC_COVERS_FROM,
  CRC_OFFSET,
  EMPTY_RECORD_SIZE_BYTES,
  HAS_DELIVERY,
  HAS_GROUP,
  HAS_TAG,
  HAS_TRACE,
  LEN16,
  MESSAGE_MAGIC_V1,
  MESSAGE_TYPES,
  SHORT_STRING_SIZE_MAX,
  TRANSACTION_STATES,
  TWO_POW_32,
  asBuffer,
} = format;

const L = MESSAGE_LIMITS;

// ---------------------------------------------------------------------------------------------
// Checks and size

const NON_EMPTY = 1;
const NO_NUL = 2;

function reject(code: 'MESSAGE_MALFORMED' | 'RECORD_TOO_LARGE', field: string, problem: string) {
  return new RaftmqError(code, `message.${field} ${problem}`, {
    details: { field: `message.${field}` },
  });
}

function malformed(field: string, problem: string): never {
  throw reject('MESSAGE_MALFORMED', field, problem);
}

/** The UTF-8 size of a short ASCII string without NUL; -1 for any other string. */
function shortAsciiSizeBytes(value: string): number {
  if (value.length > SHORT_STRING_SIZE_MAX) return -1;
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i);
    if (unit === 0 || unit >= 0x80) return -1;
  }
  return value.length;
}

/** Checks a string field and returns its UTF-8 size. */
function stringSizeBytes(value: unknown, field: string, sizeBytesMax: number, rules: number) {
  if (typeof value !== 'string') malformed(field, `must be a string, got ${typeof value}`);
  if ((rules & NON_EMPTY) !== 0 && value.length === 0) malformed(field, 'must not be empty');
  let sizeBytes = shortAsciiSizeBytes(value);
  if (sizeBytes < 0) {
    if ((rules & NO_NUL) !== 0 && value.includes('\u0000')) {
      malformed(field, 'must not contain NUL (U+0000)');
    }
    if (!isWellFormed(value)) malformed(field, 'must not contain unpaired UTF-16 surrogates');
    sizeBytes = Buffer.byteLength(value, 'utf8');
  }
  if (sizeBytes > sizeBytesMax) {
    malformed(field, `is ${sizeBytes} bytes in UTF-8, more than the ${sizeBytesMax} allowed`);
  }
  return sizeBytes;
}

function optionalSizeBytes(value: unknown, field: string, sizeBytesMax: number, rules: number) {
  return value === undefined ? 0 : stringSizeBytes(value, field, sizeBytesMax, rules);
}

function checkInteger(value: unknown, field: string, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    malformed(field, `must be an integer in [0, ${max}], got ${String(value)}`);
  }
}

function checkEnum(values: readonly string[], value: unknown, field: string): void {
  if (!values.includes(value as string)) {
    malformed(field, `must be one of ${values.join(', ')}, got ${String(value)}`);
  }
}

function checkScalars(msg: StoredMessage): void {
  checkInteger(msg.queueId, 'queueId', L.queueIdMax);
  checkInteger(msg.flags, 'flags', 0xffff_ffff);
  checkInteger(msg.reconsumeCount, 'reconsumeCount', L.reconsumeCountMax);
  checkInteger(msg.bornTimestampMs, 'bornTimestampMs', Number.MAX_SAFE_INTEGER);
  checkInteger(msg.storeTimestampMs, 'storeTimestampMs', Number.MAX_SAFE_INTEGER);
  if (msg.deliveryTimestampMs !== undefined) {
    checkInteger(msg.deliveryTimestampMs, 'deliveryTimestampMs', Number.MAX_SAFE_INTEGER);
  }
  checkEnum(BODY_ENCODINGS, msg.bodyEncoding, 'bodyEncoding');
  checkEnum(MESSAGE_TYPES, msg.messageType, 'messageType');
  checkEnum(TRANSACTION_STATES, msg.transactionState, 'transactionState');
}

function topicSizeBytes(topic: unknown): number {
  const sizeBytes = stringSizeBytes(topic, 'topic', L.topicLengthCharsMax * 3, NON_EMPTY | NO_NUL);
  const lengthChars = (topic as string).length;
  if (lengthChars > L.topicLengthCharsMax) {
    malformed(
      'topic',
      `is ${lengthChars} characters (UTF-16 code units), more than the ` +
        `${L.topicLengthCharsMax} allowed`,
    );
  }
  return sizeBytes;
}

function keysSizeBytes(keys: unknown): number {
  if (!Array.isArray(keys)) malformed('keys', 'must be an array of strings');
  if (keys.length > L.keyCountMax) {
    malformed('keys', `has ${keys.length} keys, more than the ${L.keyCountMax} allowed`);
  }
  let sizeBytes = LEN16 * keys.length;
  for (let i = 0; i < keys.length; i++) {
    sizeBytes += stringSizeBytes(keys[i], `keys[${i}]`, L.keySizeBytesMax, NON_EMPTY | NO_NUL);
  }
  return sizeBytes;
}

function propertiesSizeBytes(properties: unknown): number {
  const field = 'userProperties';
  if (!(properties instanceof Map)) malformed(field, 'must be a Map');
  if (properties.size > L.propertyCountMax) {
    throw reject(
      'RECORD_TOO_LARGE',
      field,
      `has ${properties.size} entries, more than the ${L.propertyCountMax} allowed`,
    );
  }
  let contentBytes = 0;
  for (const [key, value] of properties as Map<unknown, unknown>) {
    contentBytes +=
      stringSizeBytes(key, `${field} key`, L.propertiesSizeBytesMax, NON_EMPTY) +
      stringSizeBytes(value, `${field}[${String(key)}]`, L.propertiesSizeBytesMax, 0);
  }
  if (contentBytes > L.propertiesSizeBytesMax) {
    throw reject(
      'RECORD_TOO_LARGE',
      field,
      `keys and values total ${contentBytes} bytes in ` +
        `UTF-8, more than the ${L.propertiesSizeBytesMax} allowed`,
    );
  }
  return properties.size * 2 * LEN16 + contentBytes;
}

function bodySizeBytes(body: unknown): number {
  if (!(body instanceof Uint8Array)) malformed('body', 'must be a Uint8Array');
  if (body.length > L.bodySizeBytesMax) {
    throw reject(
      'RECORD_TOO_LARGE',
      'body',
      `is ${body.length} bytes, more than the ${L.bodySizeBytesMax} allowed`,
    );
  }
  return body.length;
}

/**
 * The exact size {@link encodeMessage} will produce, computed without encoding. It checks every
 * field as encoding does and throws the same errors: MESSAGE_MALFORMED naming the field, or
 * RECORD_TOO_LARGE for the body and the properties.
 */
export function encodedMessageSize(msg: StoredMessage): number {
  if (typeof msg !== 'object' || msg === null) malformed('', 'must be an object');
  checkScalars(msg);
  return (
    EMPTY_RECORD_SIZE_BYTES +
    topicSizeBytes(msg.topic) +
    optionalSizeBytes(msg.tag, 'tag', L.tagSizeBytesMax, NON_EMPTY | NO_NUL) +
    stringSizeBytes(msg.messageId, 'messageId', L.messageIdSizeBytesMax, NON_EMPTY) +
    stringSizeBytes(msg.bornHost, 'bornHost', L.hostSizeBytesMax, 0) +
    stringSizeBytes(msg.storeHost, 'storeHost', L.hostSizeBytesMax, 0) +
    optionalSizeBytes(
      msg.messageGroup,
      'messageGroup',
      L.messageGroupSizeBytesMax,
      NON_EMPTY | NO_NUL,
    ) +
    optionalSizeBytes(msg.traceContext, 'traceContext', L.traceContextSizeBytesMax, 0) +
    keysSizeBytes(msg.keys) +
    propertiesSizeBytes(msg.userProperties) +
    bodySizeBytes(msg.body)
  );
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** Encodes `msg` into a new Buffer; throws as {@link encodedMessageSize} does. */
export function encodeMessage(msg: StoredMessage): Buffer {
  const sizeBytes = encodedMessageSize(msg);
  const out = Buffer.allocUnsafe(sizeBytes);
  writeRecord(msg, out, 0, sizeBytes);
  return out;
}

/**
 * Encodes `msg` into `target` at `offset` and returns the bytes written, so that many messages
 * share one buffer. Every field is checked before a byte is written. A target without room for
 * {@link encodedMessageSize} bytes at `offset` is a programmer error (an assertion).
 */
export function encodeMessageInto(msg: StoredMessage, target: Uint8Array, offset: number): number {
  const sizeBytes = encodedMessageSize(msg);
  assert(
    Number.isSafeInteger(offset) && offset >= 0 && offset + sizeBytes <= target.length,
    () => `encodeMessageInto: ${sizeBytes} bytes do not fit at ${offset} of ${target.length}`,
  );
  writeRecord(msg, asBuffer(target), offset, sizeBytes);
  return sizeBytes;
}

/**
 * {@link encodeMessageInto} for a message already sized: `sizeBytes` must be what
 * {@link encodedMessageSize} returned for this very message, unchanged since. Its field checks
 * are not run again (the broker sizes each message when a send arrives and encodes it a turn
 * later into the entry); a size that does not match what is written is still an assertion.
 */
export function encodeSizedMessageInto(
  msg: StoredMessage,
  target: Uint8Array,
  offset: number,
  sizeBytes: number,
): number {
  assert(
    Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(sizeBytes) &&
      sizeBytes >= EMPTY_RECORD_SIZE_BYTES && offset + sizeBytes <= target.length,
    () => `encodeSizedMessageInto: ${sizeBytes} bytes do not fit at ${offset} of ${target.length}`,
  );
  writeRecord(msg, asBuffer(target), offset, sizeBytes);
  return sizeBytes;
}

/**
 * Big-endian writes as plain byte accesses: measured, about 10% of a whole encode faster than
 * Buffer's own range-checked methods. Callers check every offset first.
 */
function writeU32(out: Uint8Array, value: number, at: number): void {
  out[at] = value >>> 24;
  out[at + 1] = value >>> 16;
  out[at + 2] = value >>> 8;
  out[at + 3] = value;
}

function writeU16(out: Uint8Array, value: number, at: number): void {
  out[at] = value >>> 8;
  out[at + 1] = value;
}

function writeTimestamp(out: Buffer, at: number, ms: number): void {
  writeU32(out, Math.floor(ms / TWO_POW_32), at);
  writeU32(out, ms >>> 0, at + 4);
}

/** Writes a length-prefixed string; the caller has checked that it fits. Returns its end. */
function writeString(out: Buffer, at: number, value: string): number {
  const start = at + LEN16;
  let sizeBytes = value.length;
  if (sizeBytes <= SHORT_STRING_SIZE_MAX) {
    for (let i = 0; i < value.length; i++) {
      const unit = value.charCodeAt(i);
      if (unit >= 0x80) {
        sizeBytes = -1;
        break;
      }
      out[start + i] = unit;
    }
  }
  if (sizeBytes < 0 || sizeBytes > SHORT_STRING_SIZE_MAX) {
    sizeBytes = out.write(value, start, 'utf8');
  }
  writeU16(out, sizeBytes, at);
  return start + sizeBytes;
}

function writeHeader(msg: StoredMessage, out: Buffer, start: number, sizeBytes: number): void {
  out[start] = MESSAGE_MAGIC_V1;
  writeU32(out, sizeBytes, start + 1);
  out[start + 9] =
    (msg.tag === undefined ? 0 : HAS_TAG) |
    (msg.deliveryTimestampMs === undefined ? 0 : HAS_DELIVERY) |
    (msg.messageGroup === undefined ? 0 : HAS_GROUP) |
    (msg.traceContext === undefined ? 0 : HAS_TRACE);
  out[start + 10] = BODY_ENCODINGS.indexOf(msg.bodyEncoding);
  out[start + 11] = MESSAGE_TYPES.indexOf(msg.messageType);
  out[start + 12] = TRANSACTION_STATES.indexOf(msg.transactionState);
  writeU32(out, msg.queueId, start + 13);
  writeU32(out, msg.flags, start + 17);
  writeU32(out, msg.reconsumeCount, start + 21);
  writeTimestamp(out, start + 25, msg.bornTimestampMs);
  writeTimestamp(out, start + 33, msg.storeTimestampMs);
  writeTimestamp(out, start + 41, msg.deliveryTimestampMs ?? 0);
  writeU32(out, msg.body.length, start + BODY_SIZE_OFFSET);
}

function writeRecord(msg: StoredMessage, out: Buffer, start: number, sizeBytes: number): void {
  writeHeader(msg, out, start, sizeBytes);
  copyBytes(out, msg.body, start + BODY_OFFSET);
  let at = writeString(out, start + BODY_OFFSET + msg.body.length, msg.topic);
  at = writeString(out, at, msg.tag ?? '');
  at = writeString(out, at, msg.messageId);
  at = writeString(out, at, msg.bornHost);
  at = writeString(out, at, msg.storeHost);
  at = writeString(out, at, msg.messageGroup ?? '');
  at = writeString(out, at, msg.traceContext ?? '');
  writeU16(out, msg.keys.length, at);
  at += LEN16;
  for (const key of msg.keys) at = writeString(out, at, key);
  writeU16(out, msg.userProperties.size, at);
  at += LEN16;
  for (const [key, value] of msg.userProperties) {
    at = writeString(out, writeString(out, at, key), value);
  }
  assert(at === start + sizeBytes, () => `message encoded to ${at - start}, not ${sizeBytes}`);
  const crc = crc32cRange(out, start + CRC_COVERS_FROM, start + sizeBytes);
  writeU32(out, crc, start + CRC_OFFSET);
}
