/*
 * `Broker.route`, the route a broker used as access point answers (QueryRoute,
 * QueryAssignment): its own group from its own Raft state, other groups from the NameServers.
 * A real Broker over a fake Raft handle and state, with a fake NameServer lookup, so each
 * case is set up exactly: a NameServer that missed a failover named the dead leader of the
 * broker's own group, because the broker used its own state only when no NameServer knew the
 * topic. The NameServers' entry is kept when it is newer (a higher term) than this node's view.
 * The leader lists the followers it heard from lately; a follower lists itself beside the leader.
 */
import { strict as assert } from 'node:assert';
import { Broker, type RaftHandle } from '../../src/broker/broker';
import { resolveBrokerNodeConfig } from '../../src/broker/broker-node-config';
import type { BrokerState } from '../../src/broker/broker-state';
import type { TopicConfig } from '../../src/broker/broker-types';
import { systemClock } from '../../src/common/clock';
import { silentLogger } from '../../src/common/logger';
import type { TopicRoute } from '../../src/namesrv/route-types';
import { entry, node } from '../namesrv/route-entries';

const ORDERS: TopicConfig = {
  name: 'orders',
  queueCount: 2,
  perm: 'READ_WRITE',
  messageTypes: ['NORMAL'],
};

/**
 * Node n2 of group g1 (n1, n2, n3), hosting `orders`, whose NameServers answer `fromNamesrv`
 * (or fail when it is an Error).
 */
function brokerN2(fromNamesrv: TopicRoute | undefined | Error): Broker {
  const config = resolveBrokerNodeConfig({
    cluster: 'c1',
    group: 'g1',
    nodeId: 'n2',
    peers: Object.fromEntries(
      ['n1', 'n2', 'n3'].map((id) => {
        const endpoint = node(id, 0).endpoint;
        return [id, { raft: endpoint.replace(':91', ':92'), client: endpoint }];
      }),
    ),
    dataDir: '/nonexistent',
  });
  const state = {
    getTopic: (name: string) => (name === ORDERS.name ? ORDERS : undefined),
  } as unknown as BrokerState;
  const lookup = (): Promise<TopicRoute | undefined> =>
    fromNamesrv instanceof Error ? Promise.reject(fromNamesrv) : Promise.resolve(fromNamesrv);
  // route() reads no Raft state: the handle is never called.
  return new Broker(config, {} as RaftHandle, state, systemClock, silentLogger(), lookup);
}

/** Each group of `route` as `group: leader@term [followers]`. */
function show(route: TopicRoute | undefined): string[] {
  return (route?.groups ?? []).map((g) => {
    const leader = g.leader === undefined ? 'none' : `${g.leader.nodeId}@${g.leader.term}`;
    return `${g.group}: ${leader} [${g.followers.map((f) => f.nodeId).join(' ')}]`;
  });
}

describe('Broker.route', () => {
  it('answers its own group from its own state when a NameServer missed a failover', async () => {
    // The NameServers still name n1 (dead, term 5); n2 won term 6 and is a ready leader.
    const stale = {
      topic: 'orders',
      groups: [
        entry('g1', node('n1', 5), [node('n2', 5), node('n3', 5)]),
        entry('g2', node('n1', 3), []),
      ],
    };
    const broker = brokerN2(stale);
    broker.onSoftState('leader', 6, 'n2');
    broker.onApplied(6);
    assert.deepEqual(show(await broker.route('orders')), ['g1: n2@6 [n1 n3]', 'g2: n1@3 []']);
    // Once it knows which followers answer, it lists only those (n1 is down).
    broker.setLiveFollowers(['n3']);
    assert.deepEqual(show(await broker.route('orders')), ['g1: n2@6 [n3]', 'g2: n1@3 []']);
  });

  it('adds its own group when the NameServers do not list it', async () => {
    // A NameServer restarted a moment ago has heard from g2 and g3 only.
    const partial = {
      topic: 'orders',
      groups: [entry('g2', node('n1', 3), []), entry('g3', node('n1', 1), [])],
    };
    const broker = brokerN2(partial);
    broker.onSoftState('follower', 4, 'n1');
    // A follower lists itself beside the leader: it cannot tell whether n3 is up.
    assert.deepEqual(show(await broker.route('orders')), [
      'g1: n1@4 [n2]',
      'g2: n1@3 []',
      'g3: n1@1 []',
    ]);
    assert.deepEqual(show(await brokerN2(undefined).route('orders')), ['g1: none [n1 n2 n3]']);
  });

  it('keeps the NameServers entry of its group when theirs is newer or names the leader', async () => {
    const current = {
      topic: 'orders',
      groups: [entry('g1', node('n3', 7), [node('n1', 7), node('n2', 6)])],
    };
    // n2 is cut off from its group: it still believes it leads in term 6.
    const cutOff = brokerN2(current);
    cutOff.onSoftState('leader', 6, 'n2');
    cutOff.onApplied(6);
    assert.deepEqual(show(await cutOff.route('orders')), ['g1: n3@7 [n1 n2]']);
    // n2 has heard of term 7, not yet from its leader: the NameServers know more.
    const waiting = brokerN2(current);
    waiting.onSoftState('follower', 7, null);
    assert.deepEqual(show(await waiting.route('orders')), ['g1: n3@7 [n1 n2]']);
  });

  it("takes, on a follower, the NameServers' followers of its own group's current term", async () => {
    // They list the followers the leader hears from: n3 is down.
    const current = { topic: 'orders', groups: [entry('g1', node('n1', 4), [node('n2', 4)])] };
    const broker = brokerN2(current);
    broker.onSoftState('follower', 4, 'n1');
    assert.deepEqual(show(await broker.route('orders')), ['g1: n1@4 [n2]']);
    const both = {
      topic: 'orders',
      groups: [entry('g1', node('n1', 4), [node('n2', 4), node('n3', 4)])],
    };
    const again = brokerN2(both);
    again.onSoftState('follower', 4, 'n1');
    assert.deepEqual(show(await again.route('orders')), ['g1: n1@4 [n2 n3]']);
  });

  it('answers its own group alone when the NameServers fail', async () => {
    const broker = brokerN2(new Error('no NameServer answered'));
    broker.onSoftState('follower', 2, 'n3');
    assert.deepEqual(show(await broker.route('orders')), ['g1: n3@2 [n2]']);
  });
});
