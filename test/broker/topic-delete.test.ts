/*
 * A topic deleted and made again under its name starts afresh, as RocketMQ's topic deletion
 * removes the queues and consumer offsets: the new topic's queues begin where the old ones
 * ended (QueryOffset BEGINNING, a pull from 0 moved up to there), no group keeps a committed
 * offset on it, and a pop group gets only the new messages (its old in-flight and cursor state
 * is gone). All of it holds again after a restart on the same data (the floors are kept in the
 * metadata, not derived from the files, which still hold the old records).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import { PullConsumer } from '../../src/client/pull-consumer';
import { SimpleConsumer } from '../../src/client/simple-consumer';
import { freePorts } from '../../src/cli/raft-node-client';
import { produceMessage, startSingleNode } from './single-node';

const TOPIC = 'Recreated';
const PULL_GROUP = 'PullGroup';
const POP_GROUP = 'PopGroup';

describe('a topic deleted and made again', function () {
  this.timeout(60_000);
  let dir: string;
  let ports: number[];
  let node: BrokerNode;

  const send = (body: string): Promise<unknown> =>
    node.broker.send([produceMessage(TOPIC, body)], Date.now() + 5_000);

  /** What a consumer of the new topic sees: BEGINNING, the bodies from 0, the group offset. */
  const seen = async (): Promise<[number, string[], number | undefined]> => {
    const consumer = await PullConsumer.create({ endpoint: node.broker.clientEndpoint });
    try {
      const begin = await consumer.queryOffset(TOPIC, 0, 'BEGINNING');
      const pulled = await consumer.pull(TOPIC, 0, 0, 10);
      const committed = await consumer.getOffset(PULL_GROUP, TOPIC, 0);
      return [begin, pulled.messages.map((m) => m.body.toString()), committed];
    } finally {
      consumer.close();
    }
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-topic-delete-'));
    ports = await freePorts(2);
    node = await startSingleNode(dir, { autoCreateTopics: true, defaultQueueCount: 1 }, ports);
  });

  after(async () => {
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("serves none of the old topic's messages, offsets or pop state", async () => {
    for (const body of ['old0', 'old1', 'old2']) await send(body);
    const pull = await PullConsumer.create({ endpoint: node.broker.clientEndpoint });
    const pop = await SimpleConsumer.create({
      endpoint: node.broker.clientEndpoint,
      consumerGroup: POP_GROUP,
    });
    try {
      await pull.updateOffset(PULL_GROUP, TOPIC, 0, 2);
      const held = await pop.receive(TOPIC, { batchSize: 1, awaitMs: 0 });
      assert.deepEqual(
        held.map((m) => m.body.toString()),
        ['old0'],
        'one old message in flight',
      );

      const popRowsOf = (): string[] =>
        [...node.broker.state.pop.entries()].filter(([, t]) => t === TOPIC).map(([g]) => g);
      assert.deepEqual(popRowsOf(), [POP_GROUP]);
      await node.broker.deleteTopic(TOPIC, Date.now() + 5_000);
      assert.deepEqual(popRowsOf(), [], "the group's pop state on the topic went with it");
      await send('new0');

      assert.deepEqual(await seen(), [3, ['new0'], undefined]);
      const received = await pop.receive(TOPIC, { batchSize: 10, awaitMs: 0, invisibleMs: 0 });
      assert.deepEqual(
        received.map((m) => m.body.toString()),
        ['new0'],
      );
    } finally {
      pull.close();
      pop.close();
    }
  });

  it('still does after a restart on the same data', async () => {
    await node.stop();
    node = await startSingleNode(dir, { autoCreateTopics: true, defaultQueueCount: 1 }, ports);
    assert.deepEqual(await seen(), [3, ['new0'], undefined]);
  });
});
