/** Durations off the wire (src/broker/rmq-wire.ts `durationToMs`). */
import { strict as assert } from 'node:assert';
import { durationToMs } from '../../src/broker/rmq-wire';
import { isRaftmqError } from '../../src/common/errors';

describe('durationToMs', () => {
  it('reads seconds and nanos, rounding nanos up to whole milliseconds', () => {
    assert.equal(durationToMs({ seconds: 0, nanos: 0 }), 0);
    assert.equal(durationToMs({ seconds: 0, nanos: 1 }), 1);
    assert.equal(durationToMs({ seconds: 2, nanos: 500_000_000 }), 2_500);
    assert.equal(durationToMs({ seconds: -1, nanos: -500_000_000 }), -1_500);
    assert.equal(durationToMs({ seconds: 1, nanos: 999_999_999 }), 2_000);
  });

  it('refuses what protobuf Durations may not hold, naming the field', () => {
    const bad = [
      { seconds: 1, nanos: -999_999_999 }, // read as 1 ms before
      { seconds: -1, nanos: 1 },
      { seconds: 0, nanos: 1_000_000_000 },
      { seconds: 0, nanos: -1_000_000_000 },
      { seconds: 0, nanos: 0.5 },
    ];
    for (const d of bad) {
      assert.throws(
        () => durationToMs(d, 'invisible_duration'),
        (err) =>
          isRaftmqError(err, 'INVALID_ARGUMENT') &&
          err.details.field === 'invisible_duration' &&
          /invisible_duration has nanos/.test(err.message),
        JSON.stringify(d),
      );
    }
  });
});
