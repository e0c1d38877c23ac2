// Checks KeyIndex over a MemMetaStore (and once over LevelMetaStore): messages indexed by
// addOps and written in one batch are found by key (oldest first, limit, inclusive time range,
// paging) and by id (the latest of several with one id); entries before minPosition are skipped
// and deleted by queries within their budget; sweepBefore deletes stale keys and ids in bounded
// steps, resumes, terminates and reports done only for a finished pass; topics, keys that
// prefix one another and unicode keys stay apart. A fast-check property compares queries and
// sweeps with a plain list model.
import fc from 'fast-check';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { AssertionFailure } from '../../src/common/assert';
import { isRaftmqError } from '../../src/common/errors';
import {
  KeyIndex, KeyIndexEntry, KeyIndexOptions, MessageLocation, messageLocationCodec,
} from '../../src/store/key-index';
import { LevelMetaStore } from '../../src/store/level-meta-store';
import { MemMetaStore } from '../../src/store/mem-meta-store';
import { MetaKeys, MetaStore } from '../../src/store/meta';

const T0_MS = 1_700_000_000_000;

function loc(position: number): MessageLocation {
  return { position, sizeBytes: 100 + position, storeTimestampMs: T0_MS + position };
}

/** A message at `position` whose size and store time derive from the position. */
function entry(topic: string, keys: string[], position: number, id?: string): KeyIndexEntry {
  const messageId = id ?? `id-${position}`;
  return { topic, keys, messageId, ...loc(position) };
}


async function index(
  store: MetaStore,
  entries: KeyIndexEntry[],
  options?: Partial<KeyIndexOptions>,
): Promise<KeyIndex> {
  const keyIndex = new KeyIndex(store, options);
  for (const e of entries) await store.batch(keyIndex.addOps(e), { sync: false });
  return keyIndex;
}

async function positionsUnder(store: MetaStore, prefix: string): Promise<number[]> {
  const entries = await store.scan(prefix);
  return entries.map(([, v]) => messageLocationCodec.decode(v).position);
}

/** Calls sweepBefore until done; fails if that takes more than `callsMax` calls. */
async function sweepToDone(keyIndex: KeyIndex, minPosition: number, batchLimit: number,
  scanLimit: number, callsMax: number) {
  let removed = 0;
  for (let call = 0; call < callsMax; call++) {
    const step = await keyIndex.sweepBefore(minPosition, { batchLimit, scanLimit });
    assert.ok(step.removed <= batchLimit);
    removed += step.removed;
    if (step.done) return { removed, calls: call + 1 };
  }
  assert.fail(`sweep not done after ${callsMax} calls`);
}

describe('KeyIndex', () => {
  let store: MemMetaStore;
  beforeEach(() => {
    store = new MemMetaStore();
  });

  it('finds a message by each of its keys and by its id', async () => {
    const keyIndex = await index(store, [entry('orders', ['o-1', 'customer-7'], 4096, 'MSG1')]);
    assert.deepEqual(await keyIndex.queryByKey('orders', 'o-1', { limit: 10 }), [loc(4096)]);
    assert.deepEqual(await keyIndex.queryByKey('orders', 'customer-7', { limit: 10 }), [loc(4096)]);
    assert.deepEqual(await keyIndex.queryByKey('orders', 'o-2', { limit: 10 }), []);
    assert.deepEqual(await keyIndex.queryById('MSG1'), loc(4096));
    assert.equal(await keyIndex.queryById('MSG2'), undefined);
  });

  it('builds puts only: one per distinct key and one for the id', () => {
    const ops = new KeyIndex(store).addOps(entry('t', ['a', 'b', 'a'], 7, 'X'));
    assert.deepEqual(ops.map((op) => [op.type, op.key]), [
      ['put', MetaKeys.messageKey('t', 'a', 7)],
      ['put', MetaKeys.messageKey('t', 'b', 7)],
      ['put', MetaKeys.messageId('X')],
    ]);
    assert.equal(ops[0]?.value?.byteLength, 21);
  });

  it('returns messages oldest first, up to limit, and pages with fromPosition', async () => {
    const positions = [10, 20, 30, 40, 50];
    const keyIndex = await index(store, positions.map((p) => entry('t', ['k'], p)));
    const q = (limit: number, fromPosition?: number) =>
      keyIndex.queryByKey('t', 'k', { limit, fromPosition });
    assert.deepEqual(await q(10), positions.map(loc));
    assert.deepEqual(await q(2), [loc(10), loc(20)]);
    assert.deepEqual(await q(2, 21), [loc(30), loc(40)]);
    assert.deepEqual(await q(2, 50), [loc(50)]);
    assert.deepEqual(await q(2, 51), []);
  });

  it('filters by an inclusive time range', async () => {
    const keyIndex = await index(store, [1, 2, 3, 4, 5].map((p) => entry('t', ['k'], p)));
    const found = await keyIndex.queryByKey('t', 'k',
      { limit: 10, beginTimestampMs: T0_MS + 2, endTimestampMs: T0_MS + 4 });
    assert.deepEqual(found, [loc(2), loc(3), loc(4)]);
    const limited = await keyIndex.queryByKey('t', 'k', { limit: 1, beginTimestampMs: T0_MS + 3 });
    assert.deepEqual(limited, [loc(3)]);
  });

  it('skips entries before minPosition and deletes them within the query budget', async () => {
    const keyIndex = await index(store, Array.from({ length: 10 }, (_, i) => entry('t', ['k'], i)),
      { staleDeleteCountMax: 2, scanPageCountMax: 3 });
    const prefix = MetaKeys.messageKeyPrefix('t', 'k');
    const expected = [6, 7, 8, 9].map(loc);
    assert.deepEqual(await keyIndex.queryByKey('t', 'k', { limit: 10, minPosition: 6 }), expected);
    assert.deepEqual(await positionsUnder(store, prefix), [2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(await keyIndex.queryByKey('t', 'k', { limit: 10, minPosition: 6 }), expected);
    assert.deepEqual(await keyIndex.queryByKey('t', 'k', { limit: 10, minPosition: 6 }), expected);
    assert.deepEqual(await positionsUnder(store, prefix), [6, 7, 8, 9]);
    // Ids are not deleted by queries (see queryById); they read as absent when stale.
    assert.equal(await keyIndex.queryById('id-3', 6), undefined);
    assert.deepEqual(await keyIndex.queryById('id-3'), loc(3));
  });

  it('rejects the query when deleting stale entries fails', async () => {
    const keyIndex = await index(store, [entry('t', ['k'], 1), entry('t', ['k'], 9)]);
    store.setHook((op) => {
      if (op === 'batch') throw new Error('EIO');
    });
    await assert.rejects(keyIndex.queryByKey('t', 'k', { limit: 5, minPosition: 5 }),
      (err: unknown) => isRaftmqError(err, 'STORE_FATAL'));
  });

  it('maps an id carried by several messages to the one applied last', async () => {
    const keyIndex = await index(store, [entry('t', ['k'], 100, 'RETRIED'),
      entry('t', ['k'], 200, 'RETRIED')]);
    assert.deepEqual(await keyIndex.queryById('RETRIED'), loc(200));
    assert.deepEqual(await keyIndex.queryById('RETRIED', 200), loc(200));
    assert.equal(await keyIndex.queryById('RETRIED', 201), undefined);
  });

  it('keeps one key apart across topics, and keys that prefix one another apart', async () => {
    const keyIndex = await index(store, [entry('a', ['k'], 1), entry('ab', ['k'], 2),
      entry('a', ['kk'], 3), entry('a', ['k k'], 4)]);
    const q = (topic: string, key: string) => keyIndex.queryByKey(topic, key, { limit: 10 });
    assert.deepEqual(await q('a', 'k'), [loc(1)]);
    assert.deepEqual(await q('ab', 'k'), [loc(2)]);
    assert.deepEqual(await q('a', 'kk'), [loc(3)]);
    assert.deepEqual(await q('a', 'k k'), [loc(4)]);
    assert.deepEqual(await q('ab', 'kk'), []);
  });

  it('handles unicode keys, ids and topics', async () => {
    const keys = ['订单-42', '😀', 'é', '\uffff', '\u{10ffff}', 'e\u0301'];
    const keyIndex = await index(store, keys.map((k, i) => entry('主题', [k], i + 1, `ид-${k}`)));
    for (const [i, k] of keys.entries()) {
      assert.deepEqual(await keyIndex.queryByKey('主题', k, { limit: 10 }), [loc(i + 1)], k);
      assert.deepEqual(await keyIndex.queryById(`ид-${k}`), loc(i + 1));
    }
  });

  it('sweeps stale keys and ids in bounded steps until done', async () => {
    const entries: KeyIndexEntry[] = [];
    for (let p = 0; p < 60; p++) {
      entries.push(entry(`topic-${p % 3}`, [`key-${p % 7}`, `solo-${p}`], p * 10));
    }
    const keyIndex = await index(store, entries, { scanPageCountMax: 4 });
    const minPosition = 300;
    const staleCount = 30 * 3; // two keys and one id per stale message
    const { removed } = await sweepToDone(keyIndex, minPosition, 5, 16, 200);
    assert.equal(removed, staleCount);
    const keyPositions = await positionsUnder(store, 'k\0');
    const idPositions = await positionsUnder(store, MetaKeys.messageIdPrefix);
    assert.equal(keyPositions.length, 60);
    assert.ok(keyPositions.every((p) => p >= minPosition));
    assert.deepEqual(idPositions.sort((a, b) => a - b), entries.slice(30).map((e) => e.position));
    // A finished index sweeps clean in one pass with nothing to remove.
    const again = await sweepToDone(keyIndex, minPosition, 5, 1000, 5);
    assert.deepEqual(again, { removed: 0, calls: 1 });
  });

  it('reports done only after a pass at least as strict as the latest minPosition', async () => {
    const keyIndex = await index(store, Array.from({ length: 40 }, (_, p) =>
      entry('t', [`k${p}`], p)), { scanPageCountMax: 5 });
    const first = await keyIndex.sweepBefore(10, { batchLimit: 100, scanLimit: 20 });
    assert.equal(first.done, false);
    // minPosition grows mid-pass: this pass cannot vouch for entries it checked against 10.
    let done = false;
    let calls = 0;
    for (; calls < 20 && !done; calls++) {
      done = (await keyIndex.sweepBefore(20, { batchLimit: 100, scanLimit: 20 })).done;
    }
    assert.ok(done && calls >= 2, `done after ${calls} calls`);
    assert.ok((await positionsUnder(store, 'k\0')).every((p) => p >= 20));
    assert.ok((await positionsUnder(store, MetaKeys.messageIdPrefix)).every((p) => p >= 20));
  });

  it('rejects a bad limit or time range and asserts NUL-free names', async () => {
    const keyIndex = new KeyIndex(store);
    await assert.rejects(keyIndex.queryByKey('t', 'k', { limit: 0 }),
      (err: unknown) => isRaftmqError(err, 'INVALID_ARGUMENT'));
    await assert.rejects(keyIndex.queryByKey('t', 'k',
      { limit: 1, beginTimestampMs: 5, endTimestampMs: 4 }),
    (err: unknown) => isRaftmqError(err, 'INVALID_ARGUMENT'));
    assert.throws(() => keyIndex.addOps(entry('t', ['a\0b'], 1)), AssertionFailure);
    assert.throws(() => keyIndex.addOps(entry('t\0x', ['a'], 1)), AssertionFailure);
    assert.throws(() => keyIndex.addOps(entry('t', ['a'], 1, 'i\0d')), AssertionFailure);
    await assert.rejects(keyIndex.queryByKey('t', 'a\0', { limit: 1 }), AssertionFailure);
  });

  it('reports a value that disagrees with its key as META_CORRUPT', async () => {
    const keyIndex = new KeyIndex(store);
    await store.batch([{ type: 'put', key: MetaKeys.messageKey('t', 'k', 5),
      value: messageLocationCodec.encode(loc(6)) }], { sync: false });
    await assert.rejects(keyIndex.queryByKey('t', 'k', { limit: 1 }),
      (err: unknown) => isRaftmqError(err, 'META_CORRUPT'));
    await store.batch([{ type: 'put', key: MetaKeys.messageId('x'), value: new Uint8Array(3) }],
      { sync: false });
    await assert.rejects(keyIndex.queryById('x'),
      (err: unknown) => isRaftmqError(err, 'META_CORRUPT'));
  });

  it('round-trips locations through the 21-byte codec', () => {
    fc.assert(fc.property(fc.record({
      position: fc.maxSafeNat(),
      sizeBytes: fc.integer({ min: 0, max: 0xffff_ffff }),
      storeTimestampMs: fc.maxSafeNat(),
    }), (location) => {
      const bytes = messageLocationCodec.encode(location);
      const decoded = messageLocationCodec.decode(bytes);
      assert.deepEqual(decoded, { ...location });
      // The layout, written the plain way: version | u64 position | u32 size | u64 store time.
      const expected = Buffer.alloc(21);
      expected.writeUInt8(1, 0);
      expected.writeBigUInt64BE(BigInt(location.position), 1);
      expected.writeUInt32BE(location.sizeBytes, 9);
      expected.writeBigUInt64BE(BigInt(location.storeTimestampMs), 13);
      assert.deepEqual(Buffer.from(bytes), expected);
    }));
  });

  it('agrees with a list model for random messages, queries and sweeps', async () => {
    const msgArb = fc.record({
      topic: fc.constantFrom('t', 'tt', '主题'),
      keys: fc.uniqueArray(fc.constantFrom('a', 'ab', '😀', '\uffff'), { maxLength: 3 }),
    });
    await fc.assert(fc.asyncProperty(
      fc.array(msgArb, { maxLength: 30 }),
      fc.nat(35),
      fc.integer({ min: 1, max: 8 }),
      fc.nat(3),
      async (msgs, minIndex, limit, pageCount) => {
        const mem = new MemMetaStore();
        const entries = msgs.map((m, i) => entry(m.topic, m.keys, i * 8, `id-${i % 10}`));
        const keyIndex = await index(mem, entries,
          { scanPageCountMax: pageCount + 1, staleDeleteCountMax: 2 });
        const minPosition = minIndex * 8;
        for (const topic of ['t', 'tt', '主题']) {
          for (const key of ['a', 'ab', '😀', '\uffff']) {
            const expected = entries
              .filter((e) => e.topic === topic && e.keys.includes(key) && e.position >= minPosition)
              .slice(0, limit).map((e) => loc(e.position));
            const found = await keyIndex.queryByKey(topic, key, { limit, minPosition });
            assert.deepEqual(found, expected);
          }
        }
        await sweepToDone(keyIndex, minPosition, 3, 7, 1000);
        for (let id = 0; id < 10; id++) {
          const last = entries.filter((e) => e.messageId === `id-${id}`).pop();
          const want = last === undefined || last.position < minPosition ? undefined : last;
          assert.deepEqual(await keyIndex.queryById(`id-${id}`, minPosition),
            want === undefined ? undefined : loc(want.position));
        }
        const remaining = [...await positionsUnder(mem, 'k\0'),
          ...await positionsUnder(mem, MetaKeys.messageIdPrefix)];
        assert.ok(remaining.every((p) => p >= minPosition));
      },
    ), { numRuns: 150 });
  });

  it('works over LevelMetaStore', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-keyindex-'));
    try {
      const level = await LevelMetaStore.open(dir);
      try {
        const keyIndex = await index(level, Array.from({ length: 20 }, (_, p) =>
          entry('t', ['k', `😀${p % 2}`], p * 100)));
        assert.deepEqual(await keyIndex.queryByKey('t', '😀1', { limit: 3, minPosition: 500 }),
          [loc(500), loc(700), loc(900)]);
        await sweepToDone(keyIndex, 1000, 4, 8, 100);
        assert.deepEqual(await positionsUnder(level, MetaKeys.messageKeyPrefix('t', 'k')),
          Array.from({ length: 10 }, (_, i) => 1000 + i * 100));
      } finally {
        await level.close();
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
