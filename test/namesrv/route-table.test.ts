/*
 * The NameServer route table, driven directly with explicit `nowMs` values (no timers): the
 * leader is the highest-term claim and a stale claim never displaces it, expiry happens after
 * 120 s and not before, routes have the documented shape, and bad input is refused with a typed
 * INVALID_ARGUMENT naming the field. A fast-check property runs random interleavings of
 * registrations, unregistrations and expiry against a small model of the leadership rules.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { isRaftmqError } from '../../src/common/errors';
import {
  type BrokerRegistration,
  type BrokerRole,
  type RegisterOutcome,
  RouteTable,
  ROUTE_TABLE_DEFAULTS,
  resolveRouteTableOptions,
} from '../../src/namesrv/route-table';
import { fcParams } from '../fc-params';

const T0 = 1_000;

function reg(over: Partial<BrokerRegistration> = {}): BrokerRegistration {
  return {
    cluster: 'c1',
    group: 'g1',
    nodeId: 'n1',
    endpoint: '127.0.0.1:8081',
    role: 'leader',
    term: 1,
    topics: { orders: { queueCount: 4, perm: 'READ_WRITE', messageTypes: ['NORMAL'] } },
    ...over,
  };
}

function leaderOf(table: RouteTable, group: string): string | undefined {
  return table.clusterView().find((g) => g.group === group)?.leaderNodeId;
}

function invalidField(field: string) {
  return (e: unknown): boolean =>
    isRaftmqError(e, 'INVALID_ARGUMENT') && e.details.field === field && e.message.includes(field);
}

describe('namesrv route table', () => {
  it('has RocketMQ defaults and validates options', () => {
    assert.equal(ROUTE_TABLE_DEFAULTS.brokerExpiryMs, 120_000);
    assert.equal(ROUTE_TABLE_DEFAULTS.scanIntervalMs, 10_000);
    assert.ok(Object.isFrozen(ROUTE_TABLE_DEFAULTS));
    assert.throws(
      () => resolveRouteTableOptions({ groupsMax: 0 }),
      (e) => isRaftmqError(e, 'INVALID_OPTION') && /routeTable\.groupsMax/.test(e.message),
    );
    assert.throws(
      () => resolveRouteTableOptions({ brokerExpiryMs: 5_000 }),
      /routeTable\.scanIntervalMs/,
    );
  });

  it('makes the leader-claiming node with the highest term the leader', () => {
    const table = new RouteTable();
    assert.equal(table.register(reg({ nodeId: 'n1', term: 3 }), T0).outcome, 'leader');
    const r = table.register(reg({ nodeId: 'n2', term: 4, endpoint: 'h2:8081' }), T0);
    assert.equal(r.outcome, 'leader');
    assert.deepEqual(r.leader, { nodeId: 'n2', endpoint: 'h2:8081', term: 4 });
    assert.equal(leaderOf(table, 'g1'), 'n2');
    assert.equal(
      table.register(reg({ nodeId: 'n3', role: 'follower', term: 4 }), T0).outcome,
      'follower',
    );
    assert.equal(leaderOf(table, 'g1'), 'n2');
  });

  it('routes only the followers its leader reports alive, when it reports them', () => {
    const table = new RouteTable();
    const follower = (nodeId: string): BrokerRegistration =>
      reg({ nodeId, role: 'follower', term: 2, endpoint: `h${nodeId}:8081` });
    table.register(follower('n2'), T0);
    table.register(follower('n3'), T0);
    const followers = (): string[] =>
      table.route('orders')?.groups[0]?.followers.map((f) => f.nodeId) ?? [];
    table.register(reg({ term: 2 }), T0);
    assert.deepEqual(followers(), ['n2', 'n3'], 'not reported: every registered follower');
    table.register(reg({ term: 2, liveFollowers: ['n3'] }), T0);
    assert.deepEqual(followers(), ['n3'], 'n2 is down: out of the route before it expires');
    table.register(reg({ term: 2, liveFollowers: ['n2', 'n3'] }), T0);
    assert.deepEqual(followers(), ['n2', 'n3']);
    // A follower's report means nothing; a malformed one is refused.
    table.register({ ...follower('n2'), liveFollowers: [] }, T0);
    assert.deepEqual(followers(), ['n2', 'n3']);
    assert.throws(
      () => table.register(reg({ term: 2, liveFollowers: [''] }), T0),
      invalidField('liveFollowers[0]'),
    );
  });

  it('never lets a claim in an older term displace a newer leader', () => {
    // Registered after the newer leader: a last-writer-wins table (no term check) fails here.
    const table = new RouteTable();
    table.register(reg({ nodeId: 'n2', term: 5 }), T0);
    const stale = table.register(reg({ nodeId: 'n1', term: 4 }), T0 + 1);
    assert.equal(stale.outcome, 'stale-leader');
    assert.equal(stale.stale, true);
    assert.equal(stale.leader?.nodeId, 'n2');
    assert.equal(leaderOf(table, 'g1'), 'n2');
    assert.equal(table.route('orders')?.groups[0]?.leader?.term, 5);
  });

  it('keeps the old leader demoted while it heartbeats with its old term', () => {
    const table = new RouteTable();
    table.register(reg({ nodeId: 'n1', term: 4 }), T0);
    table.register(reg({ nodeId: 'n2', term: 5 }), T0);
    assert.equal(leaderOf(table, 'g1'), 'n2');
    // n1 keeps heartbeating as leader of term 4, and n3 as a follower of term 5; n2 goes
    // silent and expires.
    for (let t = T0; t <= T0 + 150_000; t += 30_000) {
      assert.equal(table.register(reg({ nodeId: 'n1', term: 4 }), t).outcome, 'stale-leader');
      table.register(reg({ nodeId: 'n3', role: 'follower', term: 5 }), t);
    }
    const dropped = table.expire(T0 + 150_000);
    assert.deepEqual(
      dropped.map((d) => [d.nodeId, d.wasLeader]),
      [['n2', true]],
    );
    const group = table.route('orders')?.groups[0];
    assert.equal(group?.leader, undefined);
    assert.equal(group?.leaderless, true);
    assert.equal(group?.writable, false);
    assert.deepEqual(
      group?.followers.map((f) => f.nodeId),
      ['n1', 'n3'],
    );
    // A claim in term >= 5 restores a leader.
    table.register(reg({ nodeId: 'n3', term: 6 }), T0 + 150_000);
    assert.equal(leaderOf(table, 'g1'), 'n3');
  });

  it('lets a claim of an absurd term demote the leader only while its node is registered', () => {
    const table = new RouteTable();
    table.register(reg({ nodeId: 'n1', term: 5, endpoint: 'h1:8081' }), T0);
    table.register(reg({ nodeId: 'n2', role: 'follower', term: 5 }), T0);
    // Registrations are not authenticated: a forged one may claim any term.
    const forged = table.register(
      reg({ nodeId: 'n9', term: Number.MAX_SAFE_INTEGER, endpoint: 'h9:1' }),
      T0,
    );
    assert.equal(forged.outcome, 'leader');
    assert.equal(table.register(reg({ nodeId: 'n1', term: 5 }), T0 + 1).outcome, 'stale-leader');
    // Gone (unregistered here; expiry does the same), it no longer holds the group's term up.
    table.unregister('g1', 'n9');
    const back = table.register(reg({ nodeId: 'n1', term: 5, endpoint: 'h1:8081' }), T0 + 2);
    assert.equal(back.outcome, 'leader');
    assert.equal(table.route('orders')?.groups[0]?.leader?.endpoint, 'h1:8081');
    assert.equal(table.clusterView()[0]?.leaderTermMax, 5);
  });

  it('drops leadership when the leader re-registers as follower', () => {
    const table = new RouteTable();
    table.register(reg({ nodeId: 'n1', term: 4 }), T0);
    table.register(reg({ nodeId: 'n1', term: 4, role: 'follower' }), T0 + 1);
    assert.equal(leaderOf(table, 'g1'), undefined);
  });

  it("ignores a registration whose term is below the node's recorded term", () => {
    const table = new RouteTable();
    table.register(reg({ nodeId: 'n1', term: 7, role: 'follower' }), T0);
    const r = table.register(reg({ nodeId: 'n1', term: 6 }), T0 + 100_000);
    assert.equal(r.outcome, 'stale-term');
    assert.equal(leaderOf(table, 'g1'), undefined);
    // Its heartbeat did not count either.
    assert.equal(table.expire(T0 + 120_001).length, 1);
  });

  it('expires a node after 120 s of silence and not before; re-registration restores it', () => {
    const table = new RouteTable();
    table.register(reg({ nodeId: 'n1', term: 2 }), T0);
    table.register(reg({ nodeId: 'n2', term: 2, role: 'follower' }), T0 + 30_000);
    assert.deepEqual(table.expire(T0 + 120_000), []);
    const dropped = table.expire(T0 + 120_001);
    assert.deepEqual(dropped, [
      {
        nodeId: 'n1',
        endpoint: '127.0.0.1:8081',
        term: 2,
        cluster: 'c1',
        group: 'g1',
        lastHeartbeatMs: T0,
        wasLeader: true,
      },
    ]);
    assert.equal(table.route('orders')?.groups[0]?.leaderless, true);
    assert.equal(table.expire(T0 + 150_000).length, 0);
    assert.equal(table.expire(T0 + 150_001)[0]?.nodeId, 'n2');
    assert.equal(table.route('orders'), undefined);
    assert.deepEqual(table.clusterView(), []);
    table.register(reg({ nodeId: 'n1', term: 2 }), T0 + 200_000);
    assert.equal(table.route('orders')?.groups[0]?.leader?.nodeId, 'n1');
  });

  it('unregisters a node and forgets an empty group', () => {
    const table = new RouteTable();
    table.register(reg(), T0);
    assert.equal(table.unregister('g1', 'nope'), undefined);
    assert.equal(table.unregister('g1', 'n1')?.wasLeader, true);
    assert.equal(table.route('orders'), undefined);
    assert.throws(() => table.unregister('', 'n1'), invalidField('group'));
  });

  it('routes: queues 0..n-1 per group, leader and followers, sorted by group', () => {
    const table = new RouteTable();
    const topics = { orders: { queueCount: 2, perm: 'READ', messageTypes: ['FIFO'] } } as const;
    table.register(reg({ group: 'g2', nodeId: 'a', term: 9, endpoint: 'a:1', topics }), T0);
    table.register(reg({ group: 'g1', nodeId: 'x', term: 1, endpoint: 'x:1' }), T0);
    table.register(
      reg({ group: 'g1', nodeId: 'y', term: 1, endpoint: 'y:1', role: 'follower' }),
      T0,
    );
    const route = table.route('orders');
    assert.deepEqual(route, {
      topic: 'orders',
      groups: [
        {
          cluster: 'c1',
          group: 'g1',
          leader: { nodeId: 'x', endpoint: 'x:1', term: 1 },
          writable: true,
          leaderless: false,
          followers: [{ nodeId: 'y', endpoint: 'y:1', term: 1 }],
          queues: [0, 1, 2, 3].map((queueId) => ({
            queueId,
            perm: 'READ_WRITE',
            messageTypes: ['NORMAL'],
          })),
        },
        {
          cluster: 'c1',
          group: 'g2',
          leader: { nodeId: 'a', endpoint: 'a:1', term: 9 },
          writable: false,
          leaderless: false,
          followers: [],
          queues: [0, 1].map((queueId) => ({ queueId, perm: 'READ', messageTypes: ['FIFO'] })),
        },
      ],
    });
    assert.equal(table.route('missing'), undefined);
    const view = table.clusterView();
    assert.deepEqual(
      view.map((g) => [g.group, g.leaderNodeId, g.leaderTermMax]),
      [
        ['g1', 'x', 1],
        ['g2', 'a', 9],
      ],
    );
    assert.deepEqual(
      view[0]?.nodes.map((n) => [n.nodeId, n.reportedRole, n.isLeader]),
      [
        ['x', 'leader', true],
        ['y', 'follower', false],
      ],
    );
  });

  it("routes a group's topics by its leader's listing; by the others' only while leaderless", () => {
    const table = new RouteTable();
    const orders = reg().topics.orders!;
    const both = { orders, gone: orders };
    const node = (nodeId: string, role: BrokerRole, topics: BrokerRegistration['topics']) =>
      reg({ nodeId, role, endpoint: `127.0.0.1:808${nodeId.slice(1)}`, topics });
    /** Every node registers; in g1 only n3 still lists `gone`. */
    const heartbeat = (nowMs: number): void => {
      table.register(node('n1', 'leader', { orders }), nowMs);
      table.register(node('n2', 'follower', { orders }), nowMs);
      table.register(node('n3', 'follower', both), nowMs);
      table.register(reg({ group: 'g2', nodeId: 'm1', endpoint: 'h:9081', topics: both }), nowMs);
    };
    table.register(node('n1', 'leader', both), T0);
    table.register(node('n2', 'follower', both), T0);
    // `gone` is deleted in g1: the leader and n2 have applied it; n3, cut off from its group,
    // has not, and keeps registering it for as long as it lives.
    for (let nowMs = T0 + 1; nowMs <= T0 + 600_000; nowMs += 30_000) {
      heartbeat(nowMs);
      table.expire(nowMs);
      assert.deepEqual(
        table.route('gone')?.groups.map((g) => g.group),
        ['g2'],
      );
    }
    table.unregister('g2', 'm1');
    assert.equal(table.route('gone'), undefined);
    assert.equal(table.route('orders')?.groups[0]?.leader?.nodeId, 'n1');

    // Without a leader, the newest listing is all there is: read from the followers.
    table.unregister('g1', 'n1');
    const leaderless = table.route('gone')?.groups[0];
    assert.equal(leaderless?.leaderless, true);
    assert.equal(leaderless?.writable, false);
    assert.deepEqual(
      leaderless?.followers.map((f) => f.nodeId),
      ['n2', 'n3'],
    );
  });

  it('refuses bad input with INVALID_ARGUMENT naming the field, table unchanged', () => {
    const table = new RouteTable();
    const bad: [string, unknown][] = [
      ['cluster', reg({ cluster: '' })],
      ['group', reg({ group: 7 as unknown as string })],
      ['nodeId', reg({ nodeId: '' })],
      ['endpoint', reg({ endpoint: 'host' })],
      ['endpoint', reg({ endpoint: 'host:0' })],
      ['endpoint', reg({ endpoint: 'host:65536' })],
      ['role', reg({ role: 'master' as 'leader' })],
      ['term', reg({ term: -1 })],
      ['term', reg({ term: 1.5 })],
      ['term', reg({ term: 2 ** 53 })],
      ['topics', reg({ topics: null as unknown as BrokerRegistration['topics'] })],
      [
        'topics.orders.queueCount',
        reg({ topics: { orders: { ...reg().topics.orders!, queueCount: 0 } } }),
      ],
      [
        'topics.orders.queueCount',
        reg({ topics: { orders: { ...reg().topics.orders!, queueCount: 1025 } } }),
      ],
      [
        'topics.orders.perm',
        reg({ topics: { orders: { ...reg().topics.orders!, perm: 'RW' as 'READ' } } }),
      ],
      [
        'topics.orders.messageTypes',
        reg({ topics: { orders: { ...reg().topics.orders!, messageTypes: ['BOGUS'] } } }),
      ],
      ['topics.a b', reg({ topics: { 'a b': reg().topics.orders! } })],
      ['registration', null],
    ];
    for (const [field, input] of bad) {
      assert.throws(
        () => table.register(input as BrokerRegistration, T0),
        invalidField(field),
        field,
      );
    }
    assert.deepEqual(table.clusterView(), []);
    table.register(reg(), T0);
    assert.throws(
      () => table.register(reg({ cluster: 'c2', nodeId: 'n2' }), T0),
      invalidField('cluster'),
    );
    assert.throws(() => table.route(''), invalidField('topic'));
    assert.ok(table.register(reg({ endpoint: '[::1]:9876' }), T0));
  });

  it('refuses a new group or node over its bound with BUSY and keeps the table intact', () => {
    const table = new RouteTable({ groupsMax: 1, nodesPerGroupMax: 2 });
    const busy = (e: unknown): boolean => isRaftmqError(e, 'BUSY') && e.retryable;
    table.register(reg({ nodeId: 'n1' }), T0);
    table.register(reg({ nodeId: 'n2', role: 'follower' }), T0);
    assert.throws(() => table.register(reg({ nodeId: 'n3' }), T0), busy);
    assert.throws(() => table.register(reg({ group: 'g2' }), T0), busy);
    assert.deepEqual(
      table.clusterView().map((g) => [g.group, g.nodes.length]),
      [['g1', 2]],
    );
  });

  it('records a registration over topicsMax with the excess left out, so no route is lost', () => {
    // Refused whole (BUSY), a registration did not count as a heartbeat: g1 expired 120 s
    // after creating one topic too many, and took every topic that did fit out of the routes.
    const table = new RouteTable({ topicsMax: 3 });
    const config = reg().topics.orders!;
    const node = (group: string, names: string[]) =>
      reg({
        group,
        endpoint: group === 'g1' ? '127.0.0.1:8081' : '127.0.0.1:9081',
        topics: Object.fromEntries(names.map((name) => [name, config])),
      });
    table.register(node('g2', ['b']), T0);
    table.register(node('g1', ['a', 'a2']), T0);
    for (let nowMs = T0 + 30_000; nowMs <= T0 + 600_000; nowMs += 30_000) {
      table.register(node('g2', ['b']), nowMs);
      // g1 created `c` and `d`; the table has room for neither.
      const result = table.register(node('g1', ['a', 'a2', 'c', 'd']), nowMs);
      assert.equal(result.outcome, 'leader');
      assert.deepEqual(result.droppedTopics, ['c', 'd']);
      table.expire(nowMs);
      assert.equal(table.route('a')?.groups[0]?.leader?.nodeId, 'n1');
      assert.equal(table.route('c'), undefined);
    }
    const nowMs = T0 + 630_000;
    // Room for one: the first new topic by name gets it, and keeps it.
    table.register(node('g2', []), nowMs);
    assert.deepEqual(table.register(node('g1', ['d', 'c', 'a', 'a2']), nowMs).droppedTopics, ['d']);
    assert.deepEqual(table.register(node('g1', ['a', 'a2', 'c', 'd']), nowMs).droppedTopics, ['d']);
    // Topics already in the table take no room, whoever lists them: a follower gets `a` and
    // `c`, and `d` is left out of its registration too.
    const follower = { ...node('g1', ['a', 'c', 'd']), nodeId: 'n2', role: 'follower' as const };
    assert.deepEqual(table.register(follower, nowMs).droppedTopics, ['d']);
    // Dropping `a2` frees its place for `d`.
    assert.deepEqual(table.register(node('g1', ['a', 'c', 'd']), nowMs).droppedTopics, []);
    assert.deepEqual(
      ['a', 'a2', 'b', 'c', 'd'].map((t) => table.route(t) !== undefined),
      [true, false, false, true, true],
    );
    // A registration listing more topics than the whole table holds is recorded all the same.
    table.unregister('g1', 'n2');
    const many = node('g1', ['e', 'f', 'g', 'h']);
    assert.deepEqual(table.register(many, nowMs).droppedTopics, ['h']);
    assert.equal(table.clusterView()[0]?.nodes[0]?.topicCount, 3);
  });

  it('reports the claim in the highest live term as leader under any interleaving', () => {
    type Op =
      | { kind: 'register'; group: number; node: number; leader: boolean; term: number }
      | { kind: 'unregister'; group: number; node: number }
      | { kind: 'advance'; ms: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          kind: fc.constant('register' as const),
          group: fc.nat(1),
          node: fc.nat(3),
          leader: fc.boolean(),
          term: fc.nat(6),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant('unregister' as const),
          group: fc.nat(1),
          node: fc.nat(3),
        }),
      },
      {
        weight: 2,
        arbitrary: fc.record({
          kind: fc.constant('advance' as const),
          ms: fc.integer({ min: 0, max: 70_000 }),
        }),
      },
    );
    interface ModelNode {
      leader: boolean;
      term: number;
      seenMs: number;
      claimAt: number;
    }
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const table = new RouteTable();
        const model = [new Map<number, ModelNode>(), new Map<number, ModelNode>()];
        let nowMs = 0;
        ops.forEach((o, step) => {
          if (o.kind === 'advance') {
            nowMs += o.ms;
            table.expire(nowMs);
            for (const nodes of model) {
              for (const [id, n] of nodes) if (nowMs - n.seenMs > 120_000) nodes.delete(id);
            }
          } else if (o.kind === 'unregister') {
            table.unregister(`g${o.group}`, `n${o.node}`);
            model[o.group]!.delete(o.node);
          } else {
            const nodes = model[o.group]!;
            const prev = nodes.get(o.node);
            const r = table.register(
              reg({
                group: `g${o.group}`,
                nodeId: `n${o.node}`,
                role: o.leader ? 'leader' : 'follower',
                term: o.term,
              }),
              nowMs,
            );
            let expected: RegisterOutcome = o.leader ? 'leader' : 'follower';
            if (prev !== undefined && o.term < prev.term) {
              expected = 'stale-term';
            } else {
              const same = prev?.leader === true && prev.term === o.term && o.leader;
              nodes.set(o.node, {
                leader: o.leader,
                term: o.term,
                seenMs: nowMs,
                claimAt: same ? prev.claimAt : step,
              });
            }
            const want = modelLeader(nodes);
            if (o.leader && expected === 'leader' && want !== o.node) expected = 'stale-leader';
            assert.equal(r.outcome, expected);
          }
          for (const g of [0, 1]) {
            const want = modelLeader(model[g]!);
            assert.equal(leaderOf(table, `g${g}`), want === undefined ? undefined : `n${want}`);
          }
        });
      }),
      fcParams(300),
    );

    // Among live nodes claiming leadership, the one in the highest term any live node reports
    // (earliest claim on a tie); nobody when no live node claims that term.
    function modelLeader(nodes: Map<number, ModelNode>): number | undefined {
      let termMax = -1;
      for (const n of nodes.values()) termMax = Math.max(termMax, n.term);
      const claims = [...nodes].filter(([, n]) => n.leader && n.term === termMax);
      claims.sort((a, b) => a[1].claimAt - b[1].claimAt);
      return claims[0]?.[0];
    }
  });
});
