/**
 * The part of `apache.rocketmq.v2.MessagingService` a NameServer serves, so that RocketMQ 5
 * clients can use it as their access point (contract notes §3.1, §5.1, §5.3, §5.11):
 *
 * - `QueryRoute`: answered from the route table (rmq-route.ts has the shape). The namespace is
 *   the `x-mq-namespace` header, else `topic.resource_namespace`; a non-empty namespace makes
 *   the table key `<namespace>%<topic>`, as RocketMQ's `NamespaceUtil` does (a name that
 *   already starts with `<namespace>%` is not prefixed twice). Names and namespaces are checked
 *   by the brokers' rules (common/resource-names.ts), so both access points accept the same
 *   ones. Unknown topic: TOPIC_NOT_FOUND, unless some group auto-creates topics
 *   (namesrv-registry.ts) and the name is not reserved (`%RETRY%`, `%DLQ%`, `rmq_sys_`,
 *   `TBW102`...: brokers never create those on first use).
 * - `Heartbeat` and `NotifyClientTermination`: OK, always (a gRPC error would break the
 *   client's `shutdown()`), even when the request cannot be decoded.
 * - `Telemetry`: a client opens it only to route endpoints, which a NameServer never is; it is
 *   answered correctly anyway: every Settings gets the echo with the server-owned fields set
 *   (§4.2, §4.3), sent again about 1 s later (the client drops a reply that lands before it
 *   waits), and the call completes with OK as soon as the client half-closes.
 * - Everything else gets the RocketMQ status UNSUPPORTED (the Node client throws
 *   `UnsupportedException` with the message) saying this is a NameServer. RecallMessage and
 *   SyncLiteSubscription go to the access point, so clients that need them must use a broker as
 *   their access point.
 */
import * as grpc from '@grpc/grpc-js';
import { isRaftmqError, RmqCode } from '../common/errors';
import type { Logger } from '../common/logger';
import type { Clock } from '../common/clock';
import {
  type Decoded,
  RateLimitedWarn,
  NAMESRV_TELEMETRY_BYTES_MAX,
  safeServiceDefinition,
  serviceOf,
  statusError,
} from './namesrv-grpc';
import type { RouteRegistry } from './namesrv-registry';
import { loadMessagingProto, MESSAGING_SERVICE } from './namesrv-wire';
import {
  checkResourceName,
  effectiveNamespace,
  isReservedTopic,
  wrapNamespace,
} from '../common/resource-names';
import { queryRouteAnswer } from './rmq-route';

/** Open Telemetry streams a NameServer keeps at most; more are refused (RESOURCE_EXHAUSTED). */
export const TELEMETRY_STREAMS_MAX = 4096;
/** Delay of the second Settings reply on a Telemetry stream. */
export const SETTINGS_RESEND_MS = 1_000;
/** `max_body_size` told to producers: 4 MiB - 64 KiB, which Node consumers can still read. */
export const MAX_BODY_BYTES = 4 * 1024 * 1024 - 64 * 1024;

const HANDLED = new Set(['QueryRoute', 'Heartbeat', 'NotifyClientTermination', 'Telemetry']);
const CONSUMER_TYPES = new Set([
  'PUSH_CONSUMER',
  'SIMPLE_CONSUMER',
  'PULL_CONSUMER',
  'LITE_PUSH_CONSUMER',
  'LITE_SIMPLE_CONSUMER',
]);

const OK_STATUS = Object.freeze({ code: RmqCode.OK, message: 'OK' });

function status(code: number, message: string): { status: { code: number; message: string } } {
  return { status: { code, message } };
}

function objectOr(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

function seconds(s: number, ms = 0): { seconds: number; nanos: number } {
  return { seconds: s, nanos: ms * 1_000_000 };
}

/** The server's reply to a client's Settings: its echo with the server-owned fields set. */
export function settingsReply(settings: unknown): Record<string, unknown> {
  const given = objectOr(settings);
  const clientType = String(given.clientType);
  const base: Record<string, unknown> = { metric: { on: false } };
  for (const key of ['clientType', 'accessPoint', 'requestTimeout', 'userAgent']) {
    if (given[key] !== undefined && given[key] !== null) base[key] = given[key];
  }
  if (clientType === 'PRODUCER') {
    const publishing = objectOr(given.publishing);
    return {
      ...base,
      backoffPolicy: {
        maxAttempts: 3,
        exponentialBackoff: { initial: seconds(0, 10), max: seconds(1), multiplier: 2 },
      },
      publishing: {
        topics: Array.isArray(publishing.topics) ? publishing.topics : [],
        maxBodySize: MAX_BODY_BYTES,
        validateMessageType: true,
      },
    };
  }
  if (CONSUMER_TYPES.has(clientType)) {
    const subscription = objectOr(given.subscription);
    const longPolling = subscription.longPollingTimeout;
    return {
      ...base,
      backoffPolicy: {
        maxAttempts: 17,
        exponentialBackoff: { initial: seconds(1), max: seconds(60), multiplier: 2 },
      },
      subscription: {
        ...(subscription.group === undefined ? {} : { group: subscription.group }),
        subscriptions: Array.isArray(subscription.subscriptions) ? subscription.subscriptions : [],
        fifo: false,
        receiveBatchSize: 32,
        longPollingTimeout:
          typeof longPolling === 'object' && longPolling ? longPolling : seconds(20),
      },
    };
  }
  return base;
}

/** The message of the UNSUPPORTED status every other RPC gets. */
export function notHereMessage(rpc: string): string {
  return (
    `${rpc}: this is a raftmq NameServer, which answers only QueryRoute, Heartbeat, Telemetry ` +
    `and NotifyClientTermination; send ${rpc} to a broker (an endpoint from QueryRoute, or ` +
    'use a broker as the access point)'
  );
}

function headerValue(metadata: grpc.Metadata, key: string): string {
  const value = metadata.get(key)[0];
  return value === undefined ? '' : value.toString();
}

/** The MessagingService of a NameServer: its definition, handlers and a close for stop(). */
export interface NamesrvMessagingService {
  readonly definition: grpc.ServiceDefinition;
  readonly handlers: grpc.UntypedServiceImplementation;
  /** Ends every open Telemetry stream (with OK) and cancels their timers. */
  close(): void;
}

interface TelemetryStream {
  readonly call: grpc.ServerDuplexStream<Decoded, object>;
  timer: NodeJS.Timeout | undefined;
}

/** Builds the MessagingService over `registry`. */
export async function createNamesrvMessaging(
  registry: RouteRegistry,
  log: Logger,
  clock: Clock,
  protoDir = '',
): Promise<NamesrvMessagingService> {
  const service = serviceOf(await loadMessagingProto(protoDir), MESSAGING_SERVICE);
  const skippedWarn = new RateLimitedWarn(log, clock, 60_000);
  const streams = new Set<TelemetryStream>();

  const queryRoute = (request: Decoded, metadata: grpc.Metadata): object => {
    if (!request.ok) return status(RmqCode.BAD_REQUEST, `QueryRoute: ${request.reason}`);
    const topic = objectOr(objectOr(request.value).topic);
    const name = typeof topic.name === 'string' ? topic.name : '';
    const given = typeof topic.resourceNamespace === 'string' ? topic.resourceNamespace : '';
    let namespace: string;
    try {
      // In the broker's order (messaging-route.ts): the namespace, then the name with it.
      namespace = effectiveNamespace(headerValue(metadata, 'x-mq-namespace'), given);
      checkResourceName(name, namespace, 'topic.name', 'ILLEGAL_TOPIC', 'topic');
    } catch (err) {
      if (!isRaftmqError(err)) throw err;
      return status(err.rmqCode, err.message);
    }
    const key = wrapNamespace(namespace, name);
    // Reading the route of a system topic (a DLQ, say) is allowed; creating one is not.
    const creatable = !isReservedTopic(name) && !isReservedTopic(key);
    const route = registry.route(key) ?? (creatable ? registry.autoCreateRoute(key) : undefined);
    if (route === undefined) {
      const why = `topic ${key} not found: no broker group registered with this NameServer hosts it`;
      return status(RmqCode.TOPIC_NOT_FOUND, why);
    }
    const resource = { name, resourceNamespace: namespace };
    const { response, skipped } = queryRouteAnswer(route, resource, key);
    for (const node of skipped) {
      skippedWarn.warn('skipped', { ...node, topic: key }, 'node left out of a route');
    }
    log.debug({ topic: key, queueCount: response.messageQueues.length }, 'QueryRoute');
    return response;
  };

  const telemetry = (call: grpc.ServerDuplexStream<Decoded, object>): void => {
    if (streams.size >= TELEMETRY_STREAMS_MAX) {
      const why = `too many Telemetry streams (${TELEMETRY_STREAMS_MAX}); this is a NameServer`;
      call.emit('error', statusError(grpc.status.RESOURCE_EXHAUSTED, why));
      return;
    }
    const stream: TelemetryStream = { call, timer: undefined };
    streams.add(stream);
    const finish = (): boolean => {
      clearTimeout(stream.timer);
      return streams.delete(stream);
    };
    const write = (reply: object): void => {
      if (streams.has(stream) && !call.cancelled && call.writable) call.write(reply);
    };
    call.on('data', (frame: Decoded) => {
      if (!frame.ok) {
        if (finish()) call.emit('error', statusError(grpc.status.INVALID_ARGUMENT, frame.reason));
        return;
      }
      const settings = objectOr(frame.value).settings;
      // Other commands (stack traces, verify results) answer server commands we never send.
      if (typeof settings !== 'object' || settings === null) return;
      const reply = { status: OK_STATUS, settings: settingsReply(settings) };
      write(reply);
      clearTimeout(stream.timer);
      stream.timer = setTimeout(() => write(reply), SETTINGS_RESEND_MS);
      stream.timer.unref();
    });
    // The client half-closed: complete the call with OK at once (contract §3.6).
    call.on('end', () => {
      if (finish()) call.end();
    });
    call.on('cancelled', finish);
    call.on('error', (err) => {
      log.debug({ err }, 'Telemetry stream failed');
      finish();
    });
  };

  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [rpc, method] of Object.entries(service)) {
    if (HANDLED.has(rpc)) continue;
    const reply = status(RmqCode.UNSUPPORTED, notHereMessage(rpc));
    if (method.responseStream) {
      handlers[rpc] = (call: grpc.ServerWritableStream<Decoded, object>) => {
        call.write(reply);
        call.end();
      };
    } else {
      handlers[rpc] = (_call: unknown, callback: grpc.sendUnaryData<object>) => {
        callback(null, reply);
      };
    }
  }
  handlers.QueryRoute = (
    call: grpc.ServerUnaryCall<Decoded, object>,
    callback: grpc.sendUnaryData<object>,
  ) => callback(null, queryRoute(call.request, call.metadata));
  const ok = (_call: unknown, callback: grpc.sendUnaryData<object>): void => {
    callback(null, { status: OK_STATUS });
  };
  handlers.Heartbeat = ok;
  handlers.NotifyClientTermination = ok;
  handlers.Telemetry = telemetry;

  return {
    // A Telemetry message may carry a client's thread dump.
    definition: safeServiceDefinition(service, { Telemetry: NAMESRV_TELEMETRY_BYTES_MAX }),
    handlers,
    close: () => {
      for (const stream of [...streams]) {
        streams.delete(stream);
        clearTimeout(stream.timer);
        if (!stream.call.cancelled) stream.call.end();
      }
    },
  };
}
