// Checks both MetaStore implementations with one behavioural suite: point reads, atomic
// batches, scans in LevelDB's byte order with prefix, gte and limit (including keys whose UTF-8
// bytes sort above U+FFFF and prefixes that end in high bytes), random batches and scans against
// a Map model, and typed errors after close. LevelMetaStore runs in fresh directories under the
// OS temp dir (removed afterwards) and is also checked across close and reopen, with a locked
// directory and with a failing write. MemMetaStore's power-loss model is checked with fast-check
// command sequences (batches with random sync flags, crashes in each mode) against a model that
// tracks the synced state and the unsynced batches; its failure hook is checked directly.
import fc from 'fast-check';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { isRaftmqError, RaftmqError } from '../../src/common/errors';
import { createPrng } from '../../src/common/prng';
import { LevelMetaStore, prefixUpperBound } from '../../src/store/level-meta-store';
import { compareUtf8, MemMetaStore } from '../../src/store/mem-meta-store';
import type { MetaBatchOp, MetaStore } from '../../src/store/meta';

const enc = (s: string): Uint8Array => Buffer.from(s, 'utf8');
const dec = (b: Uint8Array | undefined): string | undefined =>
  b === undefined ? undefined : Buffer.from(b).toString('utf8');
const put = (key: string, value: string): MetaBatchOp => ({ type: 'put', key, value: enc(value) });
const del = (key: string): MetaBatchOp => ({ type: 'del', key });
const byBytes = (a: string, b: string): number => Buffer.compare(enc(a), enc(b));

/** Characters whose UTF-8 and UTF-16 orders disagree, plus NUL, the key separator. */
const KEY_CHARS = ['a', 'b', '\0', '\x01', 'é', '\u07ff', '\u0800', '\uffff', '😀', '\u{10ffff}'];
const keyArb = fc.string({ unit: fc.constantFrom(...KEY_CHARS), minLength: 1, maxLength: 4 });

async function scanText(store: MetaStore, prefix: string, gte?: string, limit?: number) {
  const entries = await store.scan(prefix, { gte, limit });
  return entries.map(([k, v]): [string, string | undefined] => [k, dec(v)]);
}

async function rejectsWith(promise: Promise<unknown>, code: RaftmqError['code']): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRaftmqError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  });
}

/** Expected scan of a model: keys with `prefix`, at or after `gte`, in byte order. */
function modelScan(model: Map<string, string>, prefix: string, gte?: string, limit?: number) {
  const keys = [...model.keys()]
    .filter((k) => k.startsWith(prefix) && (gte === undefined || byBytes(k, gte) >= 0))
    .sort(byBytes);
  return keys.slice(0, limit ?? keys.length).map((k): [string, string | undefined] =>
    [k, model.get(k)]);
}

interface StoreFactory {
  /** A fresh, empty, open store. */
  create(): Promise<MetaStore>;
}

function behaviourSuite(name: string, factory: () => StoreFactory): void {
  describe(`${name} (MetaStore behaviour)`, () => {
    let store: MetaStore;
    beforeEach(async () => {
      store = await factory().create();
    });
    afterEach(async () => {
      await store.close();
    });

    it('reads what a batch wrote, deletes, and answers undefined for absent keys', async () => {
      await store.batch([put('a', '1'), put('b', '2')], { sync: false });
      assert.equal(dec(await store.get('a')), '1');
      assert.equal(dec(await store.get('b')), '2');
      assert.equal(await store.get('c'), undefined);
      await store.batch([del('a'), del('never-there')], { sync: true });
      assert.equal(await store.get('a'), undefined);
      assert.equal(dec(await store.get('b')), '2');
    });

    it('applies a batch in op order (the last op on a key wins); an empty batch is a no-op',
      async () => {
        await store.batch([put('k', 'x'), del('k'), put('k', 'y'), put('j', '1'), del('j')],
          { sync: true });
        assert.equal(dec(await store.get('k')), 'y');
        assert.equal(await store.get('j'), undefined);
        await store.batch([], { sync: true });
        assert.deepEqual(await scanText(store, ''), [['k', 'y']]);
      });

    it('builds a batch op by op with batchWith: in order, values copied, nothing on a throw',
      async () => {
        assert.ok(store.batchWith !== undefined);
        const scratch = Buffer.alloc(1);
        await store.batchWith((b) => {
          for (const [key, v] of [['x', 1], ['y', 2], ['x', 3]] as const) {
            scratch[0] = v;
            b.put(key, scratch);
          }
          b.del('y');
          scratch[0] = 9;
          b.put('z', scratch);
        }, { sync: true });
        assert.deepEqual((await store.scan('')).map(([k, v]) => [k, [...v]]),
          [['x', [3]], ['z', [9]]]);
        assert.throws(() => store.batchWith?.((b) => {
          b.put('w', scratch);
          throw new Error('build failed');
        }, { sync: false }), /build failed/);
        await store.batchWith((b) => b.del('never'), { sync: false });
        await store.batchWith(() => undefined, { sync: false });
        assert.deepEqual((await store.scan('')).map(([k]) => k), ['x', 'z']);
      });

    it('returns copies: mutating a value given or read does not change the store', async () => {
      const value = enc('abc');
      await store.batch([{ type: 'put', key: 'v', value }], { sync: false });
      value[0] = 0x7a;
      const read = await store.get('v');
      assert.ok(read);
      read[1] = 0x7a;
      assert.equal(dec(await store.get('v')), 'abc');
    });

    it('scans a prefix in UTF-8 byte order, not UTF-16 order', async () => {
      const inside = ['p\0', 'p\0a', 'p\0\0', 'p\0é', 'p\0\u07ff', 'p\0\u0800', 'p\0\uffff',
        'p\0😀', 'p\0\u{10ffff}', 'p\0\uffff\uffff'];
      const outside = ['p', 'p\x01', 'o\uffff', 'q', 'p\x01\0', 'o😀'];
      await store.batch([...inside, ...outside].map((k) => put(k, k)), { sync: false });
      const expected = [...inside].sort(byBytes);
      assert.deepEqual((await scanText(store, 'p\0')).map(([k]) => k), expected);
      // JavaScript's own order would put U+FFFF after the astral characters.
      assert.ok(expected.indexOf('p\0\uffff') < expected.indexOf('p\0😀'));
    });

    it('bounds a prefix correctly when it ends in high bytes', async () => {
      const prefixes = ['a\u007f', 'a\u00ff', 'a\u07ff', 'a\uffff', 'a😀', 'a\u{10ffff}', '\u{10ffff}'];
      const keys = new Set<string>(['a', 'b', 'a\u0080', 'a\u0100', 'a\u0800', 'a\u{10000}']);
      for (const p of prefixes) {
        for (const tail of ['', '\0', 'z', '\uffff', '\u{10ffff}', '\uffff\uffff']) keys.add(p + tail);
      }
      await store.batch([...keys].map((k) => put(k, k)), { sync: false });
      const model = new Map([...keys].map((k) => [k, k]));
      for (const p of prefixes) {
        assert.deepEqual(await scanText(store, p), modelScan(model, p), `prefix ${JSON.stringify(p)}`);
      }
    });

    it('honours gte (clamped to the prefix) and limit', async () => {
      const keys = ['x\0a', 'x\0b', 'x\0c', 'x\0😀', 'w', 'y'];
      await store.batch(keys.map((k) => put(k, k)), { sync: false });
      const names = async (gte?: string, limit?: number) =>
        (await scanText(store, 'x\0', gte, limit)).map(([k]) => k);
      assert.deepEqual(await names('a'), ['x\0a', 'x\0b', 'x\0c', 'x\0😀']);
      assert.deepEqual(await names('x\0b'), ['x\0b', 'x\0c', 'x\0😀']);
      assert.deepEqual(await names('x\0bb', 1), ['x\0c']);
      assert.deepEqual(await names('x\0\uffff'), ['x\0😀']);
      assert.deepEqual(await names('x\x01'), []);
      assert.deepEqual(await names('z'), []);
      assert.deepEqual(await names(undefined, 2), ['x\0a', 'x\0b']);
      assert.deepEqual(await names(undefined, 0), []);
    });

    it('matches a Map model under random batches and scans', async () => {
      let run = 0;
      const opArb = fc.oneof(
        fc.record({ type: fc.constant('put' as const), key: keyArb, value: fc.string() }),
        fc.record({ type: fc.constant('del' as const), key: keyArb }),
      );
      const stepArb = fc.oneof(
        fc.record({ batch: fc.array(opArb, { maxLength: 6 }), sync: fc.boolean() }),
        fc.record({
          prefix: fc.string({ unit: fc.constantFrom(...KEY_CHARS), maxLength: 2 }),
          gte: fc.option(keyArb, { nil: undefined }),
          limit: fc.option(fc.nat(5), { nil: undefined }),
        }),
      );
      await fc.assert(fc.asyncProperty(fc.array(stepArb, { maxLength: 20 }), async (steps) => {
        const ns = `run${run++}\0`;
        const model = new Map<string, string>();
        for (const step of steps) {
          if ('batch' in step) {
            await store.batch(step.batch.map((op) =>
              op.type === 'put' ? put(ns + op.key, op.value) : del(ns + op.key)), step);
            for (const op of step.batch) {
              if (op.type === 'put') model.set(ns + op.key, op.value);
              else model.delete(ns + op.key);
            }
          } else {
            const gte = step.gte === undefined ? undefined : ns + step.gte;
            assert.deepEqual(await scanText(store, ns + step.prefix, gte, step.limit),
              modelScan(model, ns + step.prefix, gte, step.limit));
          }
        }
      }), { numRuns: 60 });
    });

    it('rejects every call after close with STORE_CLOSED; close is idempotent', async () => {
      await store.batch([put('a', '1')], { sync: true });
      await store.close();
      await store.close();
      await rejectsWith(store.get('a'), 'STORE_CLOSED');
      await rejectsWith(store.scan(''), 'STORE_CLOSED');
      await rejectsWith(store.batch([put('b', '2')], { sync: false }), 'STORE_CLOSED');
    });
  });
}

describe('meta stores', () => {
  let tmpRoot = '';
  let dirCount = 0;
  const newDir = () => path.join(tmpRoot, `db-${dirCount++}`);

  before(async () => {
    tmpRoot = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-meta-'));
  });
  after(async () => {
    await fs.rm(tmpRoot, { recursive: true, force: true });
  });

  behaviourSuite('LevelMetaStore', () => ({ create: () => LevelMetaStore.open(newDir()) }));
  behaviourSuite('MemMetaStore', () => ({ create: () => Promise.resolve(new MemMetaStore()) }));

  describe('LevelMetaStore', () => {
    it('keeps synced and unsynced batches across close and reopen', async () => {
      const dir = newDir();
      const first = await LevelMetaStore.open(dir);
      await first.batch([put('r\0hard', 'term 3'), put('t\0orders', 'cfg')], { sync: true });
      await first.batch([put('o\0g\0t', '7'), del('t\0orders')], { sync: false });
      await first.close();
      const second = await LevelMetaStore.open(dir);
      try {
        assert.deepEqual(await scanText(second, ''), [['o\0g\0t', '7'], ['r\0hard', 'term 3']]);
      } finally {
        await second.close();
      }
    });

    it('lets a batch in flight finish before closing', async () => {
      const dir = newDir();
      const store = await LevelMetaStore.open(dir);
      const pending = store.batch([put('late', 'yes')], { sync: true });
      await store.close();
      await pending;
      const again = await LevelMetaStore.open(dir);
      try {
        assert.equal(dec(await again.get('late')), 'yes');
      } finally {
        await again.close();
      }
    });

    it('fails to open a locked directory with STORE_FATAL', async () => {
      const dir = newDir();
      const holder = await LevelMetaStore.open(dir);
      try {
        await assert.rejects(LevelMetaStore.open(dir), (err: unknown) => {
          assert.ok(isRaftmqError(err, 'STORE_FATAL'));
          assert.ok(err.details.levelCodes);
          assert.ok(err.cause !== undefined);
          return true;
        });
      } finally {
        await holder.close();
      }
    });

    it('writes a batch of thousands of interleaved puts and deletes in op order', async () => {
      const dir = newDir();
      const store = await LevelMetaStore.open(dir);
      const model = new Map<string, string>();
      const ops: MetaBatchOp[] = [];
      const prng = createPrng(77);
      for (let i = 0; i < 5000; i++) {
        const key = `k\0${prng.nextInt(0, 700)}`;
        if (prng.chance(0.3)) {
          ops.push(del(key));
          model.delete(key);
        } else {
          ops.push(put(key, `v${i}`));
          model.set(key, `v${i}`);
        }
      }
      await store.batch(ops, { sync: false });
      assert.deepEqual(await scanText(store, 'k\0'), modelScan(model, 'k\0'));
      await store.close();
      const again = await LevelMetaStore.open(dir);
      try {
        assert.deepEqual(await scanText(again, 'k\0'), modelScan(model, 'k\0'));
      } finally {
        await again.close();
      }
    });

    it('writes nothing of a batch that holds an invalid op', async () => {
      const store = await LevelMetaStore.open(newDir());
      try {
        await store.batch([put('a', '1')], { sync: false });
        const bad: MetaBatchOp[] = [put('a', '2'), put('b', '2'), put('\ud800', 'lone'), del('a')];
        assert.throws(() => store.batch(bad, { sync: false }), /lone surrogate/);
        const noValue: MetaBatchOp[] = [put('a', '3'), { type: 'put', key: 'c' }];
        assert.throws(() => store.batch(noValue, { sync: false }), /needs a value/);
        assert.deepEqual(await scanText(store, ''), [['a', '1']]);
      } finally {
        await store.close();
      }
    });

    it('turns a failed write into STORE_FATAL and then refuses all work', async () => {
      const store = await LevelMetaStore.open(newDir());
      // Test seam: close LevelDB underneath the store, so the next write fails as IO would.
      await (store as unknown as { db: { close(): Promise<void> } }).db.close();
      await assert.rejects(store.batch([put('vote', 'n1')], { sync: true }), (err: unknown) => {
        assert.ok(isRaftmqError(err, 'STORE_FATAL'));
        assert.ok(err.fatal && err.cause !== undefined);
        return true;
      });
      await rejectsWith(store.get('vote'), 'STORE_FATAL');
      await rejectsWith(store.batch([put('x', 'y')], { sync: false }), 'STORE_FATAL');
      await store.close();
      await rejectsWith(store.get('vote'), 'STORE_CLOSED');
    });

    it('matches a model across random batches and reopens', async () => {
      const stepArb = fc.oneof(
        fc.record({ batch: fc.array(fc.tuple(keyArb, fc.option(fc.string(), { nil: undefined })),
          { maxLength: 5 }), sync: fc.boolean() }),
        fc.constant({ reopen: true as const }),
      );
      await fc.assert(fc.asyncProperty(fc.array(stepArb, { maxLength: 12 }), async (steps) => {
        const dir = newDir();
        let store = await LevelMetaStore.open(dir);
        const model = new Map<string, string>();
        try {
          for (const step of steps) {
            if ('reopen' in step) {
              await store.close();
              store = await LevelMetaStore.open(dir);
            } else {
              await store.batch(step.batch.map(([k, v]) => (v === undefined ? del(k) : put(k, v))),
                step);
              for (const [k, v] of step.batch) {
                if (v === undefined) model.delete(k);
                else model.set(k, v);
              }
            }
            assert.deepEqual(await scanText(store, ''), modelScan(model, ''));
          }
        } finally {
          await store.close();
        }
      }), { numRuns: 25 });
    });

    it('computes the exclusive upper bound of any byte prefix', () => {
      fc.assert(fc.property(
        fc.uint8Array({ maxLength: 4 }).map((b) => b.map((x) => (x % 2 === 0 ? 0xff : x))),
        fc.uint8Array({ maxLength: 6 }),
        (prefix, key) => {
          const bound = prefixUpperBound(prefix);
          const k = Buffer.from(key);
          const p = Buffer.from(prefix);
          const inRange = Buffer.compare(k, p) >= 0
            && (bound === undefined || Buffer.compare(k, bound) < 0);
          const hasPrefix = k.subarray(0, p.length).equals(p) && k.length >= p.length;
          assert.equal(inRange, hasPrefix);
        },
      ), { numRuns: 2000 });
    });
  });

  describe('MemMetaStore', () => {
    it('orders strings exactly as Buffer.compare orders their UTF-8 bytes', () => {
      const s = fc.string({ unit: 'binary', maxLength: 6 });
      fc.assert(fc.property(s, s, (a, b) => {
        assert.equal(Math.sign(compareUtf8(a, b)), Math.sign(byBytes(a, b)));
      }), { numRuns: 5000 });
    });

    it('surfaces a failing hook as a rejected promise with no effect', async () => {
      const store = new MemMetaStore();
      await store.batch([put('a', '1')], { sync: true });
      store.setHook((op) => {
        if (op !== 'batch') throw new Error(`injected ${op} failure`);
      });
      await rejectsWith(store.get('a'), 'INTERNAL');
      await rejectsWith(store.scan(''), 'INTERNAL');
      store.setHook(() => {
        throw new RaftmqError('DISK_FULL', 'injected');
      });
      await rejectsWith(store.batch([put('a', '2')], { sync: true }), 'DISK_FULL');
      // DISK_FULL is fatal: the store refuses everything until a restart.
      store.setHook(undefined);
      await rejectsWith(store.get('a'), 'STORE_FATAL');
      store.crash('keep');
      assert.equal(dec(await store.get('a')), '1');
    });

    it('wraps a failing batch hook as STORE_FATAL', async () => {
      const store = new MemMetaStore();
      store.setHook((op) => {
        if (op === 'batch') throw new Error('EIO');
      });
      await rejectsWith(store.batch([put('a', '1')], { sync: false }), 'STORE_FATAL');
      store.setHook(undefined);
      await rejectsWith(store.scan(''), 'STORE_FATAL');
    });

    it('reopens on crash after close', async () => {
      const store = new MemMetaStore();
      await store.batch([put('a', '1')], { sync: false });
      await store.close();
      await rejectsWith(store.get('a'), 'STORE_CLOSED');
      store.crash('keep');
      assert.equal(dec(await store.get('a')), '1');
      assert.equal(store.unsyncedBatchCount, 0);
    });

    it('tears the same way for the same seed', async () => {
      const build = async () => {
        const store = new MemMetaStore();
        for (let i = 0; i < 20; i++) await store.batch([put(`k${i}`, `${i}`)], { sync: i === 3 });
        store.crash('tear', createPrng(42));
        return scanText(store, '');
      };
      assert.deepEqual(await build(), await build());
    });

    it('tears at varying points, keeping whole batches', async () => {
      const survivors = new Set<number>();
      for (let seed = 0; seed < 40; seed++) {
        const store = new MemMetaStore();
        await store.batch([put('synced', 'yes')], { sync: true });
        for (let i = 0; i < 10; i++) {
          await store.batch([put(`a${i}`, 'x'), put(`b${i}`, 'x')], { sync: false });
        }
        store.crash('tear', createPrng(seed));
        const keys = (await scanText(store, '')).map(([k]) => k);
        assert.ok(keys.includes('synced'));
        const count = keys.filter((k) => k.startsWith('a')).length;
        assert.equal(keys.filter((k) => k.startsWith('b')).length, count, 'whole batches');
        for (let i = 0; i < count; i++) assert.ok(keys.includes(`a${i}`), 'a prefix of batches');
        survivors.add(count);
      }
      assert.ok(survivors.size > 3, `tear kept only ${[...survivors].join(', ')} batches`);
    });

    it('survives crashes as LevelDB would (model-based)', async () => {
      await fc.assert(fc.asyncProperty(fc.commands([
        fc.record({ ops: fc.array(fc.tuple(fc.constantFrom('a', 'b', 'c', 'd\0e', '😀'),
          fc.option(fc.string({ maxLength: 3 }), { nil: undefined })), { maxLength: 4 }),
        sync: fc.boolean() }).map(({ ops, sync }) => new BatchCommand(ops, sync)),
        fc.record({ mode: fc.constantFrom('keep' as const, 'lose' as const, 'tear' as const),
          seed: fc.integer() }).map(({ mode, seed }) => new CrashCommand(mode, seed)),
        fc.constant(new CheckCommand()),
      ], { maxCommands: 40 }), async (cmds) => {
        const setup = () => ({ model: emptyCrashModel(), real: new MemMetaStore() });
        await fc.asyncModelRun(setup, cmds);
      }), { numRuns: 150 });
    });
  });
});

type CrashMode = 'keep' | 'lose' | 'tear';
type ModelOp = readonly [string, string | undefined];

/** The model: state as of the last sync, and the batches since, oldest first. */
interface CrashModel {
  durable: Map<string, string>;
  unsynced: Array<readonly ModelOp[]>;
}

function emptyCrashModel(): CrashModel {
  return { durable: new Map(), unsynced: [] };
}

function applyModel(state: Map<string, string>, batches: ReadonlyArray<readonly ModelOp[]>) {
  const out = new Map(state);
  for (const batch of batches) {
    for (const [k, v] of batch) {
      if (v === undefined) out.delete(k);
      else out.set(k, v);
    }
  }
  return out;
}

class BatchCommand implements fc.AsyncCommand<CrashModel, MemMetaStore> {
  constructor(readonly ops: readonly ModelOp[], readonly sync: boolean) {}
  check(): boolean {
    return true;
  }
  async run(model: CrashModel, real: MemMetaStore): Promise<void> {
    await real.batch(this.ops.map(([k, v]) => (v === undefined ? del(k) : put(k, v))),
      { sync: this.sync });
    // An empty batch is a no-op, not a sync barrier (as in abstract-level).
    if (this.ops.length > 0) model.unsynced.push(this.ops);
    if (this.sync && this.ops.length > 0) {
      model.durable = applyModel(model.durable, model.unsynced);
      model.unsynced = [];
    }
    assert.equal(real.unsyncedBatchCount, model.unsynced.length);
    const visible = applyModel(model.durable, model.unsynced);
    assert.deepEqual(await scanText(real, ''), modelScan(visible, ''));
  }
  toString(): string {
    return `batch(${JSON.stringify(this.ops)}, sync=${this.sync})`;
  }
}

class CrashCommand implements fc.AsyncCommand<CrashModel, MemMetaStore> {
  constructor(readonly mode: CrashMode, readonly seed: number) {}
  check(): boolean {
    return true;
  }
  async run(model: CrashModel, real: MemMetaStore): Promise<void> {
    real.crash(this.mode, createPrng(this.seed));
    const actual = await scanText(real, '');
    const allowed = this.mode === 'keep' ? [model.unsynced.length]
      : this.mode === 'lose' ? [0]
        : model.unsynced.map((_, i) => i).concat([model.unsynced.length]);
    const stateAfter = (count: number) =>
      modelScan(applyModel(model.durable, model.unsynced.slice(0, count)), '');
    const actualText = JSON.stringify(actual);
    const match = allowed.find((count) => actualText === JSON.stringify(stateAfter(count)));
    assert.ok(match !== undefined, `state after ${this.mode} crash matches no allowed prefix`);
    model.durable = applyModel(model.durable, model.unsynced.slice(0, match));
    model.unsynced = [];
    assert.equal(real.unsyncedBatchCount, 0);
  }
  toString(): string {
    return `crash(${this.mode}, seed=${this.seed})`;
  }
}

class CheckCommand implements fc.AsyncCommand<CrashModel, MemMetaStore> {
  check(): boolean {
    return true;
  }
  async run(model: CrashModel, real: MemMetaStore): Promise<void> {
    const visible = applyModel(model.durable, model.unsynced);
    assert.deepEqual(await scanText(real, ''), modelScan(visible, ''));
    for (const key of ['a', 'd\0e', '😀']) assert.equal(dec(await real.get(key)), visible.get(key));
  }
  toString(): string {
    return 'check';
  }
}
