/**
 * NodeDisk on the real file system: its small writes are synchronous underneath and its large
 * ones go to the thread pool (see the file comment of node-disk.ts), and both must behave as
 * the asynchronous `DiskFile` contract says: every buffer lands back to back at the position,
 * and a failure comes back as a rejected promise rather than an exception thrown at the
 * caller.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NodeDisk } from '../../src/store/node-disk';

describe('NodeDisk', () => {
  let dir: string;
  const disk = new NodeDisk();

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-node-disk-'));
  });

  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes buffers back to back at the position', async () => {
    const file = await disk.open(path.join(dir, 'f'), true);
    try {
      await file.writev([Buffer.from('abc'), Buffer.alloc(0), Buffer.from('defg')], 0);
      await file.writev([Buffer.from('XY')], 2);
      await file.writev([new Uint8Array([0x7a])], 10);
      await file.sync();
      assert.equal(await file.size(), 11);
      const back = Buffer.alloc(11);
      assert.equal(await file.read(back, 0, 11, 0), 11);
      assert.deepEqual(back, Buffer.from('abXYefg\0\0\0z', 'latin1'));
    } finally {
      await file.close();
    }
  });

  it('reports a failed write as a rejected promise, not a thrown exception', async () => {
    // /dev/full refuses every write with ENOSPC (the CommitLog maps it to DISK_FULL).
    const file = await disk.open('/dev/full', false);
    try {
      for (const size of [16, 2 * 1024 * 1024]) {
        let pending: Promise<void> | undefined;
        assert.doesNotThrow(() => {
          pending = file.writev([Buffer.alloc(size)], 0);
        });
        await assert.rejects(pending as Promise<void>, (err: NodeJS.ErrnoException) => {
          assert.equal(err.code, 'ENOSPC');
          return true;
        });
      }
    } finally {
      await file.close();
    }
  });

  it('writes large buffers (through the thread pool) as completely as small ones', async () => {
    const file = await disk.open(path.join(dir, 'h'), true);
    try {
      const big = Buffer.alloc(3 * 1024 * 1024 + 5, 0x41);
      big[big.length - 1] = 0x42;
      await file.writev([Buffer.from('head'), big], 7);
      assert.equal(await file.size(), 7 + 4 + big.length);
      const tail = Buffer.alloc(5);
      await file.read(tail, 0, 5, 7 + 4 + big.length - 5);
      assert.deepEqual(tail, Buffer.from('AAAAB'));
    } finally {
      await file.close();
    }
  });
});
