/*
 * raftmq's PullConsumer. First without a cluster: option resolution (defaults, each bad field
 * named) and argument checks (INVALID_ARGUMENT naming the field, before any call). Then against
 * a live 3-node group (LocalCluster: a NameServer and three broker processes on loopback), with
 * messages sent by raftmq's Producer: the route through the NameServer and through a broker;
 * pulls from the leader and from each follower return the same committed messages with every
 * field as sent (id, body, tag, keys, properties, message group, queue, offset) and the next
 * offset for paging; tag filters; long polling (woken by a send, NO_NEW_MSG when the wait ends);
 * an offset beyond the end; QueryOffset BEGINNING, END and TIMESTAMP; GetOffset before and
 * after an UpdateOffset sent to a follower, on every node; typed errors for an unknown topic, an
 * unreachable node and a node that never answers (within the call's deadline); close(). Last,
 * the leader is killed and a pull without an endpoint follows the route to the new leader.
 * Every wait polls a condition with a deadline; servers and directories are removed after.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCluster } from '../../src/cli/local-cluster';
import { freePorts, waitUntil } from '../../src/cli/raft-node-client';
import { Producer, type OutgoingMessage } from '../../src/client/producer';
import {
  PULL_CONSUMER_DEFAULTS,
  PullConsumer,
  type PulledMessage,
  resolvePullConsumerOptions,
} from '../../src/client/pull-consumer';
import { type ErrorCode, isRaftmqError } from '../../src/common/errors';

const TOPIC = 'PullTopic';
const QUEUE_COUNT = 2;
const ELECTION_TIMEOUT_MS = 15_000;
const CONVERGE_TIMEOUT_MS = 15_000;

/** Asserts that `promise` rejects with a RaftmqError of `code` whose message matches `text`. */
async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, text: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRaftmqError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, text);
    return true;
  });
}

/** The fields a consumer sees, for comparing nodes and checking against what was sent. */
function view(m: PulledMessage): object {
  return {
    messageId: m.messageId,
    queueId: m.queueId,
    offset: m.offset,
    body: m.body.toString(),
    tag: m.tag,
    keys: m.keys,
    properties: [...m.properties],
    messageGroup: m.messageGroup,
    storeTimestampMs: m.storeTimestampMs,
  };
}

describe('PullConsumer options and arguments', () => {
  it('resolves its options and names a bad field', () => {
    const options = resolvePullConsumerOptions({ endpoint: '127.0.0.1:9876' });
    assert.deepEqual(options, { endpoint: '127.0.0.1:9876', ...PULL_CONSUMER_DEFAULTS });
    assert.ok(Object.isFrozen(options));
    assert.equal(resolvePullConsumerOptions({ endpoint: 'h:1', routeTtlMs: 0 }).routeTtlMs, 0);
    const bad: [object, RegExp][] = [
      [{ endpoint: 'nope' }, /pullConsumer\.endpoint: must be host:port/],
      [{ endpoint: 'h:70000' }, /pullConsumer\.endpoint/],
      [{ endpoint: 'h:1', callTimeoutMs: 0 }, /pullConsumer\.callTimeoutMs/],
      [{ endpoint: 'h:1', consumerGroup: '' }, /pullConsumer\.consumerGroup/],
      [{ endpoint: 'h:1', channelsMax: 0 }, /pullConsumer\.channelsMax/],
      [{ endpoint: 'h:1', routeCacheEntriesMax: 1.5 }, /pullConsumer\.routeCacheEntriesMax/],
      [{ endpoint: 'h:1', pullProtocol: 'udp' }, /pullConsumer\.pullProtocol: must be one of/],
      [{ endpoint: 'h:1', colour: 'red' }, /pullConsumer\.colour: unknown option/],
    ];
    for (const [input, message] of bad) {
      assert.throws(
        () => resolvePullConsumerOptions(input as { endpoint: string }),
        (e) => isRaftmqError(e, 'INVALID_OPTION') && message.test(e.message),
        JSON.stringify(input),
      );
    }
  });

  it('checks every argument before calling anything', async () => {
    const pc = await PullConsumer.create({ endpoint: '127.0.0.1:1' });
    try {
      const invalid = (p: Promise<unknown>, field: RegExp) =>
        rejectsWith(p, 'INVALID_ARGUMENT', field);
      await invalid(pc.pull(TOPIC, -1, 0, 1), /^queueId/);
      await invalid(pc.pull(TOPIC, 0, 1.5, 1), /^offset/);
      await invalid(pc.pull(TOPIC, 0, 0, 0), /^countMax/);
      await invalid(pc.pull(TOPIC, 0, 0, 1025), /^countMax/);
      await invalid(pc.pull(TOPIC, 0, 0, 1, { awaitMs: -1 }), /^awaitMs/);
      await invalid(pc.pull(TOPIC, 0, 0, 1, { tagExpression: ' ' }), /^tagExpression/);
      await invalid(pc.pull(TOPIC, 0, 0, 1, { endpoint: 'x' }), /^endpoint/);
      await invalid(pc.getOffset('', TOPIC, 0), /^group/);
      await invalid(pc.updateOffset('g', TOPIC, 0, -1), /^offset/);
      await invalid(pc.queryOffset(TOPIC, 0, 'LATEST' as 'END'), /^policy/);
      await invalid(pc.queryOffset(TOPIC, 0, 'TIMESTAMP'), /^timestampMs/);
      await invalid(pc.route(''), /^topic/);
    } finally {
      pc.close();
    }
  });
});

describe('PullConsumer against a broker group (LocalCluster)', function () {
  this.timeout(60_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  let producer: Producer | undefined;
  let pc: PullConsumer | undefined;
  /** The same consumer over RocketMQ 5 PullMessage (`pc` uses raftmq's Fetch protocol). */
  let pcV2: PullConsumer | undefined;
  /** What was sent, by message id, with the offset the send was acknowledged at. */
  const sent = new Map<string, OutgoingMessage & { offset: number }>();

  const live = () => {
    assert.ok(cluster !== undefined && producer !== undefined && pc !== undefined);
    assert.ok(pcV2 !== undefined);
    return { c: cluster, producer, pc, pcV2, both: [pc, pcV2] as const };
  };

  async function send(messages: OutgoingMessage[]): Promise<void> {
    const results = await live().producer.send(TOPIC, messages);
    results.forEach((r, i) => sent.set(r.messageId, { ...(messages[i] as OutgoingMessage), ...r }));
  }

  /** Every message of every queue on the node at `endpoint` (default: the leader). */
  async function readAll(endpoint?: string, consumer = live().pc): Promise<PulledMessage[][]> {
    const queues: PulledMessage[][] = [];
    for (let queueId = 0; queueId < QUEUE_COUNT; queueId++) {
      const result = await consumer.pull(TOPIC, queueId, 0, 32, { endpoint });
      assert.equal(result.status, 'FOUND');
      assert.equal(result.nextOffset, result.messages.length);
      queues.push([...result.messages]);
    }
    return queues;
  }

  before(async function () {
    this.timeout(90_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-pull-'));
    cluster = await LocalCluster.start({ dir, timing: { registerIntervalMs: 500 } });
    const c = cluster;
    await waitUntil('the topic created', ELECTION_TIMEOUT_MS, async () => {
      const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
      const admin = await c.admin(leader.nodeId);
      await admin.createTopic({
        name: TOPIC,
        queueCount: QUEUE_COUNT,
        messageTypes: ['NORMAL', 'FIFO'],
      });
      return true;
    });
    const consumer = await PullConsumer.create({
      endpoint: c.namesrvEndpoint,
      callTimeoutMs: 10_000,
    });
    pc = consumer;
    pcV2 = await PullConsumer.create({
      endpoint: c.namesrvEndpoint,
      callTimeoutMs: 10_000,
      pullProtocol: 'pull-message',
    });
    await waitUntil('the route at the NameServer', CONVERGE_TIMEOUT_MS, async () => {
      const route = await consumer.route(TOPIC, true);
      return route.groups[0]?.followers.length === 2 ? true : undefined;
    });
    producer = await Producer.create({ endpoint: c.namesrvEndpoint });
    for (let i = 0; i < 6; i++) {
      await send([
        {
          body: Buffer.from(`body-${i}`),
          tag: i % 2 === 0 ? 'even' : 'odd',
          keys: [`key-${i}`, `k${i}`],
          properties: new Map([['index', String(i)]]),
        },
      ]);
    }
    await send([
      { body: Buffer.from('fifo-0'), messageGroup: 'group-1' },
      { body: Buffer.from('fifo-1'), messageGroup: 'group-1', tag: 'odd' },
    ]);
  });

  after(async function () {
    this.timeout(60_000);
    pc?.close();
    pcV2?.close();
    producer?.close();
    await cluster?.stopAll();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads the route through the NameServer and through a broker', async () => {
    const { c, pc: viaNamesrv } = live();
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    const followers = c.brokers
      .filter((b) => b.id !== leader.nodeId)
      .map((b) => ({ nodeId: b.id, endpoint: b.clientEndpoint }));
    const expected = {
      topic: TOPIC,
      groups: [
        {
          name: c.layout.group,
          leaderEndpoint: leader.clientEndpoint,
          followers,
          queueIds: [0, 1],
        },
      ],
    };
    assert.deepEqual(await viaNamesrv.route(TOPIC), expected);
    const follower = followers[0]?.endpoint ?? '';
    const viaBroker = await PullConsumer.create({ endpoint: follower });
    try {
      assert.deepEqual(await viaBroker.route(TOPIC), expected);
    } finally {
      viaBroker.close();
    }
  });

  it('pulls every field as sent, the same from each node by either protocol', async () => {
    const { c, pcV2: v2 } = live();
    const queues = await readAll();
    const all = queues.flat();
    assert.equal(all.length, sent.size);
    for (const [queueId, messages] of queues.entries()) {
      messages.forEach((m, i) => {
        assert.equal(m.offset, i);
        assert.equal(m.queueId, queueId);
        assert.equal(m.topic, TOPIC);
      });
    }
    for (const m of all) {
      const s = sent.get(m.messageId);
      assert.ok(s !== undefined, `unknown message ${m.messageId}`);
      assert.equal(m.offset, s.offset);
      assert.equal(m.body.toString(), Buffer.from(s.body).toString());
      assert.equal(m.tag, s.tag);
      assert.deepEqual(m.keys, s.keys ?? []);
      assert.deepEqual([...m.properties], [...(s.properties ?? [])]);
      assert.equal(m.messageGroup, s.messageGroup);
      assert.ok((m.storeTimestampMs ?? 0) > 0 && (m.bornTimestampMs ?? 0) > 0);
    }
    const fifo = all.filter((m) => m.messageGroup === 'group-1');
    assert.deepEqual(
      fifo.map((m) => [m.body.toString(), m.queueId]),
      [
        ['fifo-0', fifo[0]?.queueId],
        ['fifo-1', fifo[0]?.queueId],
      ],
    );
    const expected = JSON.stringify(queues.map((q) => q.map(view)));
    for (const b of c.brokers) {
      await waitUntil(`${b.id} caught up`, CONVERGE_TIMEOUT_MS, async () => {
        const got = JSON.stringify((await readAll(b.clientEndpoint)).map((q) => q.map(view)));
        return got === expected ? true : undefined;
      });
      // PullMessage answers exactly what Fetch does, born timestamps included.
      const full = (queuesRead: PulledMessage[][]) =>
        JSON.stringify(queuesRead.map((q) => q.map((m) => [view(m), m.bornTimestampMs])));
      assert.equal(full(await readAll(b.clientEndpoint, v2)), full(queues));
    }
  });

  it('pages with nextOffset and filters by tag, by either protocol', async () => {
    for (const consumer of live().both) await pagesAndFilters(consumer);
  });

  async function pagesAndFilters(consumer: PullConsumer): Promise<void> {
    const first = await consumer.pull(TOPIC, 0, 0, 1);
    assert.equal(first.status, 'FOUND');
    assert.equal(first.messages.length, 1);
    assert.equal(first.nextOffset, 1);
    const second = await consumer.pull(TOPIC, 0, first.nextOffset, 1);
    assert.equal(second.messages[0]?.offset, 1);

    const end = await consumer.queryOffset(TOPIC, 0, 'END');
    const odd = await consumer.pull(TOPIC, 0, 0, 32, { tagExpression: 'odd' });
    assert.equal(odd.status, 'FOUND');
    assert.ok(odd.messages.every((m) => m.tag === 'odd'));
    const all = (await consumer.pull(TOPIC, 0, 0, 32)).messages;
    assert.deepEqual(
      odd.messages.map((m) => m.messageId),
      all.filter((m) => m.tag === 'odd').map((m) => m.messageId),
    );
    const either = await consumer.pull(TOPIC, 0, 0, 32, { tagExpression: 'odd || even' });
    assert.equal(either.messages.length, all.filter((m) => m.tag !== undefined).length);
    const none = await consumer.pull(TOPIC, 0, 0, 32, { tagExpression: 'no-such-tag' });
    assert.deepEqual(
      [none.status, none.messages.length, none.nextOffset],
      ['NO_MATCHED_MSG', 0, end],
    );
  }

  it('long-polls at the end of a queue and refuses an offset beyond it, by either protocol', async () => {
    for (const [i, consumer] of live().both.entries()) await longPolls(consumer, `fifo-${2 + i}`);
  });

  async function longPolls(consumer: PullConsumer, body: string): Promise<void> {
    const fifoQueue = [...(await readAll()).entries()].find(([, q]) =>
      q.some((m) => m.messageGroup === 'group-1'),
    )?.[0];
    assert.ok(fifoQueue !== undefined);
    const end = await consumer.queryOffset(TOPIC, fifoQueue, 'END');

    const startedMs = performance.now();
    const empty = await consumer.pull(TOPIC, fifoQueue, end, 8, { awaitMs: 300 });
    assert.deepEqual(
      [empty.status, empty.messages.length, empty.nextOffset],
      ['NO_NEW_MSG', 0, end],
    );
    assert.ok(performance.now() - startedMs >= 250, 'the broker did not wait');

    const waiting = consumer.pull(TOPIC, fifoQueue, end, 8, { awaitMs: 20_000 });
    const sendStartedMs = performance.now();
    await send([{ body: Buffer.from(body), messageGroup: 'group-1' }]);
    const woken = await waiting;
    assert.equal(woken.status, 'FOUND');
    assert.deepEqual(
      woken.messages.map((m) => [m.body.toString(), m.offset]),
      [[body, end]],
    );
    assert.ok(performance.now() - sendStartedMs < 15_000, 'the long poll was not woken');

    const beyond = await consumer.pull(TOPIC, fifoQueue, end + 5, 8, { awaitMs: 1_000 });
    assert.deepEqual([beyond.status, beyond.nextOffset], ['OFFSET_ILLEGAL', end + 1]);
  }

  it('queries offsets by policy and commits consumer offsets through any node', async () => {
    const { c, pc: consumer } = live();
    const end = await consumer.queryOffset(TOPIC, 1, 'END');
    assert.ok(end > 0);
    assert.equal(await consumer.queryOffset(TOPIC, 1, 'BEGINNING'), 0);
    assert.equal(await consumer.queryOffset(TOPIC, 1, 'TIMESTAMP', { timestampMs: 0 }), 0);
    const future = Date.now() + 3_600_000;
    assert.equal(await consumer.queryOffset(TOPIC, 1, 'TIMESTAMP', { timestampMs: future }), end);

    const group = 'pull-test-group';
    assert.equal(await consumer.getOffset(group, TOPIC, 1), undefined);
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    const follower = c.brokers.find((b) => b.id !== leader.nodeId)?.clientEndpoint;
    await consumer.updateOffset(group, TOPIC, 1, 2, { endpoint: follower });
    for (const b of c.brokers) {
      const endpoint = b.clientEndpoint;
      await waitUntil(`offset applied on ${b.id}`, CONVERGE_TIMEOUT_MS, async () =>
        (await consumer.getOffset(group, TOPIC, 1, { endpoint })) === 2 ? true : undefined,
      );
    }
  });

  it('fails with typed errors within the call deadline', async () => {
    const { c, pc: consumer, both } = live();
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    const endpoint = leader.clientEndpoint;
    for (const [rpc, cons] of [
      ['FetchQueue', both[0]],
      ['PullMessage', both[1]],
    ] as const) {
      const missing = new RegExp(`${rpc}: TOPIC_NOT_FOUND: .*NoSuchTopic`);
      await rejectsWith(
        cons.pull('NoSuchTopic', 0, 0, 1, { endpoint }),
        'TOPIC_NOT_FOUND',
        missing,
      );
      const badQueue = new RegExp(`${rpc}: BAD_REQUEST: .*queue`);
      await rejectsWith(cons.pull(TOPIC, 7, 0, 1, { endpoint }), 'INVALID_ARGUMENT', badQueue);
    }

    const [closedPort] = await freePorts(1);
    const unreachable = `127.0.0.1:${closedPort ?? 1}`;
    await rejectsWith(consumer.pull(TOPIC, 0, 0, 1, { endpoint: unreachable }), 'NOT_LEADER', /./);

    // A server that accepts connections and never answers: only the deadline ends the call.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const quick = await PullConsumer.create({ endpoint: c.namesrvEndpoint, callTimeoutMs: 300 });
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const startedMs = performance.now();
      await rejectsWith(
        quick.pull(TOPIC, 0, 0, 1, { endpoint: `127.0.0.1:${port}`, awaitMs: 200 }),
        'TIMEOUT',
        /FetchQueue/,
      );
      const tookMs = performance.now() - startedMs;
      assert.ok(tookMs >= 400 && tookMs < 5_000, `took ${tookMs} ms`);
      quick.close();
      await rejectsWith(quick.queryOffset(TOPIC, 0, 'END'), 'INVALID_ARGUMENT', /closed/);
    } finally {
      quick.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('answers at most 4 MiB of messages per pull, always at least one, by either protocol', async () => {
    const { c, producer, both } = live();
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    await (await c.admin(leader.nodeId)).createTopic({ name: 'PullBig', queueCount: 1 });
    const MIB = 1024 * 1024;
    const bodies = Array.from({ length: 7 }, (_, i) => Buffer.alloc(MIB, i));
    for (const body of bodies) await producer.send('PullBig', [{ body }]);
    // Each stored message is 1 MiB and a header, so three fit in 4 MiB and a fourth does not.
    for (const consumer of both) {
      const got: number[] = [];
      let offset = 0;
      for (let round = 0; round < 5 && offset < bodies.length; round++) {
        const endpoint = leader.clientEndpoint;
        const r = await consumer.pull('PullBig', 0, offset, 32, { endpoint });
        got.push(r.messages.length);
        for (const m of r.messages) assert.ok(m.body.equals(bodies[m.offset] as Buffer));
        offset = r.nextOffset;
      }
      assert.deepEqual(got, [3, 3, 1]);
    }
  });

  it('follows the route to a new leader after the leader is killed', async () => {
    const { c } = live();
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    const before = await readAll();
    const patient = await PullConsumer.create({
      endpoint: c.namesrvEndpoint,
      callTimeoutMs: ELECTION_TIMEOUT_MS,
    });
    try {
      assert.equal((await patient.route(TOPIC)).groups[0]?.leaderEndpoint, leader.clientEndpoint);
      await c.kill(leader.nodeId, 'SIGKILL');
      const result = await patient.pull(TOPIC, 0, 0, 32);
      assert.deepEqual(result.messages.map(view), before[0]?.map(view));
      const next = (await patient.route(TOPIC)).groups[0]?.leaderEndpoint;
      assert.ok(next !== undefined && next !== leader.clientEndpoint, `still routed to ${next}`);
    } finally {
      patient.close();
    }
  });
});
