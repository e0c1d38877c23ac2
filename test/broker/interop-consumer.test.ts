/*
 * The official RocketMQ 5 Node consumers (rocketmq-client-nodejs 1.0.8, unchanged) against a
 * real 3-node group started by LocalCluster, topics and groups created through the admin
 * service, messages sent by the official Producer.
 *
 * - SimpleConsumer: receive hands out every message once, intact (the client checks the MD5
 *   body digest), attempt 1; an invisibility change to 100 ms brings one back with attempt 2;
 *   acks settle them; an empty long poll answers [] after about its await duration; a second
 *   consumer group receives every message again.
 * - Two SimpleConsumers of one group, receiving and acknowledging at once: together they get
 *   every message, and no message goes to both (nothing fails, so nothing is redelivered).
 * - PushConsumer, standard: a listener that always fails one message; the others are consumed
 *   once, and the failing one, after the group's 3 attempts, lands in `%DLQ%<group>` (read back
 *   with raftmq's PullConsumer).
 * - PushConsumer, FIFO group (max 3 attempts): one message group m0..m3 whose m1 always fails
 *   is consumed in the order m0 m1 m1 m1 m2 m3, and m1 is forwarded to the dead-letter queue.
 *
 * - PushConsumer with listeners slower than the auto-renew invisibility (the cluster's is
 *   3 s here, `autoRenewInvisibleMs`): a standard group whose listener takes 10 s, and a FIFO
 *   group consuming a batch of three message groups one after another for 2.5 s each. The
 *   leader renews the leases while the consumer lives, so each message is delivered once and
 *   acknowledged with its original handle (nothing left in flight).
 * - SimpleConsumer and PushConsumer subscribing with a SQL92 filter: startup fails within
 *   seconds with ILLEGAL_FILTER_EXPRESSION (40010) naming SQL92, instead of starting and then
 *   having every receive refused.
 *
 * Every client and the cluster are stopped by the tests; every wait has a deadline. The official
 * PushConsumer's consume services open their own file logger (egg-logger) whose flush timer is
 * never cleared, so a process that used one never exits by itself: `.mocharc.json` sets `exit`.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ConsumeResult,
  FilterExpression,
  Producer,
  PushConsumer,
  SimpleConsumer,
  type MessageView,
} from 'rocketmq-client-nodejs';
import { FilterType } from 'rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb';
import { LocalCluster } from '../../src/cli/local-cluster';
import { waitUntil } from '../../src/cli/raft-node-client';
import { PullConsumer } from '../../src/client/pull-consumer';
import { createTopic, printLogTails, QuietLogger } from './rmq-raw-client';

const LEADER_TIMEOUT_MS = 15_000;
/** The cluster's auto-renew invisibility: short, so that listeners can outlast it quickly. */
const AUTO_RENEW_INVISIBLE_MS = 3_000;

/** Polls `check` until it is true, for at most `timeoutMs`. */
async function eventually(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  await waitUntil(what, timeoutMs, async () => ((await check()) ? true : undefined), 50);
}

interface Stoppable {
  shutdown(): Promise<void>;
}

describe('official rocketmq-client-nodejs consumers against a 3-node group', function () {
  this.timeout(90_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  let endpoints = '';
  const logger = new QuietLogger();
  const clients: Stoppable[] = [];
  let producer: Producer;

  function running(): LocalCluster {
    assert.ok(cluster !== undefined, 'the cluster did not start');
    return cluster;
  }

  async function send(topic: string, bodies: readonly string[], group?: string): Promise<void> {
    for (const body of bodies) {
      await producer.send({
        topic,
        tag: 'T',
        body: Buffer.from(body),
        ...(group === undefined ? {} : { messageGroup: group }),
      });
    }
  }

  async function createGroup(name: string, maxDeliveryAttempts: number, fifo: boolean) {
    const leader = await running().waitForLeader(LEADER_TIMEOUT_MS);
    await (await running().admin(leader.nodeId)).createGroup({ name, maxDeliveryAttempts, fifo });
  }

  async function readDeadLetters(group: string, count: number): Promise<string[]> {
    const pull = await PullConsumer.create({ endpoint: endpoints });
    try {
      const bodies: string[] = [];
      await eventually(`${count} message(s) in %DLQ%${group}`, 30_000, async () => {
        const route = await pull.route(`%DLQ%${group}`, true).catch(() => undefined);
        if (route === undefined) return false;
        const got = await pull.pull(`%DLQ%${group}`, 0, 0, 32, { awaitMs: 0 });
        bodies.splice(0, bodies.length, ...got.messages.map((m) => m.body.toString()));
        return bodies.length >= count;
      });
      return bodies;
    } finally {
      pull.close();
    }
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-consume-'));
    cluster = await LocalCluster.start({
      dir,
      autoCreateTopics: false,
      broker: { autoRenewInvisibleMs: AUTO_RENEW_INVISIBLE_MS },
    });
    await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    // One access point: the Node client joins several into one (invalid) gRPC target.
    endpoints = cluster.namesrvEndpoint;
    for (const name of ['Simple', 'Shared', 'Push', 'Fifo', 'Slow', 'SlowFifo']) {
      await createTopic(cluster, {
        name,
        queueCount: 2,
        messageTypes: name.endsWith('Fifo') ? ['FIFO'] : ['NORMAL'],
      });
    }
    producer = new Producer({ endpoints, namespace: '', logger });
    clients.push(producer);
    await producer.startup();
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') {
      process.stderr.write(`client log:\n${logger.lines.slice(-60).join('\n')}\n`);
      printLogTails(cluster);
    }
  });

  after(async () => {
    // In parallel: a push consumer's shutdown waits out its current long poll (20 s).
    await Promise.all(clients.map((c) => c.shutdown().catch(() => undefined)));
    await cluster?.stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('SimpleConsumer: receive, change invisibility, ack, empty long poll, two groups', async () => {
    const bodies = ['s0', 's1', 's2', 's3', 's4'];
    await send('Simple', bodies);
    const consumer = new SimpleConsumer({
      endpoints,
      namespace: '',
      consumerGroup: 'SimpleA',
      subscriptions: new Map([['Simple', '*']]),
      awaitDuration: 2_000,
      logger,
    });
    clients.push(consumer);
    await consumer.startup();
    const got = new Map<string, MessageView>();
    await eventually('every message received', 30_000, async () => {
      for (const m of await consumer.receive(16, 30_000)) {
        assert.ok(!got.has(m.body.toString()), `delivered twice: ${m.body.toString()}`);
        got.set(m.body.toString(), m);
      }
      return got.size === bodies.length;
    });
    for (const m of got.values()) {
      assert.notEqual(m.corrupted, true, 'the client checked the body digest');
      assert.equal(m.deliveryAttempt, 1);
      assert.equal(m.tag, 'T');
    }
    const back = got.get('s0') as MessageView;
    await consumer.changeInvisibleDuration(back, 100);
    for (const [body, m] of got) if (body !== 's0') await consumer.ack(m);
    let again: MessageView | undefined;
    await eventually('s0 delivered again', 15_000, async () => {
      [again] = await consumer.receive(16, 30_000);
      return again !== undefined;
    });
    assert.equal(again?.body.toString(), 's0');
    assert.equal(again?.deliveryAttempt, 2);
    await consumer.ack(again);
    const startedMs = Date.now();
    assert.deepEqual(await consumer.receive(16, 30_000), []);
    const waitedMs = Date.now() - startedMs;
    assert.ok(waitedMs >= 1_000 && waitedMs < 8_000, `empty long poll took ${waitedMs} ms`);

    const other = new SimpleConsumer({
      endpoints,
      namespace: '',
      consumerGroup: 'SimpleB',
      subscriptions: new Map([['Simple', '*']]),
      awaitDuration: 1_000,
      logger,
    });
    clients.push(other);
    await other.startup();
    const seen = new Set<string>();
    await eventually('the second group received everything', 30_000, async () => {
      for (const m of await other.receive(16, 30_000)) {
        seen.add(m.body.toString());
        await other.ack(m);
      }
      return seen.size === bodies.length;
    });
  });

  it('SimpleConsumer: two consumers of one group share the messages without duplicates', async () => {
    const bodies = Array.from({ length: 60 }, (_, i) => `shared-${i}`);
    await send('Shared', bodies);
    const consumers = ['one', 'two'].map(
      () =>
        new SimpleConsumer({
          endpoints,
          namespace: '',
          consumerGroup: 'SharedGroup',
          subscriptions: new Map([['Shared', '*']]),
          awaitDuration: 1_000,
          logger,
        }),
    );
    clients.push(...consumers);
    await Promise.all(consumers.map((c) => c.startup()));
    const owner = new Map<string, number>();
    const duplicates: string[] = [];
    const counts = [0, 0];
    const deadlineMs = Date.now() + 45_000;
    await Promise.all(
      consumers.map(async (c, who) => {
        // Each stops after 40 of the 60, so the other must take the rest, however the two
        // are scheduled: a message it gets that the first already had is a duplicate.
        while ((counts[who] ?? 0) < 40 && owner.size < bodies.length && Date.now() < deadlineMs) {
          for (const m of await c.receive(4, 30_000)) {
            const body = m.body.toString();
            if (owner.has(body)) duplicates.push(body);
            owner.set(body, who);
            counts[who] = (counts[who] ?? 0) + 1;
            await c.ack(m);
          }
        }
      }),
    );
    assert.deepEqual(duplicates, [], 'no message was handed to both consumers');
    assert.deepEqual([...owner.keys()].sort(), [...bodies].sort(), 'every message was consumed');
    assert.ok(
      counts.every((n) => n > 0),
      `both consumers took part: ${counts.join(' + ')}`,
    );
  });

  it('PushConsumer: consumes once, and a message that always fails reaches the DLQ', async () => {
    await createGroup('PushG', 3, false);
    const consumed: string[] = [];
    const consumer = new PushConsumer({
      endpoints,
      namespace: '',
      consumerGroup: 'PushG',
      subscriptions: new Map([['Push', '*']]),
      logger,
      messageListener: {
        consume(m: MessageView) {
          consumed.push(`${m.body.toString()}#${m.deliveryAttempt ?? 0}`);
          return m.body.toString() === 'bad' ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
        },
      },
    });
    clients.push(consumer);
    await consumer.startup();
    await send('Push', ['p0', 'bad', 'p1']);
    assert.deepEqual(await readDeadLetters('PushG', 1), ['bad']);
    await eventually('deliveries', 20_000, () => Promise.resolve(consumed.length >= 5));
    const ok = consumed.filter((c) => !c.startsWith('bad')).sort();
    assert.deepEqual(ok, ['p0#1', 'p1#1']);
    assert.deepEqual(
      consumed.filter((c) => c.startsWith('bad')),
      ['bad#1', 'bad#2', 'bad#3'],
    );
  });

  it('PushConsumer, FIFO group: in order, holding the group back until DLQ', async () => {
    await createGroup('FifoG', 3, true);
    const consumed: string[] = [];
    const consumer = new PushConsumer({
      endpoints,
      namespace: '',
      consumerGroup: 'FifoG',
      subscriptions: new Map([['Fifo', '*']]),
      logger,
      messageListener: {
        consume(m: MessageView) {
          consumed.push(`${m.body.toString()}#${m.deliveryAttempt ?? 0}`);
          return m.body.toString() === 'm1' ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
        },
      },
    });
    clients.push(consumer);
    await consumer.startup();
    await send('Fifo', ['m0', 'm1', 'm2', 'm3'], 'orders-1');
    await eventually('m3 consumed', 60_000, () => Promise.resolve(consumed.includes('m3#1')));
    assert.deepEqual(consumed, ['m0#1', 'm1#1', 'm1#2', 'm1#3', 'm2#1', 'm3#1']);
    assert.deepEqual(await readDeadLetters('FifoG', 1), ['m1']);
  });

  it('PushConsumer: a listener slower than the invisibility gets its message once', async () => {
    await createGroup('SlowG', 3, false);
    await createGroup('SlowFifoG', 3, true);
    const consumed: string[] = [];
    const done: string[] = [];
    const slowConsumer = (group: string, topic: string, workMs: number): PushConsumer =>
      new PushConsumer({
        endpoints,
        namespace: '',
        consumerGroup: group,
        subscriptions: new Map([[topic, '*']]),
        logger,
        messageListener: {
          async consume(m: MessageView) {
            consumed.push(`${m.body.toString()}#${m.deliveryAttempt ?? 0}`);
            // The work: longer than a lease, so only renewals keep the message invisible.
            await new Promise((resolve) => setTimeout(resolve, workMs));
            done.push(m.body.toString());
            return ConsumeResult.SUCCESS;
          },
        },
      });
    const consumers = [
      slowConsumer('SlowG', 'Slow', 10_000),
      slowConsumer('SlowFifoG', 'SlowFifo', 2_500),
    ];
    clients.push(...consumers);
    await Promise.all(consumers.map((c) => c.startup()));
    await send('Slow', ['slow']);
    // One batch of three message groups, consumed one after another by the FIFO consumer.
    for (const [body, messageGroup] of [
      ['f0', 'a'],
      ['f1', 'b'],
      ['f2', 'c'],
    ]) {
      await send('SlowFifo', [body as string], messageGroup);
    }
    await eventually('every listener done', 45_000, () => Promise.resolve(done.length >= 4));
    const admin = await running().admin((await running().waitForLeader(LEADER_TIMEOUT_MS)).nodeId);
    await eventually('the acks settled (nothing in flight)', 15_000, async () => {
      const progress = [
        ...(await admin.consumerProgress('SlowG')),
        ...(await admin.consumerProgress('SlowFifoG')),
      ];
      return progress.every((p) => p.inflightCount === 0 && p.lag === 0);
    });
    assert.deepEqual([...consumed].sort(), ['f0#1', 'f1#1', 'f2#1', 'slow#1']);
  });

  it('SimpleConsumer and PushConsumer with a SQL92 filter fail at startup, saying why', async () => {
    const subscriptions = new Map([['Simple', new FilterExpression('a = 1', FilterType.SQL)]]);
    const consumers = [
      new SimpleConsumer({
        endpoints,
        namespace: '',
        consumerGroup: 'SqlS',
        subscriptions,
        logger,
      }),
      new PushConsumer({
        endpoints,
        namespace: '',
        consumerGroup: 'SqlP',
        subscriptions,
        logger,
        messageListener: { consume: () => ConsumeResult.SUCCESS },
      }),
    ];
    clients.push(...consumers);
    for (const consumer of consumers) {
      const startedMs = Date.now();
      // Bounded: before the fix, startup succeeded (and every receive was refused).
      const outcome = await Promise.race([
        consumer.startup().then(
          () => new Error('startup succeeded'),
          (err: unknown) => err,
        ),
        new Promise<Error>((resolve) => {
          setTimeout(() => resolve(new Error('startup still pending after 20 s')), 20_000).unref();
        }),
      ]);
      const text = `${String(outcome)} ${String((outcome as { cause?: unknown }).cause)}`;
      assert.match(text, /response-code=40010/, text);
      assert.match(text, /SQL92/, text);
      const tookMs = Date.now() - startedMs;
      assert.ok(tookMs < 10_000, `startup took ${tookMs} ms to fail`);
    }
  });
});
