/**
 * The RocketMQ 5 `apache.rocketmq.v2.MessagingService` of a broker node, over the
 * `MessagingBackend` seam: the client basics (QueryRoute, Telemetry, Heartbeat,
 * NotifyClientTermination), produce (SendMessage) and pull by offset (PullMessage, GetOffset,
 * UpdateOffset, QueryOffset) and pop consumption (QueryAssignment, ReceiveMessage,
 * AckMessage, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue), and beside it raftmq's
 * Fetch protocol (fetch-service.ts, read by offset in stored form). Transactions, recall
 * and lite subscriptions answer UNSUPPORTED for now. docs/client-protocol.md describes each RPC.
 *
 * Every call is answered: unary failures are RocketMQ statuses in the response (never a gRPC
 * error for a client's input), streams end after a status frame. The server must be created
 * with MESSAGING_SERVER_OPTIONS (a 4 MiB send exceeds grpc-js's default receive limit).
 *
 * Stop order: `close()` ends the Telemetry streams with OK, stops long polls (they answer with
 * what they have), cancels the client registry's timers and closes forwarding channels; call it
 * before shutting the server down so a graceful shutdown has nothing left to wait for.
 */
import { setMaxListeners } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { type Clock, type Scheduler, systemClock, systemScheduler } from '../common/clock';
import { RmqCode } from '../common/errors';
import { componentLogger, type Logger } from '../common/logger';
import { type CallAdmission, createCallAdmission, gatedDecoding } from './call-admission';
import { ClientRegistry, type OneShotTimers, systemTimers } from './client-registry';
import { type ClosableSession, type ServiceContext, unaryHandler } from './messaging-call';
import { fetchQueueHandler, loadFetchDefinition, receiveStoredHandler } from './fetch-service';
import { Forwarder } from './messaging-forward';
import {
  type MessagingServiceOptions,
  type ResolvedMessagingOptions,
  resolveMessagingServiceOptions,
  type ServiceBackend,
} from './messaging-options';
import { loadMessagingDefinition } from './messaging-proto';
import { getOffset, pullMessageHandler, queryOffset, updateOffset } from './messaging-pull';
import {
  ackMessage,
  changeInvisibleDuration,
  forwardToDeadLetterQueue,
  queryAssignment,
  receiveMessageHandler,
} from './messaging-pop';
import { queryRoute } from './messaging-route';
import { PopRenewer } from './pop-renewer';
import { sendMessage } from './messaging-send';
import { heartbeat, notifyClientTermination, telemetryHandler } from './messaging-telemetry';

/** Time and timers, injectable for tests. */
export interface MessagingServiceDeps {
  readonly clock?: Clock;
  readonly timers?: OneShotTimers;
  readonly scheduler?: Scheduler;
}

/** A gRPC service ready for `server.addService(definition, handlers)`. */
export interface ServiceParts {
  readonly definition: grpc.ServiceDefinition;
  readonly handlers: grpc.UntypedServiceImplementation;
}

/** The MessagingService, ready for `server.addService(definition, handlers)`. */
export interface MessagingService extends ServiceParts {
  /** raftmq's Fetch protocol (fetch-service.ts), over the same backend and context. */
  readonly fetch: ServiceParts;
  /** The clients this node knows (for status pages and, later, pop consumption). */
  readonly registry: ClientRegistry;
  /** Calls and answer bytes in flight, with their bounds (for status pages and tests). */
  readonly admission: CallAdmission;
  /** Ends open streams and long polls, cancels timers, closes forwarding channels. */
  close(): Promise<void>;
}

/** The RPCs answered UNSUPPORTED, with what to say. */
const UNSUPPORTED_RPCS: Readonly<Record<string, string>> = {
  EndTransaction: 'transaction messages are not supported yet; they are planned',
  RecallMessage: 'delay messages and their recall are not supported yet; they are planned',
  SyncLiteSubscription: 'lite subscriptions are not supported',
};

function unsupportedHandlers(): grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [rpc, message] of Object.entries(UNSUPPORTED_RPCS)) {
    const handler: grpc.handleUnaryCall<unknown, unknown> = (_call, callback) =>
      callback(null, { status: { code: RmqCode.UNSUPPORTED, message } });
    handlers[rpc] = handler;
  }
  return handlers;
}

/**
 * The renewer of auto-renewing deliveries, over the backend's pop service (undefined without
 * one): it renews while this node is the ready leader, for clients the registry (or its own
 * traffic) shows alive.
 */
function createRenewer(
  backend: ServiceBackend,
  options: ResolvedMessagingOptions,
  log: Logger,
  clock: Clock,
  registry: ClientRegistry,
  deps: MessagingServiceDeps,
): PopRenewer | undefined {
  const pop = backend.pop;
  if (pop === undefined) return undefined;
  return new PopRenewer(
    {
      clock,
      scheduler: deps.scheduler ?? systemScheduler,
      log,
      leaderTerm: () => {
        const view = backend.roleView();
        return view.role === 'leader' && view.leaderReady ? view.term : undefined;
      },
      changeAll: (commands, deadlineMs, wake) => pop.changeInvisibleAll(commands, deadlineMs, wake),
      currentRecord: (group, topic, queueId, offset, handle) =>
        pop.currentRecord(group, topic, queueId, offset, handle),
      clientContact: (clientId) => {
        const client = registry.get(clientId);
        return client === undefined
          ? undefined
          : { streamOpen: client.streamCount > 0, lastSeenMs: client.lastSeenMs };
      },
    },
    options.autoRenew,
  );
}

/** Listeners on the service's closing signal past which Node warns of a leak. */
const CLOSING_LISTENERS_WARN = 1_000_000;

/**
 * Builds the MessagingService over `backend`. Loads the protocol files (see findProtoDir);
 * throws INVALID_OPTION for a bad option.
 */
export async function createMessagingService(
  backend: ServiceBackend,
  options: Partial<MessagingServiceOptions> | undefined,
  logger: Logger,
  deps: MessagingServiceDeps = {},
): Promise<MessagingService> {
  const resolved = resolveMessagingServiceOptions(options);
  const admission = createCallAdmission(resolved);
  const definition = gatedDecoding(await loadMessagingDefinition(resolved.protoDir), admission);
  const fetchDefinition = gatedDecoding(await loadFetchDefinition(resolved.protoDir), admission);
  const log = componentLogger(logger, {
    component: 'messaging',
    group: backend.groupName,
    node: backend.nodeId,
  });
  const clock = deps.clock ?? systemClock;
  const closing = new AbortController();
  // Every long poll (PullMessage, FetchQueue, ReceiveMessage) listens on it while it waits and
  // removes its listener after; many at once are normal, not a leak. Node still warns past
  // this many, which no honest load reaches.
  setMaxListeners(CLOSING_LISTENERS_WARN, closing.signal);
  const sessions = new Set<ClosableSession>();
  const registry = new ClientRegistry(
    resolved.registry,
    clock,
    deps.timers ?? systemTimers,
    deps.scheduler ?? systemScheduler,
  );
  const forwarder = new Forwarder(definition, resolved.forwardChannelsMax, log);
  const renewer = createRenewer(backend, resolved, log, clock, registry, deps);
  const ctx: ServiceContext = {
    backend,
    options: resolved,
    log,
    clock,
    registry,
    renewer,
    forwarder,
    sessions,
    closing: closing.signal,
    admission,
  };
  const handlers: grpc.UntypedServiceImplementation = {
    ...unsupportedHandlers(),
    QueryRoute: unaryHandler(ctx, 'QueryRoute', (call) => queryRoute(ctx, call)),
    Heartbeat: unaryHandler(ctx, 'Heartbeat', (call) => heartbeat(ctx, call)),
    NotifyClientTermination: unaryHandler(ctx, 'NotifyClientTermination', (call) =>
      notifyClientTermination(ctx, call),
    ),
    SendMessage: unaryHandler(ctx, 'SendMessage', (call) => sendMessage(ctx, call)),
    Telemetry: telemetryHandler(ctx),
    PullMessage: pullMessageHandler(ctx),
    GetOffset: unaryHandler(ctx, 'GetOffset', (call) => getOffset(ctx, call)),
    UpdateOffset: unaryHandler(ctx, 'UpdateOffset', (call) => updateOffset(ctx, call)),
    QueryOffset: unaryHandler(ctx, 'QueryOffset', (call) => queryOffset(ctx, call)),
    QueryAssignment: unaryHandler(ctx, 'QueryAssignment', (call) => queryAssignment(ctx, call)),
    ReceiveMessage: receiveMessageHandler(ctx),
    AckMessage: unaryHandler(ctx, 'AckMessage', (call) => ackMessage(ctx, call)),
    ChangeInvisibleDuration: unaryHandler(ctx, 'ChangeInvisibleDuration', (call) =>
      changeInvisibleDuration(ctx, call),
    ),
    ForwardMessageToDeadLetterQueue: unaryHandler(ctx, 'ForwardMessageToDeadLetterQueue', (call) =>
      forwardToDeadLetterQueue(ctx, call),
    ),
  };
  let closed = false;
  return {
    definition,
    handlers,
    fetch: {
      definition: fetchDefinition,
      handlers: {
        FetchQueue: fetchQueueHandler(ctx),
        ReceiveStored: receiveStoredHandler(ctx),
      },
    },
    registry,
    admission,
    close(): Promise<void> {
      if (closed) return Promise.resolve();
      closed = true;
      closing.abort();
      for (const session of [...sessions]) session.close();
      renewer?.close();
      registry.close();
      forwarder.close();
      log.info({}, 'messaging service closed');
      return Promise.resolve();
    },
  };
}
