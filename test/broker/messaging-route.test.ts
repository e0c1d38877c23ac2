/*
 * QueryRoute on a broker, called directly with a fake backend whose route is given: a route
 * whose nodes all registered endpoints no client can dial (IPv6 literals, which RocketMQ clients
 * do not bracket) is answered NOT_FOUND, as a NameServer answers it, not OK with no queues
 * (which makes the Node producer throw "max out of range" and hangs a SimpleConsumer's
 * start); a usable route is answered OK with its queues.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import type { ServiceContext } from '../../src/broker/messaging-call';
import { queryRoute } from '../../src/broker/messaging-route';
import { RmqCode } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import type { TopicRoute } from '../../src/namesrv/route-types';

function route(leader: string, follower: string): TopicRoute {
  return {
    topic: 'orders',
    groups: [
      {
        cluster: 'c1',
        group: 'g1',
        leader: { nodeId: 'n1', endpoint: leader, term: 1 },
        writable: true,
        leaderless: false,
        followers: [{ nodeId: 'n2', endpoint: follower, term: 1 }],
        queues: [{ queueId: 0, perm: 'READ_WRITE', messageTypes: ['NORMAL'] }],
      },
    ],
  };
}

interface Answer {
  readonly status: { readonly code: number; readonly message: string };
  readonly messageQueues: readonly { readonly broker: { readonly name: string } }[];
}

async function ask(answer: TopicRoute): Promise<Answer> {
  const ctx = {
    backend: { route: () => Promise.resolve(answer), autoCreateTopics: false },
    log: silentLogger(),
  } as unknown as ServiceContext;
  const metadata = new grpc.Metadata();
  metadata.set('x-mq-client-id', 'client-1');
  const call = {
    metadata,
    request: { topic: { name: 'orders', resourceNamespace: '' } },
  } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
  return (await queryRoute(ctx, call)) as Answer;
}

describe('QueryRoute on a broker', () => {
  it('answers NOT_FOUND, as a NameServer does, when no node has a usable endpoint', async () => {
    const res = await ask(route('[::1]:8081', '[::1]:8082'));
    assert.equal(res.status.code, RmqCode.NOT_FOUND);
    assert.deepEqual(res.messageQueues, []);
    assert.match(res.status.message, /no node hosting it has a usable endpoint/);
  });

  it('answers OK with the queues of the nodes that are usable', async () => {
    const res = await ask(route('[::1]:8081', '127.0.0.1:8082'));
    assert.equal(res.status.code, RmqCode.OK);
    assert.deepEqual(
      res.messageQueues.map((q) => q.broker.name),
      ['g1@n2'],
    );
  });
});
