/*
 * Pulls and offsets on a node that has not applied everything committed. A follower behind
 * (its apply held here) is asked for offsets the group has committed: it answers "nothing
 * yet" at the offset asked, never ILLEGAL_OFFSET with an earlier next offset (which would send
 * a consumer back over messages it has had), and serves the messages once it applies them,
 * within the long poll. The leader refuses an offset beyond the queue at once, but first waits
 * for its own apply (a follower may have applied and served a message before the leader).
 * GetOffset through a follower sees the offset just committed through it. Both pull protocols
 * (Fetch and PullMessage) share the path.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import { PullConsumer, type PullProtocol } from '../../src/client/pull-consumer';
import { InProcessGroup, waitFor } from './in-process-group';
import { produceMessage } from './single-node';

const TOPIC = 'LagTopic';

/** Holds `node`'s apply of committed entries until the returned function is called. */
function holdApply(node: BrokerNode): () => void {
  const state = node.broker.state;
  const apply = state.apply.bind(state);
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  state.apply = async (entries) => {
    await gate;
    return apply(entries);
  };
  return () => {
    state.apply = apply;
    release();
  };
}

describe('pulls and offsets on a node behind the commit', function () {
  this.timeout(60_000);
  let dir: string;
  let group: InProcessGroup;
  let leader: BrokerNode;
  let sent = 0;

  const send = async (count: number): Promise<void> => {
    for (let k = 0; k < count; k++) {
      await leader.broker.send([produceMessage(TOPIC, `m${sent++}`)], Date.now() + 5_000);
    }
  };
  const endOn = (node: BrokerNode): number => node.broker.state.queueRange(TOPIC, 0).max;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-pull-lag-'));
    group = await InProcessGroup.start(dir, { autoCreateTopics: true, defaultQueueCount: 1 });
    leader = await group.leader();
    await send(5);
    await waitFor('every node applied', () => group.others(leader).every((n) => endOn(n) === 5));
  });

  after(async () => {
    await group.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const pullProtocol of ['fetch', 'pull-message'] as PullProtocol[]) {
    it(`a follower behind answers "nothing yet", then the messages (${pullProtocol})`, async () => {
      const [follower] = group.others(leader) as [BrokerNode];
      const release = holdApply(follower);
      const consumer = await PullConsumer.create({
        endpoint: leader.broker.clientEndpoint,
        pullProtocol,
      });
      try {
        const from = endOn(leader);
        await send(5);
        assert.equal(endOn(follower), from, 'the follower has not applied the new messages');
        const at = { endpoint: follower.broker.clientEndpoint };
        const behind = await consumer.pull(TOPIC, 0, from + 3, 10, { ...at, awaitMs: 200 });
        assert.equal(behind.status, 'NO_NEW_MSG');
        assert.equal(behind.nextOffset, from + 3, 'the offset asked, not the follower end');
        const pending = consumer.pull(TOPIC, 0, from + 3, 10, { ...at, awaitMs: 10_000 });
        setTimeout(release, 100);
        const served = await pending;
        assert.equal(served.status, 'FOUND');
        assert.deepEqual(
          served.messages.map((m) => m.offset),
          [from + 3, from + 4],
        );
      } finally {
        release();
        consumer.close();
      }
    });
  }

  it('the leader refuses an offset beyond the queue at once', async () => {
    const consumer = await PullConsumer.create({ endpoint: leader.broker.clientEndpoint });
    try {
      const end = endOn(leader);
      const startedMs = Date.now();
      const beyond = await consumer.pull(TOPIC, 0, end + 5, 10, { awaitMs: 10_000 });
      assert.equal(beyond.status, 'OFFSET_ILLEGAL');
      assert.equal(beyond.nextOffset, end);
      assert.ok(Date.now() - startedMs < 5_000, 'answered without waiting out the long poll');
    } finally {
      consumer.close();
    }
  });

  it('the leader applies what a follower served before it calls an offset illegal', async () => {
    const release = holdApply(leader);
    const consumer = await PullConsumer.create({ endpoint: leader.broker.clientEndpoint });
    const before = endOn(leader);
    const stored = leader.broker.send([produceMessage(TOPIC, `m${sent++}`)], Date.now() + 10_000);
    try {
      await waitFor('a follower applied', () =>
        group.others(leader).some((n) => endOn(n) > before),
      );
      const fast = group.others(leader).find((n) => endOn(n) > before) as BrokerNode;
      const read = await consumer.pull(TOPIC, 0, before, 10, {
        endpoint: fast.broker.clientEndpoint,
      });
      assert.equal(read.nextOffset, before + 1);
      setTimeout(release, 100);
      const next = await consumer.pull(TOPIC, 0, read.nextOffset, 10, { awaitMs: 300 });
      assert.equal(next.status, 'NO_NEW_MSG');
      assert.equal(next.nextOffset, before + 1);
    } finally {
      release();
      await stored;
      consumer.close();
    }
  });

  it('GetOffset through a follower sees the offset committed through it', async () => {
    const [follower] = group.others(leader) as [BrokerNode];
    const release = holdApply(follower);
    const consumer = await PullConsumer.create({ endpoint: follower.broker.clientEndpoint });
    try {
      const at = { endpoint: follower.broker.clientEndpoint };
      await consumer.updateOffset('LagGroup', TOPIC, 0, 4, at);
      assert.equal(await consumer.getOffset('LagGroup', TOPIC, 0, at), 4);
      assert.equal(follower.broker.getOffset('LagGroup', TOPIC, 0), undefined, 'held back');
    } finally {
      release();
      consumer.close();
    }
  });
});
