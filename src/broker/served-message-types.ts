/**
 * Which message types a broker serves, and so which a route may advertise. RocketMQ clients
 * trust a queue's `accept_message_types`: the official Node Producer refuses locally a message
 * whose type is not listed (contract §6.2), and sends one that is. A listed type the broker
 * then refuses costs that client three failed round trips and isolates every endpoint it tried
 * for the client's lifetime (contract §10.13), so routes list only the types a send of which
 * can succeed: those a topic accepts and the backend serves. Until DELAY and TRANSACTION
 * messages are implemented (messaging-send.ts refuses them with UNSUPPORTED), that is NORMAL
 * and FIFO.
 *
 * Topics created before 2026-12-04 (auto-created, and dead-letter topics) accept every type
 * in their stored configuration; they keep it (the configuration is in the Raft log), and the
 * types the broker does not serve are simply not advertised. Admin may not give a topic a type
 * the broker does not serve (UNSUPPORTED), so that what an operator configures is what
 * clients see.
 */
import { RaftmqError } from '../common/errors';
import { MESSAGE_TYPES, type MessageType } from '../store/message-format';
import type { TopicConfig } from './broker-types';

/** What a backend says of the message types beyond NORMAL and FIFO (messaging-options.ts). */
export interface MessageTypeSupport {
  readonly supportsDelayMessages?: boolean;
  readonly supportsTransactionMessages?: boolean;
}

/** The types a backend with `support` stores and delivers as the type promises, in enum order. */
export function servedMessageTypes(support: MessageTypeSupport): MessageType[] {
  return MESSAGE_TYPES.filter(
    (t) =>
      (t !== 'DELAY' || support.supportsDelayMessages === true) &&
      (t !== 'TRANSACTION' || support.supportsTransactionMessages === true),
  );
}

/** The types of `accepted` that are in `served`: what a route may list. */
export function advertisedMessageTypes(
  accepted: readonly MessageType[],
  served: readonly MessageType[],
): MessageType[] {
  return accepted.filter((t) => served.includes(t));
}

/**
 * Refuses a topic configuration that gives the topic a type not in `served` (UNSUPPORTED,
 * naming it). `current` is the topic as it is, for an update: types it accepts already (a
 * topic created before the broker refused them) may stay, so that its queue count or
 * permission can still be changed.
 */
export function checkServedTopicTypes(
  config: TopicConfig,
  current: TopicConfig | undefined,
  served: readonly MessageType[],
): void {
  const added = config.messageTypes.filter(
    (t) => !served.includes(t) && current?.messageTypes.includes(t) !== true,
  );
  if (added.length === 0) return;
  throw new RaftmqError(
    'UNSUPPORTED',
    `topic.messageTypes: ${added.join(', ')} messages are not supported by this broker yet ` +
      `(sends of them are refused); a topic may accept ${served.join(', ')}`,
    { details: { field: 'topic.messageTypes' } },
  );
}
