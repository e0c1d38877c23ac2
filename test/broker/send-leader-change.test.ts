/**
 * Sends in flight on a leader that loses its leadership. A send proposed and then caught by the
 * step-down may still commit under the next leader: it must be stored once, behind at most one
 * acknowledgement (the node settles it from the store instead of running it again). A send
 * refused while the leader hands over (an operator's transfer, a rolling restart, the preferred
 * leader) waits for the hand-off and is stored by the new leader, never answered 42900: the
 * official Node producer leaves an endpoint out for good after any failed send.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CODE, newMessageId, RmqRawClient, wireMessage } from './rmq-raw-client';
import { InProcessGroup, waitFor } from './in-process-group';

describe('sends across a change of leader', function () {
  this.timeout(120_000);
  let dir = '';
  let group: InProcessGroup | undefined;
  const clients: RmqRawClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await group?.stop();
    group = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function connect(endpoint: string): Promise<RmqRawClient> {
    const c = await RmqRawClient.connect(endpoint);
    clients.push(c);
    return c;
  }

  it('stores once a send whose leader stepped down and was elected again', async () => {
    const topic = 'ReelectTopic';
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'send-reelect-'));
    group = await InProcessGroup.start(dir, { autoCreateTopics: true, defaultQueueCount: 1 });
    const leader = await group.leader();
    const raw = await connect(leader.broker.clientEndpoint);
    assert.equal((await raw.send([wireMessage(topic)])).status.code, CODE.OK);
    const [f1, f2] = group.others(leader);
    assert.ok(f1 !== undefined && f2 !== undefined);
    const f1Id = f1.broker.nodeId;
    await Promise.all([f1.stop(), f2.stop()]);
    group.running.delete(f1Id);
    group.running.delete(f2.broker.nodeId);
    const id = newMessageId();
    const answer = raw.send([wireMessage(topic, { messageId: id })], { timeoutMs: 30_000 });
    // The leader proposes it, cannot commit it, and steps down (CheckQuorum).
    await waitFor(
      'the leader to step down',
      () => leader.broker.roleView().role !== 'leader',
      20_000,
    );
    // Only a follower with the shorter log comes back: the old leader is elected again, and
    // commits the entry it kept under its new term.
    await group.startNode(f1Id);
    const result = await answer;
    await waitFor('a ready leader', () => leader.broker.roleView().leaderReady, 20_000);
    const reader = await connect(leader.broker.clientEndpoint);
    const stored = (await reader.readQueue(topic, 0)).filter((m) => m.messageId === id);
    assert.equal(
      stored.length,
      1,
      `answer ${result.status.code} ${result.status.message}; stored ${stored.length} times, ` +
        `at offsets ${JSON.stringify(stored.map((m) => m.queueOffset))}`,
    );
    assert.equal(result.status.code, CODE.OK, result.status.message);
  });

  it('stores every send in flight during leadership transfers once, refusing none', async () => {
    const topic = 'TransferTopic';
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'send-transfer-'));
    group = await InProcessGroup.start(dir, { autoCreateTopics: true, defaultQueueCount: 1 });
    let leader = await group.leader();
    const first = await connect(leader.broker.clientEndpoint);
    assert.equal((await first.send([wireMessage(topic)])).status.code, CODE.OK);
    const sent: { id: string; code: number; msg: string }[] = [];
    let pendingSeen = 0;
    for (let round = 0; round < 3; round++) {
      leader = await group.leader();
      const raw = await connect(leader.broker.clientEndpoint);
      const target = group.others(leader)[round % 2]?.broker.nodeId;
      assert.ok(target !== undefined);
      const calls: Promise<void>[] = [];
      for (let i = 0; i < 60; i++) {
        const id = newMessageId();
        calls.push(
          raw.send([wireMessage(topic, { messageId: id })], { timeoutMs: 10_000 }).then(
            (r) => void sent.push({ id, code: r.status.code, msg: r.status.message }),
            (e: unknown) => void sent.push({ id, code: -1, msg: String(e) }),
          ),
        );
      }
      // Hand leadership over while these sends wait in the batcher or for their commit.
      const batcher = (leader.broker as unknown as { batcher: { pending: { messages: number } } })
        .batcher;
      const until = Date.now() + 3_000;
      while (batcher.pending.messages === 0 && Date.now() < until) {
        await new Promise((r) => setImmediate(r));
      }
      if (batcher.pending.messages > 0) pendingSeen++;
      await leader.broker.transferLeadership(target, Date.now() + 5_000).catch(() => undefined);
      await Promise.all(calls);
    }
    assert.ok(pendingSeen > 0, 'no transfer started while sends were pending');
    leader = await group.leader();
    await waitFor('a ready leader', () => leader.broker.roleView().leaderReady, 20_000);
    const reader = await connect(leader.broker.clientEndpoint);
    const stored = await reader.readQueue(topic, 0);
    const counts = new Map<string, number>();
    for (const m of stored) counts.set(m.messageId, (counts.get(m.messageId) ?? 0) + 1);
    const refused = sent.filter((s) => s.code !== CODE.OK);
    assert.deepEqual(
      refused.slice(0, 3),
      [],
      `${refused.length} of ${sent.length} sends in flight during a hand-off were refused`,
    );
    for (const s of sent) {
      assert.equal(counts.get(s.id), 1, `message ${s.id} stored ${counts.get(s.id) ?? 0} times`);
    }
  });
});
