/**
 * The shapes of `apache.rocketmq.v2` messages as @grpc/proto-loader hands them to handlers and
 * takes them back (PROTO_LOADER_OPTIONS: camelCase names, 64-bit integers as numbers, enums as
 * their names, defaults filled in, oneofs named). Decoding follows the schema, so scalar
 * fields are always present with their type; a message-typed field is `null` when absent; a
 * proto3 `optional` field is `undefined` when absent. When encoding, an enum may be given by
 * name or number and absent fields are left out.
 *
 * Only the fields the broker reads or writes are typed here; the `.proto` files
 * (proto/apache/rocketmq/v2/) are the full schema.
 */
import { RaftmqError } from '../common/errors';

/** `google.protobuf.Timestamp` / `google.protobuf.Duration`. */
export interface WireSecondsNanos {
  readonly seconds: number;
  readonly nanos: number;
}

export interface WireResource {
  readonly resourceNamespace: string;
  readonly name: string;
}

/** A RocketMQ `Status`; `code` is a `Code` name when decoded, a number when built here. */
export interface WireStatus {
  readonly code: number | string;
  readonly message: string;
}

export interface WireDigest {
  readonly type: string;
  readonly checksum: string;
}

export interface WireSystemProperties {
  readonly tag?: string | undefined;
  readonly keys: readonly string[];
  readonly messageId: string;
  readonly bodyDigest?: WireDigest | null | undefined;
  readonly bodyEncoding: string;
  readonly messageType: string;
  readonly bornTimestamp?: WireSecondsNanos | null | undefined;
  readonly bornHost: string;
  readonly storeTimestamp?: WireSecondsNanos | undefined;
  readonly storeHost: string;
  readonly deliveryTimestamp?: WireSecondsNanos | undefined;
  readonly receiptHandle?: string | undefined;
  readonly queueId: number;
  readonly queueOffset?: number | undefined;
  readonly invisibleDuration?: WireSecondsNanos | undefined;
  readonly deliveryAttempt?: number | undefined;
  readonly messageGroup?: string | undefined;
  readonly traceContext?: string | undefined;
  readonly liteTopic?: string | undefined;
  readonly priority?: number | undefined;
}

export interface WireMessage {
  readonly topic: WireResource | null;
  /** A map field: a plain object (a key `__proto__` is an own property, as protobuf.js has it). */
  readonly userProperties: Readonly<Record<string, string>>;
  readonly systemProperties: WireSystemProperties | null;
  readonly body: Uint8Array;
}

export interface WireAddress {
  readonly host: string;
  readonly port: number;
}

export interface WireEndpoints {
  readonly scheme: string | number;
  readonly addresses: readonly WireAddress[];
}

export interface WireExponentialBackoff {
  readonly initial: WireSecondsNanos;
  readonly max: WireSecondsNanos;
  readonly multiplier: number;
}

export interface WireRetryPolicy {
  readonly maxAttempts: number;
  readonly exponentialBackoff?: WireExponentialBackoff | null;
}

export interface WireFilterExpression {
  readonly type: string;
  readonly expression: string;
}

export interface WireSubscriptionEntry {
  readonly topic: WireResource | null;
  readonly expression: WireFilterExpression | null;
}

export interface WirePublishing {
  readonly topics: readonly WireResource[];
  readonly maxBodySize: number;
  readonly validateMessageType: boolean;
}

export interface WireSubscription {
  readonly group?: WireResource | undefined;
  readonly subscriptions: readonly WireSubscriptionEntry[];
  readonly fifo?: boolean | undefined;
  readonly receiveBatchSize?: number | undefined;
  readonly longPollingTimeout?: WireSecondsNanos | undefined;
  readonly liteSubscriptionQuota?: number | undefined;
  readonly maxLiteTopicSize?: number | undefined;
}

export interface WireUserAgent {
  readonly language: string;
  readonly version: string;
  readonly platform: string;
  readonly hostname: string;
}

export interface WireSettings {
  readonly clientType?: string | undefined;
  readonly accessPoint?: WireEndpoints | undefined;
  readonly backoffPolicy?: WireRetryPolicy | undefined;
  readonly requestTimeout?: WireSecondsNanos | undefined;
  readonly publishing?: WirePublishing | null | undefined;
  readonly subscription?: WireSubscription | null | undefined;
  readonly userAgent?: WireUserAgent | null | undefined;
  readonly metric?: { readonly on: boolean } | null | undefined;
  /** The oneof case proto-loader names: `publishing`, `subscription` or absent. */
  readonly pubSub?: string | undefined;
}

export interface WireMessageQueue {
  readonly topic: WireResource | null;
  readonly id: number;
  readonly permission: string | number;
  readonly broker: unknown;
  readonly acceptMessageTypes: readonly (string | number)[];
}

/** The messages of a TelemetryCommand; `command` names the oneof case set. */
export interface WireTelemetryCommand {
  readonly status?: WireStatus | undefined;
  readonly settings?: WireSettings | null;
  readonly threadStackTrace?: { readonly nonce: string; readonly threadStackTrace?: string };
  readonly verifyMessageResult?: { readonly nonce: string };
  readonly printThreadStackTraceCommand?: { readonly nonce: string };
  readonly verifyMessageCommand?: { readonly nonce: string; readonly message: unknown };
  readonly command?: string | undefined;
}

/** Milliseconds since the epoch of a Timestamp (nanos below a millisecond are dropped). */
export function timestampToMs(t: WireSecondsNanos): number {
  return t.seconds * 1000 + Math.floor(t.nanos / 1_000_000);
}

/** A Timestamp (or Duration) of `ms` milliseconds; `ms` may be negative for timestamps. */
export function msToTimestamp(ms: number): WireSecondsNanos {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1_000_000 };
}

/**
 * Milliseconds of a Duration, rounded up so that 1 ns is not read as "no wait". Throws
 * INVALID_ARGUMENT naming `field` for one protobuf's Duration rules refuse: nanos beyond
 * ±999,999,999, or of the other sign than seconds (`{seconds: 1, nanos: -999999999}` was read
 * as 1 ms).
 */
export function durationToMs(d: WireSecondsNanos, field = 'duration'): number {
  const { seconds, nanos } = d;
  if (
    !Number.isInteger(nanos) ||
    Math.abs(nanos) > 999_999_999 ||
    (seconds > 0 && nanos < 0) ||
    (seconds < 0 && nanos > 0)
  ) {
    throw new RaftmqError(
      'INVALID_ARGUMENT',
      `${field} has nanos ${String(nanos)} out of range for seconds ${String(seconds)}`,
      { details: { field } },
    );
  }
  return seconds * 1000 + Math.ceil(nanos / 1_000_000);
}
