/**
 * Receipt handles: what a consumer sends back to ack, renew or dead-letter a delivered message.
 * Opaque to clients (contract §6.5); to the broker a handle names one delivery instance: the
 * broker group, the queue and offset, and the handle id the pop state issued (unique per
 * delivery and per invisibility change). It names no deadline, so a renewal does not change
 * the handle a push consumer keeps.
 *
 * Text form: `v1.<queueId>.<offset>.<handleId>.<check>`, numbers in lowercase hex, `check` the
 * CRC32C of the broker group, topic, consumer group and the numbers. A handle presented for
 * another topic, another consumer group or another broker group fails the check and is
 * refused as INVALID_RECEIPT_HANDLE, as is anything malformed; whether the delivery is still
 * current is the pop state's question.
 */
import { crc32c, crc32cSmall } from '../common/crc32c';
import { RaftmqError } from '../common/errors';

/** What a receipt handle names. */
export interface ReceiptHandle {
  readonly queueId: number;
  readonly offset: number;
  readonly handleId: number;
}

/** The names a handle is bound to. */
export interface HandleScope {
  readonly brokerGroup: string;
  readonly topic: string;
  readonly consumerGroup: string;
}

const VERSION = 'v1';
/** Longest text a handle can have (five fields of at most 16 hex digits, with dots). */
export const RECEIPT_HANDLE_LENGTH_MAX = 2 + 4 * 17 + 9;
/** Hex digits of one number field, at most (14 keep every value a safe integer). */
const HEX_DIGITS_MAX = 14;
const DOT = 0x2e;

/**
 * CRC32C of each scope's names and separators (`group\0topic\0consumer\0`), the part of
 * every check its handles share: a consumer acks thousands of handles of one scope, and the
 * CRC of the numbers alone is a few bytes of JavaScript. Keyed by the three names in turn (no
 * string is built per handle); bounded: cleared when full.
 */
const scopeCrcs = new Map<string, Map<string, Map<string, number>>>();
let scopeCrcCount = 0;
const SCOPE_CRCS_MAX = 4096;

function scopeCrc(scope: HandleScope): number {
  let byTopic = scopeCrcs.get(scope.brokerGroup);
  let byGroup = byTopic?.get(scope.topic);
  let crc = byGroup?.get(scope.consumerGroup);
  if (crc !== undefined) return crc;
  if (scopeCrcCount >= SCOPE_CRCS_MAX) {
    scopeCrcs.clear();
    scopeCrcCount = 0;
    byTopic = undefined;
    byGroup = undefined;
  }
  if (byTopic === undefined)
    scopeCrcs.set(scope.brokerGroup, (byTopic = new Map<string, Map<string, number>>()));
  if (byGroup === undefined) byTopic.set(scope.topic, (byGroup = new Map<string, number>()));
  const prefix = `${scope.brokerGroup}\0${scope.topic}\0${scope.consumerGroup}\0`;
  crc = crc32c(Buffer.from(prefix, 'utf8'));
  byGroup.set(scope.consumerGroup, crc);
  scopeCrcCount++;
  return crc;
}

/** Reused for the numbers' text: decimal digits and separators, at most 3 x 16 + 2 bytes. */
const digits = Buffer.alloc(64);

/**
 * The handle's check: CRC32C of `group\0topic\0consumer\0queueId\0offset\0handleId` (the
 * numbers in decimal), computed as the scope's cached CRC continued over the numbers.
 */
function check(scope: HandleScope, h: ReceiptHandle): number {
  const text = `${h.queueId}\0${h.offset}\0${h.handleId}`;
  const n = digits.write(text, 0, 'latin1');
  return crc32cSmall(digits, 0, n, scopeCrc(scope));
}

/** The text of handle `h`, bound to `scope`. */
export function encodeReceiptHandle(scope: HandleScope, h: ReceiptHandle): string {
  const sum = check(scope, h);
  return `${VERSION}.${h.queueId.toString(16)}.${h.offset.toString(16)}.${h.handleId.toString(16)}.${sum.toString(16)}`;
}

function invalid(why: string): RaftmqError {
  return new RaftmqError('INVALID_RECEIPT_HANDLE', `receipt handle ${why}`);
}

/** The value of hex digit `c` (a char code), or -1. Lowercase only, as handles are written. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** Parses a handle presented for `scope`; throws INVALID_RECEIPT_HANDLE when it is not one. */
export function decodeReceiptHandle(scope: HandleScope, text: unknown): ReceiptHandle {
  if (typeof text !== 'string' || text.length === 0) throw invalid('is missing');
  if (text.length > RECEIPT_HANDLE_LENGTH_MAX) throw invalid('is too long');
  if (!text.startsWith(`${VERSION}.`)) throw invalid('is malformed');
  // Four fields of 1..14 lowercase hex digits, separated by dots, after the version.
  const numbers = [0, 0, 0, 0];
  let at = VERSION.length + 1;
  for (let field = 0; field < 4; field++) {
    let value = 0;
    const start = at;
    while (at < text.length && text.charCodeAt(at) !== DOT) {
      const d = hexValue(text.charCodeAt(at));
      if (d < 0 || at - start >= HEX_DIGITS_MAX) throw invalid('is malformed');
      value = value * 16 + d;
      at++;
    }
    if (at === start || field < 3 !== at < text.length) throw invalid('is malformed');
    numbers[field] = value;
    at++; // the dot
  }
  const [queueId, offset, handleId, sum] = numbers as [number, number, number, number];
  if (!numbers.every((n) => Number.isSafeInteger(n))) throw invalid('is malformed');
  const h: ReceiptHandle = { queueId, offset, handleId };
  if (check(scope, h) !== sum) {
    throw invalid('does not belong to this topic, consumer group and broker group');
  }
  return h;
}
