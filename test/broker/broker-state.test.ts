/*
 * The broker state machine on a simulated machine: committed entries carrying messages and
 * commands are appended to a real CommitLog and applied. Checks that queue offsets follow log
 * order, that topic/group/offset commands apply with the same outcome a second time (replays
 * after a crash are harmless), that bad commands fail with a result instead of stopping the
 * node, that state and queues come back after a reopen and after a crash that lost the unsynced
 * metadata, and that long-poll waiters wake when their queue grows. Metadata (with the applied
 * index) is written only at checkpoints and on close, coalesced, so a pop record settled within
 * one interval never reaches the store: a restart (after a crash, or after the store alone was
 * closed) applies the unwritten tail again without a duplicate queue record.
 */
import { strict as assert } from 'node:assert';
import { encodeCommands, type BrokerCommand } from '../../src/broker/broker-command';
import { encodeMessageBatch } from '../../src/store/message-batch';
import { StateNode, TOPIC, message } from './broker-state-node';
import { MetaKeys } from '../../src/store/meta';

/** A node checkpointing at `checkpointIntervalMs` (0: at every apply). */
class Node extends StateNode {
  constructor(seed: number, checkpointIntervalMs = 0) {
    super(seed, { checkpointIntervalMs });
  }
}

const cmd = (...c: BrokerCommand[]): Buffer => encodeCommands(c);

describe('BrokerState', () => {
  it('applies topics, messages and offsets, and keeps outcomes for the proposer', async () => {
    const node = new Node(1);
    await node.open();
    const [createAt] = await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    assert.deepEqual(node.state.takeOutcome(createAt as number)?.results, [{ ok: true }]);
    assert.deepEqual(node.state.getTopic('orders'), TOPIC);
    const [again] = await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    const r = node.state.takeOutcome(again as number)?.results?.[0];
    assert.equal(r?.ok, false);
    assert.equal(r.ok === false && r.code, 'TOPIC_EXISTS');

    const [m1, m2] = await node.commit([
      encodeMessageBatch([message(1, 'orders', 0), message(2, 'orders', 1)]),
      encodeMessageBatch([message(3, 'orders', 0)]),
    ]);
    const out1 = node.state.takeOutcome(m1 as number)?.messages?.toArray() ?? [];
    assert.deepEqual(
      out1.map((d) => [d.queueId, d.queueOffset]),
      [
        [0, 0],
        [1, 0],
      ],
    );
    const out2 = node.state.takeOutcome(m2 as number)?.messages?.toArray() ?? [];
    assert.deepEqual(
      out2.map((d) => [d.queueId, d.queueOffset]),
      [[0, 1]],
    );
    assert.deepEqual(node.state.queueRange('orders', 0), { min: 0, max: 2 });
    assert.equal(node.state.takeOutcome(m2 as number), undefined, 'taken once');

    await node.commit([
      cmd({ op: 'offset.commit', group: 'g', topic: 'orders', queueId: 0, offset: 2 }),
    ]);
    assert.equal(node.state.getOffset('g', 'orders', 0), 2);
    await node.close();
  });

  it('fails bad commands with a result and keeps going', async () => {
    const node = new Node(2);
    await node.open();
    const bad = Buffer.from([2, 0x7b]); // kind 2, then "{": not JSON
    const [i1, i2, i3] = await node.commit([
      bad,
      cmd({ op: 'topic.put', topic: { ...TOPIC, queueCount: 0 }, mode: 'create' }),
      cmd({ op: 'topic.delete', name: 'nope' }),
    ]);
    for (const i of [i1, i2, i3]) {
      assert.equal(node.state.takeOutcome(i as number)?.results?.[0]?.ok, false);
    }
    assert.equal(node.state.listTopics().length, 0);
    await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    const shrink = { ...TOPIC, queueCount: 1 };
    const [s] = await node.commit([cmd({ op: 'topic.put', topic: shrink, mode: 'update' })]);
    assert.equal(node.state.takeOutcome(s as number)?.results?.[0]?.ok, false);
    assert.equal(node.state.getTopic('orders')?.queueCount, 2);
    await node.close();
  });

  it('comes back after a reopen and after a crash that lost unsynced metadata', async () => {
    const node = new Node(3);
    await node.open();
    await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    await node.commit([encodeMessageBatch([message(1, 'orders', 0)])]);
    await node.close();
    await node.open();
    assert.deepEqual(node.state.getTopic('orders'), TOPIC);
    assert.deepEqual(node.state.queueRange('orders', 0), { min: 0, max: 1 });
    const applied = node.state.appliedIndex;
    assert.equal(applied, 2);

    await node.commit([
      encodeMessageBatch([message(2, 'orders', 0)]),
      cmd({ op: 'offset.commit', group: 'g', topic: 'orders', queueId: 0, offset: 1 }),
    ]);
    // Power loss: the log was fsync'd, the metadata batches (sync: false) may be lost.
    node.crash('lose');
    await node.open();
    const back = node.state.appliedIndex;
    assert.ok(back >= applied && back <= 4, `applied ${back}`);
    // The driver re-applies from the applied index; replays must not duplicate queue records.
    const log = node.store.commitLog;
    const replay = await log.readRange(back + 1, 16, 1 << 20);
    await node.state.apply(replay);
    assert.equal(node.state.appliedIndex, 4);
    assert.deepEqual(node.state.queueRange('orders', 0), { min: 0, max: 2 });
    assert.equal(node.state.getOffset('g', 'orders', 0), 1);
    const read = await node.store.readQueue('orders', 0, 0, 10);
    assert.deepEqual(
      read.map((m) => m.message.messageId),
      ['id-1', 'id-2'],
    );
    await node.close();
  });

  it('wakes long-poll waiters when their queue grows, and times the others out', async () => {
    const node = new Node(4);
    await node.open();
    await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    const woken = node.state.waiters.wait('orders', 1, 0, 60_000);
    const other = node.state.waiters.wait('orders', 0, 5, 1);
    await node.commit([encodeMessageBatch([message(1, 'orders', 1)])]);
    assert.equal(await woken, true);
    assert.equal(await other, false);
    const pending = node.state.waiters.wait('orders', 0, 0, 60_000);
    await node.close();
    assert.equal(await pending, false, 'close ends waits');
  });

  it('writes metadata and the applied index only at checkpoints and on close', async () => {
    const node = new Node(5, 60_000);
    await node.open();
    const before = await node.storedApplied();
    const [t] = await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    for (let i = 0; i < 5; i++) {
      await node.commit([encodeMessageBatch([message(10 + i, 'orders', i % 2)])]);
    }
    await node.commit([
      cmd({ op: 'offset.commit', group: 'g', topic: 'orders', queueId: 0, offset: 1 }),
    ]);
    assert.equal(await node.storedApplied(), before, 'commands and messages wait');
    assert.equal(await node.meta.get(MetaKeys.topic('orders')), undefined, 'the topic waits');
    assert.equal(node.state.appliedIndex, (t as number) + 6);
    assert.deepEqual(node.state.getTopic('orders'), TOPIC, 'the state in memory is current');
    node.clock.advance(60_000);
    const [m] = await node.commit([encodeMessageBatch([message(21, 'orders', 1)])]);
    assert.equal(await node.storedApplied(), m, 'a checkpoint writes it');
    assert.notEqual(await node.meta.get(MetaKeys.topic('orders')), undefined, 'and the topic');
    const [last] = await node.commit([encodeMessageBatch([message(22, 'orders', 1)])]);
    await node.close();
    assert.equal(await node.storedApplied(), last, 'close writes it');
  });

  it('writes no pop record that was settled before the checkpoint', async () => {
    const node = new Node(8, 60_000);
    await node.open();
    await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    for (let i = 0; i < 4; i++) await node.commit([encodeMessageBatch([message(i, 'orders', 0)])]);
    const ref = { group: 'G', topic: 'orders', queueId: 0 };
    const receive = (from: number, to: number, nowMs: number): BrokerCommand => ({
      op: 'pop.receive',
      ...ref,
      nowMs,
      invisibleMs: 60_000,
      from,
      to,
      fresh: Array.from({ length: to - from }, (_, k) => ({ offset: from + k, messageGroup: '' })),
      again: [],
    });
    const [r1] = await node.commit([cmd(receive(0, 4, 1_000))]);
    const grants = node.state.takeOutcome(r1 as number)?.results?.[0];
    assert.ok(grants?.ok === true && grants.grants?.length === 4);
    // Offsets 0 and 2 acknowledged within the interval; 1 and 3 stay in flight.
    for (const g of grants.grants.filter((x) => x.offset % 2 === 0)) {
      await node.commit([cmd({ op: 'pop.ack', ...ref, offset: g.offset, handle: g.handle })]);
    }
    const stored = async (): Promise<number[]> =>
      (await node.meta.scan(MetaKeys.popRecordPrefix)).map(([key]) =>
        parseInt(key.split('\0')[4] ?? '', 16),
      );
    assert.deepEqual(await stored(), [], 'nothing written before the checkpoint');
    node.clock.advance(60_000);
    await node.commit([encodeMessageBatch([message(9, 'orders', 1)])]);
    assert.deepEqual(await stored(), [1, 2, 3], 'in flight: 1 and 3; 2 settled out of order');
    const one = grants.grants.find((x) => x.offset === 1);
    assert.ok(one !== undefined);
    await node.commit([cmd({ op: 'pop.ack', ...ref, offset: 1, handle: one.handle })]);
    await node.close();
    assert.deepEqual(await stored(), [3], 'the frontier passed 1 and 2; 3 is in flight');
    // What was written is what a reopen loads.
    await node.open();
    assert.deepEqual([...(node.state.pop.queue('G', 'orders', 0)?.inflight.keys() ?? [])], [3]);
    await node.close();
  });

  it('applies message-only entries again after a crash, without duplicate records', async () => {
    for (const mode of ['lose', 'keep', 'tear'] as const) {
      const node = new Node(6, 60_000);
      await node.open();
      await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
      for (let i = 0; i < 6; i++) {
        await node.commit([
          encodeMessageBatch([message(i, 'orders', 0), message(100 + i, 'orders', 1)]),
        ]);
      }
      await node.store.checkpointDispatch();
      node.crash(mode);
      await node.open();
      await node.replay();
      assert.deepEqual(node.state.queueRange('orders', 0), { min: 0, max: 6 }, mode);
      assert.deepEqual(node.state.queueRange('orders', 1), { min: 0, max: 6 }, mode);
      const read = await node.store.readQueue('orders', 0, 0, 10);
      assert.deepEqual(
        read.map((x) => x.message.messageId),
        [0, 1, 2, 3, 4, 5].map((n) => `id-${n}`),
      );
      await node.close();
    }
  });

  it('applies entries again when the store was closed without the state', async () => {
    const node = new Node(7, 60_000);
    await node.open();
    const before = await node.storedApplied();
    await node.commit([cmd({ op: 'topic.put', topic: TOPIC, mode: 'create' })]);
    for (let i = 0; i < 4; i++) await node.commit([encodeMessageBatch([message(i, 'orders', 0)])]);
    // A failed start closes the store alone: its queue checkpoint runs past the stored applied.
    await node.store.close();
    assert.equal(await node.storedApplied(), before);
    await node.open();
    const start = node.state.appliedIndex;
    assert.equal(start, before ?? 0);
    assert.equal(
      node.store.dispatchedIndex(),
      start,
      'the queues were rewound to the applied index',
    );
    assert.equal(node.state.getTopic('orders'), undefined, 'the topic was not written yet');
    await node.replay();
    assert.equal(node.state.appliedIndex, start + 5);
    assert.deepEqual(node.state.getTopic('orders'), TOPIC, 'the replay applied it again');
    assert.deepEqual(node.state.queueRange('orders', 0), { min: 0, max: 4 });
    const read = await node.store.readQueue('orders', 0, 0, 10);
    assert.deepEqual(
      read.map((x) => x.message.messageId),
      ['id-0', 'id-1', 'id-2', 'id-3'],
    );
    await node.close();
  });
});
