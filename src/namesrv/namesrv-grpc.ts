/**
 * The gRPC plumbing of the NameServer and its clients: server start and stop, status errors,
 * service definitions whose request decoding never throws (so a bad frame is answered with
 * INVALID_ARGUMENT instead of a generic error), unary calls as promises, and a rate-limited
 * warning for failures that repeat every interval.
 *
 * `src/broker/grpc-util.ts` has similar helpers; the NameServer keeps its own because the
 * module map forbids `namesrv` to import `broker` (the broker imports the NameServer client).
 */
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import type { Clock } from '../common/clock';
import { isRaftmqError, RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { overBound } from '../common/request-bounds';

/** Largest message a NameServer client reads (the proxy's 130 MiB: routes of many groups). */
export const NAMESRV_MESSAGE_BYTES_MAX = 130 * 1024 * 1024;

/**
 * Largest request a NameServer's gRPC server takes in, after decompression; beyond it grpc-js
 * refuses the call with RESOURCE_EXHAUSTED. What a NameServer is sent (heartbeats, route
 * queries, Telemetry) is a few KiB, but for a broker's registration, which lists every topic it
 * hosts and has only this bound: the route table's 65,536 topics of up to 127 characters with
 * their configuration are about 11 MB.
 * Requests under this bound but over their RPC's (`safeServiceDefinition`) are answered by the
 * handler as undecodable, with a status.
 */
export const NAMESRV_REQUEST_BYTES_MAX = 16 * 1024 * 1024;

/** The bound of a Telemetry message, which may carry a client's thread dump. */
export const NAMESRV_TELEMETRY_BYTES_MAX = 4 * 1024 * 1024;

/** Options of a NameServer's gRPC server. */
export const NAMESRV_SERVER_OPTIONS: Readonly<grpc.ServerOptions> = Object.freeze({
  'grpc.max_receive_message_length': NAMESRV_REQUEST_BYTES_MAX,
});

/**
 * Options of a client channel to a NameServer. Reconnect backoff is capped at 1 s (grpc-js
 * default: 120 s), so a restarted NameServer is reached by the next registration interval.
 */
export const NAMESRV_CHANNEL_OPTIONS: Readonly<grpc.ChannelOptions> = Object.freeze({
  'grpc.max_receive_message_length': NAMESRV_MESSAGE_BYTES_MAX,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.min_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
});

/** What a handler receives as its request: the decoded value, or why it could not be. */
export type Decoded =
  { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string };

/** A status error for a handler's callback or a stream's 'error' event. */
export function statusError(code: grpc.status, details: string): grpc.ServerErrorResponse {
  return Object.assign(new Error(details), { code, details });
}

/**
 * The gRPC error for `err` thrown by a handler: a RaftmqError keeps its status and message;
 * anything else is a bug, logged, and answered with INTERNAL.
 */
export function toServiceError(err: unknown, log: Logger, rpc: string): grpc.ServerErrorResponse {
  if (isRaftmqError(err)) return statusError(err.grpcStatus, err.message);
  log.error({ err, rpc }, 'unexpected error in a NameServer handler');
  return statusError(grpc.status.INTERNAL, `${rpc}: internal error`);
}

/**
 * Requests of one RPC larger than this are not decoded (the handler answers them as
 * undecodable) unless `safeServiceDefinition` is given another bound for it (why:
 * common/request-bounds.ts). A NameServer RPC's request is a few hundred bytes.
 */
export const NAMESRV_RPC_REQUEST_BYTES_MAX = 256 * 1024;

/**
 * `service` with every request deserializer wrapped so that it never throws: handlers get a
 * {@link Decoded} and answer undecodable bytes themselves. A request over its RPC's bound
 * (`requestBytesMax`, else {@link NAMESRV_RPC_REQUEST_BYTES_MAX}) is not decoded at all.
 */
export function safeServiceDefinition(
  service: protoLoader.ServiceDefinition,
  requestBytesMax: Readonly<Record<string, number>> = {},
): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<Decoded, object>> = {};
  for (const [name, method] of Object.entries(service)) {
    const decode = method.requestDeserialize;
    const bytesMax = requestBytesMax[name] ?? NAMESRV_RPC_REQUEST_BYTES_MAX;
    out[name] = {
      path: method.path,
      requestStream: method.requestStream,
      responseStream: method.responseStream,
      requestSerialize: () => {
        throw new RaftmqError('INTERNAL', 'a server definition does not serialize requests');
      },
      responseSerialize: method.responseSerialize,
      responseDeserialize: method.responseDeserialize,
      requestDeserialize: (bytes: Buffer): Decoded => {
        const over = overBound(name, bytes.length, bytesMax);
        if (over !== undefined) return { ok: false, reason: over };
        try {
          return { ok: true, value: decode(bytes) };
        } catch (err) {
          // Not swallowed: the handler answers INVALID_ARGUMENT with this reason.
          return { ok: false, reason: `undecodable request: ${String(err)}` };
        }
      },
    };
  }
  return out;
}

/** The method named `name` of a loaded service; throws INTERNAL when the proto lacks it. */
export function methodOf(
  service: protoLoader.ServiceDefinition,
  name: string,
): protoLoader.MethodDefinition<object, object> {
  const method = service[name];
  if (method === undefined) throw new RaftmqError('INTERNAL', `proto has no method ${name}`);
  return method;
}

/** The service `fullName` of a loaded package; throws INTERNAL when absent. */
export function serviceOf(
  definition: protoLoader.PackageDefinition,
  fullName: string,
): protoLoader.ServiceDefinition {
  const service = definition[fullName];
  if (service === undefined || 'format' in service || 'serialize' in service) {
    throw new RaftmqError('INTERNAL', `proto has no service ${fullName}`);
  }
  return service;
}

/**
 * Calls a unary method; resolves with the decoded response, rejects with the gRPC error.
 * Aborting `signal` cancels the call, which then rejects at once with CANCELLED.
 */
export function unaryCall(
  client: grpc.Client,
  method: protoLoader.MethodDefinition<object, object>,
  request: object,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const call = client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (err, response) => {
        signal?.removeEventListener('abort', cancel);
        if (err === null) resolve(response);
        else reject(err);
      },
    );
    function cancel(): void {
      call.cancel();
    }
    if (signal?.aborted === true) cancel();
    else signal?.addEventListener('abort', cancel, { once: true });
  });
}

/** `host:port` for a bind address, with an IPv6 host in brackets. */
function bindAddress(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Binds `server` (insecure) on `host:port`; resolves to the bound port. */
export function bindServer(server: grpc.Server, host: string, port: number): Promise<number> {
  const address = bindAddress(host, port);
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, boundPort) => {
      if (err === null) resolve(boundPort);
      else reject(new RaftmqError('INTERNAL', `cannot listen on ${address}`, { cause: err }));
    });
  });
}

/** Shuts `server` down gracefully, or by force after `timeoutMs`; leaves no timer behind. */
export function shutdownServer(server: grpc.Server, timeoutMs: number, log: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      log.warn({ timeoutMs }, 'graceful NameServer shutdown timed out; forcing');
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    server.tryShutdown((err?: Error) => {
      clearTimeout(timer);
      if (err !== undefined) {
        log.warn({ err }, 'graceful NameServer shutdown failed; forcing');
        server.forceShutdown();
      }
      resolve();
    });
  });
}

/**
 * Logs a warning at most once per `intervalMs` per key; the next line carries how many were
 * suppressed. `recovered(key)` resets the key, so the next failure is logged at once.
 */
export class RateLimitedWarn {
  /** Bounded by the number of keys callers use (one per NameServer address). */
  private readonly keys = new Map<string, { lastMs: number; suppressedCount: number }>();

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly intervalMs: number,
  ) {}

  warn(key: string, fields: Record<string, unknown>, message: string): void {
    const nowMs = this.clock.monotonicMs();
    const state = this.keys.get(key);
    if (state !== undefined && nowMs - state.lastMs < this.intervalMs) {
      state.suppressedCount += 1;
      return;
    }
    this.log.warn({ ...fields, suppressedCount: state?.suppressedCount ?? 0 }, message);
    this.keys.set(key, { lastMs: nowMs, suppressedCount: 0 });
  }

  /** True when `key` had failures logged since it last recovered. */
  recovered(key: string): boolean {
    return this.keys.delete(key);
  }
}
