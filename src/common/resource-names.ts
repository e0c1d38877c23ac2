/**
 * RocketMQ's rules for the names of topics and consumer groups, and for namespaces, which every
 * access point must apply alike: a broker (src/broker/rmq-validate.ts) and a NameServer
 * (src/namesrv/namesrv-messaging.ts) answer QueryRoute for the same clients, so a name one
 * accepts the other must accept too. They live here because the NameServer may import only
 * `common` (docs/architecture.md).
 *
 * Namespaces: a client's effective namespace is the `x-mq-namespace` header when present, else
 * the request's `resource_namespace` (the Node client sets the header on every call but the
 * field only on a few). As in RocketMQ, a namespaced resource is stored under `ns%name`, so
 * topic `orders` of namespace `shop` is the broker topic `shop%orders`; a namespace may not
 * contain `%` or `|`, which makes the mapping reversible. The empty namespace maps a name to
 * itself. The limit of 127 characters is on the stored name, namespace included.
 */
import { RaftmqError } from './errors';
import { quoteClipped } from './text';

/** RocketMQ's character rule for topic and group names. */
export const RESOURCE_NAME_PATTERN = /^[%|a-zA-Z0-9_-]+$/;
/** Longest topic or group name, namespace prefix included (RocketMQ's topic limit). */
export const RESOURCE_NAME_LENGTH_MAX = 127;
/** A namespace: like a name, without the separators `%` and `|`. */
export const NAMESPACE_PATTERN = /^[a-zA-Z0-9_-]+$/;
/** Separates a namespace from the name it qualifies (`ns%topic`). */
export const NAMESPACE_SEPARATOR = '%';

/** Prefixes of topics the broker creates for itself; producers and admins may not use them. */
export const RESERVED_TOPIC_PREFIXES: readonly string[] = ['%RETRY%', '%DLQ%', 'rmq_sys_'];
/** RocketMQ's own system topics, refused as producer and admin topics for the same reason. */
export const RESERVED_TOPIC_NAMES: ReadonlySet<string> = new Set([
  'TBW102',
  'SCHEDULE_TOPIC_XXXX',
  'RMQ_SYS_TRANS_HALF_TOPIC',
  'RMQ_SYS_TRANS_OP_HALF_TOPIC',
  'RMQ_SYS_TRACE_TOPIC',
  'TRANS_CHECK_MAX_TIME_TOPIC',
  'SELF_TEST_TOPIC',
  'OFFSET_MOVED_EVENT',
]);

/**
 * True for names producers may not write to and that are never created on first use (system
 * prefixes and RocketMQ system topics). Check both the client's name and the stored one.
 */
export function isReservedTopic(name: string): boolean {
  return RESERVED_TOPIC_PREFIXES.some((p) => name.startsWith(p)) || RESERVED_TOPIC_NAMES.has(name);
}

/**
 * The effective namespace: the `x-mq-namespace` header value when non-empty, else the
 * resource's `resource_namespace`. Throws INVALID_ARGUMENT (RocketMQ BAD_REQUEST) for a
 * malformed namespace. Its length is checked with the name it qualifies
 * ({@link checkResourceName}).
 */
export function effectiveNamespace(header: string | undefined, resourceNamespace = ''): string {
  const ns = header !== undefined && header !== '' ? header : resourceNamespace;
  if (ns !== '' && !NAMESPACE_PATTERN.test(ns)) {
    throw new RaftmqError(
      'INVALID_ARGUMENT',
      `namespace ${quoteClipped(ns)} (x-mq-namespace or resource_namespace) has characters ` +
        'outside [a-zA-Z0-9_-]',
      { details: { field: 'x-mq-namespace' } },
    );
  }
  return ns;
}

/**
 * The stored name of `name` in namespace `ns`: `ns%name`, or `name` when `ns` is empty or
 * `name` already starts with `ns%` (RocketMQ's `NamespaceUtil.wrapNamespace`).
 */
export function wrapNamespace(ns: string, name: string): string {
  if (ns === '') return name;
  const prefix = `${ns}${NAMESPACE_SEPARATOR}`;
  return name.startsWith(prefix) ? name : `${prefix}${name}`;
}

/** The client's name of stored resource `stored` in namespace `ns` (inverse of wrap). */
export function unwrapNamespace(ns: string, stored: string): string {
  const prefix = `${ns}${NAMESPACE_SEPARATOR}`;
  return ns !== '' && stored.startsWith(prefix) ? stored.slice(prefix.length) : stored;
}

/**
 * Checks a topic or group name a client gave in namespace `ns` (already checked by
 * {@link effectiveNamespace}): non-empty, RocketMQ's characters, at most
 * {@link RESOURCE_NAME_LENGTH_MAX} characters once stored with its namespace. Throws `code`
 * naming `field`; `what` says what the name is in the message.
 */
export function checkResourceName(
  name: string,
  ns: string,
  field: string,
  code: 'ILLEGAL_TOPIC' | 'ILLEGAL_CONSUMER_GROUP',
  what: string,
): void {
  const fail = (why: string): never => {
    throw new RaftmqError(code, `${field}: ${what} ${why}`, { details: { field } });
  };
  if (name === '') fail('name is empty');
  if (!RESOURCE_NAME_PATTERN.test(name)) {
    fail(`name ${quoteClipped(name)} has characters outside [%|a-zA-Z0-9_-]`);
  }
  const length = wrapNamespace(ns, name).length;
  if (length > RESOURCE_NAME_LENGTH_MAX) {
    fail(`name is ${length} characters with its namespace; at most ${RESOURCE_NAME_LENGTH_MAX}`);
  }
}
