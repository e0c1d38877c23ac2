/*
 * Checks the ConsumeQueue and ConsumeQueueSet. A model-based test draws appends, duplicate
 * dispatches, reads, flushes (with and without sync), retention, truncations, clean reopens and
 * crashes (lose, tear, keep) against an in-memory array on a simulated disk with tiny files:
 * after every step the queue agrees with the model, everything synced survives a crash, and what
 * survives beyond it is a prefix of what was appended. Scripted cases cover recovery (torn,
 * zero, out-of-order and corrupt records), retention to an empty queue, rebuilds by re-dispatch,
 * the set's bounds and failures, IO errors, and one run on the real file system.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConsumeQueue } from '../../src/store/consume-queue';
import {
  CONSUME_QUEUE_DEFAULTS, type ConsumeQueueOptions, resolveConsumeQueueOptions,
} from '../../src/store/consume-queue-options';
import type { CqRecord } from '../../src/store/consume-queue-record';
import {
  ConsumeQueueSet,
  DISPATCH_LATER,
  DISPATCH_SKIPPED,
} from '../../src/store/consume-queue-set';
import { FileCache } from '../../src/store/file-cache';
import { NodeDisk } from '../../src/store/node-disk';
import type { Disk } from '../../src/store/disk';
import { ManualClock } from '../../src/common/clock';
import { createPrng } from '../../src/common/prng';
import { AssertionFailure } from '../../src/common/assert';
import { isRaftmqError, type ErrorCode } from '../../src/common/errors';
import { SimDisk, SimDiskError, fencedDisk, type CrashMode } from '../../src/sim/sim-disk';
import { fcParams } from '../fc-params';

const SMALL: Partial<ConsumeQueueOptions> = {
  entriesPerFile: 4, pendingBytesMax: 20 * 24, readCountMax: 16, openFilesMax: 4, queuesOpenMax: 3,
};
const DIR = '/cq/T/3';
const fileOf = (startOffset: number): string =>
  path.join(DIR, String(startOffset * 20).padStart(20, '0'));

type Rec = Omit<CqRecord, 'offset'>;

function simDisk(seed: number): SimDisk {
  return new SimDisk({ clock: new ManualClock(), prng: createPrng(seed) });
}

/** One queue ('T', 3) on a simulated disk; each incarnation gets a fenced view of the disk. */
class World {
  readonly disk: SimDisk;
  q!: ConsumeQueue;
  private fence: () => void = () => undefined;

  constructor(seed: number, readonly options: Partial<ConsumeQueueOptions> = SMALL) {
    this.disk = simDisk(seed);
  }

  async open(): Promise<ConsumeQueue> {
    const view = fencedDisk(this.disk);
    this.fence = view.fence;
    const files = new FileCache(view.disk, 4);
    this.q = await ConsumeQueue.open({ disk: view.disk, files }, '/cq', 'T', 3, this.options);
    return this.q;
  }

  crash(mode: CrashMode): void {
    this.fence();
    this.disk.crash(mode);
  }
}

const code = (c: ErrorCode) => (e: unknown) => isRaftmqError(e, c);

async function readAll(q: ConsumeQueue, from = q.minOffset): Promise<CqRecord[]> {
  const out: CqRecord[] = [];
  for (let i = 0; from + out.length < q.maxOffset && i < 10_000; i++) {
    out.push(...await q.readRange(from + out.length, 7));
  }
  return out;
}

function same(got: CqRecord, want: Rec, offset: number): void {
  assert.deepEqual(got, { offset, ...want }, `record ${offset}`);
}

async function appendRecs(q: ConsumeQueue, recs: Rec[]): Promise<void> {
  for (const r of recs) q.append(r.position, r.sizeBytes, r.tagHash);
  await q.flush(true);
}

const recsAt = (positions: number[]): Rec[] =>
  positions.map((p, i) => ({ position: p, sizeBytes: 256 + i, tagHash: i % 2 ? -7 - i : 0 }));

/**
 * A disk whose reads wait while the gate is closed, to hold reads in flight across a cut. The
 * held reads run only after everything else has settled (the gate opens on a macrotask).
 */
function gatedReads(disk: Disk) {
  let closed = false;
  let held = 0;
  let waiters: Array<() => void> = [];
  const wait = async (): Promise<void> => {
    if (!closed) return;
    held++;
    await new Promise<void>((resolve) => waiters.push(resolve));
  };
  const view: Disk = {
    releasesCache: disk.releasesCache,
    open: async (p, create) => {
      const f = await disk.open(p, create);
      return { path: f.path, writev: (b, pos) => f.writev(b, pos), sync: () => f.sync(),
        truncate: (n) => f.truncate(n), size: () => f.size(), close: () => f.close(),
        releaseCache: (pos, len) => f.releaseCache(pos, len),
        read: async (buf, off, len, pos) => {
          await wait();
          return f.read(buf, off, len, pos);
        } };
    },
    list: (d) => disk.list(d),
    mkdirp: (d) => disk.mkdirp(d),
    remove: (p) => disk.remove(p),
    removeTree: (p) => disk.removeTree(p),
    syncDir: (d) => disk.syncDir(d),
    stat: (p) => disk.stat(p),
    freeBytes: (p) => disk.freeBytes(p),
  };
  return {
    disk: view,
    close: () => { closed = true; },
    /** Resolves once `count` reads are held. */
    reached: async (count: number) => {
      for (let i = 0; held < count && i < 1000; i++) await Promise.resolve();
      assert.ok(held >= count, `only ${held} reads held`);
    },
    open: () => {
      closed = false;
      const release = waiters;
      waiters = [];
      setImmediate(() => release.forEach((r) => r()));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Model-based test

interface Model {
  recs: Rec[];
  written: number;
  durable: number;
  floor: number;
  nextPos: number;
}

function expectedMin(m: Model): number {
  const k = m.recs.findIndex((r) => r.position >= m.floor);
  return k < 0 ? m.recs.length : k;
}

async function checkAll(w: World, m: Model): Promise<void> {
  const q = w.q;
  assert.equal(q.maxOffset, m.recs.length, 'maxOffset');
  assert.equal(q.minOffset, expectedMin(m), 'minOffset');
  const last = m.recs[m.recs.length - 1]?.position ?? -1;
  assert.ok(q.lastPosition() === last || (q.lastPosition() === -1 && q.minOffset === q.maxOffset),
    `lastPosition ${q.lastPosition()}, expected ${last}`);
  (await readAll(q)).forEach((r, i) => same(r, m.recs[q.minOffset + i] as Rec, q.minOffset + i));
  if (q.minOffset > 0) await assert.rejects(q.get(q.minOffset - 1), code('OUT_OF_RANGE'));
  await assert.rejects(q.get(q.maxOffset), code('OUT_OF_RANGE'));
}

type Cmd = fc.AsyncCommand<Model, World>;

class Append implements Cmd {
  constructor(readonly items: Array<[number, number, number]>) {}
  check(): boolean { return true; }
  async run(m: Model, w: World): Promise<void> {
    for (const [gap, sizeBytes, tagHash] of this.items) {
      const position = m.nextPos + gap;
      if ((m.recs.length - m.written + 1) * 20 > (SMALL.pendingBytesMax as number)) {
        assert.throws(() => w.q.append(position, sizeBytes, tagHash), code('BUSY'));
        return;
      }
      assert.equal(w.q.append(position, sizeBytes, tagHash), m.recs.length);
      m.recs.push({ position, sizeBytes, tagHash });
      m.nextPos = position + 1;
    }
    await Promise.resolve();
  }
  toString(): string { return `append(${JSON.stringify(this.items)})`; }
}

class DispatchOld implements Cmd {
  constructor(readonly pick: number) {}
  check(m: Readonly<Model>): boolean { return m.recs.length > 0; }
  async run(m: Model, w: World): Promise<void> {
    if (w.q.lastPosition() < 0) return;
    const r = m.recs[this.pick % m.recs.length] as Rec;
    assert.equal(w.q.dispatch(r.position, r.sizeBytes, r.tagHash), undefined);
    await checkAll(w, m);
  }
  toString(): string { return `dispatchOld(${this.pick})`; }
}

class Read implements Cmd {
  constructor(readonly pick: number, readonly count: number) {}
  check(m: Readonly<Model>): boolean { return m.recs.length > 0; }
  async run(m: Model, w: World): Promise<void> {
    const min = w.q.minOffset;
    if (min >= m.recs.length) return;
    const from = min + (this.pick % (m.recs.length - min));
    const got = await w.q.readRange(from, this.count);
    assert.ok(got.length >= 1 && got.length <= this.count);
    got.forEach((r, k) => same(r, m.recs[from + k] as Rec, from + k));
  }
  toString(): string { return `read(${this.pick}, ${this.count})`; }
}

class Flush implements Cmd {
  constructor(readonly sync: boolean) {}
  check(): boolean { return true; }
  async run(m: Model, w: World): Promise<void> {
    await w.q.flush(this.sync);
    m.written = m.recs.length;
    if (this.sync) m.durable = m.recs.length;
  }
  toString(): string { return `flush(${this.sync})`; }
}

/** Appends and reads while a flush is writing: the tail it did not take stays buffered. */
class FlushWhileAppending implements Cmd {
  constructor(readonly sync: boolean, readonly yields: number[]) {}
  check(): boolean { return true; }
  async run(m: Model, w: World): Promise<void> {
    const before = m.recs.length;
    const pendingMax = (SMALL.pendingBytesMax as number) / 20;
    const flushing = w.q.flush(this.sync);
    for (const n of this.yields) {
      for (let i = 0; i < n; i++) await Promise.resolve();
      if (m.recs.length - m.written + 1 > pendingMax) break;
      const r = { position: m.nextPos, sizeBytes: n + 1, tagHash: -n | 0 };
      assert.equal(w.q.append(r.position, r.sizeBytes, r.tagHash), m.recs.length);
      m.recs.push(r);
      m.nextPos++;
      const from = m.recs.length - 1 - (n % m.recs.length);
      if (from >= w.q.minOffset) {
        (await w.q.readRange(from, 5)).forEach((g) => same(g, m.recs[g.offset] as Rec, g.offset));
      }
    }
    await flushing;
    if (this.sync) m.durable = before;
    await w.q.flush(false);
    m.written = m.recs.length;
  }
  toString(): string { return `flushWhileAppending(${this.sync}, ${this.yields.join(',')})`; }
}

class RemoveBefore implements Cmd {
  constructor(readonly pick: number) {}
  check(): boolean { return true; }
  async run(m: Model, w: World): Promise<void> {
    const position = m.recs[this.pick % (m.recs.length + 1)]?.position ?? m.nextPos;
    await w.q.removeBefore(position);
    m.floor = Math.max(m.floor, position);
    await checkAll(w, m);
  }
  toString(): string { return `removeBefore(${this.pick})`; }
}

class Truncate implements Cmd {
  constructor(readonly pick: number) {}
  check(): boolean { return true; }
  async run(m: Model, w: World): Promise<void> {
    // The CommitLog never cuts below its own first position, the retention floor.
    const kept = m.recs.filter((r) => r.position >= m.floor);
    const position = kept[this.pick % (kept.length + 1)]?.position ?? m.nextPos;
    await w.q.truncateAfterPosition(position);
    await w.q.truncateAfterPosition(position);
    const cut = m.recs.findIndex((r) => r.position >= position);
    if (cut >= 0) m.recs.length = cut;
    m.written = Math.min(m.written, m.recs.length);
    m.durable = Math.min(m.durable, m.recs.length);
    await checkAll(w, m);
  }
  toString(): string { return `truncate(${this.pick})`; }
}

/** The owner's job after any open: apply the retention floor again. */
async function reapplyFloor(w: World, m: Model): Promise<void> {
  if (m.floor > 0) await w.q.removeBefore(m.floor);
}

class Reopen implements Cmd {
  check(): boolean { return true; }
  async run(m: Model, w: World): Promise<void> {
    await w.q.close();
    await w.open();
    m.written = m.durable = m.recs.length;
    await reapplyFloor(w, m);
    await checkAll(w, m);
  }
  toString(): string { return 'reopen'; }
}

class Crash implements Cmd {
  constructor(readonly mode: CrashMode) {}
  check(): boolean { return true; }
  async run(m: Model, w: World): Promise<void> {
    w.crash(this.mode);
    const q = await w.open();
    const survivors = q.maxOffset;
    assert.ok(survivors >= m.durable, `lost synced records: ${survivors} < ${m.durable}`);
    assert.ok(survivors <= m.recs.length, 'records appeared from nowhere');
    if (this.mode === 'keep') assert.ok(survivors >= m.written, 'a process crash lost writes');
    (await readAll(q)).forEach((r, i) => same(r, m.recs[q.minOffset + i] as Rec, q.minOffset + i));
    m.recs.length = survivors;
    m.written = m.durable = survivors;
    await reapplyFloor(w, m);
    await checkAll(w, m);
  }
  toString(): string { return `crash(${this.mode})`; }
}

const int32 = fc.oneof(fc.constant(0), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
const commands = [
  fc.array(fc.tuple(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 1, max: 5000 }), int32),
    { minLength: 1, maxLength: 9 }).map((items) => new Append(items)),
  fc.nat().map((p) => new DispatchOld(p)),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 20 })).map(([p, c]) => new Read(p, c)),
  fc.boolean().map((s) => new Flush(s)),
  fc.tuple(fc.boolean(), fc.array(fc.nat(12), { minLength: 1, maxLength: 8 }))
    .map(([s, ys]) => new FlushWhileAppending(s, ys)),
  fc.nat().map((p) => new RemoveBefore(p)),
  fc.nat().map((p) => new Truncate(p)),
  fc.constant(new Reopen()),
  fc.constantFrom<CrashMode>('lose', 'tear', 'keep').map((mode) => new Crash(mode)),
];

describe('ConsumeQueue', function () {
  this.timeout(Number(process.env.RAFTMQ_TEST_TIMEOUT_MS ?? 120_000));

  it('agrees with an in-memory model through appends, retention, reopens and crashes', async () => {
    await fc.assert(fc.asyncProperty(fc.integer(), fc.commands(commands,
      { maxCommands: 40, size: 'max' }), async (seed, cmds) => {
      const w = new World(seed);
      await w.open();
      const model: Model = { recs: [], written: 0, durable: 0, floor: 0, nextPos: 1 };
      await fc.asyncModelRun(() => ({ model, real: w }), cmds);
      await checkAll(w, model);
      await w.q.close();
    }), fcParams(300));
  });

  it('serves buffered records and keeps the record layout', async () => {
    const w = new World(1);
    const q = await w.open();
    const recs = recsAt([2 ** 40 + 5, 2 ** 40 + 9, 2 ** 52]);
    recs.forEach((r) => q.append(r.position, r.sizeBytes, r.tagHash));
    assert.equal(q.lastPosition(), 2 ** 52);
    (await q.readRange(0, 10)).forEach((r, i) => same(r, recs[i] as Rec, i));
    await q.flush(true);
    const bytes = w.disk.contents(fileOf(0)) as Uint8Array;
    assert.equal(bytes.byteLength, 60);
    const b = Buffer.from(bytes);
    assert.equal(b.readBigUInt64BE(20), BigInt(2 ** 40 + 9));
    assert.equal(b.readInt32BE(28), 257);
    assert.equal(b.readBigInt64BE(32), -8n);
    assert.equal(b.readBigInt64BE(12), 0n);
    assert.throws(() => q.append(2 ** 52, 1, 0), AssertionFailure);
    assert.throws(() => q.append(2 ** 53, 0, 0), AssertionFailure);
    assert.throws(() => q.append(2 ** 53, 1, 2 ** 31), AssertionFailure);
  });

  it('answers a read racing retention or truncation with data or OUT_OF_RANGE', async () => {
    for (const which of ['removeBefore', 'truncate'] as const) {
      const sim = simDisk(15);
      const gate = gatedReads(sim);
      const q = await ConsumeQueue.open({ disk: gate.disk, files: new FileCache(gate.disk, 2) },
        '/cq', 'T', 3, SMALL);
      await appendRecs(q, recsAt([10, 20, 30, 40, 50, 60, 70, 80, 90]));
      await q.readRange(4, 2);
      gate.close();
      const reads = Promise.allSettled([q.get(1), q.readRange(2, 9), q.get(6), q.get(8)]);
      await gate.reached(4);
      const cut = which === 'removeBefore' ? q.removeBefore(55) : q.truncateAfterPosition(25);
      // Retention reads a record first: let the cut's own reads through, not the racing ones.
      gate.open();
      await cut;
      for (const r of await reads) {
        assert.ok(r.status === 'fulfilled' || isRaftmqError(r.reason, 'OUT_OF_RANGE'),
          `${which}: ${r.status === 'rejected' ? String(r.reason) : ''}`);
      }
      assert.deepEqual([q.minOffset, q.maxOffset], which === 'removeBefore' ? [5, 9] : [0, 2]);
    }
  });

  it('refuses appends past pendingBytesMax with BUSY until flushed', async () => {
    const q = await new World(2, { ...SMALL, pendingBytesMax: 100 }).open();
    for (let i = 0; i < 5; i++) q.append(10 + i, 1, 0);
    assert.throws(() => q.append(99, 1, 0), code('BUSY'));
    await q.flush(false);
    assert.equal(q.append(99, 1, 0), 5);
  });
});

describe('ConsumeQueue recovery', () => {
  const positions = [1000, 2000, 300_000, 400_000, 500_000, 600_000];

  async function written(seed: number, n = positions.length): Promise<World> {
    const w = new World(seed);
    await appendRecs(await w.open(), recsAt(positions.slice(0, n)));
    await w.q.close();
    return w;
  }

  async function rawWrite(disk: Disk, file: string, bytes: Uint8Array): Promise<void> {
    const f = await disk.open(file, true);
    await f.writev([bytes], await f.size());
    await f.sync();
    await f.close();
    await disk.syncDir(path.dirname(file));
  }

  it('cuts a torn partial record', async () => {
    const w = await written(3);
    await rawWrite(w.disk, fileOf(4), new Uint8Array([0, 0, 0, 0, 0, 9, 0x27]));
    const q = await w.open();
    assert.equal(q.maxOffset, 6);
    assert.equal(w.disk.contents(fileOf(4))?.byteLength, 40);
    (await readAll(q)).forEach((r, i) => same(r, recsAt(positions)[i] as Rec, i));
    assert.equal(q.append(700_000, 1, 0), 6);
  });

  it('cuts trailing zero records', async () => {
    const w = await written(4);
    await rawWrite(w.disk, fileOf(4), new Uint8Array(40));
    const q = await w.open();
    assert.equal(q.maxOffset, 6);
    assert.equal(q.lastPosition(), 600_000);
    assert.equal(w.disk.contents(fileOf(4))?.byteLength, 40);
  });

  it('cuts a last record whose position no longer increases (a flipped byte)', async () => {
    const w = await written(5);
    // 600,000 = 0x0927C0; clearing byte 5 (0x09) leaves 0x27C0 = 10,176 < 500,000.
    w.disk.corrupt(fileOf(4), 20 + 5, new Uint8Array([0]));
    const q = await w.open();
    assert.equal(q.maxOffset, 5);
    assert.equal(q.lastPosition(), 500_000);
    assert.equal(q.dispatch(600_000, 1, 0), 5);
  });

  it('cuts at a zero-size record in the files it scans, data after it included', async () => {
    const w = await written(6);
    w.disk.corrupt(fileOf(4), 8, new Uint8Array(4));
    const q = await w.open();
    assert.equal(q.maxOffset, 4);
    assert.equal(q.lastPosition(), 400_000);
  });

  it('refuses a record whose size became 0: CORRUPT_RECORD naming file, position', async () => {
    const w = new World(7);
    const recs = Array.from({ length: 12 }, (_, i) => ({ position: (i + 1) * 1000,
      sizeBytes: 0x200, tagHash: i }));
    await appendRecs(await w.open(), recs);
    await w.q.close();
    // Size 0x00000200: flipping the 0x02 in its third byte leaves 0.
    w.disk.corrupt(fileOf(0), 20 + 8 + 2, new Uint8Array([0]));
    const q = await w.open();
    assert.equal(q.maxOffset, 12, 'the first file is outside the recovery scan');
    await assert.rejects(q.get(1), (e) => isRaftmqError(e, 'CORRUPT_RECORD')
      && e.details.file === fileOf(0) && e.details.position === 20);
    assert.deepEqual((await q.readRange(0, 10)).map((r) => r.offset), [0]);
    same(await q.get(2), recs[2] as Rec, 2);
    // Bit rot while open, in the last file, is caught the same way.
    w.disk.corrupt(fileOf(8), 20 + 1, new Uint8Array([0xff]));
    await assert.rejects(q.get(9), (e) => isRaftmqError(e, 'CORRUPT_RECORD')
      && e.details.file === fileOf(8) && e.details.position === 20);
  });

  it('drops files after a gap and refuses files from another entriesPerFile', async () => {
    const w = await written(8);
    await rawWrite(w.disk, fileOf(12), Buffer.from(w.disk.contents(fileOf(0)) as Uint8Array));
    const q = await w.open();
    assert.equal(q.maxOffset, 6);
    assert.equal(w.disk.contents(fileOf(12)), undefined);
    await q.close();
  });

  it('refuses files written with another entriesPerFile', async () => {
    const disk = simDisk(9);
    const files = new FileCache(disk, 4);
    const open = (entriesPerFile: number) => ConsumeQueue.open({ disk, files }, '/cq', 'T', 3,
      { ...SMALL, entriesPerFile });
    await appendRecs(await open(8), recsAt(positions));
    await files.closeAll();
    await assert.rejects(open(4), code('CORRUPT_LOG'), 'a file longer than 4 records');
    await (await disk.open(fileOf(4), true)).close();
    await assert.rejects(open(8), code('CORRUPT_LOG'), 'a name not on an 8-record boundary');
  });
});

describe('ConsumeQueue retention', () => {
  const ps = Array.from({ length: 10 }, (_, i) => (i + 1) * 100);

  it('removes whole files only, moves minOffset and keeps offsets across reopen', async () => {
    const w = new World(10);
    const q = await w.open();
    await appendRecs(q, recsAt(ps));
    await q.removeBefore(450);
    assert.equal(q.minOffset, 4);
    assert.equal(w.disk.contents(fileOf(0)), undefined);
    await q.removeBefore(650);
    assert.equal(q.minOffset, 6, 'inside a file: the file stays, minOffset moves');
    assert.ok(w.disk.contents(fileOf(4)));
    await assert.rejects(q.get(5), code('OUT_OF_RANGE'));
    await q.close();
    const again = await w.open();
    assert.deepEqual([again.minOffset, again.maxOffset], [4, 10]);
    await again.removeBefore(650);
    assert.deepEqual([again.minOffset, again.maxOffset], [6, 10]);
    same(await again.get(6), recsAt(ps)[6] as Rec, 6);
  });

  for (const count of [10, 8]) {
    it(`keeps the next offset when every record expired (${count} records)`, async () => {
      const w = new World(11);
      const q = await w.open();
      await appendRecs(q, recsAt(ps.slice(0, count)));
      await q.removeBefore(5000);
      assert.deepEqual([q.minOffset, q.maxOffset], [count, count]);
      await assert.rejects(q.get(count - 1), code('OUT_OF_RANGE'));
      w.crash('lose');
      const again = await w.open();
      assert.equal(again.maxOffset, count);
      assert.equal(again.lastPosition(), (count) * 100);
      await again.removeBefore(5000);
      assert.deepEqual([again.minOffset, again.maxOffset], [count, count]);
      assert.equal(again.append(6000, 1, 0), count);
      await again.flush(true);
      same(await again.get(count), { position: 6000, sizeBytes: 1, tagHash: 0 }, count);
    });
  }
});

describe('ConsumeQueue failures and options', () => {
  it('stops for good after a failed sync (STORE_FATAL) or a full disk (DISK_FULL)', async () => {
    const w = new World(12);
    const q = await w.open();
    await appendRecs(q, recsAt([1, 2]));
    q.append(3, 1, 0);
    const eio = new SimDiskError('EIO', 'injected');
    w.disk.setHook((op) => { if (op === 'sync') throw eio; });
    await assert.rejects(q.flush(true), (e) => isRaftmqError(e, 'STORE_FATAL') && e.cause === eio);
    w.disk.setHook(undefined);
    assert.throws(() => q.append(4, 1, 0), code('STORE_FATAL'));
    await assert.rejects(q.get(0), code('STORE_FATAL'));
    await assert.rejects(q.flush(false), code('STORE_FATAL'));
    await assert.rejects(q.close(), code('STORE_FATAL'));

    const full = new SimDisk({ clock: new ManualClock(), prng: createPrng(1), capacityBytes: 100 });
    const small = await ConsumeQueue.open({ disk: full, files: new FileCache(full, 4) }, '/cq',
      'T', 3, SMALL);
    for (let i = 0; i < 8; i++) small.append(i, 1, 0);
    await assert.rejects(small.flush(true), code('DISK_FULL'));
    assert.throws(() => small.append(99, 1, 0), code('DISK_FULL'));
  });

  it('resolves options with frozen defaults and names a bad field', () => {
    const o = resolveConsumeQueueOptions();
    assert.equal(o.entriesPerFile, 300_000);
    assert.ok(Object.isFrozen(o) && Object.isFrozen(CONSUME_QUEUE_DEFAULTS));
    assert.equal(resolveConsumeQueueOptions({ readCountMax: 1 }).readCountMax, 1);
    assert.throws(() => resolveConsumeQueueOptions({ entriesPerFile: 0 }),
      (e) => isRaftmqError(e, 'INVALID_OPTION') && /consumeQueue\.entriesPerFile/.test(e.message));
    assert.throws(() => resolveConsumeQueueOptions({ nope: 1 } as Partial<ConsumeQueueOptions>),
      (e) => isRaftmqError(e, 'INVALID_OPTION') && /consumeQueue\.nope/.test(e.message));
  });

  it('asserts topic and queue id are safe path components', async () => {
    const set = await ConsumeQueueSet.open({ disk: simDisk(13) }, '/cq', SMALL);
    for (const [topic, id] of [['a/b', 0], ['..', 0], ['.', 0], ['', 0], ['a\0', 0], ['a', -1],
      ['a', 1.5]] as const) {
      await assert.rejects(set.queue(topic, id), AssertionFailure,
        `${JSON.stringify(topic)} ${id}`);
    }
    await set.close();
  });
});

// ---------------------------------------------------------------------------------------------
// ConsumeQueueSet

interface Msg {
  topic: string;
  queueId: number;
  position: number;
  sizeBytes: number;
  tagHash: number;
}

/** Messages in position order over a few queues. */
const messagesArb = fc.array(fc.tuple(fc.constantFrom('a', 'b', '%RETRY%g'), fc.nat(3),
  fc.integer({ min: 1, max: 900 }), int32), { minLength: 1, maxLength: 60 }).map((xs) => {
  let position = 0;
  return xs.map(([topic, queueId, sizeBytes, tagHash]): Msg => {
    const m = { topic, queueId, position, sizeBytes, tagHash };
    position += sizeBytes;
    return m;
  });
});

async function dispatchAll(set: ConsumeQueueSet, msgs: readonly Msg[]):
  Promise<Array<number | undefined>> {
  return Promise.all(msgs.map((m) => set.dispatch(m.topic, m.queueId, m.position, m.sizeBytes,
    m.tagHash)));
}

async function snapshot(set: ConsumeQueueSet): Promise<Map<string, CqRecord[]>> {
  const out = new Map<string, CqRecord[]>();
  for (const { topic, queueId } of set.listQueues()) {
    const q = await set.queue(topic, queueId);
    out.set(`${topic}/${queueId}`, await readAll(q));
  }
  return out;
}

describe('ConsumeQueueSet', function () {
  this.timeout(Number(process.env.RAFTMQ_TEST_TIMEOUT_MS ?? 120_000));

  it('rebuilds equal queues after its files are deleted, and dispatch is idempotent', async () => {
    const arb = fc.tuple(fc.integer(), messagesArb, fc.nat());
    await fc.assert(fc.asyncProperty(arb, async ([seed, msgs, cut]) => {
      const disk = simDisk(seed);
      let view = fencedDisk(disk);
      let set = await ConsumeQueueSet.open({ disk: view.disk }, '/cq', SMALL);
      const offsets = await dispatchAll(set, msgs);
      await set.flushAll(true);
      const original = await snapshot(set);
      const counts = new Map<string, number>();
      msgs.forEach((m, i) => {
        const key = `${m.topic}/${m.queueId}`;
        assert.equal(offsets[i], counts.get(key) ?? 0, 'offsets are record numbers in call order');
        counts.set(key, (counts.get(key) ?? 0) + 1);
      });
      assert.deepEqual((await dispatchAll(set, msgs)).filter((o) => o !== undefined), []);

      await set.deleteAll();
      assert.deepEqual(set.listQueues(), []);
      await dispatchAll(set, msgs);
      await set.flushAll(true);
      assert.deepEqual(await snapshot(set), original);

      // Replay from an old checkpoint after a crash lost the unsynced tail of some queues.
      const k = cut % (msgs.length + 1);
      await set.deleteAll();
      await dispatchAll(set, msgs.slice(0, k));
      await set.flushAll(true);
      await dispatchAll(set, msgs.slice(k));
      await set.flushAll(false);
      view.fence();
      disk.crash('lose');
      view = fencedDisk(disk);
      set = await ConsumeQueueSet.open({ disk: view.disk }, '/cq', SMALL);
      const again = await dispatchAll(set, msgs);
      assert.deepEqual(again.slice(0, k).filter((o) => o !== undefined), [], 'synced: skipped');
      await set.flushAll(true);
      assert.deepEqual(await snapshot(set), original);
      await set.close();
    }), fcParams(40));
  });

  it('writes a full buffer out instead of refusing a dispatch (a burst to one queue)', async () => {
    // Five records fit the buffer; forty arrive before any checkpoint flushes, through the apply
    // loop's two paths. A refusal here failed the apply of a committed entry and stopped the node.
    const set = await ConsumeQueueSet.open({ disk: simDisk(21) }, '/cq',
      { ...SMALL, pendingBytesMax: 100 });
    const offsets: number[] = [];
    for (let i = 0; i < 40; i++) {
      const position = 100 + i * 10;
      let r = set.tryDispatch('burst', 0, position, 10, i);
      if (r === DISPATCH_LATER) r = (await set.dispatch('burst', 0, position, 10, i)) ?? -1;
      offsets.push(r);
    }
    for (let i = 40; i < 45; i++) offsets.push((await set.dispatch('burst', 0, 100 + i * 10, 10, i)) ?? -1);
    assert.deepEqual(offsets, Array.from({ length: 45 }, (_, i) => i));
    await set.flushAll(true);
    const positions: number[] = [];
    while (positions.length < 45) {
      const read = await set.readRange('burst', 0, positions.length, 45 - positions.length);
      assert.ok(read.length > 0);
      positions.push(...read.map((r) => r.position));
    }
    assert.deepEqual(positions, offsets.map((i) => 100 + i * 10));
    await set.close();
  });

  it('files the same records through tryDispatch as through dispatch, in call order', async () => {
    const arb = fc.tuple(fc.integer(), messagesArb, fc.integer({ min: 1, max: 3 }));
    await fc.assert(fc.asyncProperty(arb, async ([seed, msgs, queuesOpenMax]) => {
      const options = { ...SMALL, queuesOpenMax };
      const plain = await ConsumeQueueSet.open({ disk: simDisk(seed) }, '/cq', options);
      const expected = await dispatchAll(plain, msgs);
      await plain.flushAll(true);
      const fast = await ConsumeQueueSet.open({ disk: simDisk(seed) }, '/cq', options);
      // As the apply loop does: the synchronous path, else wait for the queue to open.
      const got: Array<number | undefined> = [];
      let later = 0;
      for (const m of msgs) {
        let r = fast.tryDispatch(m.topic, m.queueId, m.position, m.sizeBytes, m.tagHash);
        if (r === DISPATCH_LATER) {
          later++;
          r = (await fast.dispatch(m.topic, m.queueId, m.position, m.sizeBytes, m.tagHash))
            ?? DISPATCH_SKIPPED;
        }
        got.push(r === DISPATCH_SKIPPED ? undefined : r);
      }
      assert.ok(later > 0, 'a queue not yet open is declined');
      assert.deepEqual(got, expected);
      for (const m of msgs) {
        const r = fast.tryDispatch(m.topic, m.queueId, m.position, m.sizeBytes, m.tagHash);
        assert.ok(r === DISPATCH_SKIPPED || r === DISPATCH_LATER, 'a replay appends nothing');
      }
      await fast.flushAll(true);
      assert.deepEqual(await snapshot(fast), await snapshot(plain));
      await plain.close();
      await fast.close();
    }), fcParams(30));
  });

  it('closes the least recently used queue first, counting the dispatch fast path as a use',
    async () => {
      const set = await ConsumeQueueSet.open({ disk: simDisk(15) }, '/cq',
        { ...SMALL, queuesOpenMax: 2 });
      const qa = await set.queue('a', 0);
      const qb = await set.queue('b', 0);
      assert.equal(set.tryDispatch('a', 0, 100, 10, 0), 0, 'a used after b');
      await set.flushAll(true);
      await set.queue('c', 0);
      assert.equal(set.openCount(), 2);
      assert.throws(() => qb.dispatch(200, 10, 0), code('STORE_CLOSED'), 'b was closed');
      assert.equal(qa.dispatch(300, 10, 0), 1, 'a stayed open');
      assert.equal(set.tryDispatch('b', 0, 400, 10, 0), DISPATCH_LATER);
      await set.close();
    });

  it('never dispatches through a queue closed since the fast path last found it', async () => {
    const set = await ConsumeQueueSet.open({ disk: simDisk(16) }, '/cq',
      { ...SMALL, queuesOpenMax: 1 });
    await set.queue('a', 0);
    assert.equal(set.tryDispatch('a', 0, 100, 10, 0), 0);
    // Opening b closes a, once a's record is synced; meanwhile the fast path still finds a.
    const openingB = set.queue('b', 0);
    assert.equal(set.tryDispatch('a', 0, 200, 10, 0), 1, 'found while b opens');
    await openingB;
    assert.equal(set.openCount(), 1, 'a was closed to open b');
    assert.equal(set.tryDispatch('a', 0, 300, 10, 0), DISPATCH_LATER);
    assert.equal(await set.dispatch('a', 0, 300, 10, 0), 2, 'reopened where it was');
    assert.equal(set.tryDispatch('a', 0, 400, 10, 0), 3);
    assert.equal(set.tryDispatch('b', 0, 500, 10, 0), DISPATCH_LATER, 'b was closed for a');
    await set.close();
  });

  it('discovers queues, bounds open ones, truncates and retains over all', async () => {
    const disk = simDisk(14);
    let set = await ConsumeQueueSet.open({ disk }, '/cq', { ...SMALL, queuesOpenMax: 2 });
    const msgs: Msg[] = [];
    for (let i = 0; i < 40; i++) {
      msgs.push({ topic: `t${i % 3}`, queueId: i % 2, position: i * 100, sizeBytes: 50,
        tagHash: i });
    }
    await dispatchAll(set, msgs);
    assert.ok(set.openCount() <= 2);
    await set.flushAll(false);
    assert.equal(await set.existing('nope', 0), undefined);
    await set.close();
    await assert.rejects(set.queue('t0', 0), code('STORE_CLOSED'));

    set = await ConsumeQueueSet.open({ disk }, '/cq', { ...SMALL, queuesOpenMax: 2 });
    assert.deepEqual(set.listQueues().map((q) => `${q.topic}/${q.queueId}`),
      ['t0/0', 't0/1', 't1/0', 't1/1', 't2/0', 't2/1']);
    assert.equal((await set.existing('t1', 1))?.maxOffset, 7);
    await set.truncateAfterPosition(3000);
    await set.truncateAfterPosition(3000);
    await set.removeBefore(1500);
    for (const { topic, queueId } of set.listQueues()) {
      const mine = msgs.filter((m) => m.topic === topic && m.queueId === queueId);
      const records = await set.readRange(topic, queueId, 0, 100).catch((e: unknown) => e);
      const q = await set.queue(topic, queueId);
      assert.equal(q.maxOffset, mine.filter((m) => m.position < 3000).length);
      assert.equal(q.minOffset, mine.findIndex((m) => m.position >= 1500));
      assert.ok(isRaftmqError(records, 'OUT_OF_RANGE'));
      assert.ok(set.openCount() <= 2);
      const tail = await set.readRange(topic, queueId, q.minOffset, 100);
      assert.deepEqual(tail.map((r) => r.position),
        mine.filter((m) => m.position >= 1500 && m.position < 3000).map((m) => m.position));
    }
    await set.close();
  });

  it('works on the real file system', async () => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-cq-'));
    try {
      const disk = new NodeDisk();
      const options = { ...SMALL, queuesOpenMax: 4 };
      let set = await ConsumeQueueSet.open({ disk }, root, options);
      const msgs: Msg[] = Array.from({ length: 30 }, (_, i) => ({ topic: i % 2 ? 'odd' : 'even',
        queueId: 7, position: 1 + i * 64, sizeBytes: 64, tagHash: i - 15 }));
      await dispatchAll(set, msgs);
      await set.flushAll(true);
      const before = await snapshot(set);
      await set.close();
      // A torn record at the tail of one queue's last file.
      const last = path.join(root, 'odd', '7', String(12 * 20).padStart(20, '0'));
      await fs.appendFile(last, Buffer.from([1, 2, 3]));
      set = await ConsumeQueueSet.open({ disk }, root, options);
      assert.deepEqual(await snapshot(set), before);
      assert.equal((await fs.stat(last)).size, 3 * 20);
      await set.removeBefore(msgs[20]?.position as number);
      assert.deepEqual((await fs.readdir(path.join(root, 'even', '7'))).length, 2);
      assert.equal((await set.queue('even', 7)).minOffset, 10);
      await set.close();
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});
