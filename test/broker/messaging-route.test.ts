/*
 * QueryRoute on a broker, called directly with a fake backend: a route whose nodes all
 * registered endpoints no client can dial (IPv6 literals, which RocketMQ clients do not
 * bracket) is answered NOT_FOUND, as a NameServer answers it, not OK with no queues (which
 * makes the Node producer throw "max out of range" and hangs a SimpleConsumer's start); a
 * usable route is answered OK with its queues. And a broker and a NameServer (on 127.0.0.1,
 * over the same route table) accept and refuse the same topic names and namespaces: a
 * namespace of 65 to 120 characters worked through a broker but not through a NameServer.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import type { ServiceContext } from '../../src/broker/messaging-call';
import { queryRoute } from '../../src/broker/messaging-route';
import { isRaftmqError, RmqCode } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import type { TopicRoute } from '../../src/namesrv/route-types';
import { RawClients, registration, startNameServer } from '../namesrv/namesrv-harness';

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

/** What a QueryRoute names: the topic, its `resource_namespace` and the namespace header. */
interface Query {
  readonly header: string | undefined;
  readonly resourceNamespace: string;
  readonly name: string;
}

/** A broker's QueryRoute over `route(stored)`; topics are never created. */
function askBroker(route: (stored: string) => TopicRoute | undefined, q: Query): Promise<unknown> {
  const ctx = {
    backend: { route: (stored: string) => Promise.resolve(route(stored)), autoCreateTopics: false },
    log: silentLogger(),
  } as unknown as ServiceContext;
  const metadata = new grpc.Metadata();
  metadata.set('x-mq-client-id', 'client-1');
  if (q.header !== undefined) metadata.set('x-mq-namespace', q.header);
  const call = {
    metadata,
    request: { topic: { name: q.name, resourceNamespace: q.resourceNamespace } },
  } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
  return queryRoute(ctx, call);
}

async function ask(answer: TopicRoute): Promise<Answer> {
  const query = { header: undefined, resourceNamespace: '', name: 'orders' };
  return (await askBroker(() => answer, query)) as Answer;
}

/** The RocketMQ code name of a numeric code (the NameServer's client reads enums as names). */
function codeName(code: number): string {
  const entry = Object.entries(RmqCode).find(([, value]) => value === code);
  assert.ok(entry !== undefined, `unknown code ${code}`);
  return entry[0];
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

  it('accepts and refuses the same topic names and namespaces as a NameServer', async () => {
    const ns70 = 'n'.repeat(70);
    const ns120 = 'n'.repeat(120);
    // [namespace header, resource_namespace, topic name]; stored names are 127 chars at most.
    const cases: Query[] = (
      [
        [undefined, '', 'orders'],
        [undefined, 'shop', 'orders'],
        ['shop', 'other', 'orders'],
        ['shop', '', 'shop%orders'],
        [ns70, '', 'orders'],
        [undefined, ns120, 'orders'],
        ['n'.repeat(121), '', 'orders'],
        ['sh%op', '', 'orders'],
        [undefined, 'sh op', 'orders'],
        ['shop', '', 'bad name'],
        ['shop', '', ''],
        [undefined, '', 'x'.repeat(128)],
        ['shop', '', 'missing'],
      ] as const
    ).map(([header, resourceNamespace, name]) => ({ header, resourceNamespace, name }));
    const stored = ['orders', 'shop%orders', `${ns70}%orders`, `${ns120}%orders`];
    const namesrv = await startNameServer();
    const clients = await RawClients.open(namesrv.port);
    try {
      const topic = { queueCount: 1, perm: 'READ_WRITE', messageTypes: ['NORMAL'] } as const;
      namesrv.registry.register(
        registration({ topics: Object.fromEntries(stored.map((t) => [t, topic])) }),
      );
      const byBroker: string[] = [];
      const byNamesrv: string[] = [];
      for (const q of cases) {
        const what = `${q.header?.length ?? '-'}/${q.resourceNamespace.length} ${q.name}:`;
        const answer = await askBroker((t) => namesrv.registry.route(t), q).then(
          (res) => codeName((res as Answer).status.code),
          (err: unknown) => (isRaftmqError(err) ? codeName(err.rmqCode) : String(err)),
        );
        byBroker.push(`${what} ${answer}`);
        const headers: Record<string, string> = {};
        if (q.header !== undefined) headers['x-mq-namespace'] = q.header;
        const request = { topic: { name: q.name, resourceNamespace: q.resourceNamespace } };
        const res = await clients.messagingCall('QueryRoute', request, headers);
        byNamesrv.push(`${what} ${(res.status as { code: string }).code}`);
      }
      assert.deepEqual(byNamesrv, byBroker);
      assert.deepEqual(
        byBroker.map((line) => line.slice(line.lastIndexOf(' ') + 1)),
        ['OK', 'OK', 'OK', 'OK', 'OK', 'OK']
          .concat(['ILLEGAL_TOPIC', 'BAD_REQUEST', 'BAD_REQUEST', 'ILLEGAL_TOPIC'])
          .concat(['ILLEGAL_TOPIC', 'ILLEGAL_TOPIC', 'TOPIC_NOT_FOUND']),
      );
    } finally {
      clients.close();
      await namesrv.stop();
    }
  });
});
