// Checks the key index files (KeyIndex) on a simulated disk against a plain list model: every
// message indexed is a candidate for each of its keys (oldest first, no duplicates, within the
// position and time bounds asked) and for its id (the newest holder first), through sealed
// files, hash collisions, flushes, reopens and crashes in every mode, after which the owner adds
// again what the checkpoint does not cover, as MessageStore does. Also: the header and chain
// checks, retention by whole files, and the reset to zero.
import fc from 'fast-check';
import { strict as assert } from 'node:assert';
import { silentLogger } from '../../src/common/logger';
import {
  KEY_INDEX_ENTRY_BYTES,
  KEY_INDEX_HEADER_BYTES,
  KeyIndex,
  type KeyIndexOptions,
  idHash,
  keyHash,
} from '../../src/store/key-index';
import { MetaKeys } from '../../src/store/meta';
import type { CrashMode } from '../../src/sim/sim-disk';
import { fcParams } from '../fc-params';
import { SimMachine } from './sim-machine';

const DIR = '/ki';
const T0_MS = 1_700_000_000_000;

interface Msg {
  /** The Raft entry it belongs to (one message per entry here). */
  index: number;
  topic: string;
  keys: string[];
  id: string;
  position: number;
}

class Machine extends SimMachine {
  ki!: KeyIndex;
  rebuilt = false;

  async open(options: Partial<KeyIndexOptions>): Promise<void> {
    const inc = this.incarnation();
    const r = await KeyIndex.open(inc.disk, DIR, inc.meta, silentLogger(), options);
    this.ki = r.index;
    this.rebuilt = r.recovery.rebuilt;
  }
}

function add(ki: KeyIndex, m: Msg): void {
  ki.add(m.topic, m.keys, m.id, m.position, 100, T0_MS + m.position);
  ki.covered(m.index);
}

/** Adds messages 0..count-1 of topic `t` with ids `i<n>`, no keys, at `step * n`. */
function addIds(ki: KeyIndex, count: number, step: number): void {
  for (let i = 0; i < count; i++) {
    add(ki, { index: i + 1, topic: 't', keys: [], id: `i${i}`, position: step * i });
  }
}

/** Positions the model says `topic`/`key` has at or after `from`, oldest first. */
function modelKey(msgs: readonly Msg[], topic: string, key: string, from = 0): number[] {
  return msgs.filter((m) => m.topic === topic && m.keys.includes(key) && m.position >= from)
    .map((m) => m.position);
}

async function checkAgainstModel(ki: KeyIndex, msgs: readonly Msg[]): Promise<void> {
  const keys = new Set(msgs.flatMap((m) => m.keys.map((k) => `${m.topic}/${k}`)));
  for (const tk of keys) {
    const [topic, key] = tk.split('/') as [string, string];
    const got = (await ki.keyCandidates(topic, key)).map((l) => l.position);
    assert.deepEqual(got, [...new Set(got)].sort((a, b) => a - b), 'ascending, distinct');
    for (const p of modelKey(msgs, topic, key)) assert.ok(got.includes(p), `${tk} at ${p}`);
  }
  const lastById = new Map<string, Msg>();
  for (const m of msgs) lastById.set(m.id, m);
  for (const [id, m] of lastById) {
    // The matcher stands for the store's check of the message: it knows where the id lies.
    const holders = new Set(msgs.filter((o) => o.id === id).map((o) => o.position));
    const got = await findId(ki, id, holders);
    assert.equal(got, m.position, `id ${id}: the newest holder`);
  }
}

/** What `findId` accepts among the positions `holders` (as the store's message check would). */
function findId(ki: KeyIndex, id: string, holders: ReadonlySet<number>, sinceMs = 0) {
  return ki.findId(id, { beginTimestampMs: sinceMs }, (l) =>
    Promise.resolve(holders.has(l.position) ? l.position : undefined));
}

describe('key index files', () => {
  it('finds every key and id the model holds, through sealing, reopens and crashes', async () => {
    const step = fc.record({
      count: fc.integer({ min: 1, max: 30 }),
      then: fc.constantFrom('nothing', 'flush', 'reopen', 'crash'),
      mode: fc.constantFrom<CrashMode>('lose', 'tear', 'keep'),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.integer(),
        fc.record({
          entriesPerFile: fc.integer({ min: 1, max: 40 }),
          slotCount: fc.constantFrom(1, 4, 64),
          flushEntriesMin: fc.integer({ min: 1, max: 50 }),
        }),
        fc.array(step, { minLength: 1, maxLength: 8 }),
        async (seed, opts, steps) => {
          const options = { ...opts, pendingEntriesMax: 1_000_000 };
          const node = new Machine(seed);
          await node.open(options);
          const msgs: Msg[] = [];
          let n = 0;
          const produce = (count: number): void => {
            for (let k = 0; k < count; k++, n++) {
              const m: Msg = {
                index: n + 1,
                topic: n % 3 === 0 ? 'a' : 'b',
                keys: n % 4 === 0 ? [] : [`k${n % 7}`, `k${n % 7}`, `u${n}`],
                id: `id-${n % 11}`,
                position: 1000 + 50 * n,
              };
              msgs.push(m);
              add(node.ki, m);
            }
            node.ki.kick();
          };
          for (const s of steps) {
            produce(s.count);
            if (s.then === 'flush') await node.ki.flush();
            if (s.then === 'reopen' || s.then === 'crash') {
              if (s.then === 'reopen') await node.ki.close();
              node.crash(s.then === 'reopen' ? 'keep' : s.mode);
              await node.open(options);
              assert.equal(node.rebuilt, false, 'the files agree with the checkpoint');
              // The owner adds again what the checkpoint does not cover.
              for (const m of msgs) if (m.index > node.ki.indexedIndex) add(node.ki, m);
            }
            await checkAgainstModel(node.ki, msgs);
          }
          await node.ki.close();
        },
      ),
      fcParams(40),
    );
  });

  it('answers queries that race adds, background writes, seals and retention', async () => {
    // Queries take no lock: each must see every message added before it began (and nothing a
    // retention that started before it removed), at any interleaving of microtasks.
    await fc.assert(
      fc.asyncProperty(
        fc.integer(),
        fc.record({
          entriesPerFile: fc.integer({ min: 1, max: 20 }),
          slotCount: fc.constantFrom(1, 2, 16),
          flushEntriesMin: fc.integer({ min: 1, max: 10 }),
        }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 5 })),
          { minLength: 20, maxLength: 120 }),
        fc.constantFrom<CrashMode>('lose', 'tear', 'keep'),
        async (seed, opts, ops, mode) => {
          const options = { ...opts, pendingEntriesMax: 40 };
          const node = new Machine(seed);
          await node.open(options);
          const msgs: Msg[] = [];
          const pending: Promise<unknown>[] = [];
          let minPos = 0;
          for (let i = 0; i < ops.length; i++) {
            const [op, yields] = ops[i] as [number, number];
            const m: Msg = { index: i + 1, topic: 't', keys: [`k${i % 5}`], id: `id-${i % 9}`,
              position: 100 * (i + 1) };
            msgs.push(m);
            add(node.ki, m);
            node.ki.kick(op === 9);
            const seen = msgs.filter((x) => x.position >= minPos);
            if (op === 0) {
              const key = `k${i % 5}`;
              const want = seen.filter((x) => x.keys.includes(key)).map((x) => x.position);
              pending.push(node.ki.keyCandidates('t', key, { fromPosition: minPos }).then((got) => {
                const ps = got.map((l) => l.position);
                for (const p of want) assert.ok(ps.includes(p), `key ${key} at ${p}`);
              }));
            } else if (op === 1) {
              const holders = new Set(seen.filter((x) => x.id === m.id).map((x) => x.position));
              pending.push(findId(node.ki, m.id, holders).then((got) => {
                assert.equal(got, m.position, `id ${m.id}`);
              }));
            } else if (op === 2) {
              await node.ki.room();
            } else if (op === 3) {
              minPos = Math.max(minPos, 100 * (i + 1 - 15));
              pending.push(node.ki.removeBefore(minPos));
            }
            for (let k = 0; k < yields; k++) await Promise.resolve();
          }
          await Promise.all(pending);
          await node.ki.flush();
          node.crash(mode);
          await node.open(options);
          assert.equal(node.rebuilt, false);
          for (const m of msgs) if (m.index > node.ki.indexedIndex) add(node.ki, m);
          await checkAgainstModel(node.ki, msgs.filter((x) => x.position >= minPos));
          await node.ki.close();
        },
      ),
      fcParams(60),
    );
  });

  it('bounds candidates by position and store time', async () => {
    const node = new Machine(1);
    await node.open({ entriesPerFile: 5, slotCount: 2, flushEntriesMin: 3 });
    for (let i = 0; i < 20; i++) {
      add(node.ki, { index: i + 1, topic: 't', keys: ['k'], id: `i${i}`, position: 100 * i });
    }
    await node.ki.flush();
    const all = await node.ki.keyCandidates('t', 'k');
    assert.deepEqual(all.map((l) => l.position).filter((p) => p % 100 === 0).length, 20);
    const from = await node.ki.keyCandidates('t', 'k', { fromPosition: 1500 });
    assert.ok(from.every((l) => l.position >= 1500) && from.length >= 5);
    const timed = await node.ki.keyCandidates('t', 'k', {
      beginTimestampMs: T0_MS + 300,
      endTimestampMs: T0_MS + 500,
    });
    assert.deepEqual(timed.map((l) => l.storeTimestampMs - T0_MS).filter((t) => t % 100 === 0),
      [300, 400, 500]);
    assert.ok(timed.every((l) => l.storeTimestampMs >= T0_MS + 300
      && l.storeTimestampMs <= T0_MS + 500));
    await node.ki.close();
  });

  it('removes whole files before a position, oldest first, and resets to zero', async () => {
    const node = new Machine(2);
    await node.open({ entriesPerFile: 4, slotCount: 4, flushEntriesMin: 1 });
    addIds(node.ki, 20, 10);
    await node.ki.flush();
    assert.equal(node.ki.fileCount(), 5);
    // Files hold positions 0-30, 40-70, 80-110, ...: two lie wholly before 85.
    assert.equal(await node.ki.removeBefore(85), 2);
    assert.equal((await node.disk.list(DIR)).length, 3);
    assert.equal(await findId(node.ki, 'i1', new Set([10])), undefined);
    assert.equal(await findId(node.ki, 'i19', new Set([190])), 190);
    // Files stored before `sinceMs` are not read: i19 is in the newest file, i12 is not.
    assert.equal(await findId(node.ki, 'i19', new Set([190]), T0_MS + 160), 190);
    assert.equal(await findId(node.ki, 'i12', new Set([120]), T0_MS + 160), undefined);
    await node.ki.close();
    node.crash('keep');
    await node.open({ entriesPerFile: 4, slotCount: 4 });
    assert.equal(node.rebuilt, false);
    assert.equal(await findId(node.ki, 'i12', new Set([120])), 120);
    await node.ki.resetTo0();
    assert.deepEqual(await node.disk.list(DIR), []);
    assert.equal(node.ki.indexedIndex, 0);
    assert.equal(await findId(node.ki, 'i12', new Set([120])), undefined);
    await node.ki.close();
  });

  it('rebuilds when the files do not match the checkpoint', async () => {
    const node = new Machine(3);
    const options = { entriesPerFile: 4, slotCount: 4, flushEntriesMin: 1 };
    await node.open(options);
    addIds(node.ki, 10, 10);
    await node.ki.close();
    // A middle file gone: the rest is not contiguous.
    const names = (await node.disk.list(DIR)).sort();
    await node.disk.remove(`${DIR}/${names[1] as string}`);
    node.crash('keep');
    await node.open(options);
    assert.equal(node.rebuilt, true);
    assert.equal(node.ki.indexedIndex, 0);
    assert.deepEqual(await node.disk.list(DIR), []);
    const cp = await node.meta.get(MetaKeys.keyIndexFiles);
    assert.deepEqual(cp && [...cp], new Array(24).fill(0), 'a zero checkpoint, stored first');
    await node.ki.close();
  });

  it('refuses a chain that does not go back (a corrupt entry)', async () => {
    const node = new Machine(4);
    const options = { entriesPerFile: 8, slotCount: 1, flushEntriesMin: 1 };
    await node.open(options);
    addIds(node.ki, 8, 10);
    add(node.ki, { index: 9, topic: 't', keys: [], id: 'i8', position: 80 });
    await node.ki.close();
    // Entry 5 of the sealed first file made to point at itself.
    const f = await node.disk.open(`${DIR}/${'0'.repeat(20)}`, false);
    const prev = Buffer.alloc(4);
    prev.writeUInt32BE(5);
    await f.writev([prev], KEY_INDEX_HEADER_BYTES + 4 * KEY_INDEX_ENTRY_BYTES + 4);
    await f.sync();
    await f.close();
    node.crash('keep');
    await node.open(options);
    await assert.rejects(findId(node.ki, 'i0', new Set([0])), /chain/);
  });

  it('keeps what the checkpoint covers when a crash tears or loses a seal', async () => {
    const options = { entriesPerFile: 4, slotCount: 2, flushEntriesMin: 1000 };
    for (const mode of ['tear', 'keep'] as const) {
      const node = new Machine(5);
      await node.open(options);
      for (let i = 1; i <= 2; i++) {
        add(node.ki, { index: i, topic: 't', keys: [`k${i}`], id: `i${i}`, position: 100 * i });
      }
      await node.ki.flush(); // the first file is full: four entries, checkpoint {2, 4}
      await node.meta.batch([{ type: 'put', key: 'x', value: Buffer.from('x') }], { sync: true });
      add(node.ki, { index: 3, topic: 't', keys: [], id: 'i3', position: 300 });
      // The seal (slot table and trailer) is written; its fdatasync never happens.
      node.disk.setHook((op, p) => {
        if (op === 'sync' && p.endsWith(`/${'0'.repeat(20)}`)) throw new Error('crash');
      });
      await assert.rejects(node.ki.flush());
      node.disk.setHook(undefined);
      node.crash(mode);
      await node.open(options);
      assert.equal(node.rebuilt, false, `${mode}: the checkpointed entries were durable`);
      assert.equal(node.ki.indexedIndex, 2);
      // A process crash left the seal in the page cache: open syncs it before trusting it, so
      // checkpoints built on it survive a later power loss.
      add(node.ki, { index: 3, topic: 't', keys: [], id: 'i3', position: 300 });
      await node.ki.flush();
      await node.meta.batch([{ type: 'put', key: 'x', value: Buffer.from('x') }], { sync: true });
      node.crash('lose');
      await node.open(options);
      assert.equal(node.rebuilt, false, `${mode}: after a power loss`);
      assert.equal(await findId(node.ki, 'i3', new Set([300])), 300);
      assert.equal(await findId(node.ki, 'i1', new Set([100])), 100);
      await node.ki.close();
    }
  });

  it('does not trust a seal the checkpoint does not reach past (its slots may be lost)', async () => {
    // The checkpoint ends exactly at a full file whose entries were synced; its seal (slot table
    // and trailer) was written but not synced, and a power loss kept the trailer's page but not
    // a page of the slot table (writeback has no order). Emulated: a process crash, then the
    // first slot page overwritten, with zeros (what it held) or garbage.
    for (const fill of [0, 0xff]) {
      const node = new Machine(7);
      const options = { entriesPerFile: 8, slotCount: 2048, flushEntriesMin: 1000 };
      await node.open(options);
      for (let i = 1; i <= 4; i++) {
        add(node.ki, { index: i, topic: 't', keys: [`k${i}`], id: `i${i}`, position: 100 * i });
      }
      await node.ki.flush();
      add(node.ki, { index: 5, topic: 't', keys: ['k5'], id: 'i5', position: 500 });
      node.disk.setHook((op, p) => {
        if (op === 'sync' && p.endsWith(`/${'0'.repeat(20)}`)) throw new Error('crash');
      });
      await assert.rejects(node.ki.flush());
      node.disk.setHook(undefined);
      node.crash('keep');
      node.disk.corrupt(`${DIR}/${'0'.repeat(20)}`, KEY_INDEX_HEADER_BYTES + 8 * KEY_INDEX_ENTRY_BYTES,
        Buffer.alloc(4096, fill));
      await node.open(options);
      assert.equal(node.rebuilt, false);
      for (let i = 1; i <= 4; i++) {
        const got = await node.ki.keyCandidates('t', `k${i}`);
        assert.ok(got.some((l) => l.position === 100 * i), `k${i} (slot page ${fill})`);
      }
      await node.ki.close();
    }
  });

  it('tells files retention removed from files that were lost', async () => {
    const options = { entriesPerFile: 2, slotCount: 2, flushEntriesMin: 1 };
    const node = new Machine(6);
    await node.open(options);
    addIds(node.ki, 8, 10);
    await node.ki.flush();
    // Retention stores the new first entry, then a crash comes before the files are deleted.
    node.disk.setHook((op) => {
      if (op === 'remove') throw new Error('crash');
    });
    await assert.rejects(node.ki.removeBefore(25));
    node.disk.setHook(undefined);
    node.crash('keep');
    await node.open(options);
    assert.equal(node.rebuilt, false);
    // Four files of two entries; the first alone lies wholly before 25.
    assert.deepEqual((await node.disk.list(DIR)).length, 3, 'the removal finished on open');
    assert.equal(await findId(node.ki, 'i7', new Set([70])), 70);
    await node.ki.close();
    // Every file gone while the checkpoint says they hold entries: rebuilt, not trusted.
    for (const name of await node.disk.list(DIR)) await node.disk.remove(`${DIR}/${name}`);
    node.crash('keep');
    await node.open(options);
    assert.equal(node.rebuilt, true);
    assert.equal(node.ki.indexedIndex, 0);
    await node.ki.close();
  });

  it('hashes keys by topic and kind', () => {
    assert.notEqual(keyHash('a', 'b'), keyHash('ab', ''));
    assert.notEqual(keyHash('t', 'x'), idHash('x'));
    assert.equal(keyHash('t', 'k'), keyHash('t', 'k'));
    assert.ok(Number.isInteger(idHash('ü∑')) && idHash('ü∑') >= 0);
  });
});
