/*
 * What the official RocketMQ 5 Node client (rocketmq-client-nodejs 1.0.8, unchanged) may send,
 * against a NameServer and a one-node group started by LocalCluster with topic auto-creation
 * on. Two mismatches a review found, each of which cost the client far more than a refusal:
 *
 * - Message types. Routes listed DELAY and TRANSACTION, which the broker refuses, so the
 *   client's own type check passed and a DELAY send made three failing round trips and
 *   isolated every endpoint it tried for good. Now every route (the NameServer's, for a topic
 *   not created yet and once registered; a broker's; QueryAssignment's) lists NORMAL and FIFO,
 *   and the Producer refuses a DELAY message itself: no SendMessage leaves it (counted on its
 *   RPC client) and no endpoint is isolated. A raw DELAY send is still refused (UNSUPPORTED),
 *   and so is an admin request for a topic of DELAY messages.
 * - Delivery frames. A message within every limit of its own could need a ReceiveMessage frame
 *   over the 4 MiB the client receives, and then never be consumed. Now a message whose frame
 *   bound is exactly 4 MiB (the maximum body, keys filling the rest) is stored and the official
 *   SimpleConsumer receives it intact; one byte more of keys is refused at send with
 *   MESSAGE_PROPERTIES_TOO_LARGE (43101), by the Producer's call and a raw one alike, and
 *   nothing of it is stored.
 *
 * Every client and the cluster are stopped by the tests; every wait has a deadline.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Producer, SimpleConsumer } from 'rocketmq-client-nodejs';
import {
  DELIVERY_FRAME_FIXED_BYTES_MAX,
  DELIVERY_FRAME_SIZE_BYTES_MAX,
} from '../../src/broker/delivery-frame-limit';
import { LocalCluster } from '../../src/cli/local-cluster';
import { isRaftmqError } from '../../src/common/errors';
import { waitUntil } from '../../src/cli/raft-node-client';
import { MESSAGE_LIMITS } from '../../src/store/message-limits';
import {
  CODE,
  printLogTails,
  QuietLogger,
  RmqRawClient,
  waitForNameServerRoute,
  wireMessage,
} from './rmq-raw-client';

const LEADER_TIMEOUT_MS = 15_000;
const SERVED = ['NORMAL', 'FIFO'];
/** RocketMQ `Code.UNSUPPORTED`. */
const UNSUPPORTED = 50_500;

interface Stoppable {
  shutdown(): Promise<void>;
}

/** Keys of exactly `framedBytes` bytes in a delivery frame (3 bytes of framing each). */
function keysOfBytes(framedBytes: number): string[] {
  const keys: string[] = [];
  for (let left = framedBytes; left > 0;) {
    const size = Math.min(MESSAGE_LIMITS.keySizeBytesMax, left - 3);
    assert.ok(size >= 1, `no keys of exactly ${framedBytes} framed bytes`);
    keys.push(`${keys.length}-${'k'.repeat(size - 1 - String(keys.length).length)}`);
    left -= size + 3;
  }
  return keys;
}

/** The accepted types of every queue of a decoded QueryRoute or QueryAssignment answer. */
function typesOf(queues: unknown[]): string[][] {
  return queues.map((q) => [...(q as { acceptMessageTypes: string[] }).acceptMessageTypes]);
}

describe('official rocketmq-client-nodejs sends within what the broker serves', function () {
  this.timeout(90_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  let namesrv: RmqRawClient | undefined;
  let broker: RmqRawClient | undefined;
  const logger = new QuietLogger();
  const clients: Stoppable[] = [];

  function running(): LocalCluster {
    assert.ok(cluster !== undefined, 'the cluster did not start');
    return cluster;
  }

  function raw(client: RmqRawClient | undefined): RmqRawClient {
    assert.ok(client !== undefined, 'not connected');
    return client;
  }

  /** An official Producer whose SendMessage calls are counted. */
  async function countingProducer(endpoints: string, topic: string) {
    const producer = new Producer({ endpoints, namespace: '', logger, topics: [topic] });
    clients.push(producer);
    await producer.startup();
    const internals = producer as unknown as {
      rpcClientManager: { sendMessage(...args: unknown[]): Promise<unknown> };
      isolated: Map<string, unknown>;
    };
    const rpc = internals.rpcClientManager;
    const sendMessage = rpc.sendMessage.bind(rpc);
    const counter = { sends: 0 };
    rpc.sendMessage = (...args: unknown[]) => {
      counter.sends++;
      return sendMessage(...args);
    };
    return { producer, counter, isolated: internals.isolated };
  }

  before(async function () {
    this.timeout(45_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-send-limits-'));
    cluster = await LocalCluster.start({ dir, nodeCount: 1, autoCreateTopics: true });
    const leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    namesrv = await RmqRawClient.connect(cluster.namesrvEndpoint);
    broker = await RmqRawClient.connect(leader.clientEndpoint);
  });

  afterEach(async function () {
    await Promise.all(clients.splice(0).map((c) => c.shutdown().catch(() => undefined)));
    if (this.currentTest?.state === 'failed') {
      console.error(`---- client log ----\n${logger.lines.slice(-40).join('\n')}`);
      printLogTails(cluster);
    }
    logger.lines.length = 0;
  });

  after(async () => {
    namesrv?.close();
    broker?.close();
    await cluster?.stopAll();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists NORMAL and FIFO only, so the Producer refuses DELAY itself', async () => {
    const topic = 'InteropTypes';
    const resource = { name: topic, resourceNamespace: '' };
    // A topic no group has yet: the NameServer answers for the groups that would create it.
    const planned = await raw(namesrv).unary('QueryRoute', { topic: resource });
    assert.equal(raw(namesrv).status(planned.status).code, CODE.OK);
    for (const types of typesOf(planned.messageQueues as unknown[])) {
      assert.deepEqual(types, SERVED);
    }

    for (const endpoints of [running().namesrvEndpoint, raw(broker).endpoint]) {
      const { producer, counter, isolated } = await countingProducer(endpoints, topic);
      await assert.rejects(
        producer.send({ topic, body: Buffer.from('later'), delay: 5_000 }),
        (err: unknown) => {
          assert.ok(err instanceof TypeError, String(err));
          assert.match(err.message, /not match with topic accept message types/);
          return true;
        },
      );
      assert.equal(counter.sends, 0, `${endpoints}: a SendMessage left the client`);
      assert.equal(isolated.size, 0, `${endpoints}: endpoints isolated`);
      // The topic is created by this first send; NORMAL messages go through.
      await producer.send({ topic, body: Buffer.from(`now via ${endpoints}`) });
      assert.equal(counter.sends, 1);
    }

    await waitForNameServerRoute(raw(namesrv), topic);
    for (const client of [raw(namesrv), raw(broker)]) {
      const route = await client.unary('QueryRoute', { topic: resource });
      const queues = route.messageQueues as unknown[];
      assert.ok(queues.length > 0);
      for (const types of typesOf(queues)) assert.deepEqual(types, SERVED, client.endpoint);
    }
    const assignment = await raw(broker).unary('QueryAssignment', {
      topic: resource,
      group: { name: 'G', resourceNamespace: '' },
    });
    const assigned = (assignment.assignments as { messageQueue: unknown }[]).map(
      (a) => a.messageQueue,
    );
    assert.ok(assigned.length > 0);
    for (const types of typesOf(assigned)) assert.deepEqual(types, SERVED);

    // A client that sends anyway is still refused by the broker.
    const nowMs = Date.now() + 5_000;
    const delayed = wireMessage(topic, {
      systemProperties: {
        messageId: '01DELAYED',
        keys: [],
        bodyEncoding: 'IDENTITY',
        messageType: 'DELAY',
        deliveryTimestamp: { seconds: Math.floor(nowMs / 1000), nanos: 0 },
        bornHost: 'raw-test-host',
        queueId: 0,
      },
    });
    const res = await raw(broker).send([delayed]);
    assert.equal(res.status.code, UNSUPPORTED, res.status.message);

    // Nor does admin make a topic that lists them.
    const leader = await running().waitForLeader(LEADER_TIMEOUT_MS);
    const admin = await running().admin(leader.nodeId);
    await assert.rejects(
      admin.createTopic({ name: 'InteropDelayed', queueCount: 1, messageTypes: ['DELAY'] }),
      (err: unknown) => isRaftmqError(err, 'UNSUPPORTED') && /DELAY/.test(err.message),
    );
  });

  it('delivers a message of a 4 MiB frame bound and refuses one byte more', async () => {
    const topic = 'InteropFrame';
    const { producer } = await countingProducer(running().namesrvEndpoint, topic);
    const body = randomBytes(producer.publishingSettings.maxBodySizeBytes);
    const room = DELIVERY_FRAME_SIZE_BYTES_MAX - DELIVERY_FRAME_FIXED_BYTES_MAX - body.length;
    const keys = keysOfBytes(room);
    const receipt = await producer.send({ topic, tag: 'big', keys, body });

    const consumer = new SimpleConsumer({
      endpoints: running().namesrvEndpoint,
      namespace: '',
      consumerGroup: 'GFrame',
      subscriptions: new Map([[topic, '*']]),
      awaitDuration: 2_000,
      logger,
    });
    clients.push(consumer);
    await consumer.startup();
    const [got] = await waitUntil('the large message received', 30_000, async () => {
      const views = await consumer.receive(1, 30_000);
      return views.length > 0 ? views : undefined;
    });
    assert.ok(got !== undefined);
    assert.equal(got.messageId, receipt.messageId);
    assert.ok(got.body.equals(body), 'the body changed');
    assert.deepEqual(got.keys, keys);
    assert.notEqual(got.corrupted, true);
    await consumer.ack(got);

    const over = [...keys.slice(0, -1), `${keys.at(-1) ?? ''}x`];
    // A fresh producer: a refused send isolates the endpoints the client tried.
    const second = await countingProducer(running().namesrvEndpoint, topic);
    await assert.rejects(second.producer.send({ topic, keys: over, body }), (err: unknown) => {
      const e = err as { code?: number; message?: string };
      assert.equal(e.code, CODE.MESSAGE_PROPERTIES_TOO_LARGE, String(err));
      assert.match(e.message ?? '', /1 bytes more than a body of 4128768 bytes leaves room/);
      return true;
    });
    const res = await raw(broker).send([wireMessage(topic, { keys: over, body })]);
    assert.equal(res.status.code, CODE.MESSAGE_PROPERTIES_TOO_LARGE, res.status.message);
    assert.equal(res.entries[0]?.status.code, CODE.MESSAGE_PROPERTIES_TOO_LARGE);
    const stored = await raw(broker).readTopic(topic, 8);
    assert.deepEqual(
      stored.map((m) => m.messageId),
      [receipt.messageId],
      'only the message that fits is stored',
    );
  });
});
