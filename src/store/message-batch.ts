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
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as StoredMessage;
    const sizeBytes = encodeMessageInto(m, buf, offset);
    fields[i] = indexFieldsOf(m, sizeBytes);
    offset += sizeBytes;
  }
  noteEncodedBatch(buf, fields);
  return buf;
}

/**
 * The index fields of the batches this process encoded, while they are alive: applying one on
 * this node (the leader applies what it proposed) takes them as they are instead of reading
 * every message back. They are what reading gives: the encoder writes each of these fields as
 * it is and refuses the strings UTF-8 would change (unpaired surrogates), and a property test
 * compares the two. Held weakly: nothing is kept alive by it.
 */
const ENCODED_INDEX_FIELDS = new WeakMap<Uint8Array, readonly MessageIndexFields[]>();

/** The index fields of `message`, encoded in `sizeBytes` bytes, as reading it gives them. */
export function indexFieldsOf(message: StoredMessage, sizeBytes: number): MessageIndexFields {
  // The key order of `readMessageIndexFields`' result: one object shape for the apply loop.
  return {
    sizeBytes,
    topic: message.topic,
    queueId: message.queueId,
    tag: message.tag,
    messageId: message.messageId,
    keys: message.keys,
    storeTimestampMs: message.storeTimestampMs,
  };
}

/**
 * Records that this process encoded `payload`, a batch of messages with these index fields:
 * it is verified (verified-payloads.ts) and applying it reads no message back.
 */
export function noteEncodedBatch(
  payload: Uint8Array,
  fields: readonly MessageIndexFields[],
): void {
  notePayloadVerified(payload);
  ENCODED_INDEX_FIELDS.set(payload, fields);
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
 * entry reads. For a batch this process encoded, the fields noted then (`noteEncodedBatch`).
 */
export function readMessageBatchIndexFields(
  payload: Uint8Array,
  context: { file?: string; position?: number } = {},
): readonly MessageIndexFields[] {
  const encodedHere = ENCODED_INDEX_FIELDS.get(payload);
  if (encodedHere !== undefined) return encodedHere;
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
