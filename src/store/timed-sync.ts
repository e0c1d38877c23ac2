/**
 * fdatasync and fsync timed on the thread that makes the call (`native/timed-sync.c`), loaded
 * once if it was built. A sync round of the CommitLog is timed from hand-off to completion on the
 * event loop; that holds the system call, the wait for a thread-pool thread and the wait for the
 * loop to take the completion. With this addon the call's own time is known too, so a slow round
 * with a fast call is known to have waited for a CPU, not for the disk (docs/storage.md, "Sync
 * rounds"). A slow call is the disk, or on a busy machine also the thread's wait to run again
 * once the disk answered. Without the addon (no C compiler at build time, not Linux,
 * `RAFTMQ_NATIVE=off`) the store syncs with `fs.fdatasync` and `fs.fsync`, untimed.
 */
import * as path from 'node:path';
import { getSystemErrorMap, getSystemErrorName } from 'node:util';
import type { SyncTiming } from './disk';

type SyncCall = (fd: number, callback: (errno: number, callMs: number) => void) => void;

interface TimedSyncAddon {
  fdatasync: SyncCall;
  fsync: SyncCall;
}

/** Where native/build.js puts the addon, relative to this module in `dist/src/store/`. */
const ADDON_PATH = path.join(__dirname, '..', '..', 'native', 'timed-sync.node');

function load(): { addon?: TimedSyncAddon; reason?: string } {
  try {
    // A native addon can only be loaded by require.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addon = require(ADDON_PATH) as Partial<TimedSyncAddon>;
    if (typeof addon.fdatasync === 'function' && typeof addon.fsync === 'function') {
      return { addon: addon as TimedSyncAddon };
    }
    return { reason: `${ADDON_PATH} has no fdatasync and fsync functions` };
  } catch (err) {
    return { reason: err instanceof Error ? err.message : String(err) };
  }
}

const loaded = load();
const addon = loaded.addon;

/** True when sync calls are timed (the addon is built and loaded). */
export const canTimeSyncs = addon !== undefined;

/** Why the addon is not loaded (for one log line at start-up); undefined when it is. */
export const syncTimingUnavailableReason = loaded.reason;

/**
 * Runs `call` of the addon on `fd`, or `fallback` (untimed) without the addon. Rejects as the
 * `fs` call does: an Error with the errno's `code`, negative `errno`, `syscall` and `path`.
 */
function timed(
  syscall: 'fdatasync' | 'fsync',
  fd: number,
  filePath: string,
  fallback: () => Promise<void>,
): Promise<SyncTiming | undefined> {
  if (addon === undefined) return fallback().then(() => undefined);
  const call = addon[syscall];
  return new Promise((resolve, reject) => {
    call(fd, (errno, callMs) => {
      if (errno === 0) {
        resolve({ callMs });
        return;
      }
      // Node's names and descriptions take libuv's negated errno numbers.
      const code = getSystemErrorName(-errno);
      const description = getSystemErrorMap().get(-errno)?.[1] ?? 'unknown error';
      const err: NodeJS.ErrnoException = new Error(
        `${code}: ${description}, ${syscall} '${filePath}'`,
      );
      err.code = code;
      err.errno = -errno;
      err.syscall = syscall;
      err.path = filePath;
      reject(err);
    });
  });
}

/** fdatasync of `fd` (a file at `filePath`) on the thread pool; see {@link timed}. */
export function timedFdatasync(
  fd: number,
  filePath: string,
  fallback: () => Promise<void>,
): Promise<SyncTiming | undefined> {
  return timed('fdatasync', fd, filePath, fallback);
}

/** fsync of `fd` (a directory's, for its entries) on the thread pool; see {@link timed}. */
export function timedFsync(
  fd: number,
  filePath: string,
  fallback: () => Promise<void>,
): Promise<SyncTiming | undefined> {
  return timed('fsync', fd, filePath, fallback);
}
