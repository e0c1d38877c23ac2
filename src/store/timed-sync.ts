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
import * as fs from 'node:fs';
import { getSystemErrorMap, getSystemErrorName } from 'node:util';
import { loadNativeAddon } from '../common/native-addon';
import type { SyncTiming } from './disk';

type SyncCall = (fd: number, callback: (errno: number, callMs: number) => void) => void;

interface TimedSyncAddon {
  fdatasync: SyncCall;
  fsync: SyncCall;
}

const loaded = loadNativeAddon<TimedSyncAddon>('timed-sync', ['fdatasync', 'fsync']);
const addon = loaded.addon;

/** True when sync calls are timed (the addon is built and loaded). */
export const canTimeSyncs = addon !== undefined;

/** Why the addon is not loaded (for one log line at start-up); undefined when it is. */
export const syncTimingUnavailableReason = loaded.reason;

/**
 * `syscall` (fdatasync of a file, or fsync of a directory for its entries) of `fd`, which
 * belongs to `filePath`, on the thread pool; resolves with the call's own time, or undefined
 * without the addon (then it is the `fs` call, untimed). Rejects as the `fs` call does: an Error
 * with the errno's `code`, negative `errno`, `syscall` and `path`, its message in the form of
 * Node's (`EIO: i/o error, fdatasync '<path>'`).
 */
export function timedSync(
  syscall: 'fdatasync' | 'fsync',
  fd: number,
  filePath: string,
): Promise<SyncTiming | undefined> {
  if (addon === undefined) {
    return new Promise((resolve, reject) => {
      fs[syscall](fd, (err) => (err ? reject(err) : resolve(undefined)));
    });
  }
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
