/**
 * Byte access on the hot paths, written so that V8's optimizing compiler inlines it.
 *
 * On Node.js 20 (V8 11.3) TurboFan does not inline a property loaded from a typed array's
 * prototype chain: every `buf.readUInt32BE(...)`, `buf.writeUInt32BE(...)`, `buf.subarray(...)`,
 * `buf.set(...)` and every read of the `byteLength` getter goes through the generic LoadIC
 * builtin first, even in optimized code, and `byteLength` then calls a second builtin. Indexed
 * element access and `length` are inlined. Measured alone, two `writeUInt32BE` calls ran at a
 * tenth of the speed of the same stores done by index, and `byteLength` at a tenth of `length`;
 * in `bench:raft` the LoadIC builtin was 5% of all the machine's samples (docs/performance.md).
 *
 * So the hot paths read and write integers by index with the functions below, read `length`
 * (equal to `byteLength` for `Uint8Array` and `Buffer`), and call `set` and `subarray` through
 * functions fetched once here (`Function.prototype.call` on a constant is inlined).
 * Everything here takes the caller's word for bounds, as the Buffer methods with
 * `noAssert` once did: callers check lengths before they read.
 */

// Called through `.call` with their receiver; `Buffer.prototype` is untyped, so the Buffer method
// is taken from an instance (Node.js gives Buffer its own `subarray`).
const u8Set: (this: Uint8Array, src: ArrayLike<number>, offset: number) => void =
  // eslint-disable-next-line @typescript-eslint/unbound-method
  Uint8Array.prototype.set;
const bufferSubarray: (this: Buffer, start: number, end: number) => Buffer =
  // eslint-disable-next-line @typescript-eslint/unbound-method
  Buffer.alloc(0).subarray;

const TWO_32 = 2 ** 32;

/** `dst.set(src, offset)`: copies all of `src` into `dst` at `offset`. */
export function copyBytes(dst: Uint8Array, src: Uint8Array, offset: number): void {
  u8Set.call(dst, src, offset);
}

/** `buf.subarray(start, end)` of a Buffer: a view, no copy. */
export function bufferView(buf: Buffer, start: number, end: number): Buffer {
  return bufferSubarray.call(buf, start, end);
}

export function readU32BE(b: Uint8Array, o: number): number {
  return (
    (b[o] ?? 0) * 0x1000000 + (((b[o + 1] ?? 0) << 16) | ((b[o + 2] ?? 0) << 8) | (b[o + 3] ?? 0))
  );
}

/** 4 big-endian bytes as a signed 32-bit integer. */
export function readI32BE(b: Uint8Array, o: number): number {
  return ((b[o] ?? 0) << 24) | ((b[o + 1] ?? 0) << 16) | ((b[o + 2] ?? 0) << 8) | (b[o + 3] ?? 0);
}

/** Stores the low 32 bits of `v` (two's complement for a negative one), big-endian. */
export function writeU32BE(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/** Stores the low 32 bits of `v`, little-endian. */
export function writeU32LE(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

/** A non-negative safe integer as 8 bytes, big-endian. */
export function writeU64BE(b: Uint8Array, o: number, v: number): void {
  writeU32BE(b, o, Math.floor(v / TWO_32));
  writeU32BE(b, o + 4, v >>> 0);
}

/** 8 big-endian bytes as a number (exact below 2^53). */
export function readU64BE(b: Uint8Array, o: number): number {
  return readU32BE(b, o) * TWO_32 + readU32BE(b, o + 4);
}
