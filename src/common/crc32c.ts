/**
 * CRC32C (Castagnoli), the checksum of every stored record. Computed with the CPU's crc32
 * instruction by raftmq's own addon (`native/crc32c.c`, built by `npm run build` where a C
 * compiler is), else by `@node-rs/crc32`, which uses the CPU's instructions too: at our append
 * rates a table-driven JavaScript CRC would cost more than the rest of the write path together.
 * The addon takes a range of a buffer (no view per call) and costs about half as much per call
 * of 1 KiB (docs/performance.md); both give the same values (test/common/crc32c.test.ts).
 */
import { crc32c as packageCrc32c } from '@node-rs/crc32';
import { loadNativeAddon } from './native-addon';

interface Crc32cAddon {
  crc32c: (bytes: Uint8Array, start: number, end: number, initial: number) => number;
}

// Without SSE4.2 (or off x86-64) the addon exports no function.
const addon = loadNativeAddon<Crc32cAddon>('crc32c', ['crc32c']).addon;
const addonCrc32c = addon?.crc32c;

/** Which implementation {@link crc32c} uses: 'addon' or 'package'. */
export const crc32cImplementation: 'addon' | 'package' = addon === undefined ? 'package' : 'addon';

/** CRC32C of `data`, continuing from `initial` (0 to start), as an unsigned 32-bit number. */
export function crc32c(data: Uint8Array, initial = 0): number {
  if (addonCrc32c !== undefined) return addonCrc32c(data, 0, data.length, initial);
  return packageCrc32c(data, initial) >>> 0;
}

/**
 * CRC32C of `data[start..end)`, continuing from `initial`: {@link crc32c} of that range, without
 * a view of it when the addon is loaded. `start <= end <= data.length` must hold (a RangeError
 * otherwise).
 */
export function crc32cRange(data: Uint8Array, start: number, end: number, initial = 0): number {
  if (addonCrc32c !== undefined) return addonCrc32c(data, start, end, initial);
  return packageCrc32cRange(data, start, end, initial);
}

/**
 * {@link crc32cRange} by the package, with the addon's checks: whole numbers, the range within
 * `data` and `initial` a 32-bit unsigned value, or a RangeError. Exported for the tests, which
 * hold both implementations to the same values and errors.
 */
export function packageCrc32cRange(
  data: Uint8Array,
  start: number,
  end: number,
  initial = 0,
): number {
  if (
    !Number.isInteger(start) ||
    !Number.isInteger(end) ||
    !(start >= 0 && start <= end && end <= data.length) ||
    !Number.isInteger(initial) ||
    !(initial >= 0 && initial <= 0xffffffff)
  ) {
    throw new RangeError(
      `crc32cRange: [${start}, ${end}) from ${initial} is not a range of ${data.length} bytes`,
    );
  }
  return packageCrc32c(data.subarray(start, end), initial) >>> 0;
}

/** CRC32C lookup table (reflected polynomial 0x82F63B78), for the few-byte inputs below. */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC32C of `data[start..end)` in JavaScript. For a handful of bytes this beats a native call
 * (whose fixed cost is larger than the work); use {@link crc32c} for anything longer.
 */
export function crc32cSmall(data: Uint8Array, start: number, end: number, initial = 0): number {
  let c = ~initial >>> 0;
  for (let i = start; i < end; i++) c = (TABLE[(c ^ (data[i] ?? 0)) & 0xff] ?? 0) ^ (c >>> 8);
  return ~c >>> 0;
}
