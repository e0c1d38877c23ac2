/**
 * Options of the gRPC Raft transport: the {@link GrpcRaftTransportOptions} type, its frozen
 * defaults, the pure resolver that checks every field (and the peers map) and throws
 * INVALID_OPTION naming the field, and the gRPC channel options derived from them, which the
 * server (`grpc-raft-transport.ts`) and each outbound peer link (`grpc-peer-link.ts`) share.
 */
import type { ChannelOptions } from '@grpc/grpc-js';
import { PEER_BATCH_MESSAGES_MAX } from './raft-wire';
import {
  checkOption,
  intInRange,
  isString,
  resolveOptions,
  type OptionSpec,
} from '../common/options';

/** Options of `GrpcRaftTransport` (not linked: this file must not import the transport). */
export interface GrpcRaftTransportOptions {
  /** The broker group; every message carries it and inbound ones must match. */
  group: string;
  /** This node's id. */
  selfId: string;
  listenHost: string;
  /** 0 picks a free port (`GrpcRaftTransport.port` tells which). */
  listenPort: number;
  /** The other members: node id -> "host:port". */
  peers: Readonly<Record<string, string>>;
  /** Append-stream messages queued per peer; beyond it new ones are dropped and counted. */
  queueCountMax: number;
  /** Encoded bytes queued per peer (and, separately, written but not yet sent). */
  queueBytesMax: number;
  /** Largest gRPC message either way; larger sends are dropped, larger receipts refused. */
  messageSizeMaxBytes: number;
  /** Vote and TimeoutNow calls in flight per peer; beyond it new ones are dropped. */
  unaryInflightCountMax: number;
  unaryDeadlineMs: number;
  /** How long one connection attempt may take before it counts as failed. */
  connectTimeoutMs: number;
  reconnectBackoffMinMs: number;
  reconnectBackoffMaxMs: number;
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  /** `close()` waits this long for calls to finish before forcing the server down. */
  shutdownTimeoutMs: number;
  /** At most one warning per interval about rejected input. */
  rejectLogIntervalMs: number;
  /** Directory of `raft.proto`; empty: `$RAFTMQ_PROTO_DIR`, else the package root's `proto/`. */
  protoDir: string;
}

const MIB = 1024 * 1024;

/** Defaults; `group` and `selfId` have none and must be given. */
export const GRPC_RAFT_TRANSPORT_DEFAULTS: Readonly<GrpcRaftTransportOptions> = Object.freeze({
  group: '',
  selfId: '',
  listenHost: '127.0.0.1',
  listenPort: 0,
  peers: Object.freeze({}),
  queueCountMax: 4096,
  queueBytesMax: 64 * MIB,
  // One entry may carry a 16 MiB CommitLog payload, plus its message envelope.
  messageSizeMaxBytes: 32 * MIB,
  unaryInflightCountMax: 16,
  unaryDeadlineMs: 1000,
  connectTimeoutMs: 2000,
  reconnectBackoffMinMs: 50,
  reconnectBackoffMaxMs: 2000,
  keepaliveTimeMs: 10_000,
  keepaliveTimeoutMs: 5000,
  shutdownTimeoutMs: 2000,
  rejectLogIntervalMs: 1000,
  protoDir: '',
});

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/;
const PEERS_COUNT_MAX = 64;

function checkPeers(value: unknown, field: string): void {
  checkOption(
    typeof value === 'object' && value !== null && !Array.isArray(value),
    field,
    'must be an object of node id -> "host:port"',
  );
  const entries = Object.entries(value as Record<string, unknown>);
  checkOption(entries.length <= PEERS_COUNT_MAX, field, `at most ${PEERS_COUNT_MAX} peers`);
  for (const [id, address] of entries) {
    checkOption(id.length > 0, field, 'node ids must not be empty');
    const match = typeof address === 'string' ? HOST_PORT.exec(address) : null;
    const port = Number(match?.[2] ?? 0);
    checkOption(port >= 1 && port <= 65535, `${field}.${id}`, 'must be "host:port"');
  }
}

const SPEC: OptionSpec<GrpcRaftTransportOptions> = {
  group: isString(true),
  selfId: isString(true),
  listenHost: isString(true),
  listenPort: intInRange(0, 65535),
  peers: checkPeers,
  queueCountMax: intInRange(1, PEER_BATCH_MESSAGES_MAX),
  queueBytesMax: intInRange(1024, 2 ** 40),
  messageSizeMaxBytes: intInRange(1024, 1 << 30),
  unaryInflightCountMax: intInRange(1, 10_000),
  unaryDeadlineMs: intInRange(1, 600_000),
  connectTimeoutMs: intInRange(1, 600_000),
  reconnectBackoffMinMs: intInRange(1, 600_000),
  reconnectBackoffMaxMs: intInRange(1, 600_000),
  keepaliveTimeMs: intInRange(1000, 3_600_000),
  keepaliveTimeoutMs: intInRange(100, 600_000),
  shutdownTimeoutMs: intInRange(0, 600_000),
  rejectLogIntervalMs: intInRange(0, 3_600_000),
  protoDir: isString(false),
};

/** Checks `input` against the defaults; throws INVALID_OPTION naming the field. */
export function resolveGrpcRaftTransportOptions(
  input?: Partial<GrpcRaftTransportOptions>,
): Readonly<GrpcRaftTransportOptions> {
  const options = resolveOptions('grpcRaftTransport', GRPC_RAFT_TRANSPORT_DEFAULTS, SPEC, input);
  const name = (field: string) => `grpcRaftTransport.${field}`;
  checkOption(
    !Object.prototype.hasOwnProperty.call(options.peers, options.selfId),
    name('peers'),
    'must not contain selfId',
  );
  checkOption(
    options.reconnectBackoffMinMs <= options.reconnectBackoffMaxMs,
    name('reconnectBackoffMinMs'),
    'must not exceed reconnectBackoffMaxMs',
  );
  checkOption(
    options.queueBytesMax >= options.messageSizeMaxBytes,
    name('queueBytesMax'),
    'must be at least messageSizeMaxBytes (a largest message must fit an empty queue)',
  );
  return options;
}

/** The gRPC channel options for both the server and the peer clients. */
export function channelOptions(options: Readonly<GrpcRaftTransportOptions>): ChannelOptions {
  return {
    'grpc.max_send_message_length': options.messageSizeMaxBytes,
    'grpc.max_receive_message_length': options.messageSizeMaxBytes,
    'grpc.keepalive_time_ms': options.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.initial_reconnect_backoff_ms': options.reconnectBackoffMinMs,
    'grpc.max_reconnect_backoff_ms': options.reconnectBackoffMaxMs,
    // Retries would buffer written messages for replay; Raft retransmits by itself.
    'grpc.enable_retries': 0,
    // Each transport owns its connections, so closing one never disturbs another.
    'grpc.use_local_subchannel_pool': 1,
  };
}
