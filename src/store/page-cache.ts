/**
 * The native helper that hands page-cache pages back to the kernel (`native/page-cache.c`,
 * posix_fadvise DONTNEED), loaded once if it was built. Node.js has no binding for it; without
 * the addon (no C compiler at build time, not Linux) the store keeps what it writes cached, as
 * it did before (docs/storage.md, "Page cache").
 */
import { getSystemErrorName } from 'node:util';
import { loadNativeAddon } from '../common/native-addon';

interface PageCacheAddon {
  dropCache(fd: number, offset: number, length: number): number;
}

const loaded = loadNativeAddon<PageCacheAddon>('page-cache', ['dropCache']);
const addon = loaded.addon;

/** True when page-cache pages can be released (the addon is built and loaded). */
export const canReleasePageCache = addon !== undefined;

/** Why the addon is not loaded (for one log line at start-up); undefined when it is. */
export const pageCacheUnavailableReason = loaded.reason;

/**
 * Advises the kernel that `length` bytes of `fd` from `offset` will not be needed soon: clean
 * cached pages of the range are freed (dirty ones are left to writeback). Contents never change.
 * All three must be non-negative safe integers, and a length of 0 does nothing (to the kernel
 * it would mean "to the end of the file"). Throws an Error with the errno's `code` and `errno`
 * when the kernel refuses; a no-op without the addon.
 */
export function releasePageCache(fd: number, offset: number, length: number): void {
  for (const [name, value] of [['fd', fd], ['offset', offset], ['length', length]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new TypeError(`releasePageCache: ${name} must be a non-negative integer, got ${value}`);
    }
  }
  if (addon === undefined || length === 0) return;
  const errno = addon.dropCache(fd, offset, length);
  if (errno !== 0) {
    // Node's names take libuv's negated errno numbers.
    const code = getSystemErrorName(-errno);
    const err: NodeJS.ErrnoException = new Error(
      `posix_fadvise(DONTNEED) of ${length} bytes at ${offset} failed: ${code}`,
    );
    err.code = code;
    err.errno = errno;
    throw err;
  }
}
