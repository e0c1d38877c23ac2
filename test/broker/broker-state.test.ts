/*
 * The broker state machine on a simulated machine: committed entries carrying messages and
 * commands are appended to a real CommitLog and applied. Checks that queue offsets follow log
 * order, that topic/group/offset commands apply with the same outcome a second time (replays
 * after a crash are harmless), that bad commands fail with a result instead of stopping the
 * node, that state and queues come back after a reopen and after a crash that lost the unsynced
 * metadata, and that long-poll waiters wake when their queue grows.
 */
import { strict as assert } from 'node:assert';
import { BrokerState } from '../../src/broker/broker-state';
import { encodeCommands, type BrokerCommand } from '../../src/broker/broker-command';
import type { TopicConfig } from '../../src/broker/broker-types';
import { silentLogger } from '../../src/common/logger';
import { EntryType, type LogEntry } from '../../src/store/log-record';
import { encodeMessageBatch } from '../../src/store/message-batch';
import type { StoredMessage } from '../../src/store/message-format';
import { MessageStore } from '../../src/store/message-store';
import { SimMachine } from '../store/sim-machine';

function message(n: number, topic: string, queueId: number): StoredMessage {
  return {
    topic,
    queueId,
    body: Buffer.from(`body-${n}`),
    bodyEncoding: 'IDENTITY',
    tag: 'T',
    keys: [`k${n}`],
    userProperties: new Map([['n', String(n)]]),
    messageId: `id-${n}`,
    bornTimestampMs: 1_700_000_000_000 + n,
    storeTimestampMs: 1_700_000_000_000 + n * 10,
    deliveryTimestampMs: undefined,
    bornHost: 'h',
    storeHost: 's',
    flags: 0,
    reconsumeCount: 0,
    messageGroup: undefined,
    messageType: 'NORMAL',
    transactionState: 'NONE',
    traceContext: undefined,
  };
}

const TOPIC: TopicConfig = {
  name: 'orders',
  queueCount: 2,
  perm: 'READ_WRITE',
  messageTypes: ['NORMAL'],
};

class Node extends SimMachine {
  store!: MessageStore;
  state!: BrokerState;
  private term = 1;

  async open(): Promise<void> {
    const inc = this.incarnation();
    this.store = await MessageStore.open('/node', inc);
    this.state = await BrokerState.open(this.store, inc.meta, this.clock, silentLogger(), {
      checkpointIntervalMs: 0,
    });
  }

  /** Appends payloads as committed entries and applies them; returns their indexes. */
  async commit(payloads: Uint8Array[]): Promise<number[]> {
    const log = this.store.commitLog;
    const entries: LogEntry[] = payloads.map((payload, i) => ({
      index: log.lastIndex() + i + 1,
      term: this.term,
      type: EntryType.NORMAL,
      payload,
    }));
    log.append(entries);
    await log.flush();
    await this.state.apply(entries);
    return entries.map((e) => e.index);
  }

  async close(): Promise<void> {
    await this.state.close();
    await this.store.close();
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
    const out1 = node.state.takeOutcome(m1 as number)?.messages ?? [];
    assert.deepEqual(
      out1.map((d) => [d.queueId, d.queueOffset]),
      [
        [0, 0],
        [1, 0],
      ],
    );
    const out2 = node.state.takeOutcome(m2 as number)?.messages ?? [];
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
});
