/**
 * Every expected failure in raftmq is a {@link RaftmqError} with a stable `code`. The codes live
 * in one table, each with its gRPC status, its RocketMQ v2 `Code` (what the official clients act
 * on) and whether a caller may retry. `docs/errors.md` lists every code; a test keeps the two in
 * step.
 */

/** gRPC status codes (numbers from the gRPC spec), kept here so `common` needs no grpc import. */
export const GrpcStatus = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
} as const);

/** RocketMQ v2 `apache.rocketmq.v2.Code` values used by raftmq (see the contract, section 8). */
export const RmqCode = Object.freeze({
  OK: 20000,
  BAD_REQUEST: 40000,
  ILLEGAL_TOPIC: 40002,
  ILLEGAL_CONSUMER_GROUP: 40003,
  ILLEGAL_MESSAGE_TAG: 40004,
  ILLEGAL_MESSAGE_KEY: 40005,
  ILLEGAL_MESSAGE_GROUP: 40006,
  ILLEGAL_MESSAGE_PROPERTY_KEY: 40007,
  ILLEGAL_MESSAGE_ID: 40009,
  ILLEGAL_FILTER_EXPRESSION: 40010,
  ILLEGAL_INVISIBLE_TIME: 40011,
  ILLEGAL_DELIVERY_TIME: 40012,
  INVALID_RECEIPT_HANDLE: 40013,
  MESSAGE_PROPERTY_CONFLICT_WITH_TYPE: 40014,
  UNRECOGNIZED_CLIENT_TYPE: 40015,
  MESSAGE_CORRUPTED: 40016,
  CLIENT_ID_REQUIRED: 40017,
  ILLEGAL_OFFSET: 40019,
  FORBIDDEN: 40300,
  NOT_FOUND: 40400,
  MESSAGE_NOT_FOUND: 40401,
  TOPIC_NOT_FOUND: 40402,
  CONSUMER_GROUP_NOT_FOUND: 40403,
  PAYLOAD_TOO_LARGE: 41300,
  MESSAGE_BODY_TOO_LARGE: 41301,
  MESSAGE_BODY_EMPTY: 41302,
  TOO_MANY_REQUESTS: 42900,
  MESSAGE_PROPERTIES_TOO_LARGE: 43101,
  INTERNAL_ERROR: 50000,
  INTERNAL_SERVER_ERROR: 50001,
  HA_NOT_AVAILABLE: 50002,
  PROXY_TIMEOUT: 50400,
  MASTER_PERSISTENCE_TIMEOUT: 50401,
  UNSUPPORTED: 50500,
} as const);

export interface ErrorCodeInfo {
  /** gRPC status used when the error ends an RPC that has no RocketMQ `Status` field. */
  readonly grpc: number;
  /** RocketMQ v2 `Code` put in a response's `Status`. */
  readonly rmq: number;
  /** True when the same request may succeed if sent again (possibly elsewhere). */
  readonly retryable: boolean;
  /** True when the component that raised it refuses all further work. */
  readonly fatal: boolean;
  /** One line for the docs. */
  readonly summary: string;
}

function code(grpc: number, rmq: number, retryable: boolean, summary: string, fatal = false) {
  return Object.freeze({ grpc, rmq, retryable, fatal, summary });
}

/** The registry of every error code. Add new codes here and to `docs/errors.md`. */
export const ERROR_CODES = Object.freeze({
  INVALID_ARGUMENT: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.BAD_REQUEST, false,
    'A request or option is malformed or out of range; the message names the field.'),
  INVALID_OPTION: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.BAD_REQUEST, false,
    'A configuration option is unknown or out of range; the message names the option.'),
  RECORD_TOO_LARGE: code(GrpcStatus.RESOURCE_EXHAUSTED, RmqCode.PAYLOAD_TOO_LARGE, false,
    'A record is larger than the store accepts; nothing was written.'),
  MESSAGE_MALFORMED: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.BAD_REQUEST, false,
    'A message could not be encoded or decoded: a field is missing, too long or of a wrong type.'),
  CORRUPT_RECORD: code(GrpcStatus.DATA_LOSS, RmqCode.MESSAGE_CORRUPTED, false,
    'A stored record failed its checks (magic, length, CRC32C, index); names file and position.'),
  CORRUPT_LOG: code(GrpcStatus.DATA_LOSS, RmqCode.INTERNAL_ERROR, false,
    'Recovery found corruption before the tail of the log; the node will not start unless told '
    + 'to truncate there.', true),
  OUT_OF_RANGE: code(GrpcStatus.OUT_OF_RANGE, RmqCode.ILLEGAL_OFFSET, false,
    'A log index or queue offset is outside what the store holds.'),
  STORE_FATAL: code(GrpcStatus.INTERNAL, RmqCode.INTERNAL_ERROR, false,
    'A write or fsync failed; the store refuses all further work and reports nothing durable '
    + 'that is not.', true),
  DISK_FULL: code(GrpcStatus.RESOURCE_EXHAUSTED, RmqCode.INTERNAL_ERROR, false,
    'The disk is full; the store stopped before acknowledging anything it could not write.', true),
  STORE_CLOSED: code(GrpcStatus.UNAVAILABLE, RmqCode.INTERNAL_ERROR, true,
    'The store was closed while the request was pending.'),
  META_CORRUPT: code(GrpcStatus.DATA_LOSS, RmqCode.INTERNAL_ERROR, false,
    'A metadata value failed to decode; names the key.', true),
  BUSY: code(GrpcStatus.RESOURCE_EXHAUSTED, RmqCode.TOO_MANY_REQUESTS, true,
    'A bounded queue or window is full; retry after a short backoff.'),
  TIMEOUT: code(GrpcStatus.DEADLINE_EXCEEDED, RmqCode.PROXY_TIMEOUT, true,
    'The operation did not finish before its deadline; it may or may not have taken effect.'),
  NOT_LEADER: code(GrpcStatus.UNAVAILABLE, RmqCode.HA_NOT_AVAILABLE, true,
    'This node is not the leader of its group; the error names the leader when known.'),
  INTERNAL: code(GrpcStatus.INTERNAL, RmqCode.INTERNAL_SERVER_ERROR, false,
    'An unexpected failure; the logs have the cause.'),
  TOPIC_NOT_FOUND: code(GrpcStatus.NOT_FOUND, RmqCode.TOPIC_NOT_FOUND, false,
    'The topic does not exist and auto-creation is off (or the name is reserved).'),
  TOPIC_EXISTS: code(GrpcStatus.ALREADY_EXISTS, RmqCode.BAD_REQUEST, false,
    'A topic of that name already exists.'),
  GROUP_NOT_FOUND: code(GrpcStatus.NOT_FOUND, RmqCode.CONSUMER_GROUP_NOT_FOUND, false,
    'The consumer group does not exist and auto-creation is off.'),
  ILLEGAL_TOPIC: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_TOPIC, false,
    'A topic name is empty, too long or has characters outside [A-Za-z0-9%_-|].'),
  ILLEGAL_CONSUMER_GROUP: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_CONSUMER_GROUP, false,
    'A consumer group name is empty, too long or has characters outside [A-Za-z0-9%_-|].'),
  ILLEGAL_MESSAGE_TAG: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_MESSAGE_TAG, false,
    'A tag is empty, blank, too long or contains the character |.'),
  ILLEGAL_MESSAGE_KEY: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_MESSAGE_KEY, false,
    'A message key is empty, blank or too long, or there are too many keys.'),
  ILLEGAL_MESSAGE_GROUP: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_MESSAGE_GROUP, false,
    'A FIFO message group is empty, blank or too long.'),
  ILLEGAL_MESSAGE_PROPERTY_KEY: code(GrpcStatus.INVALID_ARGUMENT,
    RmqCode.ILLEGAL_MESSAGE_PROPERTY_KEY, false,
    'A user property key is empty, reserved or malformed.'),
  ILLEGAL_MESSAGE_ID: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_MESSAGE_ID, false,
    'A message id is missing or too long.'),
  ILLEGAL_DELIVERY_TIME: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_DELIVERY_TIME, false,
    'A delay message has no delivery time, or one too far in the future.'),
  ILLEGAL_FILTER_EXPRESSION: code(GrpcStatus.INVALID_ARGUMENT,
    RmqCode.ILLEGAL_FILTER_EXPRESSION, false,
    'A subscription filter expression cannot be parsed or its type is not supported.'),
  ILLEGAL_INVISIBLE_TIME: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.ILLEGAL_INVISIBLE_TIME, false,
    'An invisible duration is negative or longer than the broker allows.'),
  MESSAGE_TYPE_MISMATCH: code(GrpcStatus.INVALID_ARGUMENT,
    RmqCode.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, false,
    "A message's type is not one its topic accepts, or its properties contradict its type."),
  MESSAGE_BODY_TOO_LARGE: code(GrpcStatus.RESOURCE_EXHAUSTED, RmqCode.MESSAGE_BODY_TOO_LARGE, false,
    'A message body is larger than the broker accepts (4 MiB - 64 KiB by default), or leaves '
    + 'too little of a 4 MiB delivery frame for the fields every message may carry; nothing was '
    + 'written.'),
  MESSAGE_BODY_EMPTY: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.MESSAGE_BODY_EMPTY, false,
    'A message body is empty.'),
  MESSAGE_PROPERTIES_TOO_LARGE: code(GrpcStatus.RESOURCE_EXHAUSTED,
    RmqCode.MESSAGE_PROPERTIES_TOO_LARGE, false,
    "A message's user properties are too many or too large in total, or its keys and "
    + 'properties do not fit the 4 MiB delivery frame beside its body; nothing was written.'),
  CLIENT_ID_REQUIRED: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.CLIENT_ID_REQUIRED, false,
    'A client request has no x-mq-client-id header.'),
  UNRECOGNIZED_CLIENT_TYPE: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.UNRECOGNIZED_CLIENT_TYPE,
    false, 'A client sent settings with a client type the broker does not serve.'),
  INVALID_RECEIPT_HANDLE: code(GrpcStatus.INVALID_ARGUMENT, RmqCode.INVALID_RECEIPT_HANDLE, false,
    'A receipt handle is malformed, forged or stale (the message was settled or redelivered).'),
  PERMISSION_DENIED: code(GrpcStatus.PERMISSION_DENIED, RmqCode.FORBIDDEN, false,
    'The topic or group does not permit this operation (for example a write to a read-only '
    + 'topic), or auto-creating it would pass `topicsMax` or `groupsMax`.'),
  UNSUPPORTED: code(GrpcStatus.UNIMPLEMENTED, RmqCode.UNSUPPORTED, false,
    'The request asks for a feature this broker does not provide (DELAY or TRANSACTION '
    + 'messages, or a topic accepting them).'),
} as const);

export type ErrorCode = keyof typeof ERROR_CODES;

export interface RaftmqErrorOptions {
  cause?: unknown;
  /** Structured context (file, position, field, leader...) for logs and clients. */
  details?: Readonly<Record<string, unknown>>;
}

/** The one error type for expected failures. Check `code`, never the message text. */
export class RaftmqError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly fatal: boolean;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(errorCode: ErrorCode, message: string, options: RaftmqErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const info = ERROR_CODES[errorCode];
    this.name = 'RaftmqError';
    this.code = errorCode;
    this.retryable = info.retryable;
    this.fatal = info.fatal;
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }

  get grpcStatus(): number {
    return ERROR_CODES[this.code].grpc;
  }

  get rmqCode(): number {
    return ERROR_CODES[this.code].rmq;
  }
}

/** True when `err` is a RaftmqError, optionally of the given code. */
export function isRaftmqError(err: unknown, errorCode?: ErrorCode): err is RaftmqError {
  return err instanceof RaftmqError && (errorCode === undefined || err.code === errorCode);
}

/** Node's errno-style error, as thrown by `fs`. */
export interface ErrnoError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

export function errnoCode(err: unknown): string | undefined {
  if (err instanceof Error && typeof (err as ErrnoError).code === 'string') {
    return (err as ErrnoError).code;
  }
  return undefined;
}
