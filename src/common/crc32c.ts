/**
 * CRC32C (Castagnoli), the checksum of every stored record. Computed by `@node-rs/crc32`, which
 * uses the CPU's CRC instructions: at our append rates a table-driven JavaScript CRC would
 * cost more than the rest of the write path together.
 */
import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/** CRC32C of `data`, continuing from `initial` (0 to start), as an unsigned 32-bit number. */
export function crc32c(data: Uint8Array, initial = 0): number {
  return nativeCrc32c(data, initial) >>> 0;
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
