/**
 * The stored-message decoder (format in message-format.ts). Anything malformed (truncated or
 * padded input, wrong magic, version or length, CRC mismatch, impossible field) throws
 * CORRUPT_RECORD naming where the bytes came from, never data. Short ASCII strings are cut out
 * of one latin1 string of the record's tail (see the measured choices in message-format.ts).
 */
import { crc32cRange } from '../common/crc32c';
import { RaftmqError } from '../common/errors';
import * as format from './message-format';
import type { StoredMessage } from './message-format';

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
  TIMESTAMP_HIGH_MAX,
  TRANSACTION_STATES,
  TWO_POW_32,
  asBuffer,
  readU32,
} = format;

/** What {@link peekMessageHeader} reads without decoding keys, properties or body. */
export interface MessageHeaderPeek {
  readonly totalSizeBytes: number;
  readonly topic: string;
  readonly queueId: number;
  readonly tag: string | undefined;
  /** The FIFO message group, for a pop consumer's ordering. */
  readonly messageGroup: string | undefined;
}

/** Where decoded bytes came from; named in CORRUPT_RECORD errors. */
export interface DecodeContext {
  file?: string;
  position?: number;
}

/** Big-endian u16 as plain byte accesses (see `readU32` in message-format.ts). */
function readU16(bytes: Uint8Array, at: number): number {
  return ((bytes[at] ?? 0) << 8) | (bytes[at + 1] ?? 0);
}

function corrupt(context: DecodeContext | undefined, reason: string): never {
  const file = context?.file;
  const position = context?.position;
  throw new RaftmqError(
    'CORRUPT_RECORD',
    `corrupt stored message in ${file ?? '(unknown file)'}` +
      ` at position ${position ?? '(unknown)'}: ${reason}`,
    { details: { file, position } },
  );
}

/**
 * Checks magic, length, CRC32C and body size; returns where the strings start and end. With
 * `exact` the record must fill `bytes`, otherwise other bytes may follow it.
 */
function checkFrame(
  bytes: Buffer,
  context: DecodeContext | undefined,
  exact: boolean,
  verifyCrc = true,
) {
  if (bytes.length < CRC_COVERS_FROM) corrupt(context, `only ${bytes.length} bytes`);
  const magic = bytes[0] ?? 0;
  if (magic !== MESSAGE_MAGIC_V1) {
    corrupt(
      context,
      (magic & 0xf0) === (MESSAGE_MAGIC_V1 & 0xf0)
        ? `unsupported format version ${magic & 0x0f}`
        : `bad magic byte 0x${magic.toString(16)}`,
    );
  }
  const end = readU32(bytes, 1);
  if (end < EMPTY_RECORD_SIZE_BYTES || end > bytes.length || (exact && end !== bytes.length)) {
    corrupt(context, `length field says ${end} bytes, ${bytes.length} available`);
  }
  const stored = readU32(bytes, CRC_OFFSET);
  const computed = verifyCrc ? crc32cRange(bytes, CRC_COVERS_FROM, end) : stored;
  if (stored !== computed) {
    corrupt(
      context,
      `CRC32C mismatch: stored 0x${stored.toString(16)}, ` + `computed 0x${computed.toString(16)}`,
    );
  }
  const bodySizeBytes = readU32(bytes, BODY_SIZE_OFFSET);
  if (bodySizeBytes > end - EMPTY_RECORD_SIZE_BYTES) {
    corrupt(context, `body of ${bodySizeBytes} bytes does not fit a record of ${end}`);
  }
  const stringsStart = BODY_OFFSET + bodySizeBytes;
  const presence = bytes[9] ?? 0;
  if ((presence & ~(HAS_TAG | HAS_DELIVERY | HAS_GROUP | HAS_TRACE)) !== 0) {
    corrupt(context, `unknown presence bits 0x${presence.toString(16)}`);
  }
  return { stringsStart, end, presence };
}

/** What a message without keys decodes to: one frozen array shared by all of them. */
const NO_KEYS: readonly string[] = Object.freeze([]);

/**
 * What a message without properties decodes to: one map shared by all of them. Its own
 * (non-enumerable) set, delete and clear refuse or ignore changes: a decoded message's maps are
 * read-only by type, and this one is in fact too. It stays a plain Map to every comparison.
 */
export const NO_PROPERTIES: ReadonlyMap<string, string> = (() => {
  const map = new Map<string, string>();
  Object.defineProperties(map, {
    set: {
      value: (): never => {
        throw new TypeError('the properties of a decoded message are read-only');
      },
    },
    delete: { value: () => false },
    clear: { value: () => undefined },
  });
  return Object.freeze(map);
})();

/** Reads the strings, checking each length against the bytes left before using it. */
class StringReader {
  private at: number;
  /** The whole string area as latin1: short ASCII strings are cut from it. */
  private readonly text: string;

  constructor(
    private readonly bytes: Buffer,
    private readonly start: number,
    private readonly end: number,
    private readonly context: DecodeContext | undefined,
  ) {
    this.at = start;
    this.text = bytes.toString('latin1', start, end);
  }

  u16(what: string): number {
    if (this.end - this.at < LEN16) corrupt(this.context, `${what} runs past the end`);
    const value = readU16(this.bytes, this.at);
    this.at += LEN16;
    return value;
  }

  string(what: string): string {
    const sizeBytes = this.u16(what);
    const from = this.at;
    const to = from + sizeBytes;
    if (to > this.end) corrupt(this.context, `${what} of ${sizeBytes} bytes runs past the end`);
    this.at = to;
    if (sizeBytes <= SHORT_STRING_SIZE_MAX) {
      let i = from;
      while (i < to && (this.bytes[i] ?? 0) < 0x80) i++;
      if (i === to) return this.text.substring(from - this.start, to - this.start);
    }
    return this.bytes.toString('utf8', from, to);
  }

  /** Moves past a string without decoding it. */
  skip(what: string): void {
    const sizeBytes = this.u16(what);
    if (this.at + sizeBytes > this.end) {
      corrupt(this.context, `${what} of ${sizeBytes} bytes runs past the end`);
    }
    this.at += sizeBytes;
  }

  optional(present: number, what: string): string | undefined {
    const value = this.string(what);
    if (present !== 0) return value;
    if (value.length !== 0) corrupt(this.context, `${what} is marked absent but not empty`);
    return undefined;
  }

  keys(): readonly string[] {
    const count = this.u16('key count');
    if (count === 0) return NO_KEYS;
    if (count * LEN16 > this.end - this.at) corrupt(this.context, 'key count runs past the end');
    const keys = new Array<string>(count);
    for (let i = 0; i < count; i++) keys[i] = this.string('key');
    return keys;
  }

  /** Reads the properties, which end the record. */
  properties(): ReadonlyMap<string, string> {
    const count = this.u16('property count');
    if (count === 0) {
      if (this.at !== this.end) corrupt(this.context, `${this.end - this.at} bytes after the end`);
      return NO_PROPERTIES;
    }
    const properties = new Map<string, string>();
    for (let i = 0; i < count; i++) {
      const key = this.string('property key');
      if (properties.has(key)) corrupt(this.context, 'duplicate property key');
      properties.set(key, this.string('property value'));
    }
    if (this.at !== this.end) corrupt(this.context, `${this.end - this.at} bytes after the end`);
    return properties;
  }
}

function readTimestamp(bytes: Buffer, at: number, context: DecodeContext | undefined): number {
  const high = readU32(bytes, at);
  if (high > TIMESTAMP_HIGH_MAX) corrupt(context, `timestamp at ${at} is not a safe integer`);
  return high * TWO_POW_32 + readU32(bytes, at + 4);
}

function readEnum<T>(values: readonly T[], bytes: Buffer, at: number, context?: DecodeContext) {
  const value = values[bytes[at] ?? 0];
  if (value === undefined) corrupt(context, `unknown enum code ${bytes[at]} at ${at}`);
  return value;
}

function readInt31(bytes: Buffer, at: number, context: DecodeContext | undefined): number {
  const value = readU32(bytes, at);
  if (value > 0x7fff_ffff) corrupt(context, `value at ${at} exceeds 2^31 - 1`);
  return value;
}

function readDelivery(bytes: Buffer, presence: number, context: DecodeContext | undefined) {
  const deliveryMs = readTimestamp(bytes, 41, context);
  if ((presence & HAS_DELIVERY) !== 0) return deliveryMs;
  if (deliveryMs !== 0) corrupt(context, 'deliveryTimestampMs is marked absent but not zero');
  return undefined;
}

function readTopic(r: StringReader, context: DecodeContext | undefined): string {
  const topic = r.string('topic');
  if (topic.length === 0) corrupt(context, 'empty topic');
  return topic;
}

/**
 * Decodes one message from exactly its own bytes. Anything malformed (truncated or padded input,
 * wrong magic, version or length, CRC mismatch, impossible field) throws CORRUPT_RECORD naming
 * `context`. Only structure is checked, not {@link MESSAGE_LIMITS}: those are the writer's.
 * The body is a copy, or with `bodyView` a view of `bytes` (no copy, but it keeps all of
 * `bytes` alive while it lives).
 */
export function decodeMessage(
  bytes: Uint8Array,
  context?: DecodeContext,
  bodyView = false,
): StoredMessage {
  const buf = asBuffer(bytes);
  const { stringsStart, end, presence } = checkFrame(buf, context, true);
  const r = new StringReader(buf, stringsStart, end, context);
  const topic = readTopic(r, context);
  const tag = r.optional(presence & HAS_TAG, 'tag');
  const messageId = r.string('messageId');
  const bornHost = r.string('bornHost');
  const storeHost = r.string('storeHost');
  const messageGroup = r.optional(presence & HAS_GROUP, 'messageGroup');
  const traceContext = r.optional(presence & HAS_TRACE, 'traceContext');
  const keys = r.keys();
  const userProperties = r.properties();
  let body: Buffer;
  if (bodyView) {
    body = buf.subarray(BODY_OFFSET, stringsStart);
  } else {
    body = Buffer.allocUnsafe(stringsStart - BODY_OFFSET);
    buf.copy(body, 0, BODY_OFFSET, stringsStart);
  }
  return {
    topic,
    queueId: readInt31(buf, 13, context),
    body,
    bodyEncoding: readEnum(BODY_ENCODINGS, buf, 10, context),
    tag,
    keys,
    userProperties,
    messageId,
    bornTimestampMs: readTimestamp(buf, 25, context),
    storeTimestampMs: readTimestamp(buf, 33, context),
    deliveryTimestampMs: readDelivery(buf, presence, context),
    bornHost,
    storeHost,
    flags: readU32(buf, 17),
    reconsumeCount: readInt31(buf, 21, context),
    messageGroup,
    messageType: readEnum(MESSAGE_TYPES, buf, 11, context),
    transactionState: readEnum(TRANSACTION_STATES, buf, 12, context),
    traceContext,
  };
}

/**
 * Reads size, topic, queue id, tag and message group of the record at the start of `bytes`
 * (other records may follow it) without decoding keys, properties or body: for rebuilding
 * indexes and for reads that send records on undecoded. Magic, length and CRC32C are checked
 * as {@link decodeMessage} checks them (the CRC32C only with `verifyCrc`); the rest of the
 * record is not.
 */
export function peekMessageHeader(
  bytes: Uint8Array,
  context?: DecodeContext,
  verifyCrc = true,
): MessageHeaderPeek {
  const buf = asBuffer(bytes);
  const { stringsStart, end, presence } = checkFrame(buf, context, false, verifyCrc);
  const r = new StringReader(buf, stringsStart, end, context);
  const topic = readTopic(r, context);
  const tag = r.optional(presence & HAS_TAG, 'tag');
  r.skip('messageId');
  r.skip('bornHost');
  r.skip('storeHost');
  const messageGroup = r.optional(presence & HAS_GROUP, 'messageGroup');
  return { totalSizeBytes: end, topic, queueId: readInt31(buf, 13, context), tag, messageGroup };
}

/** What dispatch needs of one stored message: {@link readMessageIndexFields}. */
export interface MessageIndexFields {
  readonly sizeBytes: number;
  readonly topic: string;
  readonly queueId: number;
  readonly tag: string | undefined;
  readonly messageId: string;
  readonly keys: readonly string[];
  readonly storeTimestampMs: number;
}

/**
 * Reads one length-prefixed string in place, checking it fits before `end`. ASCII strings are
 * read as latin1 (no UTF-8 decoding); others decode as UTF-8.
 */
function stringAt(buf: Buffer, at: number, end: number, what: string, context?: DecodeContext) {
  if (end - at < LEN16) corrupt(context, `${what} runs past the end`);
  const from = at + LEN16;
  const to = from + readU16(buf, at);
  if (to > end) corrupt(context, `${what} of ${to - from} bytes runs past the end`);
  let i = from;
  while (i < to && (buf[i] ?? 0) < 0x80) i++;
  return buf.toString(i === to ? 'latin1' : 'utf8', from, to);
}

/** The end of the length-prefixed string at `at`, checked against `end`. */
function skipString(buf: Buffer, at: number, end: number, what: string, context?: DecodeContext) {
  if (end - at < LEN16) corrupt(context, `${what} runs past the end`);
  const to = at + LEN16 + readU16(buf, at);
  if (to > end) corrupt(context, `${what} runs past the end`);
  return to;
}

/**
 * Checks magic and length of the record at `start`, which must end at `end`, and (unless
 * `verifyCrc` is false) its CRC32C.
 */
function checkFrameAt(
  buf: Buffer,
  start: number,
  end: number,
  context: DecodeContext | undefined,
  verifyCrc: boolean,
): void {
  if (end - start < EMPTY_RECORD_SIZE_BYTES || end > buf.length) {
    corrupt(context, `only ${Math.min(end, buf.length) - start} bytes`);
  }
  const magic = buf[start] ?? 0;
  if (magic !== MESSAGE_MAGIC_V1) {
    corrupt(
      context,
      (magic & 0xf0) === (MESSAGE_MAGIC_V1 & 0xf0)
        ? `unsupported format version ${magic & 0x0f}`
        : `bad magic byte 0x${magic.toString(16)}`,
    );
  }
  const sizeBytes = readU32(buf, start + 1);
  if (sizeBytes !== end - start) {
    corrupt(context, `length field says ${sizeBytes} bytes, ${end - start} available`);
  }
  if (!verifyCrc) return;
  const stored = readU32(buf, start + CRC_OFFSET);
  const computed = crc32cRange(buf, start + CRC_COVERS_FROM, end);
  if (stored !== computed) {
    corrupt(
      context,
      `CRC32C mismatch: stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`,
    );
  }
}

/**
 * Reads, in place, the fields that file a message under its queue and in the key index (size,
 * topic, queue id, tag, message id, keys, store time) from the record occupying exactly
 * `[start, end)` of `buf`. Magic, length and CRC32C are checked as {@link decodeMessage} checks
 * them, so a damaged record is CORRUPT_RECORD, never a wrong queue; the body is neither copied
 * nor decoded, nor are hosts, trace context or properties. This is the apply path's reader: it
 * runs on every node for every message. `verifyCrc` false skips only the CRC32C, for bytes this
 * process encoded itself or verified whole (see verified-payloads.ts).
 */
export function readMessageIndexFields(
  buf: Buffer,
  start: number,
  end: number,
  context?: DecodeContext,
  verifyCrc = true,
): MessageIndexFields {
  checkFrameAt(buf, start, end, context, verifyCrc);
  const bodySizeBytes = readU32(buf, start + BODY_SIZE_OFFSET);
  if (bodySizeBytes > end - start - EMPTY_RECORD_SIZE_BYTES) {
    corrupt(context, `body of ${bodySizeBytes} bytes does not fit a record of ${end - start}`);
  }
  const presence = buf[start + 9] ?? 0;
  if ((presence & ~(HAS_TAG | HAS_DELIVERY | HAS_GROUP | HAS_TRACE)) !== 0) {
    corrupt(context, `unknown presence bits 0x${presence.toString(16)}`);
  }
  let at = start + BODY_OFFSET + bodySizeBytes;
  const topic = stringAt(buf, at, end, 'topic', context);
  if (topic.length === 0) corrupt(context, 'empty topic');
  at = skipString(buf, at, end, 'topic', context);
  let tag: string | undefined;
  if ((presence & HAS_TAG) !== 0) tag = stringAt(buf, at, end, 'tag', context);
  else if (end - at >= LEN16 && readU16(buf, at) !== 0) {
    corrupt(context, 'tag is marked absent but not empty');
  }
  at = skipString(buf, at, end, 'tag', context);
  const messageId = stringAt(buf, at, end, 'messageId', context);
  at = skipString(buf, at, end, 'messageId', context);
  at = skipString(buf, at, end, 'bornHost', context);
  at = skipString(buf, at, end, 'storeHost', context);
  at = skipString(buf, at, end, 'messageGroup', context);
  at = skipString(buf, at, end, 'traceContext', context);
  if (end - at < LEN16) corrupt(context, 'key count runs past the end');
  const keyCount = readU16(buf, at);
  at += LEN16;
  let keys = NO_KEYS;
  if (keyCount > 0) {
    const list = new Array<string>(keyCount);
    for (let i = 0; i < keyCount; i++) {
      list[i] = stringAt(buf, at, end, 'key', context);
      at = skipString(buf, at, end, 'key', context);
    }
    keys = list;
  }
  return {
    sizeBytes: end - start,
    topic,
    queueId: readInt31(buf, start + 13, context),
    tag,
    messageId,
    keys,
    storeTimestampMs: readTimestamp(buf, start + 33, context),
  };
}
