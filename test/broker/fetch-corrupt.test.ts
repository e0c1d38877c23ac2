/*
 * A stored message damaged on disk is never skipped silently by a pull, by either protocol. The
 * Fetch broker leaves the CRC32C check to the client, except when a tag filter is set: then the
 * filter reads each record's tag, and a damaged tag must fail the pull rather than make the
 * record look like one the filter skips. One byte of a stored tag is changed in the segment file
 * of a one-node group; every pull that reaches the record must fail with a typed error.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import type { ProduceMessage } from '../../src/broker/broker-types';
import { PullConsumer, type PullProtocol } from '../../src/client/pull-consumer';
import { isRaftmqError } from '../../src/common/errors';
import { BODY_OFFSET, BODY_SIZE_OFFSET, LEN16 } from '../../src/store/message-format';
import { produceMessage, startSingleNode } from './single-node';

const TOPIC = 'Damaged';

function message(body: string): ProduceMessage {
  return produceMessage(TOPIC, body, { tag: 'keep' });
}

/** Changes the first byte of the stored tag of the message at queue offset `offset` to 'K'. */
async function damageTag(dir: string, node: BrokerNode, offset: number): Promise<void> {
  const [record] = await node.broker.readQueueRecords(TOPIC, 0, offset, 1);
  assert.ok(record !== undefined);
  const stringsAt = BODY_OFFSET + record.bytes.readUInt32BE(BODY_SIZE_OFFSET);
  const topicLength = record.bytes.readUInt16BE(stringsAt);
  const tagAt = stringsAt + LEN16 + topicLength + LEN16;
  assert.equal(record.bytes.toString('latin1', tagAt, tagAt + 4), 'keep');
  const segmentDir = path.join(dir, 'commitlog');
  const starts = (await fs.readdir(segmentDir))
    .filter((f) => /^\d+$/.test(f))
    .map(Number)
    .filter((start) => start <= record.position)
    .sort((a, b) => a - b);
  const start = starts.at(-1);
  assert.ok(start !== undefined, 'no segment holds the record');
  const file = await fs.open(path.join(segmentDir, String(start).padStart(20, '0')), 'r+');
  try {
    await file.write(Buffer.from('K'), 0, 1, record.position - start + tagAt);
  } finally {
    await file.close();
  }
}

describe('a message damaged on disk', function () {
  this.timeout(60_000);
  let dir = '';
  let node: BrokerNode | undefined;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-fetch-corrupt-'));
    node = await startSingleNode(dir, { autoCreateTopics: false });
    const deadlineMs = Date.now() + 10_000;
    await node.broker.createTopic(
      { name: TOPIC, queueCount: 1, perm: 'READ_WRITE', messageTypes: ['NORMAL'] },
      deadlineMs,
    );
    for (let i = 0; i < 3; i++) await node.broker.send([message(`m${i}`)], deadlineMs);
    await damageTag(dir, node, 1);
  });

  after(async () => {
    await node?.stop();
    if (dir !== '') await fs.rm(dir, { recursive: true, force: true });
  });

  for (const pullProtocol of ['fetch', 'pull-message'] as PullProtocol[]) {
    for (const tagExpression of ['keep', '*']) {
      it(`fails a pull by ${pullProtocol} with tag expression ${tagExpression}`, async () => {
        assert.ok(node !== undefined);
        const endpoint = node.config.peers.n1?.client ?? '';
        const consumer = await PullConsumer.create({ endpoint, pullProtocol });
        try {
          const intact = await consumer.pull(TOPIC, 0, 0, 1, { endpoint, tagExpression });
          assert.deepEqual(
            intact.messages.map((m) => m.offset),
            [0],
          );
          await assert.rejects(
            consumer.pull(TOPIC, 0, 1, 1, { endpoint, tagExpression }),
            (err: unknown) => {
              assert.ok(
                isRaftmqError(err, 'INTERNAL') || isRaftmqError(err, 'CORRUPT_RECORD'),
                String(err),
              );
              assert.match((err as Error).message, /corrupt|CRC32C|MESSAGE_CORRUPTED/i);
              return true;
            },
          );
        } finally {
          consumer.close();
        }
      });
    }
  }
});
