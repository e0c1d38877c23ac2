/*
 * The key index files are written behind the apply path (through MessageStore) with their own
 * checkpoint. These tests produce messages (with shared keys and reused message ids) on a
 * simulated machine, with small write thresholds, small files and few hash slots (so background
 * writes, sealed files and hash collisions happen all the time), and crash it at random points
 * in every mode. They check that after every crash the files agree with the stored checkpoint
 * (the checkpoint never claims an entry the files lost: the index is not rebuilt), then, after
 * reopening, that every message is found by each of its keys and by its id (the last message
 * applied wins an id), exactly as a model says. Also: the entries waiting to be written stay
 * bounded, queries see what was dispatched before them, a failed write stops dispatching for
 * good, retention removes old files and keeps the newest holder of an id, and the options are
 * checked.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { isRaftmqError } from '../../src/common/errors';
import { type KeyIndexOptions, resolveKeyIndexOptions } from '../../src/store/key-index';
import { EntryType, type LogEntry } from '../../src/store/log-record';
import { encodeMessageBatch } from '../../src/store/message-batch';
import type { StoredMessage } from '../../src/store/message-codec';
import type { CommitLogOptions } from '../../src/store/commit-log-options';
import { MessageStore } from '../../src/store/message-store';
import { MetaKeys } from '../../src/store/meta';
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

  constructor(seed: number, private readonly writer: Partial<KeyIndexOptions>,
    readonly idSpace = 1_000_000, private readonly withBatchWith = true,
    private readonly logOptions: Partial<CommitLogOptions> = {}) {
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
        ...this.logOptions,
      },
      consumeQueue: { entriesPerFile: 8 },
      keyIndex: this.writer,
    });
  }

  /** Appends and dispatches entries of messages `from..from+count`, `perEntry` each. */
  async produce(from: number, count: number, perEntry: number, sync = true): Promise<void> {
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
    // ASYNC mode: written is persisted enough to apply, not durable.
    if (sync) await log.flush();
    else await log.waitPersisted(log.lastIndex());
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

/** Reopens after a crash; the files must agree with the stored checkpoint (no rebuild). */
async function reopenHonest(node: Node): Promise<void> {
  await node.open();
  assert.equal(node.store.keyIndexProgress().rebuilt, false, 'key index rebuilt after a crash');
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
      flushEntriesMin: fc.integer({ min: 1, max: 40 }),
      extra: fc.integer({ min: 0, max: 60 }),
      entriesPerFile: fc.integer({ min: 1, max: 50 }),
      slotCount: fc.constantFrom(1, 2, 8, 64),
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
            flushEntriesMin: w.flushEntriesMin,
            pendingEntriesMax: w.flushEntriesMin + w.extra,
            entriesPerFile: w.entriesPerFile,
            slotCount: w.slotCount,
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
              await reopenHonest(node);
              await node.store.catchUp(node.store.commitLog.lastIndex());
            }
          }
          node.crash(mode);
          await reopenHonest(node);
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
    const node = new Node(7, { flushEntriesMin: 100_000, pendingEntriesMax: 100_000 });
    await node.open();
    await node.produce(0, 60, 4);
    await node.store.checkpointDispatch();
    const dispatched = node.store.dispatchedIndex();
    // As if the key index's background write had not landed while the queue checkpoint had.
    await node.meta.batch([{ type: 'del', key: MetaKeys.keyIndexFiles }], { sync: true });
    for (const name of await node.disk.list('/node/keyindex')) {
      await node.disk.remove(`/node/keyindex/${name}`);
    }
    node.crash('keep');
    await node.open();
    assert.equal(node.store.dispatchedIndex(), dispatched);
    assert.equal(node.store.keyIndexProgress().writtenIndex, dispatched);
    assert.ok((await node.disk.list('/node/keyindex')).length > 0, 'indexed on open');
    await indexMatchesModel(node);
    await node.store.close();
  });

  it('rebuilds from the log when a file does not agree with the checkpoint', async () => {
    const node = new Node(12, { flushEntriesMin: 5, entriesPerFile: 16, slotCount: 4 });
    await node.open();
    await node.produce(0, 80, 3);
    await node.store.close();
    const names = (await node.disk.list('/node/keyindex')).sort();
    assert.ok(names.length > 3, `several files: ${names.join()}`);
    // Damage the header of a sealed file: its checksum no longer matches.
    const f = await node.disk.open(`/node/keyindex/${names[1] as string}`, false);
    await f.writev([Buffer.from([0xff])], 20);
    await f.sync();
    await f.close();
    node.crash('keep');
    await node.open();
    assert.equal(node.store.keyIndexProgress().rebuilt, true);
    await indexMatchesModel(node);
    await node.store.close();
  });

  it('keeps the waiting entries under pendingEntriesMax after every dispatch', async () => {
    const node = new Node(8, { flushEntriesMin: 4, pendingEntriesMax: 10 });
    await node.open();
    for (let i = 0; i < 30; i++) {
      await node.produce(i * 3, 3, 1);
      assert.ok(node.store.keyIndexProgress().pendingEntries < 10);
    }
    await indexMatchesModel(node);
    await node.store.close();
  });

  it('finds by key and id every message dispatched before the query', async () => {
    const node = new Node(9, { flushEntriesMin: 1_000_000, pendingEntriesMax: 1_000_000 });
    await node.open();
    await node.produce(0, 40, 5);
    assert.ok(node.store.keyIndexProgress().pendingEntries > 0, 'nothing written yet');
    await indexMatchesModel(node);
    const byKey = await node.store.queryByKey('orders', 'k2', 10);
    assert.deepEqual(byKey.map((m) => m.message.body.toString()), ['body-2']);
    await node.store.close();
  });

  it('answers from one hash slot: every candidate is checked against its message', async () => {
    const node = new Node(13, { slotCount: 1, entriesPerFile: 7, flushEntriesMin: 3 }, 5);
    await node.open();
    await node.produce(0, 50, 4);
    await indexMatchesModel(node);
    assert.equal(await node.store.queryById('id-nope'), undefined);
    assert.deepEqual(await node.store.queryByKey('orders', 'nope', 5), []);
    // A key of one topic is not found under the other.
    assert.deepEqual(await node.store.queryByKey('payments', 'k0', 5), []);
    await node.store.close();
  });

  it('stops dispatching for good when a key-index write fails', async () => {
    const node = new Node(10, { flushEntriesMin: 1, pendingEntriesMax: 1 });
    await node.open();
    await node.produce(0, 5, 1);
    node.meta.setHook((op) => {
      if (op === 'batch') throw new Error('injected metadata write failure');
    });
    await assert.rejects(node.produce(5, 5, 1), (err: unknown) => isRaftmqError(err));
    node.meta.setHook(undefined);
    await assert.rejects(node.produce(10, 1, 1), (err: unknown) => isRaftmqError(err));
  });

  it('removes old files with retention and keeps the newest holder of a reused id', async () => {
    const node = new Node(11, {
      flushEntriesMin: 1_000_000,
      pendingEntriesMax: 1_000_000,
      entriesPerFile: 64,
    }, 7);
    await node.open();
    await node.produce(0, 300, 3);
    await node.store.writeKeyIndex();
    const filesBefore = node.store.keyIndexProgress().files;
    node.clock.advance(1_000_000);
    await node.produce(300, 14, 2);
    const first = await node.store.applyRetention(node.store.commitLog.lastIndex());
    assert.ok(first > 1, 'segments were removed');
    assert.ok(node.store.keyIndexProgress().files < filesBefore, 'old key index files removed');
    for (let id = 0; id < 7; id++) {
      const last = [...node.placed].reverse().find((p) => p.n % 7 === id);
      const found = await node.store.queryById(`id-${id}`);
      assert.equal(found?.position, last?.position, `id-${id}`);
    }
    await node.store.close();
  });

  it('indexes entries the log lost and got back different, across a second crash', async () => {
    // ASYNC flush: entries are applied before they are durable, so a crash can take back
    // entries the key index had indexed (and checkpointed).
    const asyncLog = { flushMode: 'ASYNC' as const, flushIntervalMs: 60_000 };
    const node = new Node(14, {}, 1_000_000, true, asyncLog);
    await node.open();
    await node.produce(0, 5, 1);
    await node.store.commitLog.flush();
    await node.produce(5, 5, 1, false); // applied, never synced
    await node.store.writeKeyIndex();
    await node.meta.batch([{ type: 'put', key: 'x', value: Buffer.from('x') }], { sync: true });
    node.crash('lose');
    await node.open();
    await node.store.catchUp(node.store.commitLog.lastIndex());
    assert.equal(node.store.commitLog.lastIndex(), 5);
    node.placed.splice(5);
    await node.produce(100, 5, 1); // other messages at the same indexes
    await node.store.commitLog.flush();
    node.crash('lose'); // before any key-index write stored a new checkpoint
    await node.open();
    await node.store.catchUp(node.store.commitLog.lastIndex());
    await indexMatchesModel(node);
    // A stale entry of a lost message finds nothing (and does not fail the query).
    assert.equal(await node.store.queryById('id-7'), undefined);
    assert.deepEqual(await node.store.queryByKey('orders', 'k6', 10), []);
    await node.store.close();
  });

  it('checks its options, naming the field', () => {
    assert.deepEqual(resolveKeyIndexOptions({}), {
      slotCount: 262_144,
      entriesPerFile: 1_048_576,
      flushEntriesMin: 4096,
      pendingEntriesMax: 65_536,
      queryScanCountMax: 65_536,
      idCandidatesMax: 32,
    });
    const bads = [{ flushEntriesMin: 0 }, { pendingEntriesMax: 1.5 }, { slotCount: 3 },
      { flushEntriesMin: 10, pendingEntriesMax: 5 }, { nope: 1 } as never];
    for (const bad of bads) {
      assert.throws(() => resolveKeyIndexOptions(bad), (err: unknown) =>
        isRaftmqError(err, 'INVALID_OPTION') && err.message.includes('keyIndex.'));
    }
  });
});
