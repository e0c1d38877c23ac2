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
import { crc32c } from '../common/crc32c';
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
const HEX = /^[0-9a-f]{1,14}$/;

function check(scope: HandleScope, h: ReceiptHandle): number {
  const text = `${scope.brokerGroup}\0${scope.topic}\0${scope.consumerGroup}\0${h.queueId}\0${h.offset}\0${h.handleId}`;
  return crc32c(Buffer.from(text, 'utf8'));
}

/** The text of handle `h`, bound to `scope`. */
export function encodeReceiptHandle(scope: HandleScope, h: ReceiptHandle): string {
  const fields = [h.queueId, h.offset, h.handleId, check(scope, h)].map((n) => n.toString(16));
  return `${VERSION}.${fields.join('.')}`;
}

function invalid(why: string): RaftmqError {
  return new RaftmqError('INVALID_RECEIPT_HANDLE', `receipt handle ${why}`);
}

/** Parses a handle presented for `scope`; throws INVALID_RECEIPT_HANDLE when it is not one. */
export function decodeReceiptHandle(scope: HandleScope, text: unknown): ReceiptHandle {
  if (typeof text !== 'string' || text.length === 0) throw invalid('is missing');
  if (text.length > RECEIPT_HANDLE_LENGTH_MAX) throw invalid('is too long');
  const parts = text.split('.');
  if (parts.length !== 5 || parts[0] !== VERSION) throw invalid('is malformed');
  const numbers = parts.slice(1).map((p) => (HEX.test(p) ? parseInt(p, 16) : -1));
  const [queueId, offset, handleId, sum] = numbers as [number, number, number, number];
  if (numbers.some((n) => n < 0 || !Number.isSafeInteger(n))) throw invalid('is malformed');
  const h: ReceiptHandle = { queueId, offset, handleId };
  if (check(scope, h) !== sum) {
    throw invalid('does not belong to this topic, consumer group and broker group');
  }
  return h;
}
