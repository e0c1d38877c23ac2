// The pure sub-modules, each against a simple model with fast-check: the in-flight window
// (count and byte bounds, freeing by index), majority arithmetic (the commit index a majority
// holds, vote outcomes), and the entry cache (contiguity, truncation, the byte bound).
import { strict as assert } from 'node:assert';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import fc from 'fast-check';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import { EntryCache } from '../../src/raft/entry-cache';
import { Inflights } from '../../src/raft/inflights';
import { majorityMatchIndex, voteOutcome } from '../../src/raft/quorum';
import { ENTRY_OVERHEAD_BYTES, entrySizeBytes, type Entry } from '../../src/raft/types';

describe('raft inflights', () => {
  it('matches a list model under add, freeLE, freeFirstOne and reset', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), bytes: fc.integer({ min: 0, max: 50 }) }),
      fc.record({ kind: fc.constant('free' as const), back: fc.integer({ min: 0, max: 5 }) }),
      fc.record({ kind: fc.constant('freeFirst' as const) }),
      fc.record({ kind: fc.constant('reset' as const) }),
    );
    fc.assert(fc.property(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 120 }),
      fc.array(op, { maxLength: 60 }), (countMax, bytesMax, ops) => {
        const window = new Inflights(countMax, bytesMax);
        let model: { index: number; bytes: number }[] = [];
        let index = 0;
        for (const o of ops) {
          if (o.kind === 'add') {
            if (window.full()) continue;
            index += 1;
            window.add(index, o.bytes);
            model.push({ index, bytes: o.bytes });
          } else if (o.kind === 'free') {
            model = model.filter((m) => m.index > index - o.back);
            window.freeLE(index - o.back);
          } else if (o.kind === 'freeFirst') {
            model.shift();
            window.freeFirstOne();
          } else {
            model = [];
            window.reset();
          }
          const bytes = model.reduce((sum, m) => sum + m.bytes, 0);
          assert.equal(window.count, model.length);
          assert.equal(window.bytes, bytes);
          assert.equal(window.full(), model.length >= countMax || bytes >= bytesMax);
        }
      }));
  });
});

describe('raft quorum', () => {
  it('majorityMatchIndex is the largest index a majority has reached', () => {
    fc.assert(fc.property(fc.array(fc.nat(50), { minLength: 1, maxLength: 7 }), (matches) => {
      const index = majorityMatchIndex(matches);
      const majority = Math.floor(matches.length / 2) + 1;
      assert.ok(matches.filter((m) => m >= index).length >= majority);
      assert.ok(matches.filter((m) => m >= index + 1).length < majority);
    }));
  });

  it('voteOutcome wins with a majority of grants and loses with a majority of rejections', () => {
    const voters = ['a', 'b', 'c', 'd', 'e'].map(asNodeId);
    const votes = (granted: string[], rejected: string[]): Map<ReturnType<typeof asNodeId>,
      boolean> => new Map([...granted.map((v) => [asNodeId(v), true] as const),
      ...rejected.map((v) => [asNodeId(v), false] as const)]);
    assert.equal(voteOutcome(voters, votes(['a', 'b'], ['c'])), 'pending');
    assert.equal(voteOutcome(voters, votes(['a', 'b', 'c'], [])), 'won');
    assert.equal(voteOutcome(voters, votes(['a'], ['b', 'c', 'd'])), 'lost');
    assert.equal(voteOutcome(voters, votes(['a', 'b', 'x', 'y'], [])), 'pending',
      'votes of non-voters do not count');
  });
});

describe('raft entry cache', () => {
  const entry = (index: number, size: number): Entry => ({
    index: asLogIndex(index), term: asTerm(1), type: 'normal', data: new Uint8Array(size),
  });

  it('holds exactly what a model of appends, evictions, truncations and releases holds', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 400 }),
      fc.array(fc.oneof(
        fc.record({ append: fc.array(fc.nat(60), { minLength: 1, maxLength: 4 }) }),
        // Enough evictions to reach the compaction of the evicted prefix (after 1,024).
        fc.record({ appendMany: fc.integer({ min: 1, max: 1500 }) }),
        fc.record({ truncateBack: fc.nat(6) }),
        fc.record({ releaseBack: fc.nat(8) }),
      ), { maxLength: 40 }), (bytesMax, ops) => {
        const cache = new EntryCache(bytesMax);
        // The model: what the cache holds, oldest first (it always ends at `last` or is empty).
        let model: Entry[] = [];
        let last = 0;
        const modelBytes = (): number => model.reduce((n, e) => n + entrySizeBytes(e), 0);
        const appendToModel = (entries: Entry[]): void => {
          model.push(...entries);
          while (model.length > 0 && modelBytes() > bytesMax) model.shift();
        };
        for (const o of ops) {
          if ('releaseBack' in o) {
            cache.releaseThrough(last - o.releaseBack);
            model = model.filter((e) => e.index > last - o.releaseBack);
          } else if ('append' in o) {
            const entries = o.append.map((size, i) => entry(last + 1 + i, size));
            cache.append(entries);
            appendToModel(entries);
            last += o.append.length;
          } else if ('appendMany' in o) {
            for (let i = 0; i < o.appendMany; i++) {
              const one = [entry(last + 1 + i, i % 7)];
              cache.append(one);
              appendToModel(one);
            }
            last += o.appendMany;
          } else {
            last = Math.max(0, last - o.truncateBack);
            cache.truncateFrom(last + 1);
            model = model.filter((e) => e.index <= last);
          }
          assert.ok(cache.bytes <= bytesMax);
          assert.equal(cache.bytes, modelBytes());
          assert.equal(cache.firstIndex(), model[0]?.index);
          assert.equal(cache.lastIndex(), model[model.length - 1]?.index);
          for (const e of model) assert.equal(cache.get(e.index), e);
          const first = model[0]?.index ?? last + 1;
          assert.equal(cache.get(first - 1), undefined);
          assert.equal(cache.get(last + 1), undefined);
        }
      }));
  });

  it('lets go of an evicted entry at once', async () => {
    // A cache of two 1 KiB entries; the first one is evicted by the third and must then be
    // collectable (it once stayed referenced until a thousand evictions had piled up).
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const cache = new EntryCache(2 * (1024 + ENTRY_OVERHEAD_BYTES));
    const entry = (i: number): Entry => ({
      index: asLogIndex(i),
      term: asTerm(1),
      type: 'normal',
      data: new Uint8Array(1024),
    });
    let first: Entry | undefined = entry(1);
    const evicted = new WeakRef(first.data);
    cache.append([first]);
    first = undefined;
    cache.append([entry(2)]);
    cache.append([entry(3)]);
    assert.equal(cache.get(1), undefined);
    // A WeakRef target stays alive until the current job ends.
    await new Promise((r) => setImmediate(r));
    gc();
    assert.equal(evicted.deref(), undefined);
    assert.equal(cache.get(3)?.index, 3);
  });

  it('lets go of a released entry at once, whatever room is left', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const cache = new EntryCache(1 << 20);
    let first: Entry | undefined = entry(1, 1024);
    const released = new WeakRef(first.data);
    cache.append([first, entry(2, 1024)]);
    first = undefined;
    cache.releaseThrough(1);
    assert.equal(cache.firstIndex(), 2);
    assert.equal(cache.bytes, 1024 + ENTRY_OVERHEAD_BYTES);
    await new Promise((r) => setImmediate(r));
    gc();
    assert.equal(released.deref(), undefined);
    cache.releaseThrough(5);
    assert.equal(cache.firstIndex(), undefined);
    assert.equal(cache.bytes, 0);
  });
});
