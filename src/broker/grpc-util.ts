/**
 * Small pieces the gRPC services share: finding and loading the `.proto` files at run time,
 * typed codecs for the loosely typed objects proto-loader produces, reconnect backoff, status
 * errors for handlers and a rate-limited warning for input that peers may send in bulk.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type * as http2 from 'node:http2';
import type { Clock } from '../common/clock';
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';

/** Encoder and decoder of one message type; decoded values are unchecked (`unknown`). */
export interface MessageCodec {
  readonly encode: (value: object) => Buffer;
  /** Throws (protobufjs errors) on bytes that are not a valid encoding. */
  readonly decode: (bytes: Buffer) => unknown;
}

/** The codec of the message type `fullName` in `definition`; throws INTERNAL when absent. */
export function messageCodec(
  definition: protoLoader.PackageDefinition,
  fullName: string,
): MessageCodec {
  const type = definition[fullName];
  if (type === undefined || !('format' in type) || !('serialize' in type)) {
    throw new RaftmqError('INTERNAL', `proto has no message type ${fullName}`);
  }
  const messageType = type as protoLoader.MessageTypeDefinition<object, unknown>;
  return {
    encode: (value) => messageType.serialize(value),
    decode: (bytes) => messageType.deserialize(bytes),
  };
}

/** What a server-side deserializer hands the handler: never throws, so bad bytes are counted. */
export type DecodedFrame =
  { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string };

/** Wraps a codec's decode so that undecodable bytes become a value the handler can reject. */
export function safeDecoder(codec: MessageCodec): (bytes: Buffer) => DecodedFrame {
  return (bytes) => {
    try {
      return { ok: true, value: codec.decode(bytes) };
    } catch (err) {
      // Not swallowed: the handler rejects the frame with this reason, counts and logs it.
      return { ok: false, reason: `undecodable protobuf: ${String(err)}` };
    }
  };
}

/** The identity serializer, for frames encoded before they are written. */
export function passBuffer(value: Buffer): Buffer {
  return value;
}

/** A status error for a handler's callback. */
export function statusError(code: grpc.status, details: string): grpc.ServerErrorResponse {
  return Object.assign(new Error(details), { code, details });
}

/**
 * The delay before reconnect attempt `attempt` (0-based): exponential from `minMs`, capped at
 * `maxMs`, then spread by +-20% with `random()` in [0, 1) so peers that failed together do not
 * reconnect together.
 */
export function backoffDelayMs(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number,
): number {
  const exponent = Math.min(Math.max(attempt, 0), 30);
  const baseMs = Math.min(maxMs, minMs * 2 ** exponent);
  const jitteredMs = baseMs * (0.8 + 0.4 * random());
  return Math.round(Math.min(maxMs, Math.max(minMs, jitteredMs)));
}

/**
 * Logs a warning at most once per interval; the next line carries how many were suppressed.
 * For events a misbehaving peer can cause at line rate (rejected input).
 */
export class RateLimitedWarn {
  private lastMs = Number.NEGATIVE_INFINITY;
  private suppressedCount = 0;

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly intervalMs: number,
  ) {}

  warn(fields: Record<string, unknown>, message: string): void {
    const nowMs = this.clock.monotonicMs();
    if (nowMs - this.lastMs < this.intervalMs) {
      this.suppressedCount += 1;
      return;
    }
    this.log.warn({ ...fields, suppressedCount: this.suppressedCount }, message);
    this.lastMs = nowMs;
    this.suppressedCount = 0;
  }
}

/** `host:port`, with an IPv6 host in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Binds `server` (insecure) to `address`; resolves to the bound port. */
export function bindServer(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err === null) resolve(port);
      else reject(new RaftmqError('INTERNAL', `cannot listen on ${address}`, { cause: err }));
    });
  });
}

/**
 * The HTTP/2 receive window per stream that raftmq's servers grant (their connection window is
 * twice this). Node's default is 64 KiB per stream and per connection, and grpc-js servers
 * have no option to change it: a peer then sends 64 KiB per round trip and waits for this
 * process to read them and answer with a WINDOW_UPDATE, which replication (tens of MB/s per
 * follower) and batched sends hit at once. Measured with `bench:raft`: 54,600-64,900 -> 64,400-
 * 84,200 entries/s saturated, and 8-11 -> 6-7 µs of CPU per entry on each node, in two
 * interleaved pairs. Raft and the pop and send paths bound what they have in flight themselves.
 */
export const FLOW_WINDOW_BYTES = 8 * 1024 * 1024;

/**
 * The window of the broker's client-facing server: smaller, because grpc-js lifts Node's
 * per-session memory limit and pauses a stream its handler has not read, so the window is what
 * bounds the bytes a client can park in the broker (twice this per connection). Eight batched
 * sends of 128 KiB fit at once; a 4 MiB body takes a few round trips.
 */
export const CLIENT_FLOW_WINDOW_BYTES = 1024 * 1024;

/** Servers already widened (a second call would add a second listener). */
const widened = new WeakSet<grpc.Server>();

/** The private fields of a grpc-js Server that {@link widenFlowWindows} uses. */
interface GrpcServerInternals {
  readonly http2Servers?: unknown;
  readonly sessions?: unknown;
}

/**
 * Grants `streamBytes` of receive window per stream, and twice that per connection, on every
 * connection `server` accepts from now on and on those it holds. Call it right after binding.
 * grpc-js keeps its HTTP/2 servers and sessions in private fields; when a later version renames
 * them this changes nothing, logs a warning on `log` and returns false (the server still works,
 * with Node's default windows). A second call on the same server changes nothing.
 * `test/broker/grpc-flow-window.test.ts` checks it on the grpc-js in use.
 */
export function widenFlowWindows(
  server: grpc.Server,
  log: Logger,
  streamBytes = FLOW_WINDOW_BYTES,
): boolean {
  if (widened.has(server)) return true;
  const internals = server as unknown as GrpcServerInternals;
  const unchanged = (): false => {
    log.warn({}, 'could not widen the HTTP/2 flow-control windows (grpc-js internals changed)');
    return false;
  };
  if (!(internals.http2Servers instanceof Map) || internals.http2Servers.size === 0) {
    return unchanged();
  }
  const widen = (session: http2.Http2Session): void => {
    if (session.destroyed || session.closed) return;
    try {
      session.settings({ initialWindowSize: streamBytes });
      session.setLocalWindowSize(2 * streamBytes);
    } catch {
      // The session closed meanwhile: nothing to widen.
    }
  };
  const servers = [...internals.http2Servers.keys()] as unknown[];
  if (!servers.every((s) => typeof (s as { on?: unknown }).on === 'function')) return unchanged();
  for (const http2Server of servers) (http2Server as http2.Http2Server).on('session', widen);
  widened.add(server);
  // Connections accepted before the call (grpc-js lists them only with channelz on, its
  // default); called right after binding there are normally none.
  if (internals.sessions instanceof Map) {
    for (const session of internals.sessions.keys()) widen(session as http2.Http2Session);
  }
  return true;
}

/**
 * Shuts `server` down gracefully, or by force after `timeoutMs` (calls still open then are
 * cancelled). Resolves once it is down; leaves no timer behind.
 */
export function shutdownServer(server: grpc.Server, timeoutMs: number, log: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      log.warn({ timeoutMs }, 'graceful server shutdown timed out; forcing');
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    server.tryShutdown((err?: Error) => {
      clearTimeout(timer);
      if (err !== undefined) {
        log.warn({ err }, 'graceful server shutdown failed; forcing');
        server.forceShutdown();
      }
      resolve();
    });
  });
}

/** How deep {@link http2StreamOf} looks through grpc-js's interceptor chain. */
const CALL_CHAIN_DEPTH_MAX = 8;

/**
 * The HTTP/2 stream under a server call of grpc-js, or undefined when this grpc-js keeps it
 * elsewhere. grpc-js offers no way to end a call whose answer its client does not read: a
 * status waits behind the unsent data (HTTP/2 sends a stream's frames in order), so ending it
 * by its deadline takes resetting the stream itself. The call keeps its intercepting call in a
 * private field (`call`), which keeps the next one in `nextCall`, down to the one holding
 * `stream`; `test/broker/stream-bounds.test.ts` checks it on the grpc-js in use.
 */
export function http2StreamOf(call: object): http2.ServerHttp2Stream | undefined {
  let at = (call as { call?: unknown }).call;
  for (
    let depth = 0;
    depth < CALL_CHAIN_DEPTH_MAX && typeof at === 'object' && at !== null;
    depth++
  ) {
    const stream = (at as { stream?: unknown }).stream;
    if (
      typeof stream === 'object' &&
      stream !== null &&
      typeof (stream as { close?: unknown }).close === 'function' &&
      'rstCode' in stream
    ) {
      return stream as http2.ServerHttp2Stream;
    }
    at = (at as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}
