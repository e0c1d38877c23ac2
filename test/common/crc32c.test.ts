// CRC32C by raftmq's addon (native/crc32c.c), by the npm package and by the small JavaScript
// loop: the same values for every buffer, range and starting value; the check value of the
// standard; ranges refused when they do not fit; and the addon in use where it is built.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as fc from 'fast-check';
import { crc32c as packageCrc32c } from '@node-rs/crc32';
import { crc32c, crc32cImplementation, crc32cRange, crc32cSmall } from '../../src/common/crc32c';

const ADDON_PATH = path.join(__dirname, '..', '..', 'native', 'crc32c.node');

describe('crc32c', () => {
  it('gives the standard check value', () => {
    const check = Buffer.from('123456789');
    assert.equal(crc32c(check), 0xe3069283);
    assert.equal(crc32cRange(Buffer.concat([Buffer.from('xx'), check]), 2, 11), 0xe3069283);
  });

  it('agrees with the package and the JavaScript loop on every range and starting value', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(),
        fc.nat(),
        fc.nat({ max: 0xffffffff }),
        (bytes, a, b, initial) => {
          const start = bytes.length === 0 ? 0 : a % (bytes.length + 1);
          const end = start + (b % (bytes.length - start + 1));
          const expected = packageCrc32c(bytes.subarray(start, end), initial) >>> 0;
          assert.equal(crc32cRange(bytes, start, end, initial), expected);
          assert.equal(crc32cSmall(bytes, start, end, initial), expected);
          assert.equal(crc32c(bytes.subarray(start, end), initial), expected);
        },
      ),
      { numRuns: 2000 },
    );
    // Long inputs, and views that do not start at their buffer's start.
    const big = Buffer.alloc(3 * 1024 * 1024 + 5);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
    const view = big.subarray(7, big.length - 3);
    assert.equal(crc32c(view, 0x1234), packageCrc32c(view, 0x1234) >>> 0);
    assert.equal(crc32cRange(view, 1000, view.length), packageCrc32c(view.subarray(1000)) >>> 0);
  });

  it('refuses a range that does not fit', () => {
    const bytes = Buffer.alloc(10);
    assert.throws(() => crc32cRange(bytes, 4, 11), RangeError);
    assert.throws(() => crc32cRange(bytes, 5, 4), RangeError);
    assert.equal(crc32cRange(bytes, 10, 10, 77), 77, 'an empty range leaves the value as it was');
  });

  it('uses the addon where it is built (Linux on x86-64 with SSE4.2)', function () {
    if (
      process.platform !== 'linux' ||
      process.arch !== 'x64' ||
      process.env.RAFTMQ_NATIVE === 'off' ||
      !fs.readFileSync('/proc/cpuinfo', 'utf8').includes('sse4_2')
    ) {
      this.skip();
    }
    assert.ok(fs.existsSync(ADDON_PATH), `${ADDON_PATH} was not built (see native/build.js)`);
    assert.equal(crc32cImplementation, 'addon');
  });
});
