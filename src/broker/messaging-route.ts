/**
 * QueryRoute: the topic's route across all broker groups as RocketMQ MessageQueues (the shape
 * is decided in src/namesrv/rmq-route.ts: each group's leader as broker id 0 with every queue,
 * each follower as `group@node` with queue 0, one address each). An unknown topic is created
 * when the backend auto-creates topics and the name is not reserved; creation is a write, so a
 * follower forwards the query to its leader. Otherwise the answer is TOPIC_NOT_FOUND. A route
 * none of whose nodes has an endpoint clients can dial gets NOT_FOUND, as from a NameServer:
 * OK with no queues would break the clients.
 *
 * The queues' topic is the name the client asked for, in its namespace (the broker's name is
 * `ns%topic`).
 */
import type * as grpc from '@grpc/grpc-js';
import { RaftmqError } from '../common/errors';
import { queryRouteAnswer } from '../namesrv/rmq-route';
import type { TopicRoute } from './broker-types';
import {
  callDeadlineMs,
  namespaceHeader,
  requireClientId,
  type ServiceContext,
} from './messaging-call';
import { runOrForward } from './messaging-forward';
import { checkTopic, effectiveNamespace, isReservedTopic } from './rmq-validate';
import type { WireResource } from './rmq-wire';

interface QueryRouteRequest {
  readonly topic: WireResource | null;
}

/** The answer for a known route, as a NameServer gives it (rmq-route.ts queryRouteAnswer). */
function routeResponse(
  ctx: ServiceContext,
  route: TopicRoute,
  topic: WireResource,
  stored: string,
): object {
  const { response, skipped } = queryRouteAnswer(route, topic, stored);
  for (const node of skipped) {
    ctx.log.warn({ ...node, topic: topic.name }, 'node left out of a route');
  }
  return response;
}

function notFound(stored: string): RaftmqError {
  return new RaftmqError('TOPIC_NOT_FOUND', `topic ${stored} does not exist`, {
    details: { topic: stored },
  });
}

/** Handles one QueryRoute call. */
export async function queryRoute(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as QueryRouteRequest;
  if (request.topic === null) {
    throw new RaftmqError('ILLEGAL_TOPIC', 'topic is missing', { details: { field: 'topic' } });
  }
  const ns = effectiveNamespace(namespaceHeader(call.metadata), request.topic.resourceNamespace);
  // Reading the route of a system topic (a DLQ, say) is allowed; creating one is not.
  const stored = checkTopic(request.topic.name, ns, 'topic.name', true);
  const topic: WireResource = { resourceNamespace: ns, name: request.topic.name };
  const route = await ctx.backend.route(stored);
  if (route !== undefined) return routeResponse(ctx, route, topic, stored);
  if (!ctx.backend.autoCreateTopics || isReservedTopic(stored) || isReservedTopic(topic.name)) {
    throw notFound(stored);
  }
  const deadlineMs = callDeadlineMs(call, ctx);
  return runOrForward(ctx, call, 'QueryRoute', deadlineMs, async () => {
    await ctx.backend.ensureTopic(stored, deadlineMs);
    const created = await ctx.backend.route(stored);
    if (created === undefined) throw notFound(stored);
    return routeResponse(ctx, created, topic, stored);
  });
}
