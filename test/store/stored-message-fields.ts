/**
 * The fields of a plain stored message that tests rarely vary: no delivery time, flags,
 * reconsume count, message group or trace, a NORMAL message outside any transaction. Spread it
 * into a `StoredMessage` literal and set the rest.
 */
import type { StoredMessage } from '../../src/store/message-format';

export const PLAIN_MESSAGE_FIELDS = {
  deliveryTimestampMs: undefined,
  flags: 0,
  reconsumeCount: 0,
  messageGroup: undefined,
  messageType: 'NORMAL',
  transactionState: 'NONE',
  traceContext: undefined,
} as const satisfies Partial<StoredMessage>;
