/*
 * Checks of the pull and offset RPCs against a one-node group that does not create consumer
 * groups on first use: a pull (Fetch or PullMessage), GetOffset or UpdateOffset of a group that
 * does not exist gets CONSUMER_GROUP_NOT_FOUND (no offsets kept under names nobody created);
 * QueryOffset refuses a timestamp that is no instant; a long poll with a tag filter waits on
 * through messages the filter does not take, for one it does; and many long polls at once
 * raise no listener-leak warning.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import { PullConsumer, type PullProtocol } from '../../src/client/pull-consumer';
import { produceMessage, startSingleNode } from './single-node';
import { CODE, RmqRawClient } from './rmq-raw-client';

const TOPIC = 'CheckTopic';
const KNOWN = 'KnownGroup';

describe('pull and offset checks', function () {
  this.timeout(60_000);
  let dir: string;
  let node: BrokerNode;
  let endpoint: string;

  const send = (body: string, tag?: string): Promise<unknown> =>
    node.broker.send(
      [produceMessage(TOPIC, body, tag === undefined ? {} : { tag })],
      Date.now() + 5_000,
    );

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-pull-checks-'));
    node = await startSingleNode(dir, {
      autoCreateTopics: true,
      autoCreateGroups: false,
      defaultQueueCount: 1,
    });
    endpoint = node.broker.clientEndpoint;
    await node.broker.createGroup(
      { name: KNOWN, maxDeliveryAttempts: 16, fifo: false },
      Date.now() + 5_000,
    );
    await send('first');
  });

  after(async () => {
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const pullProtocol of ['fetch', 'pull-message'] as PullProtocol[]) {
    it(`refuses a pull for a group that does not exist (${pullProtocol})`, async () => {
      for (const [group, ok] of [
        ['NoSuchGroup', false],
        [KNOWN, true],
      ] as const) {
        const consumer = await PullConsumer.create({
          endpoint,
          pullProtocol,
          consumerGroup: group,
        });
        try {
          const pulled = consumer.pull(TOPIC, 0, 0, 10);
          if (ok) assert.equal((await pulled).status, 'FOUND');
          else await assert.rejects(pulled, /CONSUMER_GROUP_NOT_FOUND/);
        } finally {
          consumer.close();
        }
      }
    });
  }

  it('refuses GetOffset and UpdateOffset for a group that does not exist', async () => {
    const consumer = await PullConsumer.create({ endpoint });
    try {
      await assert.rejects(consumer.updateOffset('NoSuchGroup', TOPIC, 0, 1), /CONSUMER_GROUP/);
      await assert.rejects(consumer.getOffset('NoSuchGroup', TOPIC, 0), /CONSUMER_GROUP/);
      assert.equal(node.broker.getOffset('NoSuchGroup', TOPIC, 0), undefined, 'nothing kept');
      await consumer.updateOffset(KNOWN, TOPIC, 0, 1);
      assert.equal(await consumer.getOffset(KNOWN, TOPIC, 0), 1);
    } finally {
      consumer.close();
    }
  });

  it('refuses a QueryOffset timestamp that is no instant', async () => {
    const raw = await RmqRawClient.connect(endpoint);
    const query = async (timestamp: object): Promise<number> => {
      const res = await raw.unary('QueryOffset', {
        messageQueue: { topic: { name: TOPIC, resourceNamespace: '' }, id: 0 },
        queryOffsetPolicy: 'TIMESTAMP',
        timestamp,
      });
      return raw.status(res.status).code;
    };
    try {
      for (const bad of [
        { seconds: -5, nanos: -999_999_999 },
        { seconds: '9223372036854775807', nanos: 2_000_000_000 },
      ]) {
        assert.equal(await query(bad), CODE.BAD_REQUEST, JSON.stringify(bad));
      }
      assert.equal(await query({ seconds: 0, nanos: 0 }), CODE.OK);
    } finally {
      raw.close();
    }
  });

  it('long-polls on through messages a tag filter does not take', async () => {
    const consumer = await PullConsumer.create({ endpoint, consumerGroup: KNOWN });
    try {
      const end = node.broker.queueRange(TOPIC, 0).max;
      const pending = consumer.pull(TOPIC, 0, end, 10, { awaitMs: 10_000, tagExpression: 'A' });
      await new Promise((resolve) => setTimeout(resolve, 100));
      await send('not-wanted', 'B');
      await new Promise((resolve) => setTimeout(resolve, 200));
      await send('wanted', 'A');
      const pulled = await pending;
      assert.equal(pulled.status, 'FOUND');
      assert.deepEqual(
        pulled.messages.map((m) => m.body.toString()),
        ['wanted'],
      );
      assert.equal(pulled.nextOffset, end + 2);
    } finally {
      consumer.close();
    }
  });

  it('raises no listener-leak warning for many long polls at once', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === 'MaxListenersExceededWarning') warnings.push(w);
    };
    process.on('warning', onWarning);
    const consumer = await PullConsumer.create({ endpoint, consumerGroup: KNOWN });
    try {
      const end = node.broker.queueRange(TOPIC, 0).max;
      const polls = Array.from({ length: 16 }, () =>
        consumer.pull(TOPIC, 0, end, 10, { awaitMs: 300 }),
      );
      for (const p of await Promise.all(polls)) assert.equal(p.status, 'NO_NEW_MSG');
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
      consumer.close();
    }
  });
});
