/**
 * NodeDisk on the real file system: its small writes are synchronous underneath and its large
 * ones go to the thread pool (see the file comment of node-disk.ts), and both must behave as
 * the asynchronous `DiskFile` contract says: every buffer lands back to back at the position,
 * and a failure comes back as a rejected promise rather than an exception thrown at the
 * caller. On Linux the page-cache addon (native/) must have been built, and releasing a synced
 * range must free its cached pages (seen with util-linux's `fincore` where it is installed)
 * and change nothing in the file. The timed-sync addon (also native/) must have been built too,
 * and a file's sync must then say how long its system call took.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { NodeDisk } from '../../src/store/node-disk';
import { releasePageCache } from '../../src/store/page-cache';
import { canTimeSyncs, timedSync } from '../../src/store/timed-sync';

/** Bytes of `file` in the page cache by util-linux's fincore, or undefined without it. */
function residentBytes(file: string): number | undefined {
  const run = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], {
    encoding: 'utf8',
  });
  if (run.error !== undefined || run.status !== 0) return undefined;
  return Number(run.stdout.trim());
}

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

  describe('page cache', () => {
    before(function () {
      if (process.platform !== 'linux' || process.env.RAFTMQ_NATIVE === 'off') this.skip();
    });

    it('has the native addon: npm run build compiles native/page-cache.c', () => {
      assert.ok(
        disk.releasesCache,
        'dist/native/page-cache.node is missing: the build needs a C compiler (cc) and the ' +
          "headers of this Node.js; see native/build.js (RAFTMQ_NATIVE=off to run without it)",
      );
    });

    it('frees the cached pages of a synced range and keeps its bytes', async () => {
      const filePath = path.join(dir, 'segment');
      const file = await disk.open(filePath, true);
      const bytes = Buffer.alloc(4 * 1024 * 1024);
      for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32LE(i, i);
      try {
        await file.writev([bytes], 0);
        await file.sync();
        const before = residentBytes(filePath);
        // Aligned to 2 MiB: the kernel frees only whole folios, and a folio may be 2 MiB.
        file.releaseCache(0, 2 * 1024 * 1024);
        const after = residentBytes(filePath);
        if (before !== undefined && after !== undefined) {
          assert.ok(before >= 4 * 1024 * 1024, `resident before: ${before}`);
          assert.ok(after <= 2 * 1024 * 1024, `resident after: ${after}`);
        }
        const back = Buffer.alloc(bytes.length);
        assert.equal(await file.read(back, 0, back.length, 0), back.length);
        assert.ok(back.equals(bytes), 'the bytes read back are the bytes written');
      } finally {
        await file.close();
      }
    });

    it('reports a refused release as an error with the errno, and bad arguments as TypeErrors', () => {
      // A descriptor far above any this process has open.
      assert.throws(
        () => releasePageCache(1 << 20, 0, 4096),
        (err: NodeJS.ErrnoException) =>
          err.code === 'EBADF' && err.errno === 9 && /posix_fadvise/.test(err.message),
      );
      const bad: Array<[number, number, number]> = [
        [1.5, 0, 1],
        [3, Number.NaN, 1],
        [3, 0, -1],
        [-1, 0, 1],
      ];
      for (const [fd, offset, length] of bad) {
        assert.throws(() => releasePageCache(fd, offset, length), TypeError, `${fd} ${offset}`);
      }
    });
  });
  describe('timed fdatasync', () => {
    before(function () {
      if (process.platform !== 'linux' || process.env.RAFTMQ_NATIVE === 'off') this.skip();
    });

    it('has the native addon: npm run build compiles native/timed-sync.c', () => {
      assert.ok(
        canTimeSyncs,
        'dist/native/timed-sync.node is missing: the build needs a C compiler (cc) and the ' +
          "headers of this Node.js; see native/build.js (RAFTMQ_NATIVE=off to run without it)",
      );
    });

    it("syncs a file's writes and says how long the call and the waits around it took", async () => {
      const filePath = path.join(dir, 'segment');
      const file = await disk.open(filePath, true);
      try {
        await file.writev([Buffer.alloc(64 * 1024, 7)], 0);
        const startedMs = performance.now();
        const timing = await file.sync();
        const roundMs = performance.now() - startedMs;
        assert.ok(timing !== undefined, 'timed');
        assert.ok(timing.callMs >= 0 && timing.callMs <= roundMs, `call ${timing.callMs} ms`);
        // A descriptor far above any this process has open: the call's error, with the fields
        // fs.fdatasync gives it; one that cannot be a descriptor: a TypeError. Both reject.
        const refused = await timedSync('fdatasync', 1 << 20, filePath).catch(
          (err: unknown) => err,
        );
        assert.ok(refused instanceof Error, 'rejected');
        await assert.rejects(timedSync('fdatasync', -1, filePath), TypeError);
        const err = refused as NodeJS.ErrnoException;
        assert.deepEqual(
          [err.code, err.errno, err.syscall, err.path],
          ['EBADF', -9, 'fdatasync', filePath],
        );
        assert.match(err.message, /^EBADF: bad file descriptor, fdatasync '/);
      } finally {
        await file.close();
      }
      assert.equal(fs.readFileSync(filePath).length, 64 * 1024);
    });

    it("syncs a directory's entries and times that call too", async () => {
      const timing = await disk.syncDir(dir);
      assert.ok(timing !== undefined && timing.callMs >= 0, 'timed');
      await assert.rejects(
        disk.syncDir(path.join(dir, 'missing')),
        (err: NodeJS.ErrnoException) => err.code === 'ENOENT',
      );
      await assert.rejects(
        timedSync('fsync', 1 << 20, dir),
        (err: NodeJS.ErrnoException) => err.code === 'EBADF' && err.syscall === 'fsync',
      );
    });
  });
});
