/*
 * Message batch payloads: every message of an encoded batch decodes back equal, in order, with
 * its offset and size; a payload cut short, with trailing bytes, with a lying count or a flipped
 * byte gives CORRUPT_RECORD naming the position, never data. The apply path's reader
 * (readMessageBatchIndexFields) gives the same fields and sizes and refuses the same payloads;
 * it reads back no payload this very process encoded (it takes the fields noted then), reads
 * and checks every copy, and skips only the CRC of a copy verified whole.
 */
import { strict as assert } from 'node:assert';
import {
  decodeMessageBatch,
  encodeMessageBatch,
  indexFieldsOf,
  readMessageBatchIndexFields,
} from '../../src/store/message-batch';
import { notePayloadVerified } from '../../src/store/verified-payloads';
import type { StoredMessage } from '../../src/store/message-codec';
import { isRaftmqError } from '../../src/common/errors';
import { PLAIN_MESSAGE_FIELDS } from './stored-message-fields';

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
    bornHost: 'h:1',
    storeHost: 'h:2',
    ...PLAIN_MESSAGE_FIELDS,
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

  it('reads the index fields of every message, as decoding does', () => {
    const fields = readMessageBatchIndexFields(payload, { file: 'f', position: 100 });
    const decoded = decodeMessageBatch(payload);
    assert.equal(fields.length, decoded.length);
    fields.forEach((f, i) => {
      const d = decoded[i];
      assert.ok(d !== undefined);
      assert.deepEqual(
        [f.sizeBytes, f.topic, f.queueId, f.tag, f.messageId, [...f.keys], f.storeTimestampMs],
        [d.sizeBytes, d.message.topic, d.message.queueId, d.message.tag, d.message.messageId,
          d.message.keys, d.message.storeTimestampMs],
      );
    });
  });

  it('refuses with the index reader what decoding refuses', () => {
    const read = (p: Uint8Array) => readMessageBatchIndexFields(p, { file: 'f', position: 100 });
    assert.throws(() => read(payload.subarray(0, payload.byteLength - 1)), corrupt);
    assert.throws(() => read(Buffer.concat([payload, Buffer.from([0])])), corrupt);
    const miscounted = Buffer.from(payload);
    miscounted.writeUInt32BE(6, 1);
    assert.throws(() => read(miscounted), corrupt);
    const huge = Buffer.from(payload);
    huge.writeUInt32BE(0xffff_ffff, 1);
    assert.throws(() => read(huge), corrupt);
    for (let at = 5; at < payload.byteLength; at += 7) {
      const flipped = Buffer.from(payload);
      flipped[at] = (flipped[at] ?? 0) ^ 0x10;
      assert.throws(
        () => read(flipped),
        (e) => corrupt(e) && (e as { details: { file?: string } }).details.file === 'f',
        `byte ${at}`,
      );
    }
  });

  it('reads back no payload this process encoded, and checks every copy', () => {
    const mine = encodeMessageBatch([0, 1, 2].map(message));
    const bodyAt = 5 + 53; // the first message's body
    mine[bodyAt] = (mine[bodyAt] ?? 0) ^ 0xff;
    // The fields noted at encoding come back (nothing changes a batch after encoding it; the
    // flip only shows that the bytes are not read) ...
    const fields = readMessageBatchIndexFields(mine);
    assert.deepEqual(fields.map((f) => f.messageId), ['id-0', 'id-1', 'id-2']);
    // ... but the same bytes from anywhere else (a disk, a network) are read and checked.
    assert.throws(() => readMessageBatchIndexFields(Buffer.from(mine)), corrupt);
    assert.throws(() => readMessageBatchIndexFields(new Uint8Array(mine)), corrupt);
    // The full decoder always checks.
    assert.throws(() => decodeMessageBatch(mine), corrupt);
  });

  it('takes the noted fields once, copies the keys, and notes none that would not read back', () => {
    const keys = ['k0'];
    const msgs = [{ ...message(0), keys }, message(1)];
    const mine = encodeMessageBatch(msgs);
    keys.push('added later'); // the sender's list, changed after encoding
    const idAt = mine.indexOf('id-0');
    mine[idAt] = 'X'.charCodeAt(0); // shows which read answers; nothing changes a real batch
    const first = readMessageBatchIndexFields(mine);
    assert.deepEqual(first.map((f) => [f.messageId, [...f.keys]]),
      [['id-0', ['k0']], ['id-1', ['k1']]]);
    // Taken: the Raft entry cache keeps no per-message objects; a second read reads the bytes
    // (the CRC skipped: this process wrote them).
    const second = readMessageBatchIndexFields(mine);
    assert.deepEqual(second.map((f) => f.messageId), ['Xd-0', 'id-1']);
    // Values that would not read back as they are: no fields noted, the batch is read back.
    const base = message(3);
    for (const bad of [
      { ...base, keys: ['\uD800'] },
      { ...base, topic: 'a\uDC00' },
      { ...base, tag: '\uD800x' },
      { ...base, messageId: '\uDFFF' },
      { ...base, queueId: 2 ** 31 },
      { ...base, queueId: 1.5 },
      { ...base, storeTimestampMs: 2 ** 53 },
    ]) {
      assert.equal(indexFieldsOf(bad, 100), undefined, JSON.stringify(bad.keys));
    }
    assert.ok(Object.is(indexFieldsOf({ ...base, queueId: -0 }, 100)?.queueId, 0));
  });

  it('skips the per-message CRC of a verified copy, never its structure', () => {
    // A follower's payload verified by the leader's record checksum (verified-payloads.ts).
    const copy = new Uint8Array(encodeMessageBatch([0, 1, 2].map(message)));
    copy[5 + 53] = (copy[5 + 53] ?? 0) ^ 0xff;
    assert.throws(() => readMessageBatchIndexFields(copy), corrupt);
    notePayloadVerified(copy);
    const fields = readMessageBatchIndexFields(copy);
    assert.deepEqual(fields.map((f) => f.messageId), ['id-0', 'id-1', 'id-2']);
    const cut = new Uint8Array(encodeMessageBatch([0, 1].map(message)));
    Buffer.from(cut.buffer, cut.byteOffset, cut.byteLength).writeUInt32BE(3, 1);
    notePayloadVerified(cut);
    assert.throws(() => readMessageBatchIndexFields(cut), corrupt);
  });
});
