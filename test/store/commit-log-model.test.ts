/*
 * Model-based test of the CommitLog. fast-check draws sequences of appends, reads, flushes,
 * suffix truncations, prefix removals, checkpoints, clean reopens and crashes (power loss that
 * drops everything unsynced, a torn last write at a random byte, and a process crash that keeps
 * the page cache) and runs them against the real CommitLog on a simulated disk and an in-memory
 * array. After every step the log agrees with the model on its bounds; after a crash every entry
 * that was durable is there unchanged and anything beyond it is a prefix of what was appended,
 * and the positions `positionsOf` answers (from memory for recent appends) are those on disk.
 * Each append's record CRCs, as the log remembers them, equal `recordChecksum` of the entries.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { CommitLog } from '../../src/store/commit-log';
import { EntryType, recordChecksum, type LogEntry } from '../../src/store/log-record';
import type { CommitLogOptions } from '../../src/store/commit-log-options';
import { isRaftmqError } from '../../src/common/errors';
import type { CrashMode } from '../../src/sim/sim-disk';
import { SimMachine } from './sim-machine';
import { fcParams } from '../fc-params';

export const SMALL_LOG: Partial<CommitLogOptions> = {
  segmentSizeBytes: 4096,
  indexEntriesPerFile: 8,
  payloadMaxBytes: 1024,
  pendingBytesMax: 64 * 1024,
  writeChunkBytes: 4096,
  openFilesMax: 6,
  // Nothing stays cached: every synced segment is released, so most runs exercise that path.
  pageCacheKeepBytes: 0,
};

interface Model {
  entries: LogEntry[];
  first: number;
  durable: number;
  term: number;
}

class World extends SimMachine {
  log!: CommitLog;

  async open(): Promise<void> {
    this.log = await CommitLog.open('/node', this.incarnation(), SMALL_LOG);
  }
}

function entryOf(index: number, term: number, size: number, salt: number): LogEntry {
  const payload = Buffer.alloc(size);
  for (let i = 0; i < size; i++) payload[i] = (index * 31 + i * 7 + salt) & 0xff;
  return { index, term, type: size % 5 === 0 ? EntryType.NOOP : EntryType.NORMAL, payload };
}

function sameEntry(a: LogEntry, b: LogEntry): void {
  assert.equal(a.index, b.index);
  assert.equal(a.term, b.term, `term of ${a.index}`);
  assert.equal(a.type, b.type, `type of ${a.index}`);
  assert.ok(Buffer.from(a.payload).equals(Buffer.from(b.payload)), `payload of ${a.index}`);
}

async function checkAll(w: World, m: Model): Promise<void> {
  assert.equal(w.log.firstIndex(), m.first, 'first index');
  assert.equal(w.log.lastIndex(), m.first + m.entries.length - 1, 'last index');
  if (m.entries.length === 0) return;
  const got = await w.log.readRange(m.first, m.entries.length, Number.MAX_SAFE_INTEGER);
  assert.equal(got.length, m.entries.length);
  got.forEach((e, i) => sameEntry(e, m.entries[i] as LogEntry));
  // Positions answered from memory (recent appends) agree with the entry index on disk.
  const located = await w.log.positionsOf(m.first, m.entries.length);
  got.forEach((e, i) => {
    assert.equal(located.positions[i], e.position, `position of ${e.index}`);
    assert.equal(located.terms[i], e.term, `term of ${e.index}`);
  });
  for (const e of m.entries) assert.equal(w.log.termAt(e.index), e.term);
}

type Cmd = fc.AsyncCommand<Model, World>;

class Append implements Cmd {
  constructor(
    readonly sizes: number[],
    readonly bump: boolean,
    readonly salt: number,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, w: World): Promise<void> {
    if (this.bump) m.term++;
    const start = m.first + m.entries.length;
    const batch = this.sizes.map((s, i) => entryOf(start + i, m.term, s, this.salt));
    assert.equal(w.log.append(batch), start + batch.length - 1);
    // The CRC each record got, as the log remembers it, is the one computed from the entry.
    for (const e of batch) {
      const expected = recordChecksum(e.index, e.term, e.type, e.payload);
      assert.equal(w.log.recentRecordCrc(e.index, e.term, e.payload.length), expected,
        `record CRC of ${e.index}`);
    }
    m.entries.push(...batch);
    if (this.sizes.length > 0 && this.sizes.length % 3 === 0) {
      await w.log.waitPersisted(start + batch.length - 1);
      m.durable = start + batch.length - 1;
    }
  }
  toString(): string {
    return `append(${this.sizes.join(',')}${this.bump ? ', bump' : ''})`;
  }
}

class Flush implements Cmd {
  check(): boolean {
    return true;
  }
  async run(m: Model, w: World): Promise<void> {
    await w.log.flush();
    m.durable = m.first + m.entries.length - 1;
    assert.equal(w.log.durableIndex(), m.durable);
  }
  toString(): string {
    return 'flush';
  }
}

class Read implements Cmd {
  constructor(
    readonly pick: number,
    readonly count: number,
    readonly bytesMax: number,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.entries.length > 0;
  }
  async run(m: Model, w: World): Promise<void> {
    const i = this.pick % m.entries.length;
    const got = await w.log.readRange(m.first + i, this.count, this.bytesMax);
    assert.ok(got.length >= 1 && got.length <= this.count);
    got.forEach((e, k) => sameEntry(e, m.entries[i + k] as LogEntry));
  }
  toString(): string {
    return `read(${this.pick}, ${this.count}, ${this.bytesMax})`;
  }
}

class Truncate implements Cmd {
  constructor(readonly pick: number) {}
  check(m: Readonly<Model>): boolean {
    return m.entries.length > 0;
  }
  async run(m: Model, w: World): Promise<void> {
    const from = m.first + (this.pick % m.entries.length);
    await w.log.truncateSuffix(from);
    m.entries.length = from - m.first;
    m.durable = Math.min(m.durable, from - 1);
    await checkAll(w, m);
  }
  toString(): string {
    return `truncate(${this.pick})`;
  }
}

class RemovePrefix implements Cmd {
  constructor(readonly pick: number) {}
  check(m: Readonly<Model>): boolean {
    return m.entries.length > 0;
  }
  async run(m: Model, w: World): Promise<void> {
    await w.log.flush();
    m.durable = m.first + m.entries.length - 1;
    const keep = m.first + (this.pick % m.entries.length);
    const newFirst = await w.log.removePrefix(keep);
    assert.ok(
      newFirst >= m.first && newFirst <= keep,
      `new first ${newFirst} in [${m.first}, ${keep}]`,
    );
    m.entries.splice(0, newFirst - m.first);
    m.first = newFirst;
    await assert.rejects(
      w.log.read(newFirst - 1),
      (e) => newFirst === 1 || isRaftmqError(e, 'OUT_OF_RANGE'),
    );
    await checkAll(w, m);
  }
  toString(): string {
    return `removePrefix(${this.pick})`;
  }
}

class Checkpoint implements Cmd {
  check(): boolean {
    return true;
  }
  async run(_m: Model, w: World): Promise<void> {
    w.clock.advance(2000);
    w.scheduler.runDue();
    await w.log.checkpoint();
  }
  toString(): string {
    return 'checkpoint';
  }
}

class Reopen implements Cmd {
  check(): boolean {
    return true;
  }
  async run(m: Model, w: World): Promise<void> {
    await w.log.close();
    await w.open();
    m.durable = m.first + m.entries.length - 1;
    await checkAll(w, m);
  }
  toString(): string {
    return 'reopen';
  }
}

class Crash implements Cmd {
  constructor(readonly mode: CrashMode) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, w: World): Promise<void> {
    const written = w.log.writtenIndex();
    w.crash(this.mode);
    await w.open();
    const last = w.log.lastIndex();
    assert.equal(w.log.firstIndex(), m.first, 'first index after crash');
    assert.ok(last >= m.durable, `lost durable entries: last ${last} < durable ${m.durable}`);
    assert.ok(last <= m.first + m.entries.length - 1, 'entries appeared from nowhere');
    // A process crash loses only what never left the process's buffers.
    if (this.mode === 'keep') assert.ok(last >= written, `process crash lost written ${written}`);
    m.entries.length = last - m.first + 1;
    m.durable = last;
    m.term = Math.max(m.term, w.log.lastTerm());
    await checkAll(w, m);
  }
  toString(): string {
    return `crash(${this.mode})`;
  }
}

const commands = [
  fc
    .tuple(
      fc.array(fc.integer({ min: 0, max: 700 }), { minLength: 1, maxLength: 12 }),
      fc.boolean(),
      fc.nat(255),
    )
    .map(([s, b, salt]) => new Append(s, b, salt)),
  fc.constant(new Flush()),
  fc
    .tuple(fc.nat(), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 5000 }))
    .map(([p, c, b]) => new Read(p, c, b)),
  fc.nat().map((p) => new Truncate(p)),
  fc.nat().map((p) => new RemovePrefix(p)),
  fc.constant(new Checkpoint()),
  fc.constant(new Reopen()),
  fc.constantFrom<CrashMode>('lose', 'tear', 'keep').map((mode) => new Crash(mode)),
];

describe('CommitLog model', function () {
  this.timeout(Number(process.env.RAFTMQ_TEST_TIMEOUT_MS ?? 120_000));

  it('agrees with an in-memory model through appends, truncations, reopens and crashes', async () => {
    let releasedBytes = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer(),
        fc.commands(commands, { maxCommands: 40, size: 'max' }),
        async (seed, cmds) => {
          const w = new World(seed);
          await w.open();
          const model: Model = { entries: [], first: 1, durable: 0, term: 1 };
          await fc.asyncModelRun(() => ({ model, real: w }), cmds);
          await checkAll(w, model);
          await w.log.close();
          assert.equal(w.disk.cacheReleases.unsyncedBytes, 0, 'released unsynced bytes');
          releasedBytes += w.disk.cacheReleases.releasedBytes;
        },
      ),
      fcParams(60),
    );
    assert.ok(releasedBytes > 0, 'some run released page-cache pages');
  });
});
