/**
 * The payload of a Raft entry that carries messages. The leader batches concurrent sends into
 * one entry; each message inside keeps its own encoding (message-codec.ts), so a ConsumeQueue
 * record can point straight at one message's bytes in the CommitLog and read just those.
 *
 * | offset | size | field                                       |
 * |--------|------|---------------------------------------------|
 * | 0      | 1    | payload kind: 1 = messages                   |
 * | 1      | 4    | message count, u32 big-endian                |
 * | 5      | ...  | the encoded messages, back to back           |
 *
 * The first byte names the kind of every NORMAL entry payload; the broker's state machine owns
 * the other kinds (configuration, offsets, consumption state).
 */
import { bufferView, readU32BE, writeU32BE } from '../common/bytes';
import { RaftmqError } from '../common/errors';
import {
  type MessageIndexFields,
  type StoredMessage,
  encodeMessageInto,
  encodedMessageSize,
  decodeMessage,
  readMessageIndexFields,
} from './message-codec';
import { isWellFormed } from '../common/text';
import { isPayloadVerified, notePayloadVerified } from './verified-payloads';

export const PAYLOAD_KIND_MESSAGES = 1;
export const MESSAGE_BATCH_HEADER_BYTES = 5;

/** Bytes the batch payload of `messages` takes. Throws as the codec does on a bad message. */
export function messageBatchSize(messages: readonly StoredMessage[]): number {
  let total = MESSAGE_BATCH_HEADER_BYTES;
  for (const m of messages) total += encodedMessageSize(m);
  return total;
}

/** Encodes `messages` as one entry payload. Every message is checked before any is written. */
export function encodeMessageBatch(messages: readonly StoredMessage[]): Buffer {
  if (messages.length === 0) {
    throw new RaftmqError('INVALID_ARGUMENT', 'a message batch needs at least one message');
  }
  const buf = Buffer.allocUnsafe(messageBatchSize(messages));
  buf[0] = PAYLOAD_KIND_MESSAGES;
  writeU32BE(buf, 1, messages.length);
  let offset = MESSAGE_BATCH_HEADER_BYTES;
  const fields = new Array<MessageIndexFields>(messages.length);
  let noted = 0;
  for (const m of messages) {
    const sizeBytes = encodeMessageInto(m, buf, offset);
    const f = indexFieldsOf(m, sizeBytes);
    if (f !== undefined) fields[noted++] = f;
    offset += sizeBytes;
  }
  noteEncodedBatch(buf, noted === messages.length ? fields : undefined);
  return buf;
}

/**
 * The index fields of the batches this process encoded, until it applies them: applying one on
 * this node (the leader applies what it proposed) takes them instead of reading every message
 * back, once (the entry is forgotten then, so the Raft entry cache keeps no objects per message
 * beside its bytes). They are what reading gives: the encoder writes each of these fields as it
 * is and refuses strings UTF-8 would change, and `indexFieldsOf` checks the values again, since
 * a batch encoded with a size computed earlier (the send batcher) skips the encoder's checks. A
 * property test compares the two. Held weakly.
 */
const ENCODED_INDEX_FIELDS = new WeakMap<Uint8Array, readonly MessageIndexFields[]>();

/** Keys of a message without any: one shared, frozen list. */
const NO_KEYS: readonly string[] = Object.freeze([]);

/**
 * The index fields of `message`, encoded in `sizeBytes` bytes, as reading it gives them; or
 * undefined when a value would not read back as it is (then the batch is read back).
 */
export function indexFieldsOf(
  message: StoredMessage,
  sizeBytes: number,
): MessageIndexFields | undefined {
  const { topic, queueId, tag, messageId, keys, storeTimestampMs } = message;
  if (
    !(Number.isInteger(queueId) && queueId >= 0 && queueId <= 0x7fff_ffff) ||
    !(Number.isSafeInteger(storeTimestampMs) && storeTimestampMs >= 0) ||
    !isWellFormed(topic) ||
    (tag !== undefined && !isWellFormed(tag)) ||
    !isWellFormed(messageId)
  ) {
    return undefined;
  }
  for (const key of keys) if (!isWellFormed(key)) return undefined;
  // The key order of `readMessageIndexFields`' result: one object shape for the apply loop.
  return {
    sizeBytes,
    topic,
    // `+ 0` turns -0 into the 0 that reading gives.
    queueId: queueId + 0,
    tag,
    messageId,
    // A copy: the message's own list is the sender's, and nothing may change what was filed.
    keys: keys.length === 0 ? NO_KEYS : keys.slice(),
    storeTimestampMs: storeTimestampMs + 0,
  };
}

/**
 * Records that this process encoded `payload`, a batch of messages with these index fields
 * (undefined: read it back when applying): it is verified (verified-payloads.ts).
 */
export function noteEncodedBatch(
  payload: Uint8Array,
  fields: readonly MessageIndexFields[] | undefined,
): void {
  notePayloadVerified(payload);
  if (fields !== undefined) ENCODED_INDEX_FIELDS.set(payload, fields);
}

/** True when an entry payload carries messages. */
export function isMessageBatch(payload: Uint8Array): boolean {
  return payload.byteLength >= MESSAGE_BATCH_HEADER_BYTES && payload[0] === PAYLOAD_KIND_MESSAGES;
}

/** One message of a batch payload, decoded, with its place in the payload. */
export interface BatchedMessage {
  /** Offset of the message's first byte within the payload. */
  offset: number;
  sizeBytes: number;
  message: StoredMessage;
}

/**
 * Decodes the messages of a batch payload, each exactly once (its framing and CRC checked by the
 * codec). A payload that does not parse exactly gives CORRUPT_RECORD naming `context`.
 */
export function decodeMessageBatch(
  payload: Uint8Array,
  context: { file?: string; position?: number } = {},
): BatchedMessage[] {
  const buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const bad = (why: string): RaftmqError =>
    new RaftmqError('CORRUPT_RECORD', `message batch ${why}`, { details: { ...context } });
  if (!isMessageBatch(buf)) throw bad('has no message header');
  const count = readU32BE(buf, 1);
  const out: BatchedMessage[] = [];
  let offset = MESSAGE_BATCH_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    // The message's total size is at byte 1 of its own header (message-format.ts).
    if (offset + 5 > buf.length) throw bad(`ends after ${i} of ${count} messages`);
    const sizeBytes = readU32BE(buf, offset + 1);
    if (sizeBytes < 5 || offset + sizeBytes > buf.length) {
      throw bad(`message ${i} claims ${sizeBytes} bytes past the payload`);
    }
    const at = context.position === undefined ? undefined : context.position + offset;
    const message = decodeMessage(bufferView(buf, offset, offset + sizeBytes), {
      file: context.file,
      position: at,
    });
    out.push({ offset, sizeBytes, message });
    offset += sizeBytes;
  }
  if (offset !== buf.length) throw bad(`has ${buf.length - offset} trailing bytes`);
  return out;
}

/**
 * The index fields (message-decode.ts `readMessageIndexFields`) of every message of a batch
 * payload, in order; message *i* starts at `MESSAGE_BATCH_HEADER_BYTES` plus the sizes of those
 * before it. Framing and each message's CRC are checked as {@link decodeMessageBatch} checks
 * them (CORRUPT_RECORD naming `context`; the CRC not for a verified payload, see
 * verified-payloads.ts), but no body is copied and no property decoded: this is what applying an
 * entry reads. For a batch this process encoded, the fields noted then, the first time
 * (`noteEncodedBatch`).
 */
export function readMessageBatchIndexFields(
  payload: Uint8Array,
  context: { file?: string; position?: number } = {},
): readonly MessageIndexFields[] {
  const encodedHere = ENCODED_INDEX_FIELDS.get(payload);
  if (encodedHere !== undefined) {
    ENCODED_INDEX_FIELDS.delete(payload);
    return encodedHere;
  }
  const buf = Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const bad = (why: string): RaftmqError =>
    new RaftmqError('CORRUPT_RECORD', `message batch ${why}`, { details: { ...context } });
  if (!isMessageBatch(buf)) throw bad('has no message header');
  const count = readU32BE(buf, 1);
  // Every message takes more than 5 bytes, so a count beyond this is corrupt before allocating.
  const payloadBytes = buf.length;
  if (count > payloadBytes / 5) throw bad(`claims ${count} messages in ${payloadBytes} bytes`);
  const out = new Array<MessageIndexFields>(count);
  const verifyCrc = !isPayloadVerified(payload);
  // One context for every message: it is read only when a record is found corrupt, at once.
  const at: { file?: string; position?: number } = { file: context.file };
  let offset = MESSAGE_BATCH_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (offset + 5 > buf.length) throw bad(`ends after ${i} of ${count} messages`);
    const sizeBytes = readU32BE(buf, offset + 1);
    if (sizeBytes < 5 || offset + sizeBytes > buf.length) {
      throw bad(`message ${i} claims ${sizeBytes} bytes past the payload`);
    }
    at.position = context.position === undefined ? undefined : context.position + offset;
    out[i] = readMessageIndexFields(buf, offset, offset + sizeBytes, at, verifyCrc);
    offset += sizeBytes;
  }
  if (offset !== buf.length) throw bad(`has ${buf.length - offset} trailing bytes`);
  return out;
}
