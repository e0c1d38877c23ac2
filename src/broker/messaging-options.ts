/**
 * Options of the RocketMQ 5 `MessagingService` (messaging-service.ts), the gRPC server options
 * a broker must serve it with, and what the service uses of a backend beyond the
 * `MessagingBackend` seam when the backend offers it.
 */
import type * as grpc from '@grpc/grpc-js';
import {
  anyValue,
  checkOption,
  intInRange,
  isString,
  type OptionSpec,
  resolveOptions,
} from '../common/options';
import { MESSAGE_LIMITS } from '../store/message-limits';
import { SEND_MESSAGES_MAX } from './send-request-decode';
import type { PopService } from './pop-service';
import type { GroupConfig, MessagingBackend } from './broker-types';
import {
  CLIENT_REGISTRY_DEFAULTS,
  type ClientRegistryOptions,
  resolveClientRegistryOptions,
} from './client-registry';
import {
  POP_RENEWER_DEFAULTS,
  type PopRenewerOptions,
  resolvePopRenewerOptions,
} from './pop-renewer-options';

const MIB = 1024 * 1024;

/**
 * The largest request the server accepts, after decompression. It must be over grpc-js's
 * default of 4 MiB: a SendMessage carrying a 4 MiB body is 4 194 379 bytes (contract §2). The
 * Apache proxy takes 130 MiB; raftmq refuses a send of over 16 MiB of stored messages anyway
 * (`SEND_BATCHER_DEFAULTS.sendBytesMax`, with PAYLOAD_TOO_LARGE up to this bound), and a larger
 * bound only lets a small compressed request grow into more memory before it is refused.
 */
export const MESSAGING_RECEIVE_MESSAGE_BYTES_MAX = 32 * MIB;

/**
 * Streams one client connection may have open at once. An official client holds one Telemetry
 * stream and a few long polls per endpoint, and sends over as many streams as it has sends in
 * flight; a thousand leaves it room.
 */
export const MESSAGING_STREAMS_PER_CONNECTION_MAX = 1000;

/** Server options a broker's client-protocol server must be created with. */
export const MESSAGING_SERVER_OPTIONS: Readonly<grpc.ServerOptions> = Object.freeze({
  'grpc.max_receive_message_length': MESSAGING_RECEIVE_MESSAGE_BYTES_MAX,
  // Calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS): a
  // client past it waits for one of its calls to end before starting another, where without
  // it one connection could open any number. The service's own bounds (`callsInFlightMax`...)
  // still hold across connections.
  'grpc.max_concurrent_streams': MESSAGING_STREAMS_PER_CONNECTION_MAX,
});

/** Channel options of the clients that forward requests to the leader. */
export const FORWARD_CHANNEL_OPTIONS: Readonly<grpc.ChannelOptions> = Object.freeze({
  'grpc.max_receive_message_length': MESSAGING_RECEIVE_MESSAGE_BYTES_MAX,
  'grpc.max_send_message_length': MESSAGING_RECEIVE_MESSAGE_BYTES_MAX,
  // A peer that was down (killed, restarted) is reached again within a second; grpc-js's own
  // backoff grows to 120 s, and a call made meanwhile fails at once as not connected.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.min_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
});

export interface MessagingServiceOptions {
  /** Largest message body accepted; the Settings reply's `max_body_size`. */
  maxBodyBytes: number;
  /** Messages in one SendMessage, at most (the Node client sends one). */
  messagesPerSendMax: number;
  /** How far ahead a delay message may be scheduled (RocketMQ: 3 days). */
  maxDelayMs: number;
  /** Longest a request may take: caps the caller's deadline, and is the deadline when none. */
  requestTimeoutMsMax: number;
  /** Time kept back from a forwarded call's deadline to answer the caller ourselves. */
  forwardReserveMs: number;
  /** Leader endpoints with a cached forwarding channel, at most. */
  forwardChannelsMax: number;
  /** Consumers' long polling (Settings reply) and PullMessage's when the request has none. */
  longPollingTimeoutMs: number;
  /** Longest PullMessage long poll, whatever the request asks. */
  longPollingTimeoutMsMax: number;
  /** Consumers' `receive_batch_size` (Settings reply). */
  receiveBatchSize: number;
  /**
   * Messages in one PullMessage reply, at most (a batch size of 0 asks for this many). 256 by
   * default: at 32 the per-request costs nearly doubled the CPU per pulled message, and 1024
   * cost no less than 256 per message while tripling a pull's latency (`npm run bench:consume`).
   */
  pullBatchSizeMax: number;
  /**
   * Bytes of stored messages in one PullMessage reply, at most (always at least one message):
   * 256 messages near the 4 MiB body limit would otherwise hold a gigabyte for one reply.
   */
  pullBytesMax: number;
  /**
   * Messages in one FetchQueue reply (raftmq's Fetch protocol), at most. A reply is one frame
   * whatever it holds, so the bound is larger than PullMessage's; its bytes are bounded by
   * `pullBytesMax` too, and its records read by `pullScanCountMax`.
   */
  fetchCountMax: number;
  /** Records one PullMessage or FetchQueue reads past its filter before answering, at most. */
  pullScanCountMax: number;
  /** Delivery attempts of a group the broker does not know (RocketMQ: 16 retries + 1). */
  defaultMaxDeliveryAttempts: number;
  /** Telemetry commands waiting for a slow client's stream to drain, at most. */
  telemetryPendingMax: number;
  /** Open Telemetry streams, at most; a stream beyond it is refused with RESOURCE_EXHAUSTED. */
  telemetryStreamsMax: number;
  /**
   * A Telemetry stream on which no Settings were served within this long is ended with
   * INVALID_ARGUMENT: the official clients send their Settings first thing, and a stream that
   * never does would otherwise stay open, and hold its memory, for as long as its peer likes.
   */
  telemetrySettingsWaitMs: number;
  /**
   * Calls in flight at once, at most, other than long-polling reads and Telemetry streams
   * (which have bounds of their own); one more is refused with BUSY (TOO_MANY_REQUESTS) before
   * its request is decoded. 20,000 small sends at once took a leader to 900 MB and cost it its
   * leadership; 4096 keep a batched producer's sends flowing.
   */
  callsInFlightMax: number;
  /**
   * PullMessage, ReceiveMessage, FetchQueue and ReceiveStored calls in flight at once, at most
   * (long polls included, and a read whose answer its client has not taken yet); one more is
   * refused with BUSY.
   */
  pollsInFlightMax: number;
  /**
   * Bytes of read answers (PullMessage, ReceiveMessage, FetchQueue, ReceiveStored) held until
   * their clients take them, at most, across all calls: a read that would pass it is refused
   * with BUSY before it reads the store. A pull or fetch reserves its `pullBytesMax` before it
   * reads; a receive is let in while the bytes held are below the bound and then holds what it
   * got (at most the pop service's 4 MiB), so receives let in together may pass the bound by
   * that much each (a receive long-polls, and a reservation held through a poll would take
   * the bound from idle consumers). An answer is held until its call ends, by its deadline at
   * the latest (see call-watch.ts).
   */
  answerBytesMax: number;
  /**
   * Of `answerBytesMax`, what the calls of one client id may hold, at most: a client that
   * does not read its answers is refused (BUSY) before it takes the budget of the others.
   */
  clientAnswerBytesMax: number;
  /** Directory of the `.proto` files; '' finds it (see findProtoDir). */
  protoDir: string;
  /** The client registry's bounds and timers. */
  registry: Partial<ClientRegistryOptions>;
  /**
   * Server-side renewal of push consumers' auto-renewing deliveries (pop-renewer.ts): their
   * invisibility (`invisibleMs`, 60 s), how early and for how long they are renewed, bounds.
   */
  autoRenew: Partial<PopRenewerOptions>;
}

export const MESSAGING_SERVICE_DEFAULTS: Readonly<MessagingServiceOptions> = Object.freeze({
  maxBodyBytes: 4 * MIB - 64 * 1024,
  messagesPerSendMax: 1024,
  maxDelayMs: 3 * 24 * 3600 * 1000,
  requestTimeoutMsMax: 30_000,
  forwardReserveMs: 100,
  forwardChannelsMax: 16,
  longPollingTimeoutMs: 20_000,
  longPollingTimeoutMsMax: 60_000,
  receiveBatchSize: 32,
  pullBatchSizeMax: 256,
  pullBytesMax: 4 * MIB,
  fetchCountMax: 1024,
  pullScanCountMax: 1024,
  defaultMaxDeliveryAttempts: 17,
  telemetryPendingMax: 64,
  telemetryStreamsMax: 20_000,
  telemetrySettingsWaitMs: 30_000,
  callsInFlightMax: 4096,
  pollsInFlightMax: 8192,
  answerBytesMax: 256 * MIB,
  clientAnswerBytesMax: 64 * MIB,
  protoDir: '',
  registry: CLIENT_REGISTRY_DEFAULTS,
  autoRenew: POP_RENEWER_DEFAULTS,
});

const OPTION_SPEC: OptionSpec<MessagingServiceOptions> = {
  maxBodyBytes: intInRange(1, MESSAGE_LIMITS.bodySizeBytesMax),
  messagesPerSendMax: intInRange(1, SEND_MESSAGES_MAX),
  maxDelayMs: intInRange(0, 365 * 24 * 3600 * 1000),
  requestTimeoutMsMax: intInRange(100, 600_000),
  forwardReserveMs: intInRange(0, 10_000),
  forwardChannelsMax: intInRange(1, 1024),
  longPollingTimeoutMs: intInRange(0, 600_000),
  longPollingTimeoutMsMax: intInRange(0, 600_000),
  receiveBatchSize: intInRange(1, 1024),
  pullBatchSizeMax: intInRange(1, 1024),
  pullBytesMax: intInRange(1, 256 * MIB),
  fetchCountMax: intInRange(1, 65_536),
  pullScanCountMax: intInRange(1, 1_000_000),
  defaultMaxDeliveryAttempts: intInRange(1, 1000),
  telemetryPendingMax: intInRange(1, 65_536),
  telemetryStreamsMax: intInRange(1, 10_000_000),
  telemetrySettingsWaitMs: intInRange(100, 3_600_000),
  callsInFlightMax: intInRange(1, 1_000_000),
  pollsInFlightMax: intInRange(1, 1_000_000),
  answerBytesMax: intInRange(1, 64 * 1024 * MIB),
  clientAnswerBytesMax: intInRange(1, 64 * 1024 * MIB),
  protoDir: isString(false),
  registry: anyValue,
  autoRenew: anyValue,
};

/** Options after resolution: every field set, the registry's and auto-renewal's too. */
export type ResolvedMessagingOptions = Readonly<
  Omit<MessagingServiceOptions, 'registry' | 'autoRenew'> & {
    registry: Readonly<ClientRegistryOptions>;
    autoRenew: Readonly<PopRenewerOptions>;
  }
>;

/** Checks `input` over the defaults; throws INVALID_OPTION naming a bad or unknown field. */
export function resolveMessagingServiceOptions(
  input?: Partial<MessagingServiceOptions>,
): ResolvedMessagingOptions {
  const options = resolveOptions('messaging', MESSAGING_SERVICE_DEFAULTS, OPTION_SPEC, input);
  checkOption(
    options.forwardReserveMs < options.requestTimeoutMsMax,
    'messaging.forwardReserveMs',
    'must be below requestTimeoutMsMax',
  );
  checkOption(
    options.pullScanCountMax >= options.pullBatchSizeMax,
    'messaging.pullScanCountMax',
    'must be at least pullBatchSizeMax',
  );
  checkOption(
    options.answerBytesMax >= options.pullBytesMax,
    'messaging.answerBytesMax',
    'must be at least pullBytesMax',
  );
  checkOption(
    options.clientAnswerBytesMax >= options.pullBytesMax &&
      options.clientAnswerBytesMax <= options.answerBytesMax,
    'messaging.clientAnswerBytesMax',
    'must be at least pullBytesMax and at most answerBytesMax',
  );
  return Object.freeze({
    ...options,
    registry: resolveClientRegistryOptions({ ...options.registry }),
    // Only what was given: left out, the renewal timing scales with the invisibility.
    autoRenew: resolvePopRenewerOptions(
      options.autoRenew === POP_RENEWER_DEFAULTS ? undefined : { ...options.autoRenew },
    ),
  });
}

/**
 * What the service uses of a backend beyond `MessagingBackend` when it is there (the broker
 * implements part of it today). Everything is optional: without it the service falls back as
 * documented per member.
 */
export interface MessagingBackendExtensions {
  /** A consumer group by broker name (for the Settings reply's `fifo` and `max_attempts`). */
  getGroup?(name: string): GroupConfig | undefined;
  /** Used to find a group when `getGroup` is absent. */
  listGroups?(): GroupConfig[];
  /**
   * True once DELAY messages are stored and delivered at their time; else refused, and left
   * out of routes (served-message-types.ts).
   */
  readonly supportsDelayMessages?: boolean;
  /** True once TRANSACTION messages are stored prepared; else refused and left out of routes. */
  readonly supportsTransactionMessages?: boolean;
  /**
   * Calls `listener` on every change of `roleView()`; returns its remover. Without it a
   * follower does not wait for a new leader after its leader proved unreachable.
   */
  onRoleChange?(listener: () => void): () => void;
  /** Pop consumption (ReceiveMessage, AckMessage...), on a broker that serves it. */
  readonly pop?: PopService;
}

/** The backend the service is given. */
export type ServiceBackend = MessagingBackend & MessagingBackendExtensions;

/** Looks a group up through whichever of the extensions the backend has. */
export function groupLookupOf(backend: ServiceBackend): (name: string) => GroupConfig | undefined {
  return (name) => {
    if (backend.getGroup !== undefined) return backend.getGroup(name);
    return backend.listGroups?.().find((g) => g.name === name);
  };
}
