/*
 * The NameServer as a gRPC service on 127.0.0.1 (port 0), driven by raw proto-loader clients
 * of both services it serves. Checked: configuration validation; a leader and two followers
 * register and GetRoute/GetCluster show them; QueryRoute through apache.rocketmq.v2's
 * MessagingService has the shape the official clients need (queue-0 entries, one address,
 * broker ids, permission, message types, namespaces from the header); stale terms and stale
 * leadership claims are refused; a registration over topicsMax is recorded with the excess
 * left out and counted in the reply; unknown topics get TOPIC_NOT_FOUND unless a group
 * auto-creates topics and the name is not reserved; malformed requests (bad fields,
 * undecodable bytes) get INVALID_ARGUMENT or a RocketMQ error status and the server keeps
 * serving; silent brokers expire; a restarted
 * NameServer is whole again once BrokerRegistrars re-register; the other MessagingService RPCs
 * answer OK, Settings or an UNSUPPORTED status. Every server and client is stopped by its
 * test; every wait polls a condition with a deadline.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import { isRaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import { BrokerRegistrar } from '../../src/namesrv/namesrv-client';
import { MAX_BODY_BYTES } from '../../src/namesrv/namesrv-messaging';
import { type NameServer, resolveNameServerConfig } from '../../src/namesrv/namesrv-server';
import { LEADER_SHARE_PER_FOLLOWER } from '../../src/namesrv/rmq-route';
import {
  HOST,
  RawClients,
  registration,
  rejectsWith,
  startNameServer,
  waitUntil,
  wireRegistration,
} from './namesrv-harness';

/** Runs `body` with a started NameServer and raw clients; stops both afterwards. */
async function withServer(
  config: Parameters<typeof startNameServer>[0],
  body: (server: NameServer, clients: RawClients) => Promise<void>,
): Promise<void> {
  const server = await startNameServer(config);
  const clients = await RawClients.open(server.port);
  try {
    await body(server, clients);
  } finally {
    clients.close();
    await server.stop();
  }
}

/** Registers g1: n1 leader (term 2), n2 and n3 followers. */
async function registerGroup(clients: RawClients): Promise<void> {
  await clients.namesrvCall('Register', wireRegistration());
  for (const [nodeId, port] of [
    ['n2', 8082],
    ['n3', 8083],
  ] as const) {
    const res = await clients.namesrvCall(
      'Register',
      wireRegistration({ nodeId, role: 'ROLE_FOLLOWER', endpoint: `127.0.0.1:${port}` }),
    );
    assert.equal(res.outcome, 'OUTCOME_FOLLOWER');
  }
}

describe('namesrv server', () => {
  it('resolves its configuration and names a bad field', () => {
    const config = resolveNameServerConfig({ port: 0 });
    assert.equal(config.listenHost, '127.0.0.1');
    assert.equal(resolveNameServerConfig({ listenHost: '::1' }).listenHost, '::1');
    assert.equal(config.port, 0);
    assert.equal(config.routeTable.brokerExpiryMs, 120_000);
    assert.equal(resolveNameServerConfig(undefined).port, 9876);
    const bad: [unknown, RegExp][] = [
      [{ port: -1 }, /namesrv\.port/],
      [{ port: 1.5 }, /namesrv\.port/],
      [{ listenHost: '' }, /namesrv\.listenHost/],
      [{ listenHost: 'bogus host' }, /namesrv\.listenHost: must be a host name/],
      [{ listenHost: '127.0.0.1:5555' }, /namesrv\.listenHost: must be a host name/],
      [{ colour: 'red' }, /namesrv\.colour: unknown option/],
      [{ routeTable: { brokerExpiryMs: 0 } }, /routeTable\.brokerExpiryMs/],
      [{ routeTable: { scanIntervalMs: 5_000, brokerExpiryMs: 1_000 } }, /scanIntervalMs/],
      [{ routeTable: 5 }, /routeTable/],
      ['namesrv.json', /namesrv/],
      [[], /namesrv/],
    ];
    for (const [input, message] of bad) {
      assert.throws(
        () => resolveNameServerConfig(input),
        (e) => isRaftmqError(e, 'INVALID_OPTION') && message.test(e.message),
        JSON.stringify(input),
      );
    }
  });

  it('registers a leader and followers and serves GetRoute and GetCluster', async () => {
    await withServer({}, async (_server, clients) => {
      const first = await clients.namesrvCall(
        'Register',
        wireRegistration({ stats: { commitIndex: 10, appliedIndex: 9 } }),
      );
      assert.equal(first.outcome, 'OUTCOME_LEADER');
      assert.deepEqual(first.leader, { nodeId: 'n1', endpoint: '127.0.0.1:8081', term: 2 });
      await registerGroup(clients);

      const route = await clients.namesrvCall('GetRoute', { topic: 'orders' });
      assert.equal(route.found, true);
      const groups = route.groups as Record<string, unknown>[];
      assert.equal(groups.length, 1);
      const g = groups[0] as Record<string, unknown>;
      assert.equal(g.group, 'g1');
      assert.equal(g.writable, true);
      assert.deepEqual(g.leader, { nodeId: 'n1', endpoint: '127.0.0.1:8081', term: 2 });
      assert.deepEqual(
        (g.followers as { nodeId: string }[]).map((f) => f.nodeId),
        ['n2', 'n3'],
      );
      assert.deepEqual((g.queues as unknown[])[3], {
        queueId: 3,
        perm: 'PERM_READ_WRITE',
        messageTypes: ['NORMAL', 'FIFO'],
      });
      const missing = await clients.namesrvCall('GetRoute', { topic: 'nothing' });
      assert.deepEqual(missing, { found: false, groups: [] });

      const cluster = await clients.namesrvCall('GetCluster', {});
      const [view] = cluster.groups as Record<string, unknown>[];
      assert.ok(view !== undefined);
      assert.equal(view.leaderNodeId, 'n1');
      assert.equal(view.leaderTermMax, 2);
      const nodes = view.nodes as Record<string, unknown>[];
      assert.deepEqual(
        nodes.map((n) => [n.nodeId, n.reportedRole, n.isLeader, n.term]),
        [
          ['n1', 'ROLE_LEADER', true, 2],
          ['n2', 'ROLE_FOLLOWER', false, 2],
          ['n3', 'ROLE_FOLLOWER', false, 2],
        ],
      );
      // registerGroup registered n1 again without stats: a node's stats are its latest report.
      assert.equal(nodes[0]?.stats, undefined);
      await clients.namesrvCall(
        'Register',
        wireRegistration({ stats: { commitIndex: 10, appliedIndex: 9 } }),
      );
      const view2 = await clients.namesrvCall('GetCluster', {});
      const n1 = (view2.groups as { nodes: Record<string, unknown>[] }[])[0]?.nodes[0];
      assert.deepEqual(n1?.stats, { commitIndex: 10, appliedIndex: 9 });
      const ageMs = nodes[0]?.lastHeartbeatAgeMs as number;
      assert.ok(ageMs >= 0 && ageMs < 10_000, `age ${ageMs}`);
      assert.ok(Math.abs((nodes[0]?.lastHeartbeatEpochMs as number) - Date.now()) < 10_000);

      const removed = await clients.namesrvCall('Unregister', { group: 'g1', nodeId: 'n3' });
      assert.equal(removed.removed, true);
      const again = await clients.namesrvCall('Unregister', { group: 'g1', nodeId: 'n3' });
      assert.equal(again.removed, false);
    });
  });

  it('answers QueryRoute in the shape the official clients need', async () => {
    await withServer({}, async (_server, clients) => {
      await registerGroup(clients);
      const res = await clients.messagingCall('QueryRoute', {
        topic: { name: 'orders' },
        endpoints: { scheme: 'IPv4', addresses: [{ host: HOST, port: 1 }] },
      });
      assert.deepEqual(res.status, { code: 'OK', message: 'OK' });
      const queues = res.messageQueues as {
        id: number;
        permission: string;
        acceptMessageTypes: string[];
        topic: unknown;
        broker: { name: string; id: number; endpoints: { scheme: string; addresses: unknown[] } };
      }[];
      // The leader's queues, its queue 0 repeated (most first attempts go to it), the followers.
      const repeats = LEADER_SHARE_PER_FOLLOWER * 2 - 1;
      assert.deepEqual(
        queues.map((q) => `${q.broker.name}#${q.broker.id}/${q.id}`),
        [
          'g1#0/0',
          'g1#0/1',
          'g1#0/2',
          'g1#0/3',
          ...new Array<string>(repeats).fill('g1#0/0'),
          'g1@n2#1/0',
          'g1@n3#2/0',
        ],
      );
      const queueZero = queues.filter((q) => q.id === 0);
      assert.equal(queueZero.length, 3 + repeats);
      for (const q of queues) {
        assert.equal(q.broker.endpoints.addresses.length, 1);
        assert.equal(q.broker.endpoints.scheme, 'IPv4');
        assert.equal(q.permission, 'READ_WRITE');
        assert.deepEqual(q.acceptMessageTypes, ['NORMAL', 'FIFO']);
        assert.deepEqual(q.topic, { name: 'orders', resourceNamespace: '' });
      }
      assert.deepEqual(queueZero.at(-1)?.broker.endpoints.addresses, [
        { host: '127.0.0.1', port: 8083 },
      ]);

      // A namespace in the header (Node never puts it in the request) prefixes the topic.
      await clients.namesrvCall(
        'Register',
        wireRegistration({
          topics: { 'ns1%orders': { queueCount: 1, perm: 'PERM_READ', messageTypes: ['DELAY'] } },
        }),
      );
      const namespaced = await clients.messagingCall(
        'QueryRoute',
        { topic: { name: 'orders' } },
        { 'x-mq-namespace': 'ns1' },
      );
      assert.equal((namespaced.status as { code: string }).code, 'OK');
      const [nq] = namespaced.messageQueues as Record<string, unknown>[];
      assert.deepEqual(nq?.topic, { name: 'orders', resourceNamespace: 'ns1' });
      assert.equal(nq?.permission, 'READ');
      assert.deepEqual(nq?.acceptMessageTypes, ['DELAY']);
      // ... and so does resource_namespace when there is no header.
      const inBody = await clients.messagingCall('QueryRoute', {
        topic: { name: 'orders', resourceNamespace: 'ns1' },
      });
      // The leader's one queue (repeated), and queue 0 of each follower (they forward sends).
      assert.deepEqual(
        [
          ...new Set(
            (inBody.messageQueues as { broker: { name: string } }[]).map((q) => q.broker.name),
          ),
        ],
        ['g1', 'g1@n2', 'g1@n3'],
      );
    });
  });

  it('refuses stale terms and stale leadership claims', async () => {
    await withServer({}, async (_server, clients) => {
      await registerGroup(clients);
      const newer = await clients.namesrvCall(
        'Register',
        wireRegistration({ nodeId: 'n2', endpoint: '127.0.0.1:8082', term: 5 }),
      );
      assert.equal(newer.outcome, 'OUTCOME_LEADER');
      const old = await clients.namesrvCall('Register', wireRegistration({ term: 2 }));
      assert.equal(old.outcome, 'OUTCOME_STALE_LEADER');
      assert.deepEqual(old.leader, { nodeId: 'n2', endpoint: '127.0.0.1:8082', term: 5 });
      const replayed = await clients.namesrvCall(
        'Register',
        wireRegistration({ nodeId: 'n2', endpoint: '127.0.0.1:8082', term: 4 }),
      );
      assert.equal(replayed.outcome, 'OUTCOME_STALE_TERM');
      const route = await clients.messagingCall('QueryRoute', { topic: { name: 'orders' } });
      const leaderQueues = (
        route.messageQueues as { id: number; broker: { id: number; endpoints: unknown } }[]
      ).filter((q) => q.broker.id === 0);
      assert.equal(new Set(leaderQueues.map((q) => q.id)).size, 4);
      for (const q of leaderQueues) {
        assert.deepEqual(q.broker.endpoints, {
          scheme: 'IPv4',
          addresses: [{ host: '127.0.0.1', port: 8082 }],
        });
      }
    });
  });

  it('answers TOPIC_NOT_FOUND for an unknown topic, and routes over auto-creating groups', async () => {
    await withServer({}, async (_server, clients) => {
      await registerGroup(clients);
      const res = await clients.messagingCall('QueryRoute', { topic: { name: 'payments' } });
      assert.equal((res.status as { code: string }).code, 'TOPIC_NOT_FOUND');
      assert.match((res.status as { message: string }).message, /payments not found/);
      assert.deepEqual(res.messageQueues, []);

      await clients.namesrvCall(
        'Register',
        wireRegistration({ group: 'g2', autoCreateTopics: true, defaultQueueCount: 2 }),
      );
      const auto = await clients.messagingCall('QueryRoute', { topic: { name: 'payments' } });
      assert.equal((auto.status as { code: string }).code, 'OK');
      const queues = auto.messageQueues as { id: number; broker: { name: string } }[];
      assert.deepEqual(
        queues.map((q) => `${q.broker.name}/${q.id}`),
        ['g2/0', 'g2/1'],
      );
      const cluster = await clients.namesrvCall('GetCluster', {});
      const flags = (cluster.groups as { group: string; autoCreateTopics: boolean }[]).map((g) => [
        g.group,
        g.autoCreateTopics,
      ]);
      assert.deepEqual(flags, [
        ['g1', false],
        ['g2', true],
      ]);
    });
  });

  it('never routes a reserved topic as one to create on first use', async () => {
    await withServer({}, async (_server, clients) => {
      const dlq = { queueCount: 1, perm: 'PERM_READ_WRITE', messageTypes: ['NORMAL'] };
      await clients.namesrvCall(
        'Register',
        wireRegistration({
          autoCreateTopics: true,
          defaultQueueCount: 2,
          topics: { '%DLQ%hosted': dlq },
        }),
      );
      const codes: string[] = [];
      for (const [name, namespace] of [
        ['%DLQ%someGroup', ''],
        ['%RETRY%someGroup', ''],
        ['rmq_sys_x', ''],
        ['TBW102', ''],
        ['SCHEDULE_TOPIC_XXXX', ''],
        ['%DLQ%someGroup', 'shop'],
        ['%DLQ%hosted', ''],
        ['payments', ''],
      ]) {
        const res = await clients.messagingCall('QueryRoute', {
          topic: { name, resourceNamespace: namespace },
        });
        codes.push(`${namespace}/${name}: ${(res.status as { code: string }).code}`);
      }
      // Brokers never create a reserved topic; the route of one a group hosts is still served.
      assert.deepEqual(codes, [
        '/%DLQ%someGroup: TOPIC_NOT_FOUND',
        '/%RETRY%someGroup: TOPIC_NOT_FOUND',
        '/rmq_sys_x: TOPIC_NOT_FOUND',
        '/TBW102: TOPIC_NOT_FOUND',
        '/SCHEDULE_TOPIC_XXXX: TOPIC_NOT_FOUND',
        'shop/%DLQ%someGroup: TOPIC_NOT_FOUND',
        '/%DLQ%hosted: OK',
        '/payments: OK',
      ]);
    });
  });

  it('records a registration over topicsMax and tells how many topics it left out', async () => {
    await withServer({ routeTable: { topicsMax: 1 } }, async (_server, clients) => {
      const topic = { queueCount: 1, perm: 'PERM_READ_WRITE', messageTypes: ['NORMAL'] };
      const res = await clients.namesrvCall(
        'Register',
        wireRegistration({ topics: { payments: topic, orders: topic } }),
      );
      assert.equal(res.outcome, 'OUTCOME_LEADER');
      assert.equal(res.droppedTopicCount, 1);
      assert.equal((await clients.namesrvCall('GetRoute', { topic: 'orders' })).found, true);
      assert.equal((await clients.namesrvCall('GetRoute', { topic: 'payments' })).found, false);
    });
  });

  it('answers malformed requests with INVALID_ARGUMENT and keeps serving', async () => {
    await withServer({}, async (_server, clients) => {
      const invalid = grpc.status.INVALID_ARGUMENT;
      const register = (over: Record<string, unknown>) =>
        clients.namesrvCall('Register', wireRegistration(over));
      await rejectsWith(register({ role: 'ROLE_UNSPECIFIED' }), invalid, /role/);
      await rejectsWith(register({ endpoint: 'nowhere' }), invalid, /endpoint/);
      await rejectsWith(register({ group: '' }), invalid, /group/);
      await rejectsWith(register({ term: '18446744073709551615' }), invalid, /term/);
      await rejectsWith(register({ stats: { commitIndex: '9007199254740993' } }), invalid, /stats/);
      await rejectsWith(
        register({ topics: { orders: { queueCount: 4, perm: 'PERM_UNSPECIFIED' } } }),
        invalid,
        /topics\.orders\.perm/,
      );
      await rejectsWith(
        register({ topics: { orders: { queueCount: 0, perm: 'PERM_READ' } } }),
        invalid,
        /queueCount/,
      );
      await rejectsWith(register({ autoCreateTopics: true }), invalid, /defaultQueueCount/);
      const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff]);
      await rejectsWith(clients.rawCall('namesrv', 'Register', garbage), invalid, /undecodable/);
      await rejectsWith(clients.namesrvCall('GetRoute', { topic: 'a b' }), invalid, /topic/);
      await rejectsWith(clients.namesrvCall('Unregister', {}), invalid, /group/);

      const noTopic = await clients.messagingCall('QueryRoute', {});
      assert.equal((noTopic.status as { code: string }).code, 'ILLEGAL_TOPIC');
      const badNs = await clients.messagingCall(
        'QueryRoute',
        { topic: { name: 'orders' } },
        { 'x-mq-namespace': 'a b' },
      );
      assert.equal((badNs.status as { code: string }).code, 'BAD_REQUEST');
      const undecodable = (await clients.rawCall('messaging', 'QueryRoute', garbage)) as {
        status: { code: string };
      };
      assert.equal(undecodable.status.code, 'BAD_REQUEST');
      // A long name is refused on its merits, and the reason quotes it cut short.
      const long = await clients.messagingCall('QueryRoute', {
        topic: { name: 'x'.repeat(100 * 1024) },
      });
      assert.equal((long.status as { code: string }).code, 'ILLEGAL_TOPIC');
      assert.ok((long.status as { message: string }).message.length < 300);
      // Past the RPC's bound the request is not decoded at all; it still gets a status.
      const huge = await clients.messagingCall('QueryRoute', {
        topic: { name: 'x'.repeat(5 * 1024 * 1024) },
      });
      assert.equal((huge.status as { code: string }).code, 'BAD_REQUEST');
      assert.match((huge.status as { message: string }).message, /over the 262144-byte limit/);
      const bigGetRoute = clients.namesrvCall('GetRoute', { topic: 't'.repeat(300_000) });
      await rejectsWith(bigGetRoute, invalid, /over the 262144-byte limit of GetRoute/);
      // A registration lists every topic of its node: 7,000 topics (about 400 KB) are honest.
      const topics: Record<string, object> = {};
      for (let i = 0; i < 7_000; i++) {
        topics[`topic-with-a-longish-name-${i}`] = { queueCount: 4, perm: 'PERM_READ_WRITE' };
      }
      const many = await clients.namesrvCall(
        'Register',
        wireRegistration({ nodeId: 'n7', role: 'ROLE_FOLLOWER', topics }),
      );
      assert.equal(many.outcome, 'OUTCOME_FOLLOWER');

      const ok = await clients.namesrvCall('Register', wireRegistration());
      assert.equal(ok.outcome, 'OUTCOME_LEADER');
    });
  });

  it('expires brokers that stop registering', async () => {
    const routeTable = { brokerExpiryMs: 300, scanIntervalMs: 20 };
    await withServer({ routeTable }, async (server, clients) => {
      await registerGroup(clients);
      assert.equal(server.registry.clusterView()[0]?.nodes.length, 3);
      await waitUntil(async () => {
        const route = await clients.namesrvCall('GetRoute', { topic: 'orders' });
        return route.found === false;
      }, 'the silent group to expire');
      assert.deepEqual(server.registry.clusterView(), []);
      assert.equal(server.registry.extrasOf('g1', 'n1'), undefined);
    });
  });

  it('is whole again after a restart once brokers re-register', async () => {
    const first = await startNameServer();
    const port = first.port;
    const nodes = [
      registration(),
      registration({ nodeId: 'n2', role: 'follower', endpoint: '127.0.0.1:8082' }),
      registration({ nodeId: 'n3', role: 'follower', endpoint: '127.0.0.1:8083' }),
    ];
    const registrars = nodes.map(
      (reg) =>
        new BrokerRegistrar({
          addresses: [`${HOST}:${port}`],
          snapshot: () => reg,
          logger: silentLogger(),
          intervalMs: 50,
          callTimeoutMs: 1_000,
        }),
    );
    let clients = await RawClients.open(port);
    let second: NameServer | undefined;
    try {
      for (const r of registrars) r.start();
      const full = async () => {
        // Right after the restart a call may fail before the new channel connects (CI saw
        // UNAVAILABLE once): that is "not yet", not a failure; the wait's deadline bounds it.
        let view;
        try {
          view = await clients.namesrvCall('GetCluster', {});
        } catch {
          return false;
        }
        const groups = view.groups as { nodes: unknown[] }[];
        return groups[0]?.nodes.length === 3;
      };
      await waitUntil(full, 'three nodes registered');
      const before = await clients.namesrvCall('GetRoute', { topic: 'orders' });
      clients.close();
      await first.stop();

      second = await startNameServer({ port });
      clients = await RawClients.open(port);
      await waitUntil(full, 'three nodes registered again', 15_000);
      const after = await clients.namesrvCall('GetRoute', { topic: 'orders' });
      assert.deepEqual(after, before);
    } finally {
      await Promise.all(registrars.map((r) => r.stop()));
      clients.close();
      await first.stop();
      await second?.stop();
    }
  });

  it('answers the other MessagingService RPCs without failing the client', async () => {
    await withServer({}, async (_server, clients) => {
      const heartbeat = await clients.messagingCall('Heartbeat', { clientType: 'PRODUCER' });
      assert.equal((heartbeat.status as { code: string }).code, 'OK');
      const bye = await clients.messagingCall('NotifyClientTermination', {});
      assert.equal((bye.status as { code: string }).code, 'OK');
      const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff]);
      const byeGarbage = (await clients.rawCall(
        'messaging',
        'NotifyClientTermination',
        garbage,
      )) as {
        status: { code: string };
      };
      assert.equal(byeGarbage.status.code, 'OK');

      for (const rpc of ['SendMessage', 'QueryAssignment', 'AckMessage', 'RecallMessage']) {
        const res = await clients.messagingCall(rpc, {});
        const status = res.status as { code: string; message: string };
        assert.equal(status.code, 'UNSUPPORTED', rpc);
        assert.match(status.message, /NameServer.*broker/);
      }
      const received = await clients.serverStream('ReceiveMessage', {});
      assert.equal(received.length, 1);
      assert.equal((received[0]?.status as { code: string }).code, 'UNSUPPORTED');
    });
  });

  it('answers Telemetry Settings and completes the stream when the client half-closes', async () => {
    await withServer({}, async (_server, clients) => {
      const { call, replies, ended } = clients.telemetry();
      call.write({
        settings: {
          clientType: 'PRODUCER',
          requestTimeout: { seconds: 3 },
          publishing: { topics: [{ name: 'orders' }], validateMessageType: true },
        },
      });
      call.write({
        settings: {
          clientType: 'PUSH_CONSUMER',
          subscription: {
            group: { name: 'cg' },
            subscriptions: [
              { topic: { name: 'orders' }, expression: { type: 'TAG', expression: '*' } },
            ],
          },
        },
      });
      await waitUntil(() => replies.length >= 2, 'two Settings replies');
      const producer = replies[0]?.settings as Record<string, Record<string, unknown>>;
      assert.equal((replies[0]?.status as { code: string }).code, 'OK');
      assert.equal(producer.publishing?.maxBodySize, MAX_BODY_BYTES);
      assert.deepEqual(producer.publishing?.topics, [{ name: 'orders', resourceNamespace: '' }]);
      const backoff = producer.backoffPolicy as Record<string, Record<string, unknown>>;
      assert.equal(backoff.exponentialBackoff?.multiplier, 2);
      assert.equal(producer.backoffPolicy?.strategy, 'exponentialBackoff');
      const consumer = replies[1]?.settings as Record<string, Record<string, unknown>>;
      assert.equal(consumer.subscription?.receiveBatchSize, 32);
      assert.deepEqual(consumer.subscription?.group, { name: 'cg', resourceNamespace: '' });
      assert.equal(consumer.backoffPolicy?.maxAttempts, 17);

      call.end();
      const status = await ended;
      assert.equal(status.code, grpc.status.OK);
    });
  });
});
