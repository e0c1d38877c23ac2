/**
 * The generic (@grpc/proto-loader) codec of a MessagingService method, loaded straight from the
 * project's service.proto under the broker's PROTO_LOADER_OPTIONS: the oracle the hand-written
 * codecs are tested against (loadMessagingDefinition replaces some of its decoders).
 */
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { findProtoDir, PROTO_LOADER_OPTIONS } from '../src/common/proto-files';
import { MESSAGING_SERVICE_NAME, RMQ_SERVICE_PROTO_FILE } from '../src/broker/messaging-proto';

export async function genericMessagingMethod(
  name: string,
): Promise<grpc.MethodDefinition<unknown, unknown>> {
  const pkg = await protoLoader.load(RMQ_SERVICE_PROTO_FILE, {
    ...PROTO_LOADER_OPTIONS,
    includeDirs: [findProtoDir(RMQ_SERVICE_PROTO_FILE)],
  });
  const service = pkg[MESSAGING_SERVICE_NAME];
  const method = service !== undefined && !('format' in service) ? service[name] : undefined;
  if (method === undefined) throw new Error(`${MESSAGING_SERVICE_NAME} has no ${name}`);
  return method as grpc.MethodDefinition<unknown, unknown>;
}
