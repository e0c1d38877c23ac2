// The SDK's message ids: the official clients' v1 layout, 17 bytes as 34 uppercase hex digits.
import * as assert from 'node:assert/strict';
import fc from 'fast-check';
import { newMessageId } from '../../src/client/message-id';

const EPOCH_2021_MS = Date.UTC(2021, 0, 1);

describe('newMessageId (message-id.ts)', () => {
  it('writes version, host, process, second and sequence in the v1 layout', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: EPOCH_2021_MS, max: EPOCH_2021_MS + 2 ** 32 * 1000 - 1 }),
        (nowMs) => {
          const a = newMessageId(nowMs);
          const b = newMessageId(nowMs);
          for (const id of [a, b]) assert.match(id, /^01[0-9A-F]{32}$/);
          const bytesA = Buffer.from(a, 'hex');
          const bytesB = Buffer.from(b, 'hex');
          assert.equal(bytesA.readUInt16BE(7), process.pid % 65535);
          assert.equal(bytesA.readUInt32BE(9), Math.floor((nowMs - EPOCH_2021_MS) / 1000));
          assert.deepEqual(bytesA.subarray(0, 13), bytesB.subarray(0, 13));
          assert.equal(bytesB.readUInt32BE(13), (bytesA.readUInt32BE(13) + 1) >>> 0);
        },
      ),
    );
  });

  it('clamps a clock before 2021 to second 0 and never repeats within a run', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 10_000; i++) ids.add(newMessageId(i % 2 === 0 ? 0 : Date.now()));
    assert.equal(ids.size, 10_000);
    assert.equal(Buffer.from(newMessageId(0), 'hex').readUInt32BE(9), 0);
  });
});
