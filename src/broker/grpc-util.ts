/**
 * Small pieces the gRPC services share: finding and loading the `.proto` files at run time,
 * typed codecs for the loosely typed objects proto-loader produces, reconnect backoff, status
 * errors for handlers and a rate-limited warning for input that peers may send in bulk.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Clock } from '../common/clock';
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';

export {
  PROTO_DIR_ENV,
  PROTO_LOADER_OPTIONS,
  findProtoDir,
  loadProto,
} from '../common/proto-files';

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
