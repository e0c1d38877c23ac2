/**
 * The native helper that hands page-cache pages back to the kernel (`native/page-cache.c`,
 * posix_fadvise DONTNEED), loaded once if it was built. Node.js has no binding for it; without
 * the addon (no C compiler at build time, not Linux) the store simply keeps what it writes
 * cached, as it did before (docs/storage.md, "Page cache").
 */
import * as path from 'node:path';

interface PageCacheAddon {
  dropCache(fd: number, offset: number, length: number): number;
}

/** Where native/build.js puts the addon, relative to this module in `dist/src/store/`. */
const ADDON_PATH = path.join(__dirname, '..', '..', 'native', 'page-cache.node');

function load(): PageCacheAddon | undefined {
  try {
    // A native addon can only be loaded by require.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addon = require(ADDON_PATH) as Partial<PageCacheAddon>;
    return typeof addon.dropCache === 'function' ? (addon as PageCacheAddon) : undefined;
  } catch {
    return undefined;
  }
}

const addon = load();

/** True when page-cache pages can be released (the addon is built and loaded). */
export const canReleasePageCache = addon !== undefined;

/**
 * Advises the kernel that `length` bytes of `fd` from `offset` will not be needed soon: clean
 * cached pages of the range are freed (dirty ones are left to writeback). Contents never change.
 * Throws an Error with the errno's code when the kernel refuses; a no-op without the addon.
 */
export function releasePageCache(fd: number, offset: number, length: number): void {
  if (addon === undefined || length <= 0) return;
  const errno = addon.dropCache(fd, offset, length);
  if (errno !== 0) {
    const err: NodeJS.ErrnoException = new Error(
      `posix_fadvise(DONTNEED) of ${length} bytes at ${offset} failed: errno ${errno}`,
    );
    err.errno = errno;
    throw err;
  }
}
