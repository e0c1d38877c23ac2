/**
 * Loading `apache.rocketmq.v2.MessagingService` from `proto/apache/rocketmq/v2/service.proto`.
 * The file imports `apache/rocketmq/v2/definition.proto` by its path from the proto root, so
 * it is loaded with that root as include directory (the shared `loadProto` takes none) and the
 * broker's PROTO_LOADER_OPTIONS. One load per directory, shared by every service instance.
 *
 * Request decoding never throws: bytes that do not decode reach the handler as an
 * {@link UndecodableRequest}, which it answers with a BAD_REQUEST status like any other bad
 * input (a throwing decoder would make grpc-js end the call with a gRPC INTERNAL error).
 * Delivered messages are encoded by hand (rmq-message-encode.ts) and pass the response
 * encoder as bytes; SendMessage and AckMessage requests are decoded by hand
 * (send-request-decode.ts).
 */
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { RaftmqError } from '../common/errors';
import { findProtoDir, PROTO_LOADER_OPTIONS } from '../common/proto-files';
import { overBound } from '../common/request-bounds';
import { MESSAGING_RECEIVE_MESSAGE_BYTES_MAX } from './messaging-options';
import { EncodedFrame } from './rmq-message-encode';
import { decodeAckRequest, decodeSendRequest } from './send-request-decode';

/** The service file, relative to the proto root. */
export const RMQ_SERVICE_PROTO_FILE = 'apache/rocketmq/v2/service.proto';
/** Full name of the service. */
export const MESSAGING_SERVICE_NAME = 'apache.rocketmq.v2.MessagingService';

const loaded = new Map<string, Promise<grpc.ServiceDefinition>>();

/** What a handler receives in place of a request whose bytes could not be decoded. */
export class UndecodableRequest {
  constructor(readonly reason: string) {}
}

/** Hand-written request decoders that replace the generic ones of the methods they name. */
export type RequestDecoders = Readonly<Record<string, (bytes: Buffer) => unknown>>;

/**
 * Requests of one RPC larger than this are not decoded (the handler answers BAD_REQUEST),
 * unless the service names another bound for that RPC (why: common/request-bounds.ts). The
 * requests of every RPC but SendMessage, AckMessage and Telemetry are a few hundred bytes.
 */
export const RPC_REQUEST_BYTES_MAX = 1024 * 1024;

/** Bounds of the RPCs whose requests may be larger, after decompression. */
export const MESSAGING_REQUEST_BYTES_MAX: Readonly<Record<string, number>> = Object.freeze({
  // The hand-written decoder bounds what it builds (send-request-decode.ts).
  SendMessage: MESSAGING_RECEIVE_MESSAGE_BYTES_MAX,
  AckMessage: 4 * 1024 * 1024,
  // A client's thread dump.
  Telemetry: 4 * 1024 * 1024,
});

/**
 * `service` with request decoders (the generic ones, or those of `decoders`) that return an
 * UndecodableRequest instead of throwing, or for a request over its RPC's bound
 * (`requestBytesMax`, else {@link RPC_REQUEST_BYTES_MAX}), and response encoders that send an
 * {@link EncodedFrame} as the bytes it already is.
 */
export function tolerantDecoding(
  service: grpc.ServiceDefinition,
  decoders: RequestDecoders = {},
  requestBytesMax: Readonly<Record<string, number>> = {},
): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [rpc, method] of Object.entries(service)) {
    const decode = decoders[rpc] ?? method.requestDeserialize;
    const encode = method.responseSerialize;
    const bytesMax = requestBytesMax[rpc] ?? RPC_REQUEST_BYTES_MAX;
    out[rpc] = {
      ...method,
      responseSerialize: (value: unknown): Buffer =>
        value instanceof EncodedFrame ? value.bytes : encode(value),
      requestDeserialize: (bytes: Buffer): unknown => {
        const over = overBound(rpc, bytes.length, bytesMax);
        if (over !== undefined) return new UndecodableRequest(over);
        try {
          return decode(bytes);
        } catch (err) {
          // Not swallowed: the handler answers BAD_REQUEST with this reason.
          return new UndecodableRequest(
            `the request could not be decoded: ${err instanceof Error ? err.message : String(err)}`,
          );
        }
      },
    };
  }
  return out;
}

/**
 * The service `serviceName` of `file` (relative to the proto directory, which is also the
 * include path), with {@link tolerantDecoding}. One load per directory and file.
 */
export function loadTolerantService(
  file: string,
  serviceName: string,
  protoDir = '',
  decoders: RequestDecoders = {},
  requestBytesMax: Readonly<Record<string, number>> = {},
): Promise<grpc.ServiceDefinition> {
  const root = findProtoDir(file, protoDir);
  // The decoders and bounds are part of what is loaded: a load with other ones is another entry.
  const bounds = Object.entries(requestBytesMax)
    .map(([rpc, n]) => `${rpc}=${n}`)
    .sort()
    .join();
  const key = `${root}\0${file}\0${Object.keys(decoders).sort().join()}\0${bounds}`;
  let definition = loaded.get(key);
  if (definition === undefined) {
    definition = protoLoader
      .load(file, { ...PROTO_LOADER_OPTIONS, includeDirs: [root] })
      .then((pkg) => {
        const service = pkg[serviceName];
        if (service === undefined || 'format' in service) {
          throw new RaftmqError('INTERNAL', `${file} has no ${serviceName}`);
        }
        return tolerantDecoding(service, decoders, requestBytesMax);
      });
    loaded.set(key, definition);
    // A failed load is not cached, so a corrected file can be loaded later.
    definition.catch(() => loaded.delete(key));
  }
  return definition;
}

/** The MessagingService definition (request/response codecs of every RPC). */
export function loadMessagingDefinition(protoDir = ''): Promise<grpc.ServiceDefinition> {
  return loadTolerantService(
    RMQ_SERVICE_PROTO_FILE,
    MESSAGING_SERVICE_NAME,
    protoDir,
    { SendMessage: decodeSendRequest, AckMessage: decodeAckRequest },
    MESSAGING_REQUEST_BYTES_MAX,
  );
}
