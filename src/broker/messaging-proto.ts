/**
 * Loading `apache.rocketmq.v2.MessagingService` from `proto/apache/rocketmq/v2/service.proto`.
 * The file imports `apache/rocketmq/v2/definition.proto` by its path from the proto root, so
 * it is loaded with that root as include directory (the shared `loadProto` takes none) and the
 * broker's PROTO_LOADER_OPTIONS. One load per directory, shared by every service instance.
 */
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { RaftmqError } from '../common/errors';
import { findProtoDir, PROTO_LOADER_OPTIONS } from './grpc-util';

/** The service file, relative to the proto root. */
export const RMQ_SERVICE_PROTO_FILE = 'apache/rocketmq/v2/service.proto';
/** Full name of the service. */
export const MESSAGING_SERVICE_NAME = 'apache.rocketmq.v2.MessagingService';

const loaded = new Map<string, Promise<grpc.ServiceDefinition>>();

/** The MessagingService definition (request/response codecs of every RPC). */
export function loadMessagingDefinition(protoDir = ''): Promise<grpc.ServiceDefinition> {
  const root = findProtoDir(RMQ_SERVICE_PROTO_FILE, protoDir);
  let definition = loaded.get(root);
  if (definition === undefined) {
    definition = protoLoader
      .load(RMQ_SERVICE_PROTO_FILE, { ...PROTO_LOADER_OPTIONS, includeDirs: [root] })
      .then((pkg) => {
        const service = pkg[MESSAGING_SERVICE_NAME];
        if (service === undefined || 'format' in service) {
          throw new RaftmqError(
            'INTERNAL',
            `${RMQ_SERVICE_PROTO_FILE} has no ${MESSAGING_SERVICE_NAME}`,
          );
        }
        return service;
      });
    loaded.set(root, definition);
    // A failed load is not cached, so a corrected file can be loaded later.
    definition.catch(() => loaded.delete(root));
  }
  return definition;
}
