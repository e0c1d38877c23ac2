/**
 * The rules a client's names and message fields must follow, as the RocketMQ 5 protocol layer
 * checks them before anything reaches the broker. Each check throws the RaftmqError whose
 * RocketMQ `Code` the official clients understand (ILLEGAL_TOPIC, ILLEGAL_MESSAGE_TAG...), with
 * a message naming the field. The limits are the store's (MESSAGE_LIMITS), so what passes here
 * can be stored.
 *
 * Names and namespaces follow common/resource-names.ts, which the NameServer applies too (see
 * there for the namespace rules): a name one access point accepts, the other must accept.
 */
import { RaftmqError } from '../common/errors';
import * as names from '../common/resource-names';
import { NO_PROPERTIES } from '../store/message-decode';
import { MESSAGE_LIMITS, USER_PROPERTY_LIMITS } from '../store/message-limits';

// The broker's services take the shared name rules from here with the other checks. Plain
// constants, not `export { } from` re-exports, which would turn this module's exports object
// into a slow dictionary (test/common/module-shape.test.ts).
/** See common/resource-names.ts. */
export const RESOURCE_NAME_LENGTH_MAX = names.RESOURCE_NAME_LENGTH_MAX;
/** See common/resource-names.ts. */
export const effectiveNamespace = names.effectiveNamespace;
/** See common/resource-names.ts. */
export const wrapNamespace = names.wrapNamespace;
/** See common/resource-names.ts. */
export const unwrapNamespace = names.unwrapNamespace;
/** See common/resource-names.ts. */
export const isReservedTopic = names.isReservedTopic;

/**
 * User property keys RocketMQ uses for its own message properties (`MessageConst`); a producer
 * may not set them, so a message keeps one meaning if it ever travels to a RocketMQ broker.
 */
export const RESERVED_PROPERTY_KEYS: ReadonlySet<string> = new Set([
  'KEYS',
  'TAGS',
  'WAIT',
  'DELAY',
  'RETRY_TOPIC',
  'REAL_TOPIC',
  'REAL_QID',
  'TRAN_MSG',
  'PGROUP',
  'MIN_OFFSET',
  'MAX_OFFSET',
  'BUYER_ID',
  'ORIGIN_MESSAGE_ID',
  'TRANSFER_FLAG',
  'CORRECTION_FLAG',
  'MQ2_FLAG',
  'RECONSUME_TIME',
  'MSG_REGION',
  'TRACE_ON',
  'UNIQ_KEY',
  'MAX_RECONSUME_TIMES',
  'CONSUME_START_TIME',
  '__STARTDELIVERTIME',
  'TIMER_DELIVER_MS',
  'TIMER_DELAY_SEC',
  'TIMER_DELAY_MS',
  'SHARDING_KEY',
  '__SHARDINGKEY',
  'CLUSTER',
]);

const BLANK = /^\s*$/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** UTF-8 size of `s`. */
export function utf8Bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);
}

/**
 * Checks a topic name given by a client and returns the broker's name for it. `field` names
 * the request field in errors. Throws ILLEGAL_TOPIC for an empty, too long or malformed name,
 * and, unless `allowReserved`, for a reserved one.
 */
export function checkTopic(name: string, ns: string, field: string, allowReserved = false): string {
  const last = lastTopicChecked;
  if (
    name === last.name &&
    ns === last.ns &&
    field === last.field &&
    allowReserved === last.allowReserved
  ) {
    return last.stored;
  }
  names.checkResourceName(name, ns, field, 'ILLEGAL_TOPIC', 'topic');
  const stored = wrapNamespace(ns, name);
  if (!allowReserved && (isReservedTopic(name) || isReservedTopic(stored))) {
    throw new RaftmqError('ILLEGAL_TOPIC', `${field}: topic ${quote(name)} is reserved`, {
      details: { field },
    });
  }
  lastTopicChecked = { name, ns, field, allowReserved, stored };
  return stored;
}

/**
 * The last topic {@link checkTopic} accepted, and its answer: every message of a send names its
 * topic again (a batch of 128 usually names one), and checking it each time was about 1% of the
 * leader's CPU in batched produce. The check depends on nothing but its arguments.
 */
let lastTopicChecked = { name: '', ns: '', field: '', allowReserved: false, stored: '' };

/** Checks a consumer group name; returns the broker's name for it (ILLEGAL_CONSUMER_GROUP). */
export function checkGroup(name: string, ns: string, field: string): string {
  names.checkResourceName(name, ns, field, 'ILLEGAL_CONSUMER_GROUP', 'consumer group');
  return wrapNamespace(ns, name);
}

/**
 * Checks a short client string (tag, key, message group, property key): non-blank, without
 * control characters, well-formed, at most `sizeBytesMax` UTF-8 bytes.
 */
function checkToken(
  value: string,
  sizeBytesMax: number,
  code:
    | 'ILLEGAL_MESSAGE_TAG'
    | 'ILLEGAL_MESSAGE_KEY'
    | 'ILLEGAL_MESSAGE_GROUP'
    | 'ILLEGAL_MESSAGE_PROPERTY_KEY',
  field: string,
): void {
  const fail = (why: string): never => {
    throw new RaftmqError(code, `${field} ${why}`, { details: { field } });
  };
  if (BLANK.test(value)) fail('is empty or blank');
  if (CONTROL_CHARACTER.test(value)) fail(`${quote(value)} contains a control character`);
  if (LONE_SURROGATE.test(value)) fail('is not well-formed UTF-16');
  const size = utf8Bytes(value);
  if (size > sizeBytesMax) fail(`is ${size} bytes; at most ${sizeBytesMax}`);
}

/** A tag: non-blank, no `|` (RocketMQ's tag separator), at most 255 bytes. */
export function checkTag(tag: string): void {
  checkToken(tag, MESSAGE_LIMITS.tagSizeBytesMax, 'ILLEGAL_MESSAGE_TAG', 'system_properties.tag');
  if (tag.includes('|')) {
    throw new RaftmqError(
      'ILLEGAL_MESSAGE_TAG',
      `system_properties.tag ${quote(tag)} contains the character |`,
      { details: { field: 'system_properties.tag' } },
    );
  }
}

/** Keys: at most 128, each non-blank and at most 1024 bytes. */
export function checkKeys(keys: readonly string[]): void {
  if (keys.length > MESSAGE_LIMITS.keyCountMax) {
    throw new RaftmqError(
      'ILLEGAL_MESSAGE_KEY',
      `system_properties.keys has ${keys.length} keys; at most ${MESSAGE_LIMITS.keyCountMax}`,
      { details: { field: 'system_properties.keys' } },
    );
  }
  keys.forEach((key, i) =>
    checkToken(
      key,
      MESSAGE_LIMITS.keySizeBytesMax,
      'ILLEGAL_MESSAGE_KEY',
      `system_properties.keys[${i}]`,
    ),
  );
}

/** A FIFO message group: non-blank, at most 64 bytes. */
export function checkMessageGroup(group: string): void {
  checkToken(
    group,
    MESSAGE_LIMITS.messageGroupSizeBytesMax,
    'ILLEGAL_MESSAGE_GROUP',
    'system_properties.message_group',
  );
}

/** A message id: non-blank, printable, at most 128 bytes. */
export function checkMessageId(id: string): void {
  if (isPlainAsciiId(id)) return;
  const field = 'system_properties.message_id';
  const fail = (why: string): never => {
    throw new RaftmqError('ILLEGAL_MESSAGE_ID', `${field} ${why}`, { details: { field } });
  };
  if (BLANK.test(id)) fail('is missing or blank');
  if (CONTROL_CHARACTER.test(id) || LONE_SURROGATE.test(id)) fail('has invalid characters');
  const size = utf8Bytes(id);
  if (size > MESSAGE_LIMITS.messageIdSizeBytesMax) {
    fail(`is ${size} bytes; at most ${MESSAGE_LIMITS.messageIdSizeBytesMax}`);
  }
}

/**
 * True for an id every check of {@link checkMessageId} passes on sight: 1 to
 * `messageIdSizeBytesMax` characters, each printable ASCII other than a space (as every client's
 * ids are), so one byte each. Anything else goes through the full checks.
 */
function isPlainAsciiId(id: string): boolean {
  const n = id.length;
  if (n === 0 || n > MESSAGE_LIMITS.messageIdSizeBytesMax) return false;
  for (let i = 0; i < n; i++) {
    const c = id.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

/**
 * User properties: keys non-blank, printable, not reserved; values well-formed; at most 128
 * properties and 16 KiB of keys plus values (UTF-8). Returns them as a Map in wire order; a
 * message without any shares one map, read-only in fact as well as by type (NO_PROPERTIES).
 */
export function checkUserProperties(
  props: Readonly<Record<string, string>>,
): ReadonlyMap<string, string> {
  const names = Object.keys(props);
  if (names.length === 0) return NO_PROPERTIES;
  const out = new Map<string, string>();
  let sizeBytes = 0;
  for (const key of names) {
    const value = props[key] ?? '';
    const field = `user_properties[${quote(key)}]`;
    checkToken(key, USER_PROPERTY_LIMITS.sizeBytesMax, 'ILLEGAL_MESSAGE_PROPERTY_KEY', field);
    if (RESERVED_PROPERTY_KEYS.has(key)) {
      throw new RaftmqError(
        'ILLEGAL_MESSAGE_PROPERTY_KEY',
        `${field}: the key is reserved for RocketMQ system properties`,
        { details: { field: 'user_properties' } },
      );
    }
    if (LONE_SURROGATE.test(value)) {
      throw new RaftmqError('INVALID_ARGUMENT', `${field}: the value is not well-formed UTF-16`, {
        details: { field: 'user_properties' },
      });
    }
    sizeBytes += utf8Bytes(key) + utf8Bytes(value);
    out.set(key, value);
  }
  if (out.size > USER_PROPERTY_LIMITS.countMax || sizeBytes > USER_PROPERTY_LIMITS.sizeBytesMax) {
    throw new RaftmqError(
      'MESSAGE_PROPERTIES_TOO_LARGE',
      `user_properties has ${out.size} properties of ${sizeBytes} bytes; at most ` +
        `${USER_PROPERTY_LIMITS.countMax} properties and ${USER_PROPERTY_LIMITS.sizeBytesMax} bytes`,
      { details: { field: 'user_properties' } },
    );
  }
  return out;
}

/** A body: non-empty and at most `maxBodyBytes`. */
export function checkBody(body: Uint8Array, maxBodyBytes: number): void {
  if (body.length === 0) {
    throw new RaftmqError('MESSAGE_BODY_EMPTY', 'body is empty', { details: { field: 'body' } });
  }
  if (body.length > maxBodyBytes) {
    throw new RaftmqError(
      'MESSAGE_BODY_TOO_LARGE',
      `body is ${body.length} bytes; at most ${maxBodyBytes}`,
      { details: { field: 'body', sizeBytes: body.length, sizeBytesMax: maxBodyBytes } },
    );
  }
}

/** A delay message's delivery time: not negative and at most `maxDelayMs` after `nowMs`. */
export function checkDeliveryTime(deliveryMs: number, nowMs: number, maxDelayMs: number): void {
  const field = 'system_properties.delivery_timestamp';
  if (!Number.isSafeInteger(deliveryMs) || deliveryMs < 0) {
    throw new RaftmqError('ILLEGAL_DELIVERY_TIME', `${field} is before 1970`, {
      details: { field },
    });
  }
  if (deliveryMs - nowMs > maxDelayMs) {
    throw new RaftmqError(
      'ILLEGAL_DELIVERY_TIME',
      `${field} is ${deliveryMs - nowMs} ms ahead; at most ${maxDelayMs} ms`,
      { details: { field } },
    );
  }
}

/** A string field of bounded size that is not a token (host, trace context). */
export function checkFreeText(value: string, sizeBytesMax: number, field: string): void {
  const size = utf8Bytes(value);
  if (size > sizeBytesMax || LONE_SURROGATE.test(value) || value.includes('\0')) {
    throw new RaftmqError(
      'INVALID_ARGUMENT',
      `${field} is malformed or longer than ${sizeBytesMax} bytes`,
      { details: { field } },
    );
  }
}
