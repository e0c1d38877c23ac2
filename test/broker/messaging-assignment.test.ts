/*
 * QueryAssignment over a route in which one group's leader registered an endpoint no client can
 * use (an IPv6 literal, which RocketMQ clients do not bracket): that group is left out, as
 * QueryRoute leaves it out, and the topic's consumers still get the other groups. Only when no
 * group is usable is the call refused; a write-only topic is refused as forbidden (FORBIDDEN,
 * as the proxy answers), not as a missing leader the client would retry.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import type { ServiceContext } from '../../src/broker/messaging-call';
import { queryAssignment } from '../../src/broker/messaging-pop';
import { isRaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import type { GroupRoute, TopicRoute } from '../../src/namesrv/route-types';

const queues = [{ queueId: 0, perm: 'READ_WRITE', messageTypes: ['NORMAL'] }] as const;

function group(name: string, endpoint: string): GroupRoute {
  return {
    cluster: 'c',
    group: name,
    leader: { nodeId: `${name}-n1`, endpoint, term: 1 },
    writable: true,
    leaderless: false,
    followers: [],
    queues,
  };
}

function context(route: TopicRoute): ServiceContext {
  return {
    backend: { route: () => Promise.resolve(route) },
    log: silentLogger(),
  } as unknown as ServiceContext;
}

function call(): grpc.ServerUnaryCall<unknown, unknown> {
  const metadata = new grpc.Metadata();
  metadata.set('x-mq-client-id', 'c1');
  return {
    metadata,
    request: {
      group: { name: 'G', resourceNamespace: '' },
      topic: { name: 'Orders', resourceNamespace: '' },
      endpoints: { scheme: 'IPv4', addresses: [{ host: '127.0.0.1', port: 8081 }] },
    },
  } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
}

describe('QueryAssignment', () => {
  it('leaves out a group whose leader endpoint no client can use', async () => {
    const route = {
      topic: 'Orders',
      groups: [group('g1', '10.0.0.1:8081'), group('g2', '[::1]:8081')],
    } as TopicRoute;
    const res = (await queryAssignment(context(route), call())) as {
      assignments: { messageQueue: { broker: { name: string } } }[];
    };
    assert.deepEqual(
      res.assignments.map((a) => a.messageQueue.broker.name),
      ['g1'],
    );
  });

  it('is refused when no group is usable', async () => {
    const route = { topic: 'Orders', groups: [group('g2', '[::1]:8081')] } as TopicRoute;
    await assert.rejects(queryAssignment(context(route), call()), /no broker group hosting/);
  });

  it('is refused as forbidden for a topic that may only be written', async () => {
    const writeOnly = {
      ...group('g1', '10.0.0.1:8081'),
      queues: [{ ...queues[0], perm: 'WRITE' }],
    };
    const route = { topic: 'Orders', groups: [writeOnly] } as TopicRoute;
    await assert.rejects(queryAssignment(context(route), call()), (err: unknown) =>
      isRaftmqError(err, 'PERMISSION_DENIED'),
    );
  });
});
