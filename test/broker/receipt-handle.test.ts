/*
 * Receipt handles: the text round-trips, the check is the CRC32C the format defines (computed
 * here the plain way, over the whole text, against the cached-scope form the code uses), a
 * handle of another scope or any edited character is refused, and malformed text is refused
 * with INVALID_RECEIPT_HANDLE.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import {
  decodeReceiptHandle,
  encodeReceiptHandle,
  type HandleScope,
  type ReceiptHandle,
} from '../../src/broker/receipt-handle';
import { crc32c } from '../../src/common/crc32c';
import { isRaftmqError } from '../../src/common/errors';
import { fcParams } from '../fc-params';

const name = fc.stringMatching(/^[%|a-zA-Z0-9_-]{1,20}$/);
const scopeArb = fc.record({ brokerGroup: name, topic: name, consumerGroup: name });
const handleArb = fc.record({
  queueId: fc.integer({ min: 0, max: 1023 }),
  offset: fc.maxSafeNat(),
  handleId: fc.maxSafeNat(),
});

/** The check as the format defines it, computed in one piece. */
function plainCheck(scope: HandleScope, h: ReceiptHandle): number {
  const text =
    `${scope.brokerGroup}\0${scope.topic}\0${scope.consumerGroup}\0` +
    `${h.queueId}\0${h.offset}\0${h.handleId}`;
  return crc32c(Buffer.from(text, 'utf8'));
}

function refused(scope: HandleScope, text: unknown): boolean {
  try {
    decodeReceiptHandle(scope, text);
    return false;
  } catch (err) {
    return isRaftmqError(err, 'INVALID_RECEIPT_HANDLE');
  }
}

describe('receipt handles', () => {
  it('round-trip, with the check the format defines', () => {
    fc.assert(
      fc.property(scopeArb, handleArb, (scope, h) => {
        const text = encodeReceiptHandle(scope, h);
        const expected =
          `v1.${h.queueId.toString(16)}.${h.offset.toString(16)}.` +
          `${h.handleId.toString(16)}.${plainCheck(scope, h).toString(16)}`;
        assert.equal(text, expected);
        assert.deepEqual(decodeReceiptHandle(scope, text), { ...h });
      }),
      fcParams(500),
    );
  });

  it('are refused for another scope or with any character changed', () => {
    fc.assert(
      fc.property(
        scopeArb,
        scopeArb,
        handleArb,
        fc.nat(),
        fc.constantFrom(...'0123456789abcdef.vxA-'),
        (scope, other, h, at, c) => {
          const text = encodeReceiptHandle(scope, h);
          if (JSON.stringify(other) !== JSON.stringify(scope)) {
            assert.ok(refused(other, text), 'accepted for another scope');
          }
          const i = at % text.length;
          const edited = text.slice(0, i) + c + text.slice(i + 1);
          if (edited !== text) {
            // An edit either breaks the form or changes a number, and the check catches that
            // (a leading zero added to a number keeps its value: that text names the same
            // delivery and may pass).
            const accepted = !refused(scope, edited);
            if (accepted) assert.deepEqual(decodeReceiptHandle(scope, edited), { ...h });
          }
        },
      ),
      fcParams(500),
    );
  });

  it('refuses malformed text with INVALID_RECEIPT_HANDLE', () => {
    const scope = { brokerGroup: 'g', topic: 't', consumerGroup: 'c' };
    const good = encodeReceiptHandle(scope, { queueId: 1, offset: 2, handleId: 3 });
    const bad: unknown[] = [
      undefined,
      42,
      '',
      'v2' + good.slice(2),
      good + '.1',
      good.replace('.', '..'),
      good.slice(0, good.lastIndexOf('.')),
      good + '0'.repeat(100),
      'v1.1.2.3.',
      'v1..2.3.4',
      'v1.1.2.3.4.',
      'v1.A.2.3.4',
      'v1.fffffffffffffff.2.3.4',
      'v1.1.20000000000000.3.4',
    ];
    for (const text of bad) assert.ok(refused(scope, text), String(text));
  });
});
