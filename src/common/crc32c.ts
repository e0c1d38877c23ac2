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
