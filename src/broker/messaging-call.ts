/**
 * What every MessagingService handler shares: the service context, request metadata (client
 * id, namespace, the forwarding mark), deadlines, and the unary wrapper that turns any failure
 * into a RocketMQ status in the response, so a client's bad input never becomes a gRPC error.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Clock } from '../common/clock';
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { type CallAdmission, type CallGate, UNDECODED_BUSY, undecodedBusy } from './call-admission';
import type { ClientRegistry } from './client-registry';
import type { Forwarder } from './messaging-forward';
import { UndecodableRequest } from './messaging-proto';
import type { ResolvedMessagingOptions, ServiceBackend } from './messaging-options';
import type { PopRenewer } from './pop-renewer';
import { toStatus } from './rmq-convert';
import type { WireStatus } from './rmq-wire';

/** The client's id; required on every call but NotifyClientTermination. */
export const CLIENT_ID_HEADER = 'x-mq-client-id';
/** The client's namespace (the only place most calls carry it). */
export const NAMESPACE_HEADER = 'x-mq-namespace';
/** Set on a request one broker node forwarded to its leader; such a request is not forwarded. */
export const FORWARDED_HEADER = 'x-raftmq-forwarded';

/** A Telemetry session the service must end when it closes. */
export interface ClosableSession {
  close(): void;
}

/** Everything a handler needs. */
export interface ServiceContext {
  readonly backend: ServiceBackend;
  readonly options: ResolvedMessagingOptions;
  readonly log: Logger;
  readonly clock: Clock;
  readonly registry: ClientRegistry;
  /** Renews auto-renewing deliveries while this node leads; undefined without pop. */
  readonly renewer: PopRenewer | undefined;
  readonly forwarder: Forwarder;
  /** Open Telemetry sessions. */
  readonly sessions: Set<ClosableSession>;
  /** Aborted when the service closes: long polls stop waiting. */
  readonly closing: AbortSignal;
  /** Calls and answer bytes in flight, and their bounds. */
  readonly admission: CallAdmission;
}

/**
 * Lets a call in, or says why not: returns the function the handler calls once it is done, or
 * the BUSY error to answer with. Must be O(1): it runs on every call.
 */
export type Admit = (call: grpc.ServerUnaryCall<unknown, unknown>) => (() => void) | RaftmqError;

/** The default admission: a place in `gate` for as long as the handler runs. */
export function gateAdmit(gate: CallGate): Admit {
  const leave = (): void => gate.leave();
  return () => (gate.tryEnter() ? leave : gate.busy());
}

/** True when the request was left undecoded because its RPC's gate was full. */
export function isUndecodedBusy(request: unknown): boolean {
  return request === UNDECODED_BUSY;
}

/** The first value of `key` as a string, or undefined when absent or empty. */
export function headerValue(metadata: grpc.Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The caller's client id; throws CLIENT_ID_REQUIRED without one. */
export function requireClientId(metadata: grpc.Metadata): string {
  const id = headerValue(metadata, CLIENT_ID_HEADER);
  if (id === undefined) {
    throw new RaftmqError('CLIENT_ID_REQUIRED', `the request has no ${CLIENT_ID_HEADER} header`, {
      details: { field: CLIENT_ID_HEADER },
    });
  }
  return id;
}

/** The caller's client id, or '' without one (such a call is refused later). */
export function clientIdOf(metadata: grpc.Metadata): string {
  return headerValue(metadata, CLIENT_ID_HEADER) ?? '';
}

/** The `x-mq-namespace` header, when present. */
export function namespaceHeader(metadata: grpc.Metadata): string | undefined {
  return headerValue(metadata, NAMESPACE_HEADER);
}

/** True when another node already forwarded this request. */
export function isForwarded(metadata: grpc.Metadata): boolean {
  return headerValue(metadata, FORWARDED_HEADER) !== undefined;
}

/**
 * The absolute deadline (epoch ms) to work to: the call's own, capped at
 * `requestTimeoutMsMax` from now (which is also the deadline of a call that has none).
 */
export function callDeadlineMs(
  call: { getDeadline(): grpc.Deadline },
  ctx: ServiceContext,
): number {
  const deadline = call.getDeadline();
  const givenMs = deadline instanceof Date ? deadline.getTime() : deadline;
  const capMs = ctx.clock.nowMs() + ctx.options.requestTimeoutMsMax;
  return Number.isFinite(givenMs) ? Math.min(givenMs, capMs) : capMs;
}

/** Throws INVALID_ARGUMENT (BAD_REQUEST) when the request's bytes could not be decoded. */
export function requireDecoded(request: unknown): void {
  if (request instanceof UndecodableRequest) {
    throw new RaftmqError('INVALID_ARGUMENT', request.reason);
  }
}

/** A response carrying only a status (every RocketMQ response has a `status` field first). */
export interface StatusOnly {
  readonly status: WireStatus;
}

/**
 * Empties the repeated field of an answered request that holds its bulk: `messages` of a
 * SendMessage (each message's body is a view of the request's bytes, so this lets go of those
 * too) and `entries` of an AckMessage.
 *
 * Why: once a call is answered nothing of ours holds its request, yet grpc-js's per-call
 * objects (its unary handler's closure keeps the request) stay reachable to the young
 * generation's collections for a while after the call has ended: on the leader in batched
 * produce, answered requests outlived two scavenges and were promoted, 1.8 MB per scavenge,
 * and the 128 KiB request buffers held by the body views were freed only by full collections,
 * which V8 started for that external memory about once a second. With the messages dropped
 * here, 0.2 MB per scavenge was promoted (docs/performance.md, "What the leader promoted").
 */
function releaseAnswered(request: unknown): void {
  if (typeof request !== 'object' || request === null) return;
  const { messages, entries } = request as { messages?: unknown; entries?: unknown };
  if (Array.isArray(messages)) messages.length = 0;
  if (Array.isArray(entries)) entries.length = 0;
}

/**
 * A unary handler running `handle`: its result is the response; a thrown error becomes a
 * response with only the error's status (never a gRPC error, which makes clients isolate the
 * endpoint or, for NotifyClientTermination, abort their shutdown). Once answered, the
 * request's bulk is let go ({@link releaseAnswered}).
 */
export function unaryHandler(
  ctx: ServiceContext,
  rpc: string,
  handle: (call: grpc.ServerUnaryCall<unknown, unknown>) => Promise<object>,
  admit: Admit = gateAdmit(ctx.admission.calls),
): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    // Refused at once, before any work: the bound is on calls in flight, and a refusal costs
    // one status (a request left undecoded is refused whatever the gate says now).
    const admitted = isUndecodedBusy(call.request) ? undecodedBusy() : admit(call);
    if (admitted instanceof RaftmqError) {
      const response: StatusOnly = { status: toStatus(admitted) };
      callback(null, response);
      return;
    }
    // Run in a promise chain so that a handler throwing synchronously (before its first await)
    // is answered with a status too, not a gRPC UNKNOWN error.
    void Promise.resolve()
      .then(() => {
        requireDecoded(call.request);
        return handle(call);
      })
      .then(
        (response) => {
          callback(null, response);
          releaseAnswered(call.request);
        },
        (err: unknown) => {
          const status = toStatus(err, ctx.log);
          ctx.log.debug({ rpc, code: status.code, reason: status.message }, 'request refused');
          const response: StatusOnly = { status };
          callback(null, response);
          releaseAnswered(call.request);
        },
      )
      .finally(admitted);
  };
}
