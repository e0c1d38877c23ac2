/*
 * The pure conversion of a route-table TopicRoute into RocketMQ v2 message queues
 * (src/namesrv/rmq-route.ts), with hand-built routes: a group's leader is broker id 0 with every
 * queue, each follower an extra broker `<group>@<node>` with ids 1, 2, ... and queue 0 only; a
 * leaderless group lists only its followers; permission and message types are copied; every
 * broker has exactly one address with the right scheme; IPv6 and malformed endpoints are
 * skipped and reported. `parseHostPort` is checked on valid and invalid inputs. A fast-check
 * property checks the invariants the official clients rely on over random routes: one queue-0
 * entry per broker name, unique broker names, one address each, id 0 only for leaders.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { isRaftmqError } from '../../src/common/errors';
import {
  followerBrokerName,
  LEADER_SHARE_PER_FOLLOWER,
  parseHostPort,
  toMessageQueues,
  type RmqMessageQueue,
} from '../../src/namesrv/rmq-route';
import type { GroupRoute, NodeRef, TopicPerm, TopicRoute } from '../../src/namesrv/route-types';
import { fcParams } from '../fc-params';

const TOPIC = { name: 'orders', resourceNamespace: '' };

function node(nodeId: string, endpoint: string, term = 3): NodeRef {
  return { nodeId, endpoint, term };
}

function group(over: Partial<GroupRoute> & { queueCount?: number; perm?: TopicPerm } = {}) {
  const { queueCount = 4, perm = 'READ_WRITE', ...rest } = over;
  const leader = 'leader' in over ? over.leader : node('n1', '10.0.0.1:8081');
  const g: GroupRoute = {
    cluster: 'c1',
    group: 'g1',
    leader,
    writable: leader !== undefined && perm !== 'READ',
    leaderless: leader === undefined,
    followers: [node('n2', '10.0.0.2:8081'), node('n3', 'broker-3.local:8081')],
    queues: Array.from({ length: queueCount }, (_, queueId) => ({
      queueId,
      perm,
      messageTypes: ['NORMAL', 'FIFO'],
    })),
    ...rest,
  };
  return g;
}

function brokersOf(queues: readonly RmqMessageQueue[]): Map<string, RmqMessageQueue[]> {
  const out = new Map<string, RmqMessageQueue[]>();
  for (const q of queues) out.set(q.broker.name, [...(out.get(q.broker.name) ?? []), q]);
  return out;
}

describe('rmq-route: TopicRoute to RocketMQ v2 message queues', () => {
  it('lists the leader as broker id 0 with every queue and each follower with queue 0', () => {
    const route: TopicRoute = { topic: 'orders', groups: [group()] };
    const { messageQueues, skipped } = toMessageQueues(route, TOPIC);
    assert.deepEqual(skipped, []);
    // Four queues, queue 0 repeated to make 16 x 2 followers = 32 leader entries, 2 followers.
    assert.equal(LEADER_SHARE_PER_FOLLOWER, 16);
    assert.equal(messageQueues.length, 4 + 31 + 2);
    const leaderQueues = messageQueues.filter((q) => q.broker.name === 'g1');
    assert.deepEqual(
      leaderQueues.map((q) => q.id),
      [0, 1, 2, 3, ...new Array<number>(31).fill(0)],
    );
    const queueZero = messageQueues.filter((q) => q.id === 0);
    assert.equal(
      queueZero.filter((q) => q.broker.name === 'g1').length / queueZero.length,
      32 / 34,
    );
    assert.ok(leaderQueues.every((q) => q.broker.id === 0));
    assert.deepEqual(leaderQueues[0], {
      topic: { name: 'orders', resourceNamespace: '' },
      id: 0,
      permission: 'READ_WRITE',
      broker: {
        name: 'g1',
        id: 0,
        endpoints: { scheme: 'IPv4', addresses: [{ host: '10.0.0.1', port: 8081 }] },
      },
      acceptMessageTypes: ['NORMAL', 'FIFO'],
    });
    const followers = messageQueues.slice(4 + 31);
    assert.deepEqual(
      followers.map((q) => [q.broker.name, q.broker.id, q.id]),
      [
        ['g1@n2', 1, 0],
        ['g1@n3', 2, 0],
      ],
    );
    assert.equal(followers[1]?.broker.endpoints.scheme, 'DOMAIN_NAME');
    assert.deepEqual(followers[1]?.broker.endpoints.addresses, [
      { host: 'broker-3.local', port: 8081 },
    ]);
    assert.equal(followerBrokerName('g1', 'n2'), 'g1@n2');
  });

  it('lists only the followers of a leaderless group, and copies the permission', () => {
    const route: TopicRoute = {
      topic: 'orders',
      groups: [group({ leader: undefined, perm: 'READ' })],
    };
    const { messageQueues } = toMessageQueues(route, TOPIC);
    assert.deepEqual(
      messageQueues.map((q) => [q.broker.name, q.broker.id, q.id, q.permission]),
      [
        ['g1@n2', 1, 0, 'READ'],
        ['g1@n3', 2, 0, 'READ'],
      ],
    );
  });

  it('keeps groups in route order, names the topic as asked and copies message types', () => {
    const route: TopicRoute = {
      topic: 'ns1%orders',
      groups: [
        group({ group: 'a', queueCount: 1, followers: [] }),
        group({ group: 'b', queueCount: 2, perm: 'WRITE', followers: [] }),
      ],
    };
    const { messageQueues } = toMessageQueues(route, { name: 'orders', resourceNamespace: 'ns1' });
    assert.deepEqual(
      messageQueues.map((q) => `${q.broker.name}/${q.id}/${q.permission}`),
      ['a/0/READ_WRITE', 'b/0/WRITE', 'b/1/WRITE'],
    );
    for (const q of messageQueues) {
      assert.deepEqual(q.topic, { name: 'orders', resourceNamespace: 'ns1' });
      assert.deepEqual(q.acceptMessageTypes, ['NORMAL', 'FIFO']);
    }
  });

  it('skips and reports IPv6 and malformed endpoints, numbering the rest densely', () => {
    const route: TopicRoute = {
      topic: 'orders',
      groups: [
        group({
          leader: node('n1', '[::1]:8081'),
          followers: [node('n2', 'bad host:1'), node('n3', '10.0.0.3:8081')],
        }),
      ],
    };
    const { messageQueues, skipped } = toMessageQueues(route, TOPIC);
    assert.deepEqual(
      skipped.map((s) => s.nodeId),
      ['n1', 'n2'],
    );
    assert.match(skipped[0]?.reason ?? '', /IPv6/);
    assert.deepEqual(
      messageQueues.map((q) => [q.broker.name, q.broker.id, q.id]),
      [['g1@n3', 1, 0]],
    );
  });

  it('parses host:port strictly', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:8081'), {
      host: '127.0.0.1',
      port: 8081,
      scheme: 'IPv4',
    });
    assert.deepEqual(parseHostPort('localhost:1'), {
      host: 'localhost',
      port: 1,
      scheme: 'DOMAIN_NAME',
    });
    assert.equal(parseHostPort('a-b.example.com:65535').scheme, 'DOMAIN_NAME');
    const bad = [
      '',
      'localhost',
      ':8081',
      'localhost:',
      'localhost:0',
      'localhost:65536',
      'localhost:+80',
      'localhost:80 ',
      ' localhost:80',
      '::1:8081',
      '[::1]:8081',
      '1.2.3.256:80',
      '1.2.3:80',
      '-a.example:80',
      'a..b:80',
      'a_b c:80',
      `${'a'.repeat(254)}:80`,
    ];
    for (const text of bad) {
      assert.throws(
        () => parseHostPort(text),
        (e) => isRaftmqError(e, 'INVALID_ARGUMENT') && e.details.field === 'endpoint',
        text,
      );
    }
  });

  it('gives followers one queue-0 entry, the leader 16 per follower, id 0 to leaders only', () => {
    const endpoint = fc.oneof(
      fc
        .tuple(fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 65535 }))
        .map(([a, b, port]) => `10.${a}.${b}.1:${port}`),
      fc.constantFrom('h1.local:80', 'h2:9000', '[::1]:80'),
    );
    const groupArb = fc.record({
      name: fc.stringMatching(/^[a-z]{1,6}$/),
      leader: fc.option(endpoint, { nil: undefined }),
      followers: fc.array(endpoint, { maxLength: 4 }),
      queueCount: fc.integer({ min: 1, max: 8 }),
      perm: fc.constantFrom<TopicPerm>('READ', 'WRITE', 'READ_WRITE'),
    });
    const routeArb = fc.uniqueArray(groupArb, { selector: (g) => g.name, maxLength: 4 });
    fc.assert(
      fc.property(routeArb, (groups) => {
        const route: TopicRoute = {
          topic: 'orders',
          groups: groups.map((g) =>
            group({
              group: g.name,
              leader: g.leader === undefined ? undefined : node('L', g.leader),
              followers: g.followers.map((e, i) => node(`f${i}`, e)),
              queueCount: g.queueCount,
              perm: g.perm,
            }),
          ),
        };
        const { messageQueues, skipped } = toMessageQueues(route, TOPIC);
        const brokers = brokersOf(messageQueues);
        let expectedBrokers = 0;
        for (const g of groups) {
          const usable = (e: string) => !e.startsWith('[');
          if (g.leader !== undefined && usable(g.leader)) expectedBrokers += 1;
          expectedBrokers += g.followers.filter(usable).length;
        }
        assert.equal(brokers.size, expectedBrokers);
        assert.equal(
          skipped.length,
          groups.reduce(
            (n, g) =>
              n +
              [g.leader, ...g.followers].filter((e) => e !== undefined && e.startsWith('[')).length,
            0,
          ),
        );
        for (const [name, queues] of brokers) {
          const isLeader = !name.includes('@');
          const g = groups.find((x) => x.name === name.split('@')[0]);
          assert.ok(g !== undefined);
          const listedFollowers = g.followers.filter((e) => !e.startsWith('[')).length;
          const zeros = isLeader ? Math.max(1, LEADER_SHARE_PER_FOLLOWER * listedFollowers) : 1;
          assert.equal(queues.filter((q) => q.id === 0).length, zeros, name);
          assert.ok(queues.every((q) => q.broker.endpoints.addresses.length === 1));
          assert.ok(queues.every((q) => (q.broker.id === 0) === isLeader));
          assert.equal(queues.length, isLeader ? g.queueCount + zeros - 1 : 1);
          assert.ok(queues.every((q) => q.permission === g.perm));
        }
      }),
      fcParams(200),
    );
  });
});
