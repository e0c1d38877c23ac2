/**
 * The stored-message codec: the public API for encoding a producer message into the bytes kept
 * inside a Raft entry, decoding it back, and the tag hash a ConsumeQueue stores. The format and
 * its measured choices are in message-format.ts, the limits in message-limits.ts, and the
 * implementations in message-encode.ts and message-decode.ts.
 */
import * as decode from './message-decode';
import * as encode from './message-encode';
import * as format from './message-format';
import * as limits from './message-limits';

export type { BodyEncoding, MessageType, StoredMessage, TransactionState } from './message-format';
export type { DecodeContext, MessageHeaderPeek, MessageIndexFields } from './message-decode';

// Values are re-exported as constants, not with `export { ... } from`: TypeScript compiles that
// to accessors on a CommonJS `exports` object, which V8 then keeps as a dictionary, and every
// call through such a module from optimized code costs a generic property load
// (test/common/module-shape.test.ts, docs/performance.md).
export const MESSAGE_MAGIC_V1 = format.MESSAGE_MAGIC_V1;
export const ENCODED_MESSAGE_SIZE_MAX_BYTES = limits.ENCODED_MESSAGE_SIZE_MAX_BYTES;
export const MESSAGE_LIMITS = limits.MESSAGE_LIMITS;
export const encodeMessage = encode.encodeMessage;
export const encodeMessageInto = encode.encodeMessageInto;
export const encodeSizedMessageInto = encode.encodeSizedMessageInto;
export const encodedMessageSize = encode.encodedMessageSize;
export const decodeMessage = decode.decodeMessage;
export const peekMessageHeader = decode.peekMessageHeader;
export const readMessageIndexFields = decode.readMessageIndexFields;

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
