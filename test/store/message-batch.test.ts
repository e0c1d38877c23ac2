/*
 * Message batch payloads: every message of an encoded batch decodes back equal, in order, with
 * its offset and size; a payload cut short, with trailing bytes, with a lying count or a flipped
 * byte gives CORRUPT_RECORD naming the position, never data.
 */
import { strict as assert } from 'node:assert';
import { decodeMessageBatch, encodeMessageBatch } from '../../src/store/message-batch';
import type { StoredMessage } from '../../src/store/message-codec';
import { isRaftmqError } from '../../src/common/errors';

function message(n: number): StoredMessage {
  return {
    topic: `topic${n % 3}`,
    queueId: n % 4,
    body: Buffer.from(`body-${n}`.repeat(n + 1)),
    bodyEncoding: 'IDENTITY',
    tag: n % 2 ? `t${n}` : undefined,
    keys: [`k${n}`],
    userProperties: new Map([['n', String(n)]]),
    messageId: `id-${n}`,
    bornTimestampMs: 1_700_000_000_000 + n,
    storeTimestampMs: 1_700_000_000_100 + n,
    deliveryTimestampMs: undefined,
    bornHost: 'h:1',
    storeHost: 'h:2',
    flags: 0,
    reconsumeCount: 0,
    messageGroup: undefined,
    messageType: 'NORMAL',
    transactionState: 'NONE',
    traceContext: undefined,
  };
}

const corrupt = (e: unknown): boolean => isRaftmqError(e, 'CORRUPT_RECORD');

describe('message batch payloads', () => {
  const msgs = [0, 1, 2, 3, 4].map(message);
  const payload = encodeMessageBatch(msgs);

  it('decodes every message once, in order, with offsets that cover the payload', () => {
    const got = decodeMessageBatch(payload, { file: 'f', position: 100 });
    assert.equal(got.length, msgs.length);
    let offset = 5;
    got.forEach((m, i) => {
      assert.equal(m.offset, offset);
      assert.equal(m.message.messageId, msgs[i]?.messageId);
      assert.deepEqual(Buffer.from(m.message.body), Buffer.from(msgs[i]?.body ?? []));
      offset += m.sizeBytes;
    });
    assert.equal(offset, payload.byteLength);
  });

  it('refuses cut, padded, miscounted and bit-flipped payloads', () => {
    assert.throws(() => decodeMessageBatch(payload.subarray(0, payload.byteLength - 1)), corrupt);
    assert.throws(() => decodeMessageBatch(Buffer.concat([payload, Buffer.from([0])])), corrupt);
    const miscounted = Buffer.from(payload);
    miscounted.writeUInt32BE(6, 1);
    assert.throws(() => decodeMessageBatch(miscounted), corrupt);
    for (const at of [6, 40, payload.byteLength - 3]) {
      const flipped = Buffer.from(payload);
      flipped[at] = (flipped[at] ?? 0) ^ 0x10;
      assert.throws(
        () => decodeMessageBatch(flipped, { file: 'f', position: 100 }),
        (e) => corrupt(e) && (e as { details: { file?: string } }).details.file === 'f',
      );
    }
  });
});
