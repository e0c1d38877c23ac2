/*
 * The small shared pieces: option resolution (unknown keys and ranges are refused with the field
 * named; an explicit 0 is kept), the seeded PRNG (same seed, same sequence; ranges honoured),
 * CRC32C against the standard check value, and the promise mutex (strict order, errors passed
 * to their caller only).
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { intInRange, resolveOptions, oneOf } from '../../src/common/options';
import { createPrng } from '../../src/common/prng';
import { crc32c, crc32cSmall } from '../../src/common/crc32c';
import { Mutex } from '../../src/common/mutex';
import { isRaftmqError } from '../../src/common/errors';

interface Opts {
  sizeBytes: number;
  mode: 'A' | 'B';
}
const DEFAULTS: Readonly<Opts> = Object.freeze({ sizeBytes: 10, mode: 'A' });
const SPEC = { sizeBytes: intInRange(0, 100), mode: oneOf<'A' | 'B'>('A', 'B') };

describe('common', () => {
  it('resolves options: defaults, explicit zero, unknown keys and ranges named', () => {
    assert.deepEqual(resolveOptions('thing', DEFAULTS, SPEC, undefined), DEFAULTS);
    assert.equal(resolveOptions('thing', DEFAULTS, SPEC, { sizeBytes: 0 }).sizeBytes, 0);
    assert.throws(
      () => resolveOptions('thing', DEFAULTS, SPEC, { sizeBytes: 101 }),
      (e) => isRaftmqError(e, 'INVALID_OPTION') && /thing\.sizeBytes/.test(e.message),
    );
    assert.throws(
      () => resolveOptions('thing', DEFAULTS, SPEC, { nope: 1 } as Partial<Opts>),
      (e) => isRaftmqError(e, 'INVALID_OPTION') && /thing\.nope: unknown option/.test(e.message),
    );
    assert.throws(() => resolveOptions('thing', DEFAULTS, SPEC, { sizeBytes: 1.5 }), /integer/);
    assert.ok(Object.isFrozen(resolveOptions('thing', DEFAULTS, SPEC, {})));
  });

  it('draws the same sequence from the same seed, within the asked ranges', () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.integer({ min: -50, max: 50 }),
        fc.integer({ min: 1, max: 100 }),
        (seed, lo, width) => {
          const a = createPrng(seed);
          const b = createPrng(seed);
          for (let i = 0; i < 50; i++) {
            const x = a.nextInt(lo, lo + width);
            assert.equal(x, b.nextInt(lo, lo + width));
            assert.ok(x >= lo && x < lo + width);
            const f = a.nextFloat();
            assert.equal(f, b.nextFloat());
            assert.ok(f >= 0 && f < 1);
          }
        },
      ),
    );
    assert.notEqual(createPrng(1).nextU32(), createPrng(2).nextU32());
  });

  it('computes CRC32C (standard check value) natively and in JavaScript alike', () => {
    const check = Buffer.from('123456789');
    assert.equal(crc32c(check), 0xe3069283);
    assert.equal(crc32cSmall(check, 0, check.length), 0xe3069283);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat({ max: 64 }), (bytes, cut) => {
        const k = Math.min(cut, bytes.length);
        const chained = crc32c(bytes.subarray(k), crc32cSmall(bytes, 0, k));
        assert.equal(chained, crc32c(bytes));
      }),
    );
  });

  it('runs mutex sections one at a time in call order', async () => {
    const m = new Mutex();
    const order: number[] = [];
    const tasks = [3, 1, 2].map((n, i) =>
      m.run(async () => {
        order.push(i);
        await new Promise<void>((r) => setImmediate(r));
        if (n === 1) throw new Error('second fails');
        order.push(i);
        return n;
      }),
    );
    const results = await Promise.allSettled(tasks);
    assert.deepEqual(order, [0, 0, 1, 2, 2]);
    assert.equal(results[1]?.status, 'rejected');
    assert.equal(results[2]?.status, 'fulfilled');
  });
});
