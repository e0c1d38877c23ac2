/**
 * The stored-message codec: the public API for encoding a producer message into the bytes kept
 * inside a Raft entry, decoding it back, and the tag hash a ConsumeQueue stores. The format and
 * its measured choices are in message-format.ts, the limits in message-limits.ts, and the
 * implementations in message-encode.ts and message-decode.ts.
 */
export {
  type BodyEncoding,
  type MessageType,
  type StoredMessage,
  type TransactionState,
  MESSAGE_MAGIC_V1,
} from './message-format';
export { ENCODED_MESSAGE_SIZE_MAX_BYTES, MESSAGE_LIMITS } from './message-limits';
export {
  encodeMessage,
  encodeMessageInto,
  encodeSizedMessageInto,
  encodedMessageSize,
} from './message-encode';
export {
  type DecodeContext,
  type MessageHeaderPeek,
  type MessageIndexFields,
  decodeMessage,
  peekMessageHeader,
  readMessageIndexFields,
} from './message-decode';

/**
 * The tag hash a ConsumeQueue record stores for tag filtering, computed as RocketMQ does: Java's
 * `String.hashCode()` over the tag's UTF-16 code units (`h = 31 * h + unit`, wrapping at 32
 * bits). A signed 32-bit value, which the ConsumeQueue widens to 64 bits; no tag hashes to 0.
 */
export function tagHashCode(tag: string | undefined): number {
  if (tag === undefined) return 0;
  let hash = 0;
  for (let i = 0; i < tag.length; i++) hash = (Math.imul(hash, 31) + tag.charCodeAt(i)) | 0;
  return hash;
}
