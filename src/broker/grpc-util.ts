/**
 * Small pieces the gRPC services share: finding and loading the `.proto` files at run time,
 * typed codecs for the loosely typed objects proto-loader produces, reconnect backoff, status
 * errors for handlers and a rate-limited warning for input that peers may send in bulk.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Clock } from '../common/clock';
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';

/** Environment variable naming the directory of the `.proto` files (overrides the lookup). */
export const PROTO_DIR_ENV = 'RAFTMQ_PROTO_DIR';

/** How far {@link findProtoDir} walks up from this file looking for the package root. */
const PACKAGE_ROOT_SEARCH_DEPTH_MAX = 8;

/**
 * The directory holding `fileName`: `override` when non-empty, else `$RAFTMQ_PROTO_DIR`, else
 * `proto/` under the package root, found by walking up from this file to the first directory
 * with a `package.json` (works from `src/broker/` under ts-node and from `dist/src/broker/`).
 * Throws INVALID_OPTION when the file is not there.
 */
export function findProtoDir(fileName: string, override = ''): string {
  const fromEnv = process.env[PROTO_DIR_ENV] ?? '';
  const given = override !== '' ? override : fromEnv;
  if (given !== '') {
    const dir = path.resolve(given);
    if (!fs.existsSync(path.join(dir, fileName))) {
      throw new RaftmqError('INVALID_OPTION', `proto directory ${dir} has no ${fileName}`, {
        details: { option: override !== '' ? 'protoDir' : PROTO_DIR_ENV, dir },
      });
    }
    return dir;
  }
  let dir = __dirname;
  for (let depth = 0; depth < PACKAGE_ROOT_SEARCH_DEPTH_MAX; depth++) {
    const candidate = path.join(dir, 'proto');
    if (
      fs.existsSync(path.join(dir, 'package.json')) &&
      fs.existsSync(path.join(candidate, fileName))
    ) {
      return candidate;
    }
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new RaftmqError(
    'INVALID_OPTION',
    `cannot find proto/${fileName} above ${__dirname}; set ${PROTO_DIR_ENV} or protoDir`,
    { details: { option: 'protoDir' } },
  );
}

/** proto-loader settings used by every raftmq service: camelCase fields, numbers for uint64. */
export const PROTO_LOADER_OPTIONS: Readonly<protoLoader.Options> = Object.freeze({
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** Encoder and decoder of one message type; decoded values are unchecked (`unknown`). */
export interface MessageCodec {
  readonly encode: (value: object) => Buffer;
  /** Throws (protobufjs errors) on bytes that are not a valid encoding. */
  readonly decode: (bytes: Buffer) => unknown;
}

const loaded = new Map<string, Promise<protoLoader.PackageDefinition>>();

/** Loads (once per file) the package definition of `protoFile`. */
export function loadProto(protoFile: string): Promise<protoLoader.PackageDefinition> {
  let definition = loaded.get(protoFile);
  if (definition === undefined) {
    definition = protoLoader.load(protoFile, { ...PROTO_LOADER_OPTIONS });
    loaded.set(protoFile, definition);
    // A failed load is not cached, so a corrected file can be loaded later.
    definition.catch(() => loaded.delete(protoFile));
  }
  return definition;
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
