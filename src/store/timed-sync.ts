/**
 * fdatasync timed on the thread that makes the call (`native/timed-sync.c`), loaded once if it
 * was built. A sync round of the CommitLog is timed from hand-off to completion on the event
 * loop; that holds the system call, the wait for a thread-pool thread and the wait for the loop
 * to take the completion. With this addon the call's own time is known too, so a slow round
 * with a fast call is known to have waited for a CPU, not for the disk (docs/storage.md, "Sync
 * rounds"). A slow call is the disk, or on a busy machine also the thread's wait to run again
 * once the disk answered. Without the addon (no C compiler at build time, not Linux,
 * `RAFTMQ_NATIVE=off`) the store syncs with `fs.fdatasync` and rounds are timed as a whole.
 */
import * as path from 'node:path';
import { getSystemErrorName } from 'node:util';
import type { SyncTiming } from './disk';

interface TimedSyncAddon {
  fdatasync(fd: number, callback: (errno: number, callMs: number) => void): void;
}

/** Where native/build.js puts the addon, relative to this module in `dist/src/store/`. */
const ADDON_PATH = path.join(__dirname, '..', '..', 'native', 'timed-sync.node');

function load(): TimedSyncAddon | undefined {
  try {
    // A native addon can only be loaded by require.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addon = require(ADDON_PATH) as Partial<TimedSyncAddon>;
    return typeof addon.fdatasync === 'function' ? (addon as TimedSyncAddon) : undefined;
  } catch {
    return undefined;
  }
}

const addon = load();

/** True when fdatasync calls are timed (the addon is built and loaded). */
export const canTimeSyncs = addon !== undefined;

/**
 * fdatasync of `fd` on the thread pool; resolves with the system call's own time, or undefined
 * without the addon (then it is `fallback`, `fs.fdatasync`, untimed). Rejects as `fs.fdatasync`
 * does: an Error with the errno's `code`, `errno` and `syscall`, its message naming `filePath`.
 */
export function timedFdatasync(
  fd: number,
  filePath: string,
  fallback: () => Promise<void>,
): Promise<SyncTiming | undefined> {
  if (addon === undefined) return fallback().then(() => undefined);
  return new Promise((resolve, reject) => {
    addon.fdatasync(fd, (errno, callMs) => {
      if (errno === 0) {
        resolve({ callMs });
        return;
      }
      // Node's names take libuv's negated errno numbers.
      const code = getSystemErrorName(-errno);
      const err: NodeJS.ErrnoException = new Error(`${code}: fdatasync '${filePath}' failed`);
      err.code = code;
      err.errno = -errno;
      err.syscall = 'fdatasync';
      err.path = filePath;
      reject(err);
    });
  });
}
