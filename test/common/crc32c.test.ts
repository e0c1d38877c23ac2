// CRC32C by raftmq's addon (native/crc32c.c), by the npm package and by the small JavaScript
// loop: the same values for every buffer, range and starting value; the check value of the
// standard; ranges refused alike when they do not fit or are not whole numbers; and the addon in
// use where it is built.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as fc from 'fast-check';
import { crc32c as packageCrc32c } from '@node-rs/crc32';
import {
  crc32c,
  crc32cImplementation,
  crc32cRange,
  crc32cSmall,
  packageCrc32cRange,
} from '../../src/common/crc32c';

const ADDON_PATH = path.join(__dirname, '..', '..', 'native', 'crc32c.node');

type RangeCrc = (bytes: Uint8Array, start: number, end: number, initial: number) => number;

/** The addon's function when it is built here, else undefined. */
function addonCrc(): RangeCrc | undefined {
  if (!fs.existsSync(ADDON_PATH)) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require(ADDON_PATH) as { crc32c?: RangeCrc }).crc32c;
}

/** Every implementation of a range CRC: the module's, the package's and the addon's if built. */
function implementations(): [string, RangeCrc][] {
  const all: [string, RangeCrc][] = [
    ['crc32cRange', crc32cRange],
    ['packageCrc32cRange', packageCrc32cRange],
  ];
  const addon = addonCrc();
  if (addon !== undefined) all.push(['addon', addon]);
  return all;
}

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
          for (const [name, f] of implementations()) {
            assert.equal(f(bytes, start, end, initial), expected, name);
          }
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

  it('refuses a range that does not fit or is not whole numbers, in every implementation', () => {
    const bytes = Buffer.alloc(10);
    const bad: [number, number, number][] = [
      [4, 11, 0],
      [5, 4, 0],
      [-1, 4, 0],
      [0, Number.NaN, 0],
      [1.5, 4, 0],
      [0, 2 ** 32 + 3, 0],
      [0, 4, -1],
      [0, 4, 2 ** 32],
      [0, 4, 0.5],
    ];
    for (const [name, f] of implementations()) {
      for (const [start, end, initial] of bad) {
        assert.throws(
          () => f(bytes, start, end, initial),
          RangeError,
          `${name}(${start}, ${end}, ${initial})`,
        );
      }
      assert.equal(f(bytes, 10, 10, 77), 77, `${name}: an empty range leaves the value as it was`);
    }
    const addon = addonCrc();
    if (addon !== undefined) {
      assert.throws(() => addon(new Uint16Array(4) as unknown as Uint8Array, 0, 1, 0), TypeError);
    }
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
