/**
 * The Settings a broker sends back on a client's Telemetry stream (contract §4.3): the client's
 * own Settings echoed, with the fields the server owns overwritten.
 *
 * - Producers: an exponential backoff (the Node client throws inside its stream handler
 *   without one, and its startup then hangs), `max_body_size` = the broker's limit (0 would
 *   fail every send), message-type validation on, metrics off.
 * - Consumers: the subscription echoed with the group's `fifo` flag, `receive_batch_size` 32
 *   (a missing value makes push consumers ask for 0 messages), the long-polling timeout, and an
 *   exponential backoff whose `max_attempts` is the group's delivery limit (a customized policy
 *   makes Node FIFO consumers dead-letter on the first failure).
 * - A consumer subscribing with a SQL92 filter is refused (ILLEGAL_FILTER_EXPRESSION): raftmq
 *   filters by tag only, and accepting the handshake would leave the client's receives refused
 *   one by one, forever (the push consumer retries each a second later), where a refused
 *   handshake fails its startup at once with the reason.
 */
import { RaftmqError } from '../common/errors';
import type { GroupConfig } from './broker-types';
import { checkGroup, effectiveNamespace } from './rmq-validate';
import { msToTimestamp, type WireRetryPolicy, type WireSettings } from './rmq-wire';

/** What the reply depends on besides the client's Settings. */
export interface SettingsReplyContext {
  /** Largest body the broker accepts (`publishing.max_body_size`). */
  readonly maxBodyBytes: number;
  /** The `x-mq-namespace` header of the stream, when present. */
  readonly namespaceHeader: string | undefined;
  /** The consumer group's configuration by broker name, or undefined when unknown. */
  readonly groupLookup: (storedName: string) => GroupConfig | undefined;
  /** `subscription.long_polling_timeout`. */
  readonly longPollingTimeoutMs: number;
  /** `subscription.receive_batch_size`. */
  readonly receiveBatchSize: number;
  /** `backoff_policy.max_attempts` for a group the broker does not know. */
  readonly defaultMaxDeliveryAttempts: number;
}

/** Producer retries: 3 attempts, 10 ms doubling to at most 1 s. */
export const PRODUCER_BACKOFF: WireRetryPolicy = Object.freeze({
  maxAttempts: 3,
  exponentialBackoff: Object.freeze({
    initial: msToTimestamp(10),
    max: msToTimestamp(1000),
    multiplier: 2,
  }),
});

/** Consumer redelivery backoff shape: 1 s doubling to at most 60 s. */
const CONSUMER_BACKOFF_INITIAL_MS = 1000;
const CONSUMER_BACKOFF_MAX_MS = 60_000;

const PRODUCER_TYPES: ReadonlySet<string> = new Set(['PRODUCER']);
const CONSUMER_TYPES: ReadonlySet<string> = new Set([
  'PUSH_CONSUMER',
  'SIMPLE_CONSUMER',
  'PULL_CONSUMER',
  'LITE_PUSH_CONSUMER',
  'LITE_SIMPLE_CONSUMER',
]);

/** The kind of client a `client_type` names; throws UNRECOGNIZED_CLIENT_TYPE otherwise. */
export function clientKind(clientType: string | undefined): 'producer' | 'consumer' {
  if (clientType !== undefined && PRODUCER_TYPES.has(clientType)) return 'producer';
  if (clientType !== undefined && CONSUMER_TYPES.has(clientType)) return 'consumer';
  throw new RaftmqError(
    'UNRECOGNIZED_CLIENT_TYPE',
    `settings.client_type ${String(clientType ?? 'absent')} is not one raftmq serves`,
    { details: { field: 'settings.client_type' } },
  );
}

/** `FilterType` of a SQL92 filter expression. */
const SQL_FILTER_TYPE = 'SQL';

/**
 * Throws ILLEGAL_FILTER_EXPRESSION, naming the subscription, when `settings` subscribe with a
 * filter type raftmq does not evaluate (SQL92; tag filters and unspecified types pass).
 */
export function checkSubscriptionFilters(settings: WireSettings): void {
  const entries = settings.subscription?.subscriptions ?? [];
  for (const [i, entry] of entries.entries()) {
    if (entry.expression?.type !== SQL_FILTER_TYPE) continue;
    const field = `settings.subscription.subscriptions[${i}].expression.type`;
    throw new RaftmqError(
      'ILLEGAL_FILTER_EXPRESSION',
      `topic ${entry.topic?.name ?? '(none)'}: SQL92 filter expressions are not supported ` +
        `(${JSON.stringify(entry.expression.expression)}); raftmq filters by tag only ` +
        `("*" or "tagA||tagB")`,
      { details: { field } },
    );
  }
}

/** The broker's name of the consumer group in `settings`, or undefined when it names none. */
export function consumerGroupOf(
  settings: WireSettings,
  namespaceHeader: string | undefined,
): string | undefined {
  const group = settings.subscription?.group;
  if (group === undefined || group.name === '') return undefined;
  const ns = effectiveNamespace(namespaceHeader, group.resourceNamespace);
  return checkGroup(group.name, ns, 'settings.subscription.group.name');
}

/**
 * The Settings to send back for the client `settings`. Throws UNRECOGNIZED_CLIENT_TYPE for a
 * client type the broker does not serve, ILLEGAL_CONSUMER_GROUP for a malformed group and
 * ILLEGAL_FILTER_EXPRESSION for a subscription with a SQL92 filter.
 */
export function buildSettingsReply(
  settings: WireSettings,
  ctx: SettingsReplyContext,
): WireSettings {
  const echoed: WireSettings = {
    clientType: settings.clientType,
    accessPoint: settings.accessPoint,
    requestTimeout: settings.requestTimeout,
    userAgent: settings.userAgent ?? null,
    metric: { on: false },
  };
  if (clientKind(settings.clientType) === 'producer') {
    return {
      ...echoed,
      backoffPolicy: PRODUCER_BACKOFF,
      publishing: {
        topics: settings.publishing?.topics ?? [],
        maxBodySize: ctx.maxBodyBytes,
        validateMessageType: true,
      },
    };
  }
  checkSubscriptionFilters(settings);
  const groupName = consumerGroupOf(settings, ctx.namespaceHeader);
  const group = groupName === undefined ? undefined : ctx.groupLookup(groupName);
  const subscription = settings.subscription;
  return {
    ...echoed,
    backoffPolicy: {
      maxAttempts: group?.maxDeliveryAttempts ?? ctx.defaultMaxDeliveryAttempts,
      exponentialBackoff: {
        initial: msToTimestamp(CONSUMER_BACKOFF_INITIAL_MS),
        max: msToTimestamp(CONSUMER_BACKOFF_MAX_MS),
        multiplier: 2,
      },
    },
    subscription: {
      group: subscription?.group,
      subscriptions: subscription?.subscriptions ?? [],
      fifo: group?.fifo ?? false,
      receiveBatchSize: ctx.receiveBatchSize,
      longPollingTimeout: msToTimestamp(ctx.longPollingTimeoutMs),
      liteSubscriptionQuota: subscription?.liteSubscriptionQuota,
      maxLiteTopicSize: subscription?.maxLiteTopicSize,
    },
  };
}
