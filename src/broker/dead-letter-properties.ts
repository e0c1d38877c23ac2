/**
 * The user properties a dead-letter copy carries besides the original's (broker.ts
 * `storeDeadLetterOnce`): where the message came from. One definition, since the delivery-frame
 * bound (delivery-frame-limit.ts) and the store's room above the producer's property limits
 * (store/message-limits.ts) are sized from them.
 */
export const DLQ_ORIGIN_TOPIC = 'DLQ_ORIGIN_TOPIC';
export const DLQ_ORIGIN_MESSAGE_ID = 'DLQ_ORIGIN_MESSAGE_ID';
/** `queueId:offset` of the original. */
export const DLQ_ORIGIN_QUEUE = 'DLQ_ORIGIN_QUEUE';
