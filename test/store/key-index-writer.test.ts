/*
 * The key index is written behind the apply path (KeyIndexWriter, through MessageStore) with its
 * own checkpoint. These tests produce messages (with shared keys and reused message ids) on a
 * simulated machine, with small write thresholds so background writes happen all the time, and
 * crash it at random points in every mode. They check, straight from the metadata store, that
 * the stored key-index checkpoint never claims an entry whose puts did not land; then, after
 * reopening, that every message is found by each of its keys and by its id (the last message
 * applied wins an id), exactly as a model says. Also: the queue of puts stays bounded, queries
 * see what was dispatched before them, a failed write stops dispatching for good, retention
 * keeps the newest holder of an id, and the writer's options are checked.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { isRaftmqError } from '../../src/common/errors';
import { resolveKeyIndexWriterOptions } from '../../src/store/key-index-writer';
import { messageLocationCodec } from '../../src/store/key-index';
import { EntryType, type LogEntry } from '../../src/store/log-record';
import { encodeMessageBatch } from '../../src/store/message-batch';
import type { StoredMessage } from '../../src/store/message-codec';
import { MessageStore } from '../../src/store/message-store';
import type { KeyIndexWriterOptions } from '../../src/store/key-index-writer';
import { MetaKeys, u64Codec } from '../../src/store/meta';
import type { CrashMode } from '../../src/sim/sim-disk';
import { fcParams } from '../fc-params';
import { SimMachine } from './sim-machine';
import { PLAIN_MESSAGE_FIELDS } from './stored-message-fields';

const TOPICS = ['orders', 'payments'];

function message(n: number, idSpace: number): StoredMessage {
  return {
    topic: TOPICS[n % TOPICS.length] as string,
    queueId: n % 3,
    body: Buffer.from(`body-${n}`),
    bodyEncoding: 'IDENTITY',
    tag: undefined,
    keys: n % 4 === 3 ? [] : [`k${n}`, `s${n % 5}`],
    userProperties: new Map(),
    // A small id space reuses ids, as producer retries do: the last one applied must win.
    messageId: `id-${n % idSpace}`,
    bornTimestampMs: 1_700_000_000_000 + n,
    storeTimestampMs: 1_700_000_000_500 + n,
    bornHost: 'h:1',
    storeHost: 'h:2',
    ...PLAIN_MESSAGE_FIELDS,
  };
}

/** Where message `n` went, as the store reported it. */
interface Placed {
  readonly n: number;
  readonly index: number;
  readonly position: number;
}

class Node extends SimMachine {
  store!: MessageStore;
  readonly placed: Placed[] = [];

  constructor(seed: number, private readonly writer: Partial<KeyIndexWriterOptions>,
    readonly idSpace = 1_000_000, private readonly withBatchWith = true) {
    super(seed);
  }

  async open(): Promise<void> {
    const inc = this.incarnation();
    // Without batchWith the writer falls back to plain op arrays.
    if (!this.withBatchWith) inc.meta = { ...inc.meta, batchWith: undefined };
    this.store = await MessageStore.open('/node', inc, {
      commitLog: {
        segmentSizeBytes: 16_384,
        indexEntriesPerFile: 32,
        payloadMaxBytes: 8192,
        fileReservedTimeMs: 1000,
      },
      consumeQueue: { entriesPerFile: 8 },
      keyIndexWriter: this.writer,
    });
  }

  /** Appends and dispatches entries of messages `from..from+count`, `perEntry` each. */
  async produce(from: number, count: number, perEntry: number): Promise<void> {
    const log = this.store.commitLog;
    const entries: LogEntry[] = [];
    const numbers: number[][] = [];
    for (let n = from; n < from + count; n += perEntry) {
      const ns: number[] = [];
      for (let k = n; k < Math.min(from + count, n + perEntry); k++) ns.push(k);
      numbers.push(ns);
      entries.push({
        index: log.lastIndex() + entries.length + 1,
        term: 1,
        type: EntryType.NORMAL,
        payload: encodeMessageBatch(ns.map((k) => message(k, this.idSpace))),
      });
    }
    log.append(entries);
    await log.flush();
    const r = await this.store.dispatch(entries);
    r.batches.forEach((b, i) => {
      const ns = numbers[i] as number[];
      assert.ok(b !== undefined && b.count === ns.length);
      ns.forEach((n, k) => {
        this.placed.push({ n, index: entries[i]?.index ?? 0, position: b.positions[k] ?? -1 });
      });
    });
  }
}

/** Checks from the raw metadata that the key checkpoint covers only puts that landed. */
async function checkpointIsHonest(node: Node): Promise<number> {
  const bytes = await node.meta.get(MetaKeys.keyIndexCheckpoint);
  const cp = bytes === undefined ? 0 : u64Codec.decode(bytes);
  const lastById = new Map<string, Placed>();
  for (const p of node.placed) {
    if (p.index > cp) continue;
    const m = message(p.n, node.idSpace);
    lastById.set(m.messageId, p);
    for (const key of m.keys) {
      const at = await node.meta.get(MetaKeys.messageKey(m.topic, key, p.position));
      assert.ok(at !== undefined, `checkpoint ${cp}: key ${key} of message ${p.n} missing`);
    }
  }
  for (const [id, p] of lastById) {
    const v = await node.meta.get(MetaKeys.messageId(id));
    assert.ok(v !== undefined, `checkpoint ${cp}: id ${id} missing`);
    // Entries after the checkpoint may have landed too (a later write), never older ones only.
    assert.ok(messageLocationCodec.decode(v).position >= p.position, `id ${id} went back`);
  }
  return cp;
}

/** Every produced message is found by each key and by its id, as the model says. */
async function indexMatchesModel(node: Node): Promise<void> {
  const byKey = new Map<string, number[]>();
  const lastById = new Map<string, Placed>();
  for (const p of node.placed) {
    const m = message(p.n, node.idSpace);
    lastById.set(m.messageId, p);
    for (const key of m.keys) {
      const k = `${m.topic}/${key}`;
      byKey.set(k, [...(byKey.get(k) ?? []), p.position]);
    }
  }
  for (const [k, positions] of byKey) {
    const [topic, key] = k.split('/') as [string, string];
    const found = await node.store.queryByKey(topic, key, 1000);
    assert.deepEqual(found.map((l) => l.position), positions, `key ${k}`);
  }
  for (const [id, p] of lastById) {
    const found = await node.store.queryById(id);
    assert.equal(found?.position, p.position, `id ${id}`);
    assert.equal(found?.message.userProperties.size, 0);
  }
}

describe('key index writer (through MessageStore)', () => {
  it('after a crash at any point the key index is caught up on open', async () => {
    const writer = fc.record({
      flushOpsMin: fc.integer({ min: 1, max: 40 }),
      extra: fc.integer({ min: 0, max: 60 }),
    });
    const step = fc.record({
      count: fc.integer({ min: 1, max: 25 }),
      perEntry: fc.integer({ min: 1, max: 6 }),
      then: fc.constantFrom('nothing', 'checkpoint', 'query', 'crash'),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.integer(),
        writer,
        fc.array(step, { minLength: 1, maxLength: 8 }),
        fc.constantFrom<CrashMode>('lose', 'tear', 'keep'),
        fc.integer({ min: 3, max: 40 }),
        fc.boolean(),
        async (seed, w, steps, mode, idSpace, withBatchWith) => {
          const node = new Node(seed, {
            flushOpsMin: w.flushOpsMin,
            pendingOpsMax: w.flushOpsMin + w.extra,
          }, idSpace, withBatchWith);
          await node.open();
          let n = 0;
          for (const s of steps) {
            await node.produce(n, s.count, s.perEntry);
            n += s.count;
            if (s.then === 'checkpoint') await node.store.checkpointDispatch();
            if (s.then === 'query') await node.store.queryById('id-0');
            if (s.then === 'crash') {
              node.crash(mode);
              await checkpointIsHonest(node);
              await node.open();
              await node.store.catchUp(node.store.commitLog.lastIndex());
            }
          }
          node.crash(mode);
          const cp = await checkpointIsHonest(node);
          assert.ok(cp <= node.store.commitLog.lastIndex());
          await node.open();
          // open() re-indexed up to the queues' checkpoint; catchUp() does the rest.
          await node.store.catchUp(node.store.commitLog.lastIndex());
          const progress = node.store.keyIndexProgress();
          assert.equal(progress.indexedIndex, node.store.commitLog.lastIndex());
          assert.equal(progress.writtenIndex, progress.indexedIndex);
          await indexMatchesModel(node);
          await node.store.close();
        },
      ),
      fcParams(40),
    );
  });

  it('indexes again on open what the key index had not written when the queues had', async () => {
    const node = new Node(7, { flushOpsMin: 100_000, pendingOpsMax: 100_000 });
    await node.open();
    await node.produce(0, 60, 4);
    await node.store.checkpointDispatch();
    const dispatched = node.store.dispatchedIndex();
    // As if the key index's background write had not landed while the queue checkpoint had.
    await node.store.writeKeyIndex();
    const rows = [
      ...(await node.meta.scan(MetaKeys.messageKeySpacePrefix)),
      ...(await node.meta.scan(MetaKeys.messageIdPrefix)),
    ];
    await node.meta.batch(
      [...rows.map(([key]) => ({ type: 'del' as const, key })),
        { type: 'del', key: MetaKeys.keyIndexCheckpoint }],
      { sync: true },
    );
    node.crash('keep');
    await node.open();
    assert.equal(node.store.dispatchedIndex(), dispatched);
    assert.equal(node.store.keyIndexProgress().writtenIndex, dispatched);
    assert.ok((await node.meta.scan(MetaKeys.messageIdPrefix)).length > 0, 'indexed on open');
    await indexMatchesModel(node);
    await node.store.close();
  });

  it('keeps the queued puts under pendingOpsMax after every dispatch', async () => {
    const node = new Node(8, { flushOpsMin: 4, pendingOpsMax: 10 });
    await node.open();
    for (let i = 0; i < 30; i++) {
      await node.produce(i * 3, 3, 1);
      assert.ok(node.store.keyIndexProgress().pendingOps < 10);
    }
    await indexMatchesModel(node);
    await node.store.close();
  });

  it('finds by key and id every message dispatched before the query', async () => {
    const node = new Node(9, { flushOpsMin: 1_000_000, pendingOpsMax: 1_000_000 });
    await node.open();
    await node.produce(0, 40, 5);
    assert.ok(node.store.keyIndexProgress().pendingOps > 0, 'nothing written yet');
    await indexMatchesModel(node);
    const byKey = await node.store.queryByKey('orders', 'k2', 10);
    assert.deepEqual(byKey.map((m) => m.message.body.toString()), ['body-2']);
    await node.store.close();
  });

  it('stops dispatching for good when a key-index write fails', async () => {
    const node = new Node(10, { flushOpsMin: 1, pendingOpsMax: 1 });
    await node.open();
    await node.produce(0, 5, 1);
    node.meta.setHook((op) => {
      if (op === 'batch') throw new Error('injected metadata write failure');
    });
    await assert.rejects(node.produce(5, 5, 1), (err: unknown) => isRaftmqError(err));
    node.meta.setHook(undefined);
    await assert.rejects(node.produce(10, 1, 1), (err: unknown) => isRaftmqError(err));
  });

  it('keeps the newest holder of a reused id through retention', async () => {
    const node = new Node(11, { flushOpsMin: 1_000_000, pendingOpsMax: 1_000_000 }, 7);
    await node.open();
    await node.produce(0, 300, 3);
    node.clock.advance(1_000_000);
    await node.produce(300, 14, 2);
    const first = await node.store.applyRetention(node.store.commitLog.lastIndex());
    assert.ok(first > 1, 'segments were removed');
    for (let id = 0; id < 7; id++) {
      const last = [...node.placed].reverse().find((p) => p.n % 7 === id);
      const found = await node.store.queryById(`id-${id}`);
      assert.equal(found?.position, last?.position, `id-${id}`);
    }
    await node.store.close();
  });

  it('checks its options, naming the field', () => {
    assert.deepEqual(resolveKeyIndexWriterOptions({}),
      { flushOpsMin: 4096, pendingOpsMax: 65_536 });
    const bads = [{ flushOpsMin: 0 }, { pendingOpsMax: 1.5 },
      { flushOpsMin: 10, pendingOpsMax: 5 }, { nope: 1 } as never];
    for (const bad of bads) {
      assert.throws(() => resolveKeyIndexWriterOptions(bad), (err: unknown) =>
        isRaftmqError(err, 'INVALID_OPTION') && err.message.includes('keyIndexWriter.'));
    }
  });
});
