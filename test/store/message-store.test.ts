/*
 * The MessageStore keeps ConsumeQueues and the key index in step with the CommitLog. These tests
 * append message batches on a simulated disk, dispatch them as the broker would after commit,
 * and check every queue reads back in offset order with the right messages; then they crash,
 * delete queue files, clear the key index and trim the log, and check that catch-up, rebuild
 * and retention restore exactly the same queues (no message lost, none twice).
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { MessageStore } from '../../src/store/message-store';
import { encodeMessageBatch } from '../../src/store/message-batch';
import type { StoredMessage } from '../../src/store/message-codec';
import { EntryType, type LogEntry } from '../../src/store/log-record';
import { MetaKeys } from '../../src/store/meta';
import type { CrashMode } from '../../src/sim/sim-disk';
import { SimMachine } from './sim-machine';
import { fcParams } from '../fc-params';
import { PLAIN_MESSAGE_FIELDS } from './stored-message-fields';

const TOPICS = ['orders', 'payments'];
const QUEUES = 3;

function message(n: number): StoredMessage {
  const topic = TOPICS[n % TOPICS.length] as string;
  return {
    topic,
    queueId: (n >> 1) % QUEUES,
    body: Buffer.from(`body-${n}`),
    bodyEncoding: 'IDENTITY',
    tag: n % 4 === 0 ? undefined : `tag${n % 3}`,
    keys: [`k${n}`, `shared${n % 5}`],
    userProperties: new Map([['n', String(n)]]),
    messageId: `id-${n}`,
    bornTimestampMs: 1_700_000_000_000 + n,
    storeTimestampMs: 1_700_000_000_500 + n,
    bornHost: '127.0.0.1:1',
    storeHost: '127.0.0.1:2',
    ...PLAIN_MESSAGE_FIELDS,
  };
}

class Node extends SimMachine {
  store!: MessageStore;

  async open(): Promise<void> {
    this.store = await MessageStore.open('/node', this.incarnation(), {
      commitLog: {
        segmentSizeBytes: 8192,
        indexEntriesPerFile: 16,
        payloadMaxBytes: 4096,
        fileReservedTimeMs: 1000,
      },
      consumeQueue: { entriesPerFile: 4 },
    });
  }

  /** Appends batches of messages `from..from+count`, `perEntry` per entry; commits them. */
  async produce(from: number, count: number, perEntry: number): Promise<void> {
    const log = this.store.commitLog;
    const entries: LogEntry[] = [];
    for (let n = from; n < from + count; n += perEntry) {
      const msgs: StoredMessage[] = [];
      for (let k = n; k < Math.min(from + count, n + perEntry); k++) msgs.push(message(k));
      entries.push({
        index: log.lastIndex() + entries.length + 1,
        term: 1,
        type: EntryType.NORMAL,
        payload: encodeMessageBatch(msgs),
      });
    }
    log.append(entries);
    await log.flush();
    await this.store.dispatch(entries);
  }
}

/** Every queue's messages in offset order, as message numbers. */
async function queues(store: MessageStore): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const q of store.consumeQueues.listQueues()) {
    const cq = await store.consumeQueues.queue(q.topic, q.queueId);
    const got: number[] = [];
    for (let off = cq.minOffset; off < cq.maxOffset; off += 64) {
      for (const m of await store.readQueue(q.topic, q.queueId, off, 64)) {
        assert.equal(m.message.topic, q.topic);
        assert.equal(m.message.queueId, q.queueId);
        got.push(Number(m.message.userProperties.get('n')));
      }
    }
    out.set(`${q.topic}/${q.queueId}`, got);
  }
  return out;
}

function expectedQueues(count: number, from = 0): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (let n = from; n < count; n++) {
    const m = message(n);
    const key = `${m.topic}/${m.queueId}`;
    out.set(key, [...(out.get(key) ?? []), n]);
  }
  return out;
}

describe('MessageStore', () => {
  it('files messages under their queues in log order and finds them by key and id', async () => {
    const node = new Node(1);
    await node.open();
    await node.produce(0, 40, 3);
    await node.produce(40, 25, 1);
    assert.deepEqual(await queues(node.store), expectedQueues(65));
    const byKey = await node.store.queryByKey('orders', 'shared2', 100);
    // shared2 is on every message n with n % 5 === 2; 'orders' holds the even ones.
    const expected = Array.from({ length: 65 }, (_, n) => n).filter(
      (n) => n % 5 === 2 && n % 2 === 0,
    );
    assert.deepEqual(
      byKey.map((m) => m.message.messageId),
      expected.map((n) => `id-${n}`),
    );
    const one = await node.store.queryById('id-17');
    assert.equal(one?.message.body.toString(), 'body-17');
    assert.equal(await node.store.queryById('id-nope'), undefined);
    await node.store.close();
  });

  it('reads a queue up to a byte bound, always the first message', async () => {
    const node = new Node(6);
    await node.open();
    await node.produce(0, 40, 4);
    const all = await node.store.readQueue('orders', 0, 0, 100);
    assert.ok(all.length >= 4);
    const size = all[0]?.sizeBytes ?? 0;
    assert.ok(all.every((m) => m.sizeBytes > 0));
    const twoAndAHalf = (all[0]?.sizeBytes ?? 0) + (all[1]?.sizeBytes ?? 0) + size / 2;
    const cut = await node.store.readQueue('orders', 0, 0, 100, twoAndAHalf);
    assert.deepEqual(
      cut.map((m) => m.queueOffset),
      [0, 1],
    );
    const one = await node.store.readQueue('orders', 0, 0, 100, 1);
    assert.deepEqual(
      one.map((m) => m.message.messageId),
      [all[0]?.message.messageId],
      'the first message whatever the bound',
    );
    await node.store.close();
  });

  it('catches up after a crash without losing or repeating a message', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer(),
        fc.constantFrom<CrashMode>('lose', 'tear', 'keep'),
        fc.integer({ min: 1, max: 60 }),
        async (seed, mode, count) => {
          const node = new Node(seed);
          await node.open();
          await node.produce(0, 30, 4);
          await node.store.checkpointDispatch();
          await node.produce(30, count, 3);
          node.crash(mode);
          await node.open();
          // Every produced entry was flushed, so the log holds them all; queues catch up.
          await node.store.catchUp(node.store.commitLog.lastIndex());
          assert.deepEqual(await queues(node.store), expectedQueues(30 + count));
          await node.store.close();
        },
      ),
      fcParams(25),
    );
  });

  it('rebuilds the queues when their files were deleted', async () => {
    const node = new Node(3);
    await node.open();
    await node.produce(0, 50, 2);
    await node.store.close();
    await node.disk.removeTree('/node/consumequeue');
    await node.open();
    assert.equal(node.store.consumeQueues.listQueues().length, 0);
    await node.store.catchUp(node.store.commitLog.lastIndex());
    assert.deepEqual(await queues(node.store), expectedQueues(50));
    await node.store.close();
  });

  it('rebuilds the key index from the log on request', async () => {
    const node = new Node(4);
    await node.open();
    await node.produce(0, 30, 5);
    await node.store.writeKeyIndex();
    let removed = 0;
    node.disk.setHook((op, p) => {
      if (op === 'remove' && p.includes('/keyindex/')) removed++;
    });
    await node.store.rebuildIndexes();
    node.disk.setHook(undefined);
    assert.ok(removed > 0, 'the old key index files were deleted');
    assert.deepEqual(
      (await node.store.queryByKey('payments', 'k7', 10)).map((m) => m.message.messageId),
      ['id-7'],
    );
    assert.equal((await node.store.queryById('id-12'))?.message.messageId, 'id-12');
    assert.deepEqual(await queues(node.store), expectedQueues(30));
    await node.store.close();
    // What the rebuild wrote is what a reopen finds.
    node.crash('keep');
    await node.open();
    assert.equal(node.store.keyIndexProgress().rebuilt, false);
    assert.equal((await node.store.queryById('id-29'))?.message.messageId, 'id-29');
    await node.store.close();
  });

  it('deletes a key index kept in the metadata store and indexes into files', async () => {
    const node = new Node(6);
    await node.open();
    await node.produce(0, 20, 4);
    await node.store.close();
    // What a store of before 2026-12-03 kept: entries under two prefixes and a checkpoint.
    await node.meta.batch([
      { type: 'put', key: `${MetaKeys.legacyMessageIdPrefix}id-3`, value: Buffer.alloc(21) },
      { type: 'put', key: `${MetaKeys.legacyMessageKeyPrefix}orders\0k1\0x`, value: Buffer.alloc(21) },
      { type: 'put', key: MetaKeys.legacyKeyIndexCheckpoint, value: Buffer.alloc(8) },
      { type: 'del', key: MetaKeys.keyIndexFiles },
    ], { sync: true });
    for (const name of await node.disk.list('/node/keyindex')) {
      await node.disk.remove(`/node/keyindex/${name}`);
    }
    await node.open();
    assert.deepEqual(await node.meta.scan(MetaKeys.legacyMessageIdPrefix), []);
    assert.deepEqual(await node.meta.scan(MetaKeys.legacyMessageKeyPrefix), []);
    assert.equal(await node.meta.get(MetaKeys.legacyKeyIndexCheckpoint), undefined);
    assert.equal((await node.store.queryById('id-3'))?.message.messageId, 'id-3');
    await node.store.close();
  });

  it('retention split: retentionPoint removes nothing, removeBefore removes to the point', async () => {
    const node = new Node(5);
    await node.open();
    await node.produce(0, 300, 2);
    node.clock.advance(5000);
    await node.produce(300, 40, 2);
    const log = node.store.commitLog;
    const point = await node.store.retentionPoint(log.lastIndex());
    assert.ok(point > 1, 'retention would remove some segments');
    assert.equal(log.firstIndex(), 1, 'the decision removes nothing');
    assert.ok((await node.store.queryById('id-0')) !== undefined);
    assert.equal(await node.store.retentionPoint(point - 1) < point, true);
    assert.equal(await node.store.removeBefore(point), point);
    assert.equal(log.firstIndex(), point);
    assert.equal(log.termAt(point - 1) !== undefined, true, 'the term before the first is kept');
    assert.equal(await node.store.queryById('id-0'), undefined);
    await node.store.close();
  });

  it('retention drops old segments, their queue records and their keys, and keeps the rest', async () => {
    const node = new Node(5);
    await node.open();
    await node.produce(0, 300, 2);
    node.clock.advance(5000);
    await node.produce(300, 40, 2);
    const first = await node.store.applyRetention(node.store.commitLog.lastIndex());
    assert.ok(first > 1, 'some segments were removed');
    const minPosition = node.store.commitLog.firstPosition();
    for (const q of node.store.consumeQueues.listQueues()) {
      const cq = await node.store.consumeQueues.queue(q.topic, q.queueId);
      if (cq.maxOffset === cq.minOffset) continue;
      const [head] = await node.store.consumeQueues.readRange(q.topic, q.queueId, cq.minOffset, 1);
      assert.ok(head !== undefined);
    }
    const gone = await node.store.queryById('id-0');
    assert.equal(gone, undefined, 'a message before the log start is not found');
    const kept = await node.store.queryById('id-339');
    assert.ok(kept && kept.position >= minPosition);
    await assert.rejects(node.store.rebuildIndexes(), /retention/);
    await node.store.close();
  });
});
