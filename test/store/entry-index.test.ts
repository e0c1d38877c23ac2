// The entry index's staging buffers: records staged while an earlier round's write is still
// running go to another buffer, and a written buffer is used again for a later round; every
// record reads back as staged.
import { strict as assert } from 'node:assert';
import { ManualClock } from '../../src/common/clock';
import { createPrng } from '../../src/common/prng';
import { SimDisk } from '../../src/sim/sim-disk';
import { EntryIndex, type IndexRecord } from '../../src/store/entry-index';
import { FileCache } from '../../src/store/file-cache';

function record(index: number): IndexRecord {
  return { index, position: index * 1000, sizeBytes: 100 + index, term: 1 + (index >> 8) };
}

describe('EntryIndex staging', () => {
  it('keeps a round being written apart from the next, and reuses written buffers', async () => {
    const disk = new SimDisk({ clock: new ManualClock(0), prng: createPrng(3) });
    await disk.mkdirp('/idx');
    const index = new EntryIndex(disk, '/idx', 10_000, new FileCache(disk, 8));
    let next = 1;
    const stage = (count: number): void => {
      for (let i = 0; i < count; i++) index.stage(record(next++));
    };
    const buffers = new Set<Buffer>();
    for (let round = 0; round < 6; round++) {
      stage(700);
      const taken = index.takeStaged();
      assert.ok(taken !== undefined);
      buffers.add(taken.buffer);
      // The write yields before the disk copies the bytes: records staged meanwhile must not
      // land in the buffer being written.
      const writing = index.writeTaken(taken);
      stage(300);
      await writing;
      const more = index.takeStaged();
      assert.ok(more !== undefined);
      buffers.add(more.buffer);
      await index.writeTaken(more);
    }
    assert.ok(buffers.size <= 3, `${buffers.size} buffers for 12 rounds: written ones are reused`);
    const read = await index.readRange(1, next - 1);
    assert.equal(read.length, next - 1);
    read.forEach((r, i) => assert.deepEqual(r, record(i + 1)));
  });
});
