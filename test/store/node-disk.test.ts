/**
 * NodeDisk on the real file system: its writes are synchronous underneath (see the file comment
 * of node-disk.ts), and must still behave as the asynchronous `DiskFile` contract says: every
 * buffer lands back to back at the position, empty buffers are skipped, and a failure comes
 * back as a rejected promise rather than an exception thrown at the caller.
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

  it('writes buffers back to back at the position, skipping empty ones', async () => {
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
    const file = await disk.open(path.join(dir, 'g'), true);
    await file.close();
    let pending: Promise<void> | undefined;
    assert.doesNotThrow(() => {
      pending = file.writev([Buffer.from('late')], 0);
    });
    await assert.rejects(pending as Promise<void>, (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'EBADF');
      return true;
    });
  });
});
