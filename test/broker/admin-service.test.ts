/*
 * The admin service over fake AdminBackends, each served by a real gRPC server on 127.0.0.1:0
 * and called through AdminClient (or AdminRpc for raw requests): writes on the leader answer
 * with OK or the backend's error code in the response status; a follower forwards writes to the
 * leader with the `x-raftmq-forwarded` header and a forwarded write is never forwarded again; a
 * follower that knows no leader waits for one within the deadline; malformed requests (bad
 * bytes, bad values, missing fields) are refused without harming the server; an unexpected
 * backend failure becomes an INTERNAL status; ClusterStatus lists every peer, an unreachable one
 * as unreachable. ListGroups and ListTopics answer in bounded pages, which the client follows.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import { isRaftmqError, RaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import {
  AdminClient,
  AdminRpc,
  adminServiceDefinition,
  FORWARDED_HEADER,
  LIST_PAGE_SIZE_MAX,
  loadAdminDefinition,
} from '../../src/broker/admin-client';
import { createAdminService, type AdminService } from '../../src/broker/admin-service';
import type {
  AdminBackend,
  GroupConfig,
  NodeRole,
  NodeStatus,
  PeerEndpoints,
  RoleView,
  TopicConfig,
} from '../../src/broker/broker-types';
import { bindServer, shutdownServer } from '../../src/broker/grpc-util';
import { freePorts } from '../../src/cli/raft-node-client';

/** An in-memory backend whose role the test sets; writes need `role === 'leader'`. */
class FakeBackend implements AdminBackend {
  readonly groupName = 'g1';
  readonly topics = new Map<string, TopicConfig>();
  readonly groups = new Map<string, GroupConfig>();
  readonly calls: string[] = [];
  role: NodeRole = 'follower';
  term = 1;
  leaderId: string | null = null;
  failUnexpectedly = false;
  readonly leaderWaiters = new Set<() => void>();
  private readonly roleListeners = new Set<() => void>();

  constructor(
    readonly nodeId: string,
    readonly peerMap: Record<string, PeerEndpoints>,
  ) {}

  setLeader(leaderId: string | null): void {
    this.leaderId = leaderId;
    this.role = leaderId === this.nodeId ? 'leader' : 'follower';
    for (const wake of [...this.leaderWaiters]) wake();
    for (const listener of [...this.roleListeners]) listener();
  }

  onRoleChange(listener: () => void): () => void {
    this.roleListeners.add(listener);
    return () => this.roleListeners.delete(listener);
  }

  roleView(): RoleView {
    return {
      group: this.groupName,
      nodeId: this.nodeId,
      role: this.role,
      term: this.term,
      leaderId: this.leaderId,
      leaderEndpoint: this.leaderId === null ? undefined : this.peerMap[this.leaderId]?.client,
      leaderReady: this.role === 'leader',
    };
  }

  waitForLeader(deadlineMs: number): Promise<RoleView | undefined> {
    if (this.leaderId !== null) return Promise.resolve(this.roleView());
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.leaderWaiters.delete(done);
        resolve(this.leaderId === null ? undefined : this.roleView());
      };
      const timer = setTimeout(done, Math.max(0, deadlineMs - Date.now()));
      this.leaderWaiters.add(done);
    });
  }

  peers(): Readonly<Record<string, PeerEndpoints>> {
    return this.peerMap;
  }

  nodeStatus(): NodeStatus {
    const self = this.peerMap[this.nodeId] as PeerEndpoints;
    return {
      cluster: 'c1',
      group: this.groupName,
      nodeId: this.nodeId,
      role: this.role,
      term: this.term,
      leaderId: this.leaderId,
      clientEndpoint: self.client,
      raftEndpoint: self.raft,
      lastIndex: 7,
      commitIndex: 6,
      appliedIndex: 5,
      topicCount: this.topics.size,
      fatal: null,
      syncCount: 40,
      syncMsTotal: 30.5,
      syncMsMax: 12.25,
      slowSyncs: 2,
      timedSyncs: 38,
      syncCallMsTotal: 20.75,
      syncCallMsMax: 13.5,
      slowSyncCalls: 1,
    };
  }

  private write(what: string): void {
    this.calls.push(what);
    if (this.failUnexpectedly) throw new Error('disk on fire');
    if (this.role !== 'leader') {
      throw new RaftmqError('NOT_LEADER', `${this.nodeId} does not lead`, {
        details: { leaderId: this.leaderId ?? undefined },
      });
    }
  }

  createTopic(config: TopicConfig): Promise<TopicConfig> {
    this.write(`createTopic ${config.name}`);
    if (this.topics.has(config.name)) throw new RaftmqError('TOPIC_EXISTS', 'exists');
    this.topics.set(config.name, config);
    return Promise.resolve(config);
  }

  updateTopic(config: TopicConfig): Promise<TopicConfig> {
    this.write(`updateTopic ${config.name}`);
    this.topics.set(config.name, config);
    return Promise.resolve(config);
  }

  deleteTopic(name: string): Promise<void> {
    this.write(`deleteTopic ${name}`);
    if (!this.topics.delete(name)) throw new RaftmqError('TOPIC_NOT_FOUND', 'no such topic');
    return Promise.resolve();
  }

  listTopics(): TopicConfig[] {
    if (this.failUnexpectedly) throw new Error('index on fire');
    return [...this.topics.values()];
  }

  createGroup(config: GroupConfig): Promise<GroupConfig> {
    this.write(`createGroup ${config.name}`);
    this.groups.set(config.name, config);
    return Promise.resolve(config);
  }

  updateGroup(config: GroupConfig): Promise<GroupConfig> {
    this.write(`updateGroup ${config.name}`);
    this.groups.set(config.name, config);
    return Promise.resolve(config);
  }

  deleteGroup(name: string): Promise<void> {
    this.write(`deleteGroup ${name}`);
    if (!this.groups.delete(name)) throw new RaftmqError('GROUP_NOT_FOUND', 'no such group');
    return Promise.resolve();
  }

  listGroups(): GroupConfig[] {
    return [...this.groups.values()];
  }

  transferLeadership(nodeId: string): Promise<void> {
    this.write(`transferLeadership ${nodeId}`);
    return Promise.resolve();
  }
}

interface Served {
  readonly backend: FakeBackend;
  readonly server: grpc.Server;
  readonly service: AdminService;
  readonly client: AdminClient;
}

/** Rejects with the RaftmqError code `code`. */
async function rejectsWith(promise: Promise<unknown>, code: string): Promise<RaftmqError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(isRaftmqError(err), `expected a RaftmqError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}

describe('admin service', function () {
  this.timeout(20_000);
  const log = silentLogger();
  const ids = ['n1', 'n2', 'n3', 'n4'];
  const peers: Record<string, PeerEndpoints> = {};
  const nodes = new Map<string, Served>();
  let rpcService: grpc.ServiceDefinition;
  const rpcs: AdminRpc[] = [];

  const node = (id: string): Served => {
    const served = nodes.get(id);
    assert.ok(served !== undefined);
    return served;
  };
  const rawRpc = (id: string): AdminRpc => {
    const rpc = new AdminRpc(peers[id]?.client ?? '', rpcService);
    rpcs.push(rpc);
    return rpc;
  };

  before(async () => {
    rpcService = adminServiceDefinition(await loadAdminDefinition());
    // n4 is configured but never started: ClusterStatus must list it as unreachable.
    const ports = await freePorts(ids.length * 2);
    ids.forEach((id, i) => {
      peers[id] = {
        client: `127.0.0.1:${ports[2 * i] ?? 0}`,
        raft: `127.0.0.1:${ports[2 * i + 1] ?? 0}`,
      };
    });
    for (const id of ids.slice(0, 3)) {
      const backend = new FakeBackend(id, peers);
      const service = await createAdminService(backend, log, { callTimeoutMsDefault: 3_000 });
      const server = new grpc.Server();
      server.addService(service.definition, service.handlers);
      await bindServer(server, peers[id]?.client ?? '');
      const client = await AdminClient.connect(peers[id]?.client ?? '', { timeoutMs: 5_000 });
      nodes.set(id, { backend, server, service, client });
    }
  });

  beforeEach(() => {
    for (const { backend } of nodes.values()) {
      backend.topics.clear();
      backend.groups.clear();
      backend.calls.length = 0;
      backend.failUnexpectedly = false;
      backend.setLeader('n1');
    }
  });

  after(async () => {
    for (const rpc of rpcs) rpc.close();
    for (const { server, service, client } of nodes.values()) {
      client.close();
      await shutdownServer(server, 2_000, log);
      await service.close();
    }
  });

  it('runs writes on the leader and answers refusals in the status', async () => {
    const { client, backend } = node('n1');
    const created = await client.createTopic({ name: 't1', queueCount: 4 });
    assert.deepEqual(created, {
      name: 't1',
      queueCount: 4,
      perm: 'READ_WRITE',
      messageTypes: ['NORMAL'],
    });
    await rejectsWith(client.createTopic({ name: 't1', queueCount: 4 }), 'TOPIC_EXISTS');
    const updated = await client.updateTopic({ name: 't1', queueCount: 8, messageTypes: ['FIFO'] });
    assert.deepEqual(updated, {
      name: 't1',
      queueCount: 8,
      perm: 'READ_WRITE',
      messageTypes: ['FIFO'],
    });
    await rejectsWith(client.updateTopic({ name: 'nope', queueCount: 8 }), 'TOPIC_NOT_FOUND');
    await client.createTopic({ name: 'a0', queueCount: 1, perm: 'READ' });
    assert.deepEqual(
      (await client.listTopics()).map((t) => t.name),
      ['a0', 't1'],
    );
    await client.deleteTopic('t1');
    await rejectsWith(client.deleteTopic('t1'), 'TOPIC_NOT_FOUND');

    assert.deepEqual(await client.createGroup({ name: 'cg' }), {
      name: 'cg',
      maxDeliveryAttempts: 17,
      fifo: false,
    });
    assert.deepEqual(await client.updateGroup({ name: 'cg', fifo: true }), {
      name: 'cg',
      maxDeliveryAttempts: 17,
      fifo: true,
    });
    await rejectsWith(client.updateGroup({ name: 'other', fifo: true }), 'GROUP_NOT_FOUND');
    assert.deepEqual(await client.listGroups(), [
      { name: 'cg', maxDeliveryAttempts: 17, fifo: true },
    ]);
    await client.deleteGroup('cg');
    await rejectsWith(client.deleteGroup('cg'), 'GROUP_NOT_FOUND');
    assert.ok(backend.calls.includes('updateTopic t1'));
  });

  it('forwards writes from a follower to the leader, one hop at most', async () => {
    await node('n2').client.createTopic({ name: 'fwd', queueCount: 2 });
    assert.ok(node('n1').backend.topics.has('fwd'));
    assert.deepEqual(node('n2').backend.calls, [], 'the follower did not run the write');

    // A write that arrives already forwarded is run where it lands: NOT_LEADER, naming n1.
    const metadata = new grpc.Metadata();
    metadata.set(FORWARDED_HEADER, '1');
    const res = await rawRpc('n2').call(
      'DeleteTopic',
      { name: 'fwd' },
      { deadlineMs: Date.now() + 5_000, metadata },
    );
    const status = res.status as Record<string, unknown>;
    assert.equal(status.code, 'NOT_LEADER');
    assert.equal(status.retryable, true);
    assert.equal(status.leaderId, 'n1');
    assert.equal(status.leaderEndpoint, peers.n1?.client);
    assert.deepEqual(node('n2').backend.calls, ['deleteTopic fwd']);

    // n3 wrongly believes n2 leads: n2 gets the forwarded write and refuses it, no second hop.
    node('n3').backend.setLeader('n2');
    const err = await rejectsWith(node('n3').client.deleteTopic('fwd'), 'NOT_LEADER');
    assert.equal(err.details.leaderId, 'n1');
    assert.ok(node('n1').backend.topics.has('fwd'), 'n1 never saw the delete');

    await rejectsWith(node('n3').client.transferLeadership('n2'), 'NOT_LEADER');
    node('n3').backend.setLeader('n1');
    assert.equal(await node('n3').client.transferLeadership('n3'), 'n3');
    assert.deepEqual(node('n1').backend.calls.slice(-1), ['transferLeadership n3']);
  });

  it('refuses in the client a count the protocol cannot carry, instead of wrapping it', async () => {
    const { client, backend } = node('n1');
    await rejectsWith(
      client.createTopic({ name: 'wrapped', queueCount: 2 ** 32 + 1 }),
      'INVALID_ARGUMENT',
    );
    await rejectsWith(client.createTopic({ name: 'wrapped', queueCount: -1 }), 'INVALID_ARGUMENT');
    await rejectsWith(
      client.createGroup({ name: 'g', maxDeliveryAttempts: 1.5 }),
      'INVALID_ARGUMENT',
    );
    assert.ok(!backend.topics.has('wrapped'), 'nothing reached the server');
    assert.deepEqual(backend.calls, []);
  });

  it('forwards again to the next leader when the one it knew is gone', async () => {
    // n2 believes n4 leads, and n4 is down: the forward never leaves. Once n2 learns of n1,
    // the write goes there, within the same call. (Before, it failed at once with TIMEOUT.)
    const follower = node('n2');
    follower.backend.setLeader('n4');
    const pending = follower.client.createTopic({ name: 'after-loss', queueCount: 1 });
    await new Promise<void>((resolve) => setTimeout(resolve, 300));
    follower.backend.setLeader('n1');
    await pending;
    assert.ok(node('n1').backend.topics.has('after-loss'));
  });

  it('waits for an election within the deadline, else answers NOT_LEADER', async () => {
    const follower = node('n2');
    follower.backend.setLeader(null);
    const pending = follower.client.createTopic({ name: 'later', queueCount: 1 });
    await waitFor(() => follower.backend.leaderWaiters.size > 0);
    follower.backend.setLeader('n1');
    await pending;
    assert.ok(node('n1').backend.topics.has('later'));

    follower.backend.setLeader(null);
    await rejectsWith(
      follower.client.createTopic({ name: 'never', queueCount: 1 }, { timeoutMs: 300 }),
      'NOT_LEADER',
    );
    assert.ok(!node('n1').backend.topics.has('never'));
  });

  it('refuses malformed requests and keeps serving', async () => {
    const { client } = node('n1');
    const raw = new grpc.Client(peers.n1?.client ?? '', grpc.credentials.createInsecure());
    const grpcCode = await new Promise<number>((resolve) => {
      raw.makeUnaryRequest(
        '/raftmq.admin.v1.Admin/CreateTopic',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from([0x0a, 0xff, 0xff, 0xff]),
        (err) => resolve(err?.code ?? grpc.status.OK),
      );
    });
    raw.close();
    assert.equal(grpcCode, grpc.status.INVALID_ARGUMENT);

    await rejectsWith(client.createTopic({ name: 't', queueCount: 0 }), 'INVALID_ARGUMENT');
    await rejectsWith(client.createTopic({ name: 't', queueCount: 1025 }), 'INVALID_ARGUMENT');
    await rejectsWith(client.createTopic({ name: 'bad name', queueCount: 1 }), 'ILLEGAL_TOPIC');
    await rejectsWith(client.createTopic({ name: '%DLQ%x', queueCount: 1 }), 'ILLEGAL_TOPIC');
    // RocketMQ's own system topics: an admin may not create them any more than a producer.
    await rejectsWith(client.createTopic({ name: 'TBW102', queueCount: 1 }), 'ILLEGAL_TOPIC');
    await rejectsWith(
      client.createTopic({ name: 'RMQ_SYS_TRACE_TOPIC', queueCount: 1 }),
      'ILLEGAL_TOPIC',
    );
    await rejectsWith(client.createTopic({ name: '', queueCount: 1 }), 'ILLEGAL_TOPIC');
    await rejectsWith(
      client.createTopic({ name: 't', queueCount: 1, messageTypes: ['FIFO', 'FIFO'] }),
      'INVALID_ARGUMENT',
    );
    await rejectsWith(
      client.createGroup({ name: 'g', maxDeliveryAttempts: 5000 }),
      'INVALID_ARGUMENT',
    );
    await rejectsWith(client.createGroup({ name: 'g g' }), 'ILLEGAL_CONSUMER_GROUP');
    await rejectsWith(client.transferLeadership('nobody'), 'INVALID_ARGUMENT');
    const rpc = rawRpc('n1');
    const deadlineMs = Date.now() + 5_000;
    const codeOf = async (
      method: 'CreateTopic' | 'UpdateGroup',
      request: object,
    ): Promise<unknown> =>
      ((await rpc.call(method, request, { deadlineMs })).status as Record<string, unknown>).code;
    assert.equal(await codeOf('CreateTopic', {}), 'INVALID_ARGUMENT');
    assert.equal(
      await codeOf('CreateTopic', { topic: { name: 't', queueCount: 1, perm: 9 } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      await codeOf('CreateTopic', { topic: { name: 't', queueCount: 1, messageTypes: [0] } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(await codeOf('UpdateGroup', { group: null }), 'INVALID_ARGUMENT');
    assert.equal(node('n1').backend.calls.length, 0, 'nothing malformed reached the backend');
    assert.equal((await client.nodeStatus()).nodeId, 'n1');
  });

  it('lists more groups and topics than one 4 MiB answer holds, page by page', async () => {
    const { client, backend } = node('n1');
    // 40,000 names of 124 characters: about 5 MiB in one answer, which grpc-js's default
    // receive limit (4 MiB) refused before ListGroups and ListTopics were paged.
    const count = 40_000;
    const name = (i: number): string => `N${String(i).padStart(6, '0')}${'x'.repeat(117)}`;
    for (let i = count - 1; i >= 0; i--) {
      backend.groups.set(name(i), { name: name(i), maxDeliveryAttempts: 17, fifo: false });
      backend.topics.set(name(i), {
        name: name(i),
        queueCount: 8,
        perm: 'READ_WRITE',
        messageTypes: ['NORMAL'],
      });
    }
    const groups = await client.listGroups();
    assert.equal(groups.length, count);
    assert.ok(
      groups.every((g, i) => g.name === name(i)),
      'sorted, each once',
    );
    const topics = await client.listTopics();
    assert.equal(topics.length, count);
    assert.ok(
      topics.every((t, i) => t.name === name(i)),
      'sorted, each once',
    );

    const first = await client.listGroupsPage('', 3);
    assert.deepEqual(
      first.items.map((g) => g.name),
      [name(0), name(1), name(2)],
    );
    assert.equal(first.nextAfterName, name(2));
    const next = await client.listTopicsPage(first.nextAfterName, 2);
    assert.deepEqual(
      next.items.map((t) => t.name),
      [name(3), name(4)],
    );
    const big = await client.listGroupsPage('', 1_000_000);
    assert.equal(big.items.length, LIST_PAGE_SIZE_MAX, 'a page is bounded whatever is asked');
    const last = await client.listGroupsPage(name(count - 3), 0);
    assert.deepEqual(
      last.items.map((g) => g.name),
      [name(count - 2), name(count - 1)],
    );
    assert.equal(last.nextAfterName, '', 'the last page says so');
    assert.equal((await client.listTopicsPage(name(count - 1))).items.length, 0);
  });

  it('answers an unexpected backend failure with INTERNAL and keeps serving', async () => {
    const { client, backend } = node('n1');
    backend.failUnexpectedly = true;
    await rejectsWith(client.createTopic({ name: 'x', queueCount: 1 }), 'INTERNAL');
    await rejectsWith(client.listTopics(), 'INTERNAL');
    backend.failUnexpectedly = false;
    assert.deepEqual(await client.listTopics(), []);
  });

  it('reports this node and the whole group, unreachable peers included', async () => {
    const self = await node('n2').client.nodeStatus();
    assert.equal(self.nodeId, 'n2');
    assert.equal(self.role, 'follower');
    assert.equal(self.leaderId, 'n1');
    assert.equal(self.clientEndpoint, peers.n2?.client);
    assert.equal(self.fatal, null);
    // The fdatasync figures cross the wire as they were (a double stays a double).
    assert.deepEqual(
      [self.syncCount, self.syncMsTotal, self.syncMsMax, self.slowSyncs],
      [40, 30.5, 12.25, 2],
    );
    assert.deepEqual(
      [self.timedSyncs, self.syncCallMsTotal, self.syncCallMsMax, self.slowSyncCalls],
      [38, 20.75, 13.5, 1],
    );
    const cluster = await node('n2').client.clusterStatus();
    assert.equal(cluster.answeredBy, 'n2');
    assert.equal(cluster.leaderId, 'n1');
    assert.deepEqual(
      cluster.members.map((m) => [m.nodeId, m.reachable]),
      [
        ['n1', true],
        ['n2', true],
        ['n3', true],
        ['n4', false],
      ],
    );
    const n4 = cluster.members[3];
    assert.ok(n4 !== undefined && n4.status === null && n4.error !== null);
    assert.equal(cluster.members[0]?.status?.role, 'leader');
  });
});

/** Polls `check` until it holds; fails after `timeoutMs`. */
async function waitFor(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadlineMs) throw new Error('condition not met in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
}
