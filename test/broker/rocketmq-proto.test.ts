// The RocketMQ 5 gRPC schema (proto/apache/rocketmq/v2/{definition,service}.proto) against the
// field tables of the contract notes (rocketmq-v2-contract.md §8, rocketmq-apis v2.1.2), which
// are transcribed below. Both files are loaded with @grpc/proto-loader and the compiled schema
// is read back as a google.protobuf.FileDescriptorProto, so what is checked is what protobufjs
// actually built: every message name of the contract exists and no other; for a representative
// set of messages every field's number, type, repeated/map label, oneof membership and proto3
// explicit presence, and no extra fields; every enum's values (Code in full); every RPC's
// request and response types and streaming kind. Then, with the options the broker uses at run
// time (camelCase), a few messages go through encode and decode: known wire bytes, presence of
// optional fields set to their default, oneof cases, maps, bytes and the google.protobuf
// Duration/Timestamp types, and grpc-js accepts the service definition.
//
// Structure checks load with keepCase: true, so field names stay exactly as written in the
// .proto and in the contract tables (snake_case) and can be compared literally; field names
// never reach the wire, so this loses nothing. The run-time checks use the broker's own
// PROTO_LOADER_OPTIONS (keepCase: false), the shape handlers will see.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO_DIR_ENV, PROTO_LOADER_OPTIONS } from '../../src/common/proto-files';

const PKG = 'apache.rocketmq.v2';
const SERVICE_FILE = 'apache/rocketmq/v2/service.proto';
const DEFINITION_FILE = 'apache/rocketmq/v2/definition.proto';

/**
 * The proto include directory (the one holding `apache/`): `$RAFTMQ_PROTO_DIR` when set, else
 * `proto/` in the first directory with a package.json above this file, else above the working
 * directory (a build placed outside the repository, e.g. under /tmp, has no package.json above
 * it; mocha is run from the repository root).
 */
function findRocketmqProtoDir(): string {
  const fromEnv = process.env[PROTO_DIR_ENV] ?? '';
  if (fromEnv !== '') {
    const dir = path.resolve(fromEnv);
    assert.ok(
      fs.existsSync(path.join(dir, SERVICE_FILE)),
      `${PROTO_DIR_ENV}=${dir} has no ${SERVICE_FILE}`,
    );
    return dir;
  }
  for (const start of [__dirname, process.cwd()]) {
    for (let dir = start; ; dir = path.dirname(dir)) {
      const candidate = path.join(dir, 'proto');
      if (
        fs.existsSync(path.join(dir, 'package.json')) &&
        fs.existsSync(path.join(candidate, SERVICE_FILE))
      ) {
        return candidate;
      }
      if (path.dirname(dir) === dir) break;
    }
  }
  return assert.fail(`cannot find proto/${SERVICE_FILE}; set ${PROTO_DIR_ENV}`);
}

// ---------------------------------------------------------------------------------------------
// The contract, transcribed from rocketmq-v2-contract.md §8
// ---------------------------------------------------------------------------------------------

/**
 * One field: number, name, type and label. Label: '' (plain proto3 field), 'repeated',
 * 'optional' (proto3 explicit presence), 'oneof <name>'. A map is given as its type,
 * `map<K, V>`, with label ''.
 */
type FieldRow = readonly [number, string, string, string];

/** Every message named in the §8 tables (definition.proto and service.proto). */
const ALL_MESSAGES: readonly string[] = [
  // definition.proto
  'Resource',
  'Endpoints',
  'Address',
  'Broker',
  'MessageQueue',
  'Assignment',
  'FilterExpression',
  'SubscriptionEntry',
  'Status',
  'Digest',
  'SystemProperties',
  'DeadLetterQueue',
  'Message',
  'Settings',
  'Publishing',
  'Subscription',
  'RetryPolicy',
  'ExponentialBackoff',
  'CustomizedBackoff',
  'UA',
  'Metric',
  'OffsetOption',
  // service.proto
  'QueryRouteRequest',
  'QueryRouteResponse',
  'SendMessageRequest',
  'SendResultEntry',
  'SendMessageResponse',
  'QueryAssignmentRequest',
  'QueryAssignmentResponse',
  'ReceiveMessageRequest',
  'ReceiveMessageResponse',
  'AckMessageEntry',
  'AckMessageRequest',
  'AckMessageResultEntry',
  'AckMessageResponse',
  'ForwardMessageToDeadLetterQueueRequest',
  'ForwardMessageToDeadLetterQueueResponse',
  'HeartbeatRequest',
  'HeartbeatResponse',
  'EndTransactionRequest',
  'EndTransactionResponse',
  'PrintThreadStackTraceCommand',
  'ReconnectEndpointsCommand',
  'ThreadStackTrace',
  'VerifyMessageCommand',
  'VerifyMessageResult',
  'RecoverOrphanedTransactionCommand',
  'NotifyUnsubscribeLiteCommand',
  'TelemetryCommand',
  'NotifyClientTerminationRequest',
  'NotifyClientTerminationResponse',
  'ChangeInvisibleDurationRequest',
  'ChangeInvisibleDurationResponse',
  'PullMessageRequest',
  'PullMessageResponse',
  'UpdateOffsetRequest',
  'UpdateOffsetResponse',
  'GetOffsetRequest',
  'GetOffsetResponse',
  'QueryOffsetRequest',
  'QueryOffsetResponse',
  'RecallMessageRequest',
  'RecallMessageResponse',
  'SyncLiteSubscriptionRequest',
  'SyncLiteSubscriptionResponse',
];

const TS = 'google.protobuf.Timestamp';
const DUR = 'google.protobuf.Duration';

/** Field tables of the messages checked field by field. */
const FIELDS: Readonly<Record<string, readonly FieldRow[]>> = {
  Resource: [
    [1, 'resource_namespace', 'string', ''],
    [2, 'name', 'string', ''],
  ],
  Endpoints: [
    [1, 'scheme', 'AddressScheme', ''],
    [2, 'addresses', 'Address', 'repeated'],
  ],
  Address: [
    [1, 'host', 'string', ''],
    [2, 'port', 'int32', ''],
  ],
  Broker: [
    [1, 'name', 'string', ''],
    [2, 'id', 'int32', ''],
    [3, 'endpoints', 'Endpoints', ''],
  ],
  MessageQueue: [
    [1, 'topic', 'Resource', ''],
    [2, 'id', 'int32', ''],
    [3, 'permission', 'Permission', ''],
    [4, 'broker', 'Broker', ''],
    [5, 'accept_message_types', 'MessageType', 'repeated'],
  ],
  Assignment: [[1, 'message_queue', 'MessageQueue', '']],
  FilterExpression: [
    [1, 'type', 'FilterType', ''],
    [2, 'expression', 'string', ''],
  ],
  Status: [
    [1, 'code', 'Code', ''],
    [2, 'message', 'string', ''],
  ],
  Digest: [
    [1, 'type', 'DigestType', ''],
    [2, 'checksum', 'string', ''],
  ],
  SystemProperties: [
    [1, 'tag', 'string', 'optional'],
    [2, 'keys', 'string', 'repeated'],
    [3, 'message_id', 'string', ''],
    [4, 'body_digest', 'Digest', ''],
    [5, 'body_encoding', 'Encoding', ''],
    [6, 'message_type', 'MessageType', ''],
    [7, 'born_timestamp', TS, ''],
    [8, 'born_host', 'string', ''],
    [9, 'store_timestamp', TS, 'optional'],
    [10, 'store_host', 'string', ''],
    [11, 'delivery_timestamp', TS, 'optional'],
    [12, 'receipt_handle', 'string', 'optional'],
    [13, 'queue_id', 'int32', ''],
    [14, 'queue_offset', 'int64', 'optional'],
    [15, 'invisible_duration', DUR, 'optional'],
    [16, 'delivery_attempt', 'int32', 'optional'],
    [17, 'message_group', 'string', 'optional'],
    [18, 'trace_context', 'string', 'optional'],
    [19, 'orphaned_transaction_recovery_duration', DUR, 'optional'],
    [20, 'dead_letter_queue', 'DeadLetterQueue', 'optional'],
    [21, 'lite_topic', 'string', 'optional'],
    [22, 'priority', 'int32', 'optional'],
  ],
  DeadLetterQueue: [
    [1, 'topic', 'string', ''],
    [2, 'message_id', 'string', ''],
  ],
  Message: [
    [1, 'topic', 'Resource', ''],
    [2, 'user_properties', 'map<string, string>', ''],
    [3, 'system_properties', 'SystemProperties', ''],
    [4, 'body', 'bytes', ''],
  ],
  Settings: [
    [1, 'client_type', 'ClientType', 'optional'],
    [2, 'access_point', 'Endpoints', 'optional'],
    [3, 'backoff_policy', 'RetryPolicy', 'optional'],
    [4, 'request_timeout', DUR, 'optional'],
    [5, 'publishing', 'Publishing', 'oneof pub_sub'],
    [6, 'subscription', 'Subscription', 'oneof pub_sub'],
    [7, 'user_agent', 'UA', ''],
    [8, 'metric', 'Metric', ''],
  ],
  Publishing: [
    [1, 'topics', 'Resource', 'repeated'],
    [2, 'max_body_size', 'int32', ''],
    [3, 'validate_message_type', 'bool', ''],
  ],
  Subscription: [
    [1, 'group', 'Resource', 'optional'],
    [2, 'subscriptions', 'SubscriptionEntry', 'repeated'],
    [3, 'fifo', 'bool', 'optional'],
    [4, 'receive_batch_size', 'int32', 'optional'],
    [5, 'long_polling_timeout', DUR, 'optional'],
    [6, 'lite_subscription_quota', 'int32', 'optional'],
    [7, 'max_lite_topic_size', 'int32', 'optional'],
  ],
  RetryPolicy: [
    [1, 'max_attempts', 'int32', ''],
    [2, 'exponential_backoff', 'ExponentialBackoff', 'oneof strategy'],
    [3, 'customized_backoff', 'CustomizedBackoff', 'oneof strategy'],
  ],
  ExponentialBackoff: [
    [1, 'initial', DUR, ''],
    [2, 'max', DUR, ''],
    [3, 'multiplier', 'float', ''],
  ],
  CustomizedBackoff: [[1, 'next', DUR, 'repeated']],
  UA: [
    [1, 'language', 'Language', ''],
    [2, 'version', 'string', ''],
    [3, 'platform', 'string', ''],
    [4, 'hostname', 'string', ''],
  ],
  Metric: [
    [1, 'on', 'bool', ''],
    [2, 'endpoints', 'Endpoints', 'optional'],
  ],
  OffsetOption: [
    [1, 'policy', 'OffsetOption.Policy', 'oneof offset_type'],
    [2, 'offset', 'int64', 'oneof offset_type'],
    [3, 'tail_n', 'int64', 'oneof offset_type'],
    [4, 'timestamp', 'int64', 'oneof offset_type'],
  ],
  QueryRouteRequest: [
    [1, 'topic', 'Resource', ''],
    [2, 'endpoints', 'Endpoints', ''],
  ],
  QueryRouteResponse: [
    [1, 'status', 'Status', ''],
    [2, 'message_queues', 'MessageQueue', 'repeated'],
  ],
  SendMessageRequest: [[1, 'messages', 'Message', 'repeated']],
  SendResultEntry: [
    [1, 'status', 'Status', ''],
    [2, 'message_id', 'string', ''],
    [3, 'transaction_id', 'string', ''],
    [4, 'offset', 'int64', ''],
    [5, 'recall_handle', 'string', ''],
  ],
  SendMessageResponse: [
    [1, 'status', 'Status', ''],
    [2, 'entries', 'SendResultEntry', 'repeated'],
  ],
  QueryAssignmentRequest: [
    [1, 'topic', 'Resource', ''],
    [2, 'group', 'Resource', ''],
    [3, 'endpoints', 'Endpoints', ''],
  ],
  QueryAssignmentResponse: [
    [1, 'status', 'Status', ''],
    [2, 'assignments', 'Assignment', 'repeated'],
  ],
  ReceiveMessageRequest: [
    [1, 'group', 'Resource', ''],
    [2, 'message_queue', 'MessageQueue', ''],
    [3, 'filter_expression', 'FilterExpression', ''],
    [4, 'batch_size', 'int32', ''],
    [5, 'invisible_duration', DUR, 'optional'],
    [6, 'auto_renew', 'bool', ''],
    [7, 'long_polling_timeout', DUR, 'optional'],
    [8, 'attempt_id', 'string', 'optional'],
  ],
  ReceiveMessageResponse: [
    [1, 'status', 'Status', 'oneof content'],
    [2, 'message', 'Message', 'oneof content'],
    [3, 'delivery_timestamp', TS, 'oneof content'],
  ],
  AckMessageEntry: [
    [1, 'message_id', 'string', ''],
    [2, 'receipt_handle', 'string', ''],
    [3, 'lite_topic', 'string', 'optional'],
  ],
  AckMessageRequest: [
    [1, 'group', 'Resource', ''],
    [2, 'topic', 'Resource', ''],
    [3, 'entries', 'AckMessageEntry', 'repeated'],
  ],
  AckMessageResultEntry: [
    [1, 'message_id', 'string', ''],
    [2, 'receipt_handle', 'string', ''],
    [3, 'status', 'Status', ''],
  ],
  AckMessageResponse: [
    [1, 'status', 'Status', ''],
    [2, 'entries', 'AckMessageResultEntry', 'repeated'],
  ],
  HeartbeatRequest: [
    [1, 'group', 'Resource', 'optional'],
    [2, 'client_type', 'ClientType', ''],
  ],
  EndTransactionRequest: [
    [1, 'topic', 'Resource', ''],
    [2, 'message_id', 'string', ''],
    [3, 'transaction_id', 'string', ''],
    [4, 'resolution', 'TransactionResolution', ''],
    [5, 'source', 'TransactionSource', ''],
    [6, 'trace_context', 'string', ''],
  ],
  RecoverOrphanedTransactionCommand: [
    [1, 'message', 'Message', ''],
    [2, 'transaction_id', 'string', ''],
  ],
  TelemetryCommand: [
    [1, 'status', 'Status', 'optional'],
    [2, 'settings', 'Settings', 'oneof command'],
    [3, 'thread_stack_trace', 'ThreadStackTrace', 'oneof command'],
    [4, 'verify_message_result', 'VerifyMessageResult', 'oneof command'],
    [
      5,
      'recover_orphaned_transaction_command',
      'RecoverOrphanedTransactionCommand',
      'oneof command',
    ],
    [6, 'print_thread_stack_trace_command', 'PrintThreadStackTraceCommand', 'oneof command'],
    [7, 'verify_message_command', 'VerifyMessageCommand', 'oneof command'],
    [8, 'reconnect_endpoints_command', 'ReconnectEndpointsCommand', 'oneof command'],
    [9, 'notify_unsubscribe_lite_command', 'NotifyUnsubscribeLiteCommand', 'oneof command'],
  ],
  NotifyClientTerminationRequest: [[1, 'group', 'Resource', 'optional']],
  ChangeInvisibleDurationRequest: [
    [1, 'group', 'Resource', ''],
    [2, 'topic', 'Resource', ''],
    [3, 'receipt_handle', 'string', ''],
    [4, 'invisible_duration', DUR, ''],
    [5, 'message_id', 'string', ''],
    [6, 'lite_topic', 'string', 'optional'],
    [7, 'suspend', 'bool', 'optional'],
  ],
  ChangeInvisibleDurationResponse: [
    [1, 'status', 'Status', ''],
    [2, 'receipt_handle', 'string', ''],
  ],
  ForwardMessageToDeadLetterQueueRequest: [
    [1, 'group', 'Resource', ''],
    [2, 'topic', 'Resource', ''],
    [3, 'receipt_handle', 'string', ''],
    [4, 'message_id', 'string', ''],
    [5, 'delivery_attempt', 'int32', ''],
    [6, 'max_delivery_attempts', 'int32', ''],
    [7, 'lite_topic', 'string', 'optional'],
  ],
  RecallMessageRequest: [
    [1, 'topic', 'Resource', ''],
    [2, 'recall_handle', 'string', ''],
  ],
  RecallMessageResponse: [
    [1, 'status', 'Status', ''],
    [2, 'message_id', 'string', ''],
  ],
  SyncLiteSubscriptionRequest: [
    [1, 'action', 'LiteSubscriptionAction', ''],
    [2, 'topic', 'Resource', ''],
    [3, 'group', 'Resource', ''],
    [4, 'lite_topic_set', 'string', 'repeated'],
    [5, 'version', 'int64', 'optional'],
    [6, 'offset_option', 'OffsetOption', 'optional'],
  ],
  PullMessageResponse: [
    [1, 'status', 'Status', 'oneof content'],
    [2, 'message', 'Message', 'oneof content'],
    [3, 'next_offset', 'int64', 'oneof content'],
  ],
  QueryOffsetRequest: [
    [1, 'message_queue', 'MessageQueue', ''],
    [2, 'query_offset_policy', 'QueryOffsetPolicy', ''],
    [3, 'timestamp', TS, 'optional'],
  ],
};

/** Every enum of §8 with its values in table order. */
const ENUMS: Readonly<Record<string, readonly (readonly [string, number])[]>> = {
  TransactionResolution: [
    ['TRANSACTION_RESOLUTION_UNSPECIFIED', 0],
    ['COMMIT', 1],
    ['ROLLBACK', 2],
  ],
  TransactionSource: [
    ['SOURCE_UNSPECIFIED', 0],
    ['SOURCE_CLIENT', 1],
    ['SOURCE_SERVER_CHECK', 2],
  ],
  Permission: [
    ['PERMISSION_UNSPECIFIED', 0],
    ['NONE', 1],
    ['READ', 2],
    ['WRITE', 3],
    ['READ_WRITE', 4],
  ],
  FilterType: [
    ['FILTER_TYPE_UNSPECIFIED', 0],
    ['TAG', 1],
    ['SQL', 2],
  ],
  AddressScheme: [
    ['ADDRESS_SCHEME_UNSPECIFIED', 0],
    ['IPv4', 1],
    ['IPv6', 2],
    ['DOMAIN_NAME', 3],
  ],
  MessageType: [
    ['MESSAGE_TYPE_UNSPECIFIED', 0],
    ['NORMAL', 1],
    ['FIFO', 2],
    ['DELAY', 3],
    ['TRANSACTION', 4],
    ['LITE', 5],
    ['PRIORITY', 6],
  ],
  DigestType: [
    ['DIGEST_TYPE_UNSPECIFIED', 0],
    ['CRC32', 1],
    ['MD5', 2],
    ['SHA1', 3],
  ],
  ClientType: [
    ['CLIENT_TYPE_UNSPECIFIED', 0],
    ['PRODUCER', 1],
    ['PUSH_CONSUMER', 2],
    ['SIMPLE_CONSUMER', 3],
    ['PULL_CONSUMER', 4],
    ['LITE_PUSH_CONSUMER', 5],
    ['LITE_SIMPLE_CONSUMER', 6],
  ],
  Encoding: [
    ['ENCODING_UNSPECIFIED', 0],
    ['IDENTITY', 1],
    ['GZIP', 2],
  ],
  Language: [
    ['LANGUAGE_UNSPECIFIED', 0],
    ['JAVA', 1],
    ['CPP', 2],
    ['DOT_NET', 3],
    ['GOLANG', 4],
    ['RUST', 5],
    ['PYTHON', 6],
    ['PHP', 7],
    ['NODE_JS', 8],
    ['RUBY', 9],
    ['OBJECTIVE_C', 10],
    ['DART', 11],
    ['KOTLIN', 12],
  ],
  LiteSubscriptionAction: [
    ['PARTIAL_ADD', 0],
    ['PARTIAL_REMOVE', 1],
    ['COMPLETE_ADD', 2],
    ['COMPLETE_REMOVE', 3],
  ],
  QueryOffsetPolicy: [
    ['BEGINNING', 0],
    ['END', 1],
    ['TIMESTAMP', 2],
  ],
  'OffsetOption.Policy': [
    ['LAST', 0],
    ['MIN', 1],
    ['MAX', 2],
  ],
  Code: [
    ['CODE_UNSPECIFIED', 0],
    ['OK', 20000],
    ['MULTIPLE_RESULTS', 30000],
    ['BAD_REQUEST', 40000],
    ['ILLEGAL_ACCESS_POINT', 40001],
    ['ILLEGAL_TOPIC', 40002],
    ['ILLEGAL_CONSUMER_GROUP', 40003],
    ['ILLEGAL_MESSAGE_TAG', 40004],
    ['ILLEGAL_MESSAGE_KEY', 40005],
    ['ILLEGAL_MESSAGE_GROUP', 40006],
    ['ILLEGAL_MESSAGE_PROPERTY_KEY', 40007],
    ['INVALID_TRANSACTION_ID', 40008],
    ['ILLEGAL_MESSAGE_ID', 40009],
    ['ILLEGAL_FILTER_EXPRESSION', 40010],
    ['ILLEGAL_INVISIBLE_TIME', 40011],
    ['ILLEGAL_DELIVERY_TIME', 40012],
    ['INVALID_RECEIPT_HANDLE', 40013],
    ['MESSAGE_PROPERTY_CONFLICT_WITH_TYPE', 40014],
    ['UNRECOGNIZED_CLIENT_TYPE', 40015],
    ['MESSAGE_CORRUPTED', 40016],
    ['CLIENT_ID_REQUIRED', 40017],
    ['ILLEGAL_POLLING_TIME', 40018],
    ['ILLEGAL_OFFSET', 40019],
    ['ILLEGAL_LITE_TOPIC', 40020],
    ['UNAUTHORIZED', 40100],
    ['PAYMENT_REQUIRED', 40200],
    ['FORBIDDEN', 40300],
    ['NOT_FOUND', 40400],
    ['MESSAGE_NOT_FOUND', 40401],
    ['TOPIC_NOT_FOUND', 40402],
    ['CONSUMER_GROUP_NOT_FOUND', 40403],
    ['OFFSET_NOT_FOUND', 40404],
    ['REQUEST_TIMEOUT', 40800],
    ['PAYLOAD_TOO_LARGE', 41300],
    ['MESSAGE_BODY_TOO_LARGE', 41301],
    ['MESSAGE_BODY_EMPTY', 41302],
    ['PRECONDITION_FAILED', 42800],
    ['TOO_MANY_REQUESTS', 42900],
    ['LITE_TOPIC_QUOTA_EXCEEDED', 42901],
    ['LITE_SUBSCRIPTION_QUOTA_EXCEEDED', 42902],
    ['REQUEST_HEADER_FIELDS_TOO_LARGE', 43100],
    ['MESSAGE_PROPERTIES_TOO_LARGE', 43101],
    ['INTERNAL_ERROR', 50000],
    ['INTERNAL_SERVER_ERROR', 50001],
    ['HA_NOT_AVAILABLE', 50002],
    ['NOT_IMPLEMENTED', 50100],
    ['PROXY_TIMEOUT', 50400],
    ['MASTER_PERSISTENCE_TIMEOUT', 50401],
    ['SLAVE_PERSISTENCE_TIMEOUT', 50402],
    ['UNSUPPORTED', 50500],
    ['VERSION_UNSUPPORTED', 50501],
    ['VERIFY_FIFO_MESSAGE_UNSUPPORTED', 50502],
    ['FAILED_TO_CONSUME_MESSAGE', 60000],
  ],
};

type RpcKind = 'unary' | 'server stream' | 'bidi';

/** MessagingService: RPC name, request type, response type, kind (§8 service table). */
const RPCS: readonly (readonly [string, string, string, RpcKind])[] = [
  ['QueryRoute', 'QueryRouteRequest', 'QueryRouteResponse', 'unary'],
  ['Heartbeat', 'HeartbeatRequest', 'HeartbeatResponse', 'unary'],
  ['SendMessage', 'SendMessageRequest', 'SendMessageResponse', 'unary'],
  ['QueryAssignment', 'QueryAssignmentRequest', 'QueryAssignmentResponse', 'unary'],
  ['ReceiveMessage', 'ReceiveMessageRequest', 'ReceiveMessageResponse', 'server stream'],
  ['AckMessage', 'AckMessageRequest', 'AckMessageResponse', 'unary'],
  [
    'ForwardMessageToDeadLetterQueue',
    'ForwardMessageToDeadLetterQueueRequest',
    'ForwardMessageToDeadLetterQueueResponse',
    'unary',
  ],
  ['PullMessage', 'PullMessageRequest', 'PullMessageResponse', 'server stream'],
  ['UpdateOffset', 'UpdateOffsetRequest', 'UpdateOffsetResponse', 'unary'],
  ['GetOffset', 'GetOffsetRequest', 'GetOffsetResponse', 'unary'],
  ['QueryOffset', 'QueryOffsetRequest', 'QueryOffsetResponse', 'unary'],
  ['EndTransaction', 'EndTransactionRequest', 'EndTransactionResponse', 'unary'],
  ['Telemetry', 'TelemetryCommand', 'TelemetryCommand', 'bidi'],
  [
    'NotifyClientTermination',
    'NotifyClientTerminationRequest',
    'NotifyClientTerminationResponse',
    'unary',
  ],
  [
    'ChangeInvisibleDuration',
    'ChangeInvisibleDurationRequest',
    'ChangeInvisibleDurationResponse',
    'unary',
  ],
  ['RecallMessage', 'RecallMessageRequest', 'RecallMessageResponse', 'unary'],
  ['SyncLiteSubscription', 'SyncLiteSubscriptionRequest', 'SyncLiteSubscriptionResponse', 'unary'],
];

// ---------------------------------------------------------------------------------------------
// Reading the compiled schema back as descriptors
// ---------------------------------------------------------------------------------------------

/** The parts of google.protobuf descriptors used here (decoded with defaults: false). */
interface FieldDescriptor {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName?: string;
  oneofIndex?: number;
}
interface MessageDescriptor {
  name: string;
  field?: FieldDescriptor[];
  nestedType?: MessageDescriptor[];
  enumType?: EnumDescriptor[];
  oneofDecl?: { name: string }[];
  options?: { mapEntry?: boolean };
}
interface EnumDescriptor {
  name: string;
  value?: { name: string; number: number }[];
}
interface MethodDescriptor {
  name: string;
  inputType: string;
  outputType: string;
  clientStreaming?: boolean;
  serverStreaming?: boolean;
}
interface FileDescriptor {
  package?: string;
  messageType?: MessageDescriptor[];
  enumType?: EnumDescriptor[];
  service?: { name: string; method?: MethodDescriptor[] }[];
}

/** The descriptor for scalar types as the contract tables spell them. */
const SCALAR_TYPES: Readonly<Record<string, string>> = {
  string: 'TYPE_STRING',
  bytes: 'TYPE_BYTES',
  bool: 'TYPE_BOOL',
  int32: 'TYPE_INT32',
  int64: 'TYPE_INT64',
  float: 'TYPE_FLOAT',
};

/** Last dotted component: protobufjs writes type names relative to the package ("Digest"). */
function simpleName(typeName: string): string {
  return typeName.slice(typeName.lastIndexOf('.') + 1);
}

type MessageTypeDef = protoLoader.MessageTypeDefinition<object, object>;

function isMessageDescriptor(value: unknown): value is MessageTypeDef {
  return typeof value === 'object' && value !== null && 'serialize' in value && 'type' in value;
}

function isService(value: unknown): value is protoLoader.ServiceDefinition {
  return typeof value === 'object' && value !== null && !('format' in value);
}

function isEnumDescriptor(value: unknown): value is protoLoader.EnumTypeDefinition {
  return (
    typeof value === 'object' && value !== null && 'format' in value && !('serialize' in value)
  );
}

interface Schema {
  definition: protoLoader.PackageDefinition;
  messages: Map<string, MessageDescriptor>;
  enums: Map<string, EnumDescriptor>;
  methods: MethodDescriptor[];
}

/** Loads both files with proto-loader and decodes the FileDescriptorProtos it produced. */
function loadSchema(protoDir: string): Schema {
  const definition = protoLoader.loadSync([DEFINITION_FILE, SERVICE_FILE], {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
    includeDirs: [protoDir],
  });
  const descriptorProto = protoLoader.loadSync('google/protobuf/descriptor.proto', {
    keepCase: true,
    enums: String,
    defaults: false,
  });
  const fileType = descriptorProto['google.protobuf.FileDescriptorProto'];
  if (!isMessageDescriptor(fileType)) assert.fail('descriptor.proto has no FileDescriptorProto');
  const anyMessage = definition[`${PKG}.Message`];
  if (!isMessageDescriptor(anyMessage)) assert.fail(`${PKG}.Message is not a message`);
  const files = anyMessage.fileDescriptorProtos.map(
    (bytes) => fileType.deserialize(bytes) as FileDescriptor,
  );
  const messages = new Map<string, MessageDescriptor>();
  const enums = new Map<string, EnumDescriptor>();
  const methods: MethodDescriptor[] = [];
  for (const file of files.filter((f) => f.package === PKG)) {
    for (const message of file.messageType ?? []) {
      messages.set(message.name, message);
      for (const nested of message.enumType ?? [])
        enums.set(`${message.name}.${nested.name}`, nested);
    }
    for (const e of file.enumType ?? []) enums.set(e.name, e);
    for (const service of file.service ?? []) {
      assert.equal(service.name, 'MessagingService');
      methods.push(...(service.method ?? []));
    }
  }
  return { definition, messages, enums, methods };
}

/** The label of `field` in the contract's vocabulary (see {@link FieldRow}). */
function contractLabel(message: MessageDescriptor, field: FieldDescriptor): string {
  if (field.oneofIndex !== undefined) {
    const oneof = message.oneofDecl?.[field.oneofIndex]?.name ?? '?';
    // proto3 `optional` compiles to a synthetic one-member oneof named `_<field>`.
    const members = (message.field ?? []).filter((f) => f.oneofIndex === field.oneofIndex);
    if (oneof === `_${field.name}` && members.length === 1) return 'optional';
    return `oneof ${oneof}`;
  }
  if (field.label === 'LABEL_REPEATED' && mapEntryOf(message, field) === undefined) {
    return 'repeated';
  }
  return '';
}

/** The map-entry nested type a repeated message field refers to, if it is a map. */
function mapEntryOf(
  message: MessageDescriptor,
  field: FieldDescriptor,
): MessageDescriptor | undefined {
  if (field.label !== 'LABEL_REPEATED' || field.type !== 'TYPE_MESSAGE') return undefined;
  const name = simpleName(field.typeName ?? '');
  return (message.nestedType ?? []).find((t) => t.name === name && t.options?.mapEntry === true);
}

/** The field's type in the contract's vocabulary ("string", "Resource", "map<string, string>"). */
function contractType(message: MessageDescriptor, field: FieldDescriptor): string {
  const entry = mapEntryOf(message, field);
  if (entry !== undefined) {
    const [key, value] = entry.field ?? [];
    assert.ok(key !== undefined && value !== undefined, `${message.name}.${field.name} entry`);
    return `map<${contractType(entry, key)}, ${contractType(entry, value)}>`;
  }
  const scalar = Object.entries(SCALAR_TYPES).find(([, t]) => t === field.type);
  if (scalar !== undefined) return scalar[0];
  assert.ok(
    field.type === 'TYPE_MESSAGE' || field.type === 'TYPE_ENUM',
    `${message.name}.${field.name}: unexpected type ${field.type}`,
  );
  return simpleName(field.typeName ?? '');
}

describe('RocketMQ v2 proto files', function () {
  let protoDir = '';
  let schema: Schema;

  before(function () {
    protoDir = findRocketmqProtoDir();
    schema = loadSchema(protoDir);
  });

  it('defines exactly the messages of the contract, in package apache.rocketmq.v2', function () {
    assert.deepEqual([...schema.messages.keys()].sort(), [...ALL_MESSAGES].sort());
    const loaded = Object.keys(schema.definition).filter(
      (name) => name.startsWith(`${PKG}.`) && isMessageDescriptor(schema.definition[name]),
    );
    // proto-loader also lists enums as type definitions; every contract message must be there.
    for (const name of ALL_MESSAGES) assert.ok(loaded.includes(`${PKG}.${name}`), name);
  });

  it('imports the google.protobuf Timestamp and Duration types', function () {
    for (const name of ['Timestamp', 'Duration']) {
      const type = schema.definition[`google.protobuf.${name}`];
      if (!isMessageDescriptor(type)) assert.fail(`google.protobuf.${name}  not loaded`);
      const fields = (type.type as MessageDescriptor).field ?? [];
      assert.deepEqual(
        fields.map((f) => [f.number, f.name, f.type]),
        [
          [1, 'seconds', 'TYPE_INT64'],
          [2, 'nanos', 'TYPE_INT32'],
        ],
      );
      // Type names are compared by their last component below; make sure that is unambiguous.
      assert.ok(!schema.messages.has(name), `no ${PKG}.${name} to confuse with google's`);
    }
  });

  for (const [messageName, rows] of Object.entries(FIELDS)) {
    it(`${messageName}: field numbers, types and labels match the contract`, function () {
      const message = schema.messages.get(messageName);
      assert.ok(message !== undefined, `message ${messageName} is missing`);
      const actual = (message.field ?? []).map((f): FieldRow => [
        f.number,
        f.name,
        contractType(message, f),
        contractLabel(message, f),
      ]);
      const expected = rows.map(([n, name, type, label]): FieldRow => [
        n,
        name,
        simpleName(type),
        label,
      ]);
      const byNumber = (a: FieldRow, b: FieldRow): number => a[0] - b[0];
      assert.deepEqual(actual.sort(byNumber), [...expected].sort(byNumber));
    });
  }

  it('uses only enum and message types that exist (no dangling references)', function () {
    const enumNames = new Set([...schema.enums.keys()].map(simpleName));
    for (const message of schema.messages.values()) {
      for (const field of message.field ?? []) {
        if (field.type === 'TYPE_ENUM') {
          assert.ok(
            enumNames.has(simpleName(field.typeName ?? '')),
            `${message.name}.${field.name}`,
          );
        }
      }
    }
  });

  it('defines every enum with exactly the values of the contract', function () {
    assert.deepEqual([...schema.enums.keys()].sort(), Object.keys(ENUMS).sort());
    for (const [enumName, values] of Object.entries(ENUMS)) {
      const actual = (schema.enums.get(enumName)?.value ?? []).map((v) => [v.name, v.number]);
      assert.deepEqual(
        actual,
        values.map(([name, number]) => [name, number]),
        enumName,
      );
    }
  });

  it('has every Code value (by name and by number) as a proto-loader enum', function () {
    const code = schema.definition[`${PKG}.Code`];
    if (!isEnumDescriptor(code)) assert.fail('Code is not an enum');
    assert.equal(code.format, 'Protocol Buffer 3 EnumDescriptorProto');
    const values = (code.type as EnumDescriptor).value ?? [];
    const expected = ENUMS.Code ?? [];
    assert.equal(values.length, expected.length);
    const byName = new Map(values.map((v) => [v.name, v.number]));
    for (const [name, number] of expected) assert.equal(byName.get(name), number, name);
  });

  it('declares MessagingService with every RPC, its types and its streaming kind', function () {
    const service = schema.definition[`${PKG}.MessagingService`];
    if (!isService(service)) assert.fail('MessagingService is a service');
    assert.deepEqual(Object.keys(service).sort(), RPCS.map(([rpc]) => rpc).sort());
    assert.deepEqual(schema.methods.map((m) => m.name).sort(), RPCS.map(([rpc]) => rpc).sort());
    for (const [rpc, request, response, kind] of RPCS) {
      const method: protoLoader.MethodDefinition<object, object> | undefined = service[rpc];
      assert.ok(method !== undefined, rpc);
      assert.equal(method.path, `/${PKG}.MessagingService/${rpc}`);
      const streams: [boolean, boolean] =
        kind === 'unary' ? [false, false] : kind === 'server stream' ? [false, true] : [true, true];
      assert.deepEqual([method.requestStream, method.responseStream], streams, `${rpc} kind`);
      assert.equal((method.requestType.type as MessageDescriptor).name, request, `${rpc} request`);
      assert.equal((method.responseType.type as MessageDescriptor).name, response, `${rpc} reply`);
      const descriptor = schema.methods.find((m) => m.name === rpc);
      assert.ok(descriptor !== undefined, rpc);
      assert.deepEqual(
        [
          descriptor.inputType,
          descriptor.outputType,
          descriptor.clientStreaming === true,
          descriptor.serverStreaming === true,
        ],
        [`.${PKG}.${request}`, `.${PKG}.${response}`, ...streams],
        `${rpc} descriptor`,
      );
    }
  });

  describe('with the broker run-time loader options (keepCase: false)', function () {
    let runtime: protoLoader.PackageDefinition;

    before(function () {
      runtime = protoLoader.loadSync(SERVICE_FILE, {
        ...PROTO_LOADER_OPTIONS,
        includeDirs: [protoDir],
      });
    });

    function codec(name: string): MessageTypeDef {
      const type = runtime[`${PKG}.${name}`];
      if (!isMessageDescriptor(type)) assert.fail(name);
      return type;
    }

    function roundTrip(name: string, value: object): Record<string, unknown> {
      const type = codec(name);
      return type.deserialize(type.serialize(value)) as Record<string, unknown>;
    }

    it('encodes known wire bytes (field numbers and varint enum values)', function () {
      // Status{code: OK=20000}: tag 0x08, varint 20000 = a0 9c 01.
      assert.equal(codec('Status').serialize({ code: 'OK' }).toString('hex'), '08a09c01');
      // Resource{name: "T"}: field 2, length-delimited.
      assert.equal(codec('Resource').serialize({ name: 'T' }).toString('hex'), '120154');
      // ReceiveMessageResponse{status{code: MESSAGE_NOT_FOUND=40401}}: field 1 holding 08 d1 bb 02.
      assert.equal(
        codec('ReceiveMessageResponse')
          .serialize({ status: { code: 'MESSAGE_NOT_FOUND' } })
          .toString('hex'),
        '0a0408d1bb02',
      );
      // SystemProperties{queue_id: 1, delivery_attempt: 0 (present)}: fields 13 and 16.
      assert.equal(
        codec('SystemProperties').serialize({ queueId: 1, deliveryAttempt: 0 }).toString('hex'),
        '68018001' + '00',
      );
    });

    it('keeps the presence of optional fields set to their default value', function () {
      const decoded = roundTrip('SystemProperties', { tag: '', queueOffset: 0, messageId: 'm' });
      assert.equal(decoded.tag, '');
      assert.equal(decoded._tag, 'tag');
      assert.equal(decoded._queueOffset, 'queueOffset');
      assert.equal(decoded._deliveryAttempt, undefined, 'unset optional field has no presence');
      assert.equal(decoded._receiptHandle, undefined);
    });

    it('round-trips a Settings reply: oneof cases, Durations, a status with presence', function () {
      const decoded = roundTrip('TelemetryCommand', {
        status: { code: 'OK', message: 'ok' },
        settings: {
          clientType: 'PRODUCER',
          requestTimeout: { seconds: 3, nanos: 0 },
          backoffPolicy: {
            maxAttempts: 3,
            exponentialBackoff: {
              initial: { nanos: 10_000_000 },
              max: { seconds: 1 },
              multiplier: 2,
            },
          },
          publishing: { topics: [{ name: 'TopicA' }], maxBodySize: 4_128_768 },
        },
      });
      assert.equal(decoded.command, 'settings');
      assert.equal(decoded._status, 'status');
      const settings = decoded.settings as Record<string, unknown>;
      assert.equal(settings.pubSub, 'publishing');
      assert.equal(settings.clientType, 'PRODUCER');
      assert.deepEqual(settings.requestTimeout, { seconds: 3, nanos: 0 });
      const policy = settings.backoffPolicy as Record<string, unknown>;
      assert.equal(policy.strategy, 'exponentialBackoff');
      assert.deepEqual(policy.exponentialBackoff, {
        initial: { seconds: 0, nanos: 10_000_000 },
        max: { seconds: 1, nanos: 0 },
        multiplier: 2,
      });
      const publishing = settings.publishing as Record<string, unknown>;
      assert.equal(publishing.maxBodySize, 4_128_768);
    });

    it('round-trips a Message with user properties, bytes body and Timestamps', function () {
      const body = Buffer.from([0, 1, 2, 255]);
      const decoded = roundTrip('ReceiveMessageResponse', {
        message: {
          topic: { name: 'TopicA' },
          userProperties: { a: '1', b: '2' },
          systemProperties: {
            messageId: '01ABC',
            messageType: 'FIFO',
            bornTimestamp: { seconds: 1_700_000_000, nanos: 5 },
            bodyDigest: { type: 'MD5', checksum: 'ABCDEF' },
            messageGroup: 'g',
          },
          body,
        },
      });
      assert.equal(decoded.content, 'message');
      const message = decoded.message as Record<string, unknown>;
      assert.deepEqual(message.userProperties, { a: '1', b: '2' });
      assert.ok(Buffer.from(message.body as Uint8Array).equals(body));
      const system = message.systemProperties as Record<string, unknown>;
      assert.deepEqual(system.bornTimestamp, { seconds: 1_700_000_000, nanos: 5 });
      assert.equal(system.messageType, 'FIFO');
      assert.equal(system._messageGroup, 'messageGroup');
      const tail = roundTrip('ReceiveMessageResponse', { deliveryTimestamp: { seconds: 7 } });
      assert.equal(tail.content, 'deliveryTimestamp');
    });

    it('gives grpc-js a service definition with all 17 methods', function () {
      const root = grpc.loadPackageDefinition(runtime);
      const apache = root.apache as grpc.GrpcObject;
      const rocketmq = apache.rocketmq as grpc.GrpcObject;
      const v2 = rocketmq.v2 as grpc.GrpcObject;
      const ctor = v2.MessagingService as grpc.ServiceClientConstructor;
      assert.equal(typeof ctor, 'function');
      assert.equal(Object.keys(ctor.service).length, RPCS.length);
      assert.equal(ctor.service.Telemetry?.path, `/${PKG}.MessagingService/Telemetry`);
    });
  });
});
