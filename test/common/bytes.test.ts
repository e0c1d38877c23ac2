/*
 * The byte helpers the hot paths use instead of Buffer's methods (src/common/bytes.ts): each one
 * must give exactly what the Buffer method it replaces gives, for any value in its range and at
 * any offset, including the sign of negative 32-bit values and u64 values up to 2^53 - 1. Checked
 * as properties against `readUInt32BE`, `writeInt32BE`, `writeBigUInt64BE` and friends.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import {
  bufferView,
  copyBytes,
  readI32BE,
  readU32BE,
  readU64BE,
  writeU32BE,
  writeU32LE,
  writeU64BE,
} from '../../src/common/bytes';

const BUF_BYTES = 24;
const offsetArb = fc.integer({ min: 0, max: BUF_BYTES - 8 });
const u32Arb = fc.integer({ min: 0, max: 0xffffffff });
const i32Arb = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const u64Arb = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const bytesArb = fc.uint8Array({ minLength: BUF_BYTES, maxLength: BUF_BYTES });

describe('bytes', () => {
  it('reads 32-bit integers as Buffer does', () => {
    fc.assert(
      fc.property(bytesArb, offsetArb, (bytes, at) => {
        const buf = Buffer.from(bytes);
        assert.equal(readU32BE(buf, at), buf.readUInt32BE(at));
        assert.equal(readI32BE(buf, at), buf.readInt32BE(at));
        // A plain Uint8Array reads the same.
        assert.equal(readU32BE(bytes, at), buf.readUInt32BE(at));
      }),
    );
  });

  it('writes 32-bit integers as Buffer does, signed ones in two’s complement', () => {
    fc.assert(
      fc.property(offsetArb, u32Arb, i32Arb, (at, u, i) => {
        const ours = Buffer.alloc(BUF_BYTES);
        const theirs = Buffer.alloc(BUF_BYTES);
        writeU32BE(ours, at, u);
        theirs.writeUInt32BE(u, at);
        assert.deepEqual(ours, theirs);
        writeU32LE(ours, at, u);
        theirs.writeUInt32LE(u, at);
        assert.deepEqual(ours, theirs);
        writeU32BE(ours, at, i);
        theirs.writeInt32BE(i, at);
        assert.deepEqual(ours, theirs);
        assert.equal(readI32BE(ours, at), i);
      }),
    );
  });

  it('writes and reads safe integers as u64, big-endian', () => {
    fc.assert(
      fc.property(offsetArb, u64Arb, (at, v) => {
        const ours = Buffer.alloc(BUF_BYTES);
        const theirs = Buffer.alloc(BUF_BYTES);
        writeU64BE(ours, at, v);
        theirs.writeBigUInt64BE(BigInt(v), at);
        assert.deepEqual(ours, theirs);
        assert.equal(readU64BE(ours, at), v);
      }),
    );
  });

  it('copies into place and views without copying', () => {
    fc.assert(
      fc.property(bytesArb, fc.uint8Array({ maxLength: 8 }), offsetArb, (bytes, src, at) => {
        const ours = Buffer.from(bytes);
        const theirs = Buffer.from(bytes);
        copyBytes(ours, src, at);
        theirs.set(src, at);
        assert.deepEqual(ours, theirs);
        const view = bufferView(ours, at, at + 8);
        assert.ok(Buffer.isBuffer(view));
        assert.deepEqual(view, theirs.subarray(at, at + 8));
        view[0] = (view[0] ?? 0) ^ 0xff;
        assert.equal(ours[at], view[0], 'a view shares its bytes');
      }),
    );
  });
});
