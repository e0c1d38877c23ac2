/*
 * Retention on a three-node group (retention-task.ts): with small segments and a small
 * `retainedBytesMax`, a round on each node compacts its Raft core and removes the CommitLog's
 * oldest segments with their queue records. Afterwards every node's log starts later, QueryOffset
 * BEGINNING and a pull from offset 0 start at the queue's new first offset, messages above it
 * are still served, the live followers keep replicating, and every node restarts on the data
 * that is left. Rounds are run by the test (`retention.runNow()`); the timer is set to a day.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import {
  BROKER_TIMING_DEFAULTS,
  SEGMENT_HEADROOM_BYTES,
} from '../../src/broker/broker-node-config';
import { PullConsumer } from '../../src/client/pull-consumer';
import { InProcessGroup, NODE_IDS, waitFor } from './in-process-group';
import { produceMessage } from './single-node';

const TOPIC = 'RetainedTopic';
const BODY_BYTES = 32 * 1024;
const MAX_BODY_BYTES = 64 * 1024;
const SEGMENT_BYTES = MAX_BODY_BYTES + SEGMENT_HEADROOM_BYTES;

describe('retention on a broker group', function () {
  this.timeout(120_000);
  let dir: string;
  let group: InProcessGroup;
  let sent = 0;

  const send = async (leader: BrokerNode, count: number, bodyBytes: number): Promise<void> => {
    for (let k = 0; k < count; k += 4) {
      const batch = [];
      for (let j = k; j < Math.min(count, k + 4); j++) {
        const id = `m${sent++}`;
        batch.push(
          produceMessage(TOPIC, id, { body: Buffer.from(`${id}-`.padEnd(bodyBytes, 'x')) }),
        );
      }
      await leader.broker.send(batch, Date.now() + 10_000);
    }
  };
  const nodes = (): BrokerNode[] => [...group.running.values()];
  const endOn = (node: BrokerNode): number => node.broker.state.queueRange(TOPIC, 0).max;
  const firstIndexOf = (node: BrokerNode): number => node.broker.state.store.commitLog.firstIndex();

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-retention-'));
    group = await InProcessGroup.start(dir, {
      autoCreateTopics: true,
      defaultQueueCount: 1,
      maxBodyBytes: MAX_BODY_BYTES,
      segmentSizeBytes: SEGMENT_BYTES,
      retainedBytesMax: 2 * SEGMENT_BYTES,
      timing: { ...BROKER_TIMING_DEFAULTS, retentionCheckIntervalMs: 24 * 3600 * 1000 },
    });
  });

  after(async () => {
    await group.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Sends a bulk of large messages through `leader`, then small ones until every running node
   * stored its applied index past the bulk (BrokerState stores it once a second), so that the
   * bound lets retention remove what the bulk filled.
   */
  const sendBulkAndStore = async (leader: BrokerNode): Promise<void> => {
    await send(leader, 160, BODY_BYTES);
    const bulkLast = leader.broker.state.appliedIndex;
    await waitFor(
      'every node stored its applied index',
      () => {
        send(leader, 1, 16).catch(() => undefined);
        return nodes().every((n) => n.broker.state.retainFromIndexMax > bulkLast);
      },
      20_000,
    );
  };

  it('removes a prefix everywhere, serves from the new first offset, and restarts', async () => {
    let leader = await group.leader();
    await sendBulkAndStore(leader);
    await waitFor('every node applied', () => nodes().every((n) => endOn(n) === sent));
    assert.ok(nodes().every((n) => firstIndexOf(n) === 1));

    for (const node of nodes()) {
      const round = await node.retention.runNow();
      assert.ok(round.firstIndex > 1, `${node.config.nodeId} removed nothing`);
    }
    for (const node of nodes()) {
      assert.ok(firstIndexOf(node) > 1, `${node.config.nodeId}: log still starts at 1`);
      const bytes =
        node.broker.state.store.commitLog.endPosition() -
        node.broker.state.store.commitLog.firstPosition();
      assert.ok(bytes <= 3 * SEGMENT_BYTES, `${node.config.nodeId} keeps ${bytes} bytes`);
    }
    const min = leader.broker.state.queueRange(TOPIC, 0).min;
    assert.ok(min > 0, 'the queue starts later');
    await checkReads(leader, min);

    // The followers were live: they keep replicating, and their logs moved up too.
    const before = sent;
    await send(leader, 8, 1024);
    await waitFor('every node applied the new messages', () =>
      nodes().every((n) => endOn(n) === before + 8),
    );
    for (const follower of group.others(leader)) {
      assert.ok(follower.broker.state.queueRange(TOPIC, 0).min > 0);
    }

    const firstBefore = new Map(nodes().map((n) => [n.config.nodeId, firstIndexOf(n)]));
    await group.stop();
    await Promise.all(NODE_IDS.map((id) => group.startNode(id)));
    leader = await group.leader();
    for (const node of nodes()) {
      assert.equal(firstIndexOf(node), firstBefore.get(node.config.nodeId));
      assert.ok(node.broker.state.queueRange(TOPIC, 0).min >= min);
    }
    await checkReads(leader, leader.broker.state.queueRange(TOPIC, 0).min);
    const end = sent;
    await send(leader, 4, 1024);
    await waitFor('every node applied after the restart', () =>
      nodes().every((n) => endOn(n) === end + 4),
    );
  });

  it('a follower down through retention needs a snapshot; the group goes on', async () => {
    let leader = await group.leader();
    const [down] = group.others(leader) as [BrokerNode];
    const downId = down.config.nodeId;
    await down.stop();
    group.running.delete(downId);
    await waitFor(
      'the leader no longer hears the stopped follower',
      () =>
        leader.broker.liveFollowers !== undefined && !leader.broker.liveFollowers.includes(downId),
    );
    await sendBulkAndStore(leader);
    for (const node of nodes()) await node.retention.runNow();
    const first = firstIndexOf(leader);
    assert.ok(first > down.broker.state.appliedIndex + 1, 'removed what the stopped one lacks');
    const back = await group.startNode(downId);
    await waitFor(
      'the leader names the follower for a snapshot',
      () => leader.raftStatus().progress.get(downId as never)?.state === 'snapshot',
    );
    assert.equal(leader.raftStatus().stopped, false);
    // It answers heartbeats, but retention does not wait for it: it needs a snapshot anyway.
    await waitFor(
      'the leader hears the follower again',
      () => leader.broker.liveFollowers?.includes(downId) === true,
    );
    assert.ok(leader.retention.bound() > first, 'retention is not held back by it');
    const end = sent;
    await send(leader, 4, 1024);
    await waitFor('the live nodes applied', () =>
      group.others(back).every((n) => endOn(n) === end + 4),
    );
    leader = await group.leader();
    assert.equal(back.raftStatus().stopped, false);
  });

  /** QueryOffset BEGINNING, a pull from 0 and one from `min` on `node`. */
  async function checkReads(node: BrokerNode, min: number): Promise<void> {
    const consumer = await PullConsumer.create({ endpoint: node.broker.clientEndpoint });
    try {
      assert.equal(await consumer.queryOffset(TOPIC, 0, 'BEGINNING'), min);
      const fromZero = await consumer.pull(TOPIC, 0, 0, 4);
      if (fromZero.messages.length > 0) assert.equal(fromZero.messages[0]?.offset, min);
      else assert.equal(fromZero.nextOffset, min, `a pull from 0: ${fromZero.status}`);
      const atMin = await consumer.pull(TOPIC, 0, min, 4);
      assert.equal(atMin.status, 'FOUND');
      assert.equal(atMin.messages[0]?.offset, min);
    } finally {
      consumer.close();
    }
  }
});
