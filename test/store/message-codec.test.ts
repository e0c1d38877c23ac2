/*
 * The stored-message codec (src/store/message-codec.ts). Property tests (fast-check) round-trip
 * arbitrary valid messages (any Unicode, empty bodies, absent optionals, timestamps up to 2^53 - 1)
 * through encodeMessage, encodeMessageInto at arbitrary offsets and peekMessageHeader, and check
 * that encodedMessageSize is exact. A table walks every limit: each violation must be refused
 * with the right code and a message naming the field, before the target buffer is touched. The
 * decoder is attacked with every strict prefix, every single-bit flip, random bytes, and random
 * structures and mutations re-sealed with a valid length and CRC32C (so they reach the field
 * parser): the only error it may ever throw is CORRUPT_RECORD. tagHashCode is compared with
 * values of Java's String.hashCode. The apply path's reader (readMessageIndexFields) must agree
 * with the full decoder on every valid record, wherever it lies in a buffer, and meet the same
 * attacks with CORRUPT_RECORD only; encoding with a precomputed size gives the same bytes, and a
 * wrong size is an assertion. The index fields an encoded batch notes for its own node's apply
 * equal what reading a copy of it back gives.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { crc32c } from '../../src/common/crc32c';
import { ErrorCode, isRaftmqError } from '../../src/common/errors';
import { AssertionFailure } from '../../src/common/assert';
import {
  decodeMessage, ENCODED_MESSAGE_SIZE_MAX_BYTES, encodedMessageSize, encodeMessage,
  encodeMessageInto, encodeSizedMessageInto, MESSAGE_LIMITS, MESSAGE_MAGIC_V1,
  peekMessageHeader, readMessageIndexFields, StoredMessage, tagHashCode,
} from '../../src/store/message-codec';
import { encodeMessageBatch, readMessageBatchIndexFields } from '../../src/store/message-batch';
import { PLAIN_MESSAGE_FIELDS } from './stored-message-fields';

const TIMESTAMP_MS = 1_700_000_000_123;

const BASE: StoredMessage = Object.freeze({
  topic: 'OrderTopic',
  queueId: 3,
  body: Buffer.from('hello'),
  bodyEncoding: 'IDENTITY',
  tag: 'TagA',
  keys: ['order-1'],
  userProperties: new Map([['region', 'eu'], ['shard', '17']]),
  messageId: '01AC110002A4F418C5000000000001F2',
  bornTimestampMs: TIMESTAMP_MS,
  storeTimestampMs: TIMESTAMP_MS + 5,
  bornHost: '10.0.0.1:1234',
  storeHost: '10.0.0.2:8081',
  ...PLAIN_MESSAGE_FIELDS,
});

// ---------------------------------------------------------------------------------------------
// Arbitraries

interface TextOptions {
  maxBytes: number;
  nonEmpty?: boolean;
  noNul?: boolean;
  /** Sometimes longer than the codec's 64-byte short-string path. */
  long?: boolean;
}

/** Strings of every kind: ASCII, any code point, grapheme clusters; within `maxBytes` of UTF-8. */
function text(options: TextOptions): fc.Arbitrary<string> {
  const minLength = options.nonEmpty === true ? 1 : 0;
  const kinds = [
    fc.string({ minLength, maxLength: 12 }),
    fc.string({ unit: 'binary', minLength, maxLength: 12 }),
    fc.string({ unit: 'grapheme', minLength, maxLength: 4 }),
  ];
  if (options.long === true) {
    kinds.push(fc.string({ minLength: 60, maxLength: 200 }));
    kinds.push(fc.string({ unit: 'binary', minLength: 30, maxLength: 100 }));
  }
  return fc.oneof(...kinds)
    .map((s) => (options.noNul === true ? s.replaceAll('\u0000', '_') : s))
    .filter((s) => Buffer.byteLength(s, 'utf8') <= options.maxBytes);
}

const timestampMs = fc.oneof(
  fc.maxSafeNat(),
  fc.nat().map((n) => TIMESTAMP_MS + n),
  fc.constantFrom(0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER),
);

const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

const L = MESSAGE_LIMITS;

const messageArb: fc.Arbitrary<StoredMessage> = fc.record({
  topic: text({ maxBytes: 100, nonEmpty: true, noNul: true }),
  queueId: fc.oneof(fc.nat(), fc.constant(L.queueIdMax)),
  body: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 3000 })),
  bodyEncoding: fc.constantFrom('IDENTITY' as const, 'GZIP' as const),
  tag: optional(text({ maxBytes: L.tagSizeBytesMax, nonEmpty: true, noNul: true })),
  keys: fc.array(text({ maxBytes: L.keySizeBytesMax, nonEmpty: true, noNul: true, long: true }),
    { maxLength: 5 }),
  userProperties: fc.uniqueArray(
    fc.tuple(text({ maxBytes: 200, nonEmpty: true }), text({ maxBytes: 400, long: true })),
    { selector: ([key]) => key, maxLength: 6 },
  ).map((entries) => new Map(entries)),
  messageId: text({ maxBytes: L.messageIdSizeBytesMax, nonEmpty: true }),
  bornTimestampMs: timestampMs,
  storeTimestampMs: timestampMs,
  deliveryTimestampMs: optional(timestampMs),
  bornHost: text({ maxBytes: L.hostSizeBytesMax }),
  storeHost: text({ maxBytes: L.hostSizeBytesMax }),
  flags: fc.oneof(fc.maxSafeNat().map((n) => n % 2 ** 32), fc.constantFrom(0, 0xffff_ffff)),
  reconsumeCount: fc.nat(),
  messageGroup: optional(
    text({ maxBytes: L.messageGroupSizeBytesMax, nonEmpty: true, noNul: true })),
  messageType: fc.constantFrom('NORMAL' as const, 'FIFO' as const, 'DELAY' as const,
    'TRANSACTION' as const),
  transactionState: fc.constantFrom('NONE' as const, 'PREPARED' as const, 'COMMITTED' as const,
    'ROLLED_BACK' as const),
  traceContext: optional(text({ maxBytes: L.traceContextSizeBytesMax, long: true })),
});

/** Small messages, for the tests that try every prefix or every bit. */
const smallMessageArb = messageArb.filter((m) => encodedMessageSize(m) <= 400);

// ---------------------------------------------------------------------------------------------
// Helpers

/** What a decoded message must equal: every key present, the body as a Buffer. */
function expected(msg: StoredMessage): StoredMessage {
  return {
    tag: undefined,
    deliveryTimestampMs: undefined,
    messageGroup: undefined,
    traceContext: undefined,
    ...msg,
    body: Buffer.from(msg.body),
  };
}

function isCorrupt(err: unknown): boolean {
  return isRaftmqError(err, 'CORRUPT_RECORD');
}

/** Decodes, letting only CORRUPT_RECORD through as a refusal. */
function decodeOrCorrupt(bytes: Uint8Array): StoredMessage | undefined {
  try {
    return decodeMessage(bytes);
  } catch (err) {
    if (!isCorrupt(err)) throw err;
    return undefined;
  }
}

/** Gives hand-edited bytes a matching length field and CRC32C, so the field parser sees them. */
function reseal(bytes: Uint8Array): Buffer {
  const out = Buffer.from(bytes);
  out[0] = MESSAGE_MAGIC_V1;
  out.writeUInt32BE(out.length, 1);
  out.writeUInt32BE(crc32c(out.subarray(9)), 5);
  return out;
}

/** Where the strings start (after the body) in an encoding. */
function stringsStart(bytes: Buffer): number {
  return 53 + bytes.readUInt32BE(49);
}

function withoutRoomFor(bytes: Buffer, at: number, sizeBytes: number, insert: Uint8Array) {
  return Buffer.concat([bytes.subarray(0, at), insert, bytes.subarray(at + sizeBytes)]);
}

// ---------------------------------------------------------------------------------------------

describe('message-codec', () => {
  describe('round trip', () => {
    it('decodes what it encodes, at the size it announced', () => {
      fc.assert(fc.property(messageArb, (msg) => {
        const bytes = encodeMessage(msg);
        assert.equal(bytes.length, encodedMessageSize(msg));
        assert.deepStrictEqual(decodeMessage(bytes), expected(msg));
        assert.deepStrictEqual(decodeMessage(new Uint8Array(bytes)), expected(msg));
        assert.deepStrictEqual(peekMessageHeader(bytes), {
          totalSizeBytes: bytes.length, topic: msg.topic, queueId: msg.queueId, tag: msg.tag,
          messageGroup: msg.messageGroup,
        });
      }), { numRuns: 400 });
    });

    it('encodes into a caller buffer at any offset, touching nothing else', () => {
      const target = fc.record({ before: fc.nat({ max: 300 }), after: fc.nat({ max: 50 }),
        plain: fc.boolean() });
      fc.assert(fc.property(messageArb, target, (msg, { before, after, plain }) => {
        const alone = encodeMessage(msg);
        const backing = new ArrayBuffer(before + alone.length + after + 16);
        const buffer = plain ? new Uint8Array(backing, 8, before + alone.length + after)
          : Buffer.from(backing, 8, before + alone.length + after);
        buffer.fill(0xa5);
        assert.equal(encodeMessageInto(msg, buffer, before), alone.length);
        assert.deepStrictEqual(Buffer.from(buffer.subarray(before, before + alone.length)), alone);
        assert.ok(buffer.subarray(0, before).every((b) => b === 0xa5));
        assert.ok(buffer.subarray(before + alone.length).every((b) => b === 0xa5));
        const view = buffer.subarray(before, before + alone.length);
        assert.deepStrictEqual(decodeMessage(view), expected(msg));
      }), { numRuns: 200 });
    });

    it('notes, for a batch it encodes, the index fields that reading it back gives', () => {
      // The leader applies its own batches with the noted fields; followers read theirs back.
      fc.assert(fc.property(fc.array(messageArb, { minLength: 1, maxLength: 8 }), (msgs) => {
        const payload = encodeMessageBatch(msgs);
        const noted = readMessageBatchIndexFields(payload);
        const read = readMessageBatchIndexFields(Buffer.from(payload));
        assert.notEqual(noted, read, 'the copy is read back');
        assert.deepStrictEqual(noted, read);
      }), { numRuns: 200 });
    });

    it('walks a batch of records with peekMessageHeader', () => {
      fc.assert(fc.property(fc.array(messageArb, { minLength: 1, maxLength: 8 }), (msgs) => {
        const sizes = msgs.map(encodedMessageSize);
        const batch = Buffer.alloc(sizes.reduce((a, b) => a + b, 0));
        let at = 0;
        for (const msg of msgs) at += encodeMessageInto(msg, batch, at);
        at = 0;
        for (const msg of msgs) {
          const header = peekMessageHeader(batch.subarray(at), { file: 'batch', position: at });
          assert.deepStrictEqual([header.topic, header.queueId, header.tag],
            [msg.topic, msg.queueId, msg.tag]);
          assert.deepStrictEqual(decodeMessage(batch.subarray(at, at + header.totalSizeBytes)),
            expected(msg));
          at += header.totalSizeBytes;
        }
        assert.equal(at, batch.length);
      }), { numRuns: 50 });
    });

    it('gives omitted optional fields back as undefined, and an empty key list as []', () => {
      const { tag: _tag, deliveryTimestampMs: _d, messageGroup: _g, traceContext: _t, ...rest } =
        BASE;
      const decoded = decodeMessage(encodeMessage({ ...rest, keys: [], body: new Uint8Array(0) }));
      for (const key of ['tag', 'deliveryTimestampMs', 'messageGroup', 'traceContext'] as const) {
        assert.ok(key in decoded, key);
        assert.equal(decoded[key], undefined, key);
      }
      assert.deepStrictEqual(decoded.keys, []);
      assert.equal(decoded.body.length, 0);
    });

    it('keeps extreme timestamps exactly', () => {
      for (const ms of [0, 2 ** 32 - 1, 2 ** 32, 2 ** 52 + 1, Number.MAX_SAFE_INTEGER]) {
        const msg = { ...BASE, bornTimestampMs: ms, storeTimestampMs: ms, deliveryTimestampMs: ms };
        const decoded = decodeMessage(encodeMessage(msg));
        assert.deepStrictEqual(
          [decoded.bornTimestampMs, decoded.storeTimestampMs, decoded.deliveryTimestampMs],
          [ms, ms, ms]);
      }
    });

    it('returns a body that does not share memory with the bytes decoded', () => {
      const bytes = encodeMessage(BASE);
      const decoded = decodeMessage(bytes);
      bytes.fill(0);
      assert.deepStrictEqual(decoded.body, Buffer.from('hello'));
    });

    it('with bodyView, returns the body as a view of the bytes decoded (no copy)', () => {
      const bytes = encodeMessage(BASE);
      const decoded = decodeMessage(bytes, undefined, true);
      assert.deepStrictEqual(decoded, decodeMessage(bytes));
      bytes.fill(0x78);
      assert.deepStrictEqual(decoded.body, Buffer.from('xxxxx'));
    });

    it('shares one read-only empty key list and property map among messages without them', () => {
      const none = { ...BASE, keys: [], userProperties: new Map<string, string>() };
      const a = decodeMessage(encodeMessage(none));
      const b = decodeMessage(encodeMessage(none));
      assert.equal(a.keys, b.keys);
      assert.equal(a.userProperties, b.userProperties);
      assert.ok(Object.isFrozen(a.keys));
      const props = a.userProperties as Map<string, string>;
      assert.throws(() => props.set('k', 'v'), TypeError);
      props.delete('k');
      props.clear();
      assert.equal(b.userProperties.size, 0);
      assert.deepStrictEqual([...b.userProperties], []);
      // A message with keys and properties gets its own.
      const c = decodeMessage(encodeMessage(BASE));
      assert.notEqual(c.userProperties, a.userProperties);
      assert.ok(c.userProperties.size > 0 && c.keys.length > 0);
    });

    it('encodes a message at every limit to exactly ENCODED_MESSAGE_SIZE_MAX_BYTES', () => {
      const msg: StoredMessage = {
        ...BASE,
        topic: '中'.repeat(L.topicLengthCharsMax),
        tag: 't'.repeat(L.tagSizeBytesMax),
        keys: Array.from({ length: L.keyCountMax }, () => 'k'.repeat(L.keySizeBytesMax)),
        userProperties: new Map(Array.from({ length: L.propertyCountMax }, (_, i) => [
          `p${String(i).padStart(3, '0')}`,
          'v'.repeat(L.propertiesSizeBytesMax / L.propertyCountMax - 4),
        ])),
        messageId: 'i'.repeat(L.messageIdSizeBytesMax),
        bornHost: 'h'.repeat(L.hostSizeBytesMax),
        storeHost: 'h'.repeat(L.hostSizeBytesMax),
        messageGroup: 'g'.repeat(L.messageGroupSizeBytesMax),
        traceContext: 'c'.repeat(L.traceContextSizeBytesMax),
        body: Buffer.alloc(L.bodySizeBytesMax, 1),
        deliveryTimestampMs: 1,
      };
      const bytes = encodeMessage(msg);
      assert.equal(bytes.length, ENCODED_MESSAGE_SIZE_MAX_BYTES);
      assert.deepStrictEqual(decodeMessage(bytes), expected(msg));
    });
  });

  describe('limits', () => {
    const big = (sizeBytes: number) => 'x'.repeat(sizeBytes);
    type Case = [string, Partial<Record<keyof StoredMessage, unknown>>, string, ErrorCode?];
    const cases: Case[] = [
      ['empty topic', { topic: '' }, 'topic'],
      ['topic of 128 characters', { topic: big(128) }, 'topic'],
      ['topic with NUL', { topic: 'a\u0000b' }, 'topic'],
      ['topic not a string', { topic: 7 }, 'topic'],
      ['topic with a lone surrogate', { topic: 'a\ud800' }, 'topic'],
      ['empty tag', { tag: '' }, 'tag'],
      ['tag of 256 bytes', { tag: big(256) }, 'tag'],
      ['tag of 86 three-byte characters', { tag: '中'.repeat(86) }, 'tag'],
      ['tag with NUL', { tag: '\u0000' }, 'tag'],
      ['129 keys', { keys: Array.from({ length: 129 }, () => 'k') }, 'keys'],
      ['key of 1025 bytes', { keys: ['a', big(1025)] }, 'keys[1]'],
      ['empty key', { keys: [''] }, 'keys[0]'],
      ['key with NUL', { keys: ['a\u0000'] }, 'keys[0]'],
      ['keys not an array', { keys: 'k' }, 'keys'],
      ['empty message id', { messageId: '' }, 'messageId'],
      ['message id of 129 bytes', { messageId: big(129) }, 'messageId'],
      ['born host of 256 bytes', { bornHost: big(256) }, 'bornHost'],
      ['store host of 256 bytes', { storeHost: big(256) }, 'storeHost'],
      ['empty message group', { messageGroup: '' }, 'messageGroup'],
      ['message group of 65 bytes', { messageGroup: big(65) }, 'messageGroup'],
      ['message group with NUL', { messageGroup: 'g\u0000' }, 'messageGroup'],
      ['trace context of 4097 bytes', { traceContext: big(4097) }, 'traceContext'],
      ['137 properties', { userProperties: new Map(Array.from({ length: L.propertyCountMax + 1 },
        (_, i) => [`k${i}`, 'v'])) }, 'userProperties', 'RECORD_TOO_LARGE'],
      ['properties of 17 KiB + 1 bytes',
        { userProperties: new Map([['k', big(L.propertiesSizeBytesMax)]]) },
        'userProperties', 'RECORD_TOO_LARGE'],
      ['empty property key', { userProperties: new Map([['', 'v']]) }, 'userProperties'],
      ['property value not a string', { userProperties: new Map([['k', 1]]) },
        'userProperties[k]'],
      ['property value with a lone surrogate', { userProperties: new Map([['k', '\udc00']]) },
        'userProperties[k]'],
      ['properties not a Map', { userProperties: { k: 'v' } }, 'userProperties'],
      ['body of 4 MiB + 1', { body: Buffer.alloc(4 * 1024 * 1024 + 1) }, 'body',
        'RECORD_TOO_LARGE'],
      ['body not bytes', { body: 'hello' }, 'body'],
      ['negative queue id', { queueId: -1 }, 'queueId'],
      ['queue id 2^31', { queueId: 2 ** 31 }, 'queueId'],
      ['fractional queue id', { queueId: 1.5 }, 'queueId'],
      ['flags 2^32', { flags: 2 ** 32 }, 'flags'],
      ['negative reconsume count', { reconsumeCount: -1 }, 'reconsumeCount'],
      ['born timestamp 2^53', { bornTimestampMs: 2 ** 53 }, 'bornTimestampMs'],
      ['born timestamp NaN', { bornTimestampMs: NaN }, 'bornTimestampMs'],
      ['negative store timestamp', { storeTimestampMs: -1 }, 'storeTimestampMs'],
      ['delivery timestamp not a number', { deliveryTimestampMs: '1' }, 'deliveryTimestampMs'],
      ['unknown body encoding', { bodyEncoding: 'ZSTD' }, 'bodyEncoding'],
      ['unknown message type', { messageType: 'LITE' }, 'messageType'],
      ['unknown transaction state', { transactionState: 'DONE' }, 'transactionState'],
    ];
    for (const [name, change, field, code = 'MESSAGE_MALFORMED'] of cases) {
      it(`refuses a ${name} with ${code} naming ${field}, writing nothing`, () => {
        const msg = { ...BASE, ...change } as StoredMessage;
        const check = (err: unknown) => isRaftmqError(err, code)
          && err.message.includes(`message.${field}`);
        assert.throws(() => encodedMessageSize(msg), check);
        assert.throws(() => encodeMessage(msg), check);
        const target = Buffer.alloc(4096, 0x5a);
        assert.throws(() => encodeMessageInto(msg, target, 10), check);
        assert.ok(target.every((b) => b === 0x5a), 'target was written');
      });
    }

    it('accepts every value at its limit', () => {
      const msg: StoredMessage = {
        ...BASE,
        topic: 'T'.repeat(127),
        tag: '中'.repeat(85),
        keys: Array.from({ length: 128 }, () => 'k'.repeat(1024)),
        userProperties: new Map([['k', 'v'.repeat(L.propertiesSizeBytesMax - 1)]]),
        queueId: 2 ** 31 - 1,
        flags: 2 ** 32 - 1,
        reconsumeCount: 2 ** 31 - 1,
        messageGroup: 'g'.repeat(64),
        body: Buffer.alloc(4 * 1024 * 1024),
      };
      assert.deepStrictEqual(decodeMessage(encodeMessage(msg)), expected(msg));
    });

    it('exports frozen limits', () => {
      assert.ok(Object.isFrozen(MESSAGE_LIMITS));
      assert.equal(MESSAGE_LIMITS.bodySizeBytesMax, 4 * 1024 * 1024);
    });
  });

  describe('corrupt input', () => {
    it('refuses every strict prefix of an encoding', () => {
      fc.assert(fc.property(smallMessageArb, (msg) => {
        const bytes = encodeMessage(msg);
        for (let length = 0; length < bytes.length; length++) {
          assert.throws(() => decodeMessage(bytes.subarray(0, length)), isCorrupt);
          assert.throws(() => peekMessageHeader(bytes.subarray(0, length)), isCorrupt);
        }
        const padded = Buffer.concat([bytes, Buffer.from([0])]);
        assert.throws(() => decodeMessage(padded), isCorrupt);
        assert.equal(peekMessageHeader(padded).totalSizeBytes, bytes.length);
      }), { numRuns: 30 });
    });

    it('detects a single flipped bit anywhere', () => {
      fc.assert(fc.property(smallMessageArb, (msg) => {
        const bytes = encodeMessage(msg);
        for (let bit = 0; bit < bytes.length * 8; bit++) {
          const flipped = Buffer.from(bytes);
          flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
          assert.throws(() => decodeMessage(flipped), isCorrupt, `bit ${bit}`);
        }
      }), { numRuns: 15 });
    });

    it('only ever throws CORRUPT_RECORD on random bytes', () => {
      const bytes = fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        fc.uint8Array({ minLength: 9, maxLength: 200 }).map((b) => {
          b[0] = MESSAGE_MAGIC_V1;
          return b;
        }),
      );
      fc.assert(fc.property(bytes, (b) => {
        assert.throws(() => decodeMessage(b), isCorrupt);
        assert.throws(() => peekMessageHeader(b), isCorrupt);
      }), { numRuns: 5000 });
    });

    it('only ever throws CORRUPT_RECORD on random contents behind a valid length and CRC', () => {
      const contents = fc.tuple(fc.uint8Array({ minLength: 9, maxLength: 300 }),
        fc.nat({ max: 40 }), fc.nat({ max: 15 }));
      fc.assert(fc.property(contents, ([b, bodySizeBytes, presence]) => {
        if (b.length >= 71) {
          // Mostly plausible headers, so that the string parser sees random input.
          Buffer.from(b.buffer, b.byteOffset, b.length).writeUInt32BE(bodySizeBytes, 49);
          b.fill(presence, 9, 10);
          b.fill(0, 10, 13);
        }
        const sealed = reseal(b);
        decodeOrCorrupt(sealed);
        try {
          peekMessageHeader(sealed);
        } catch (err) {
          if (!isCorrupt(err)) throw err;
        }
      }), { numRuns: 5000 });
    });

    it('only ever throws CORRUPT_RECORD on mutated encodings behind a valid length and CRC', () => {
      const edit = fc.record({ at: fc.nat(), deleteBytes: fc.nat({ max: 4 }),
        insert: fc.uint8Array({ maxLength: 4 }) });
      fc.assert(fc.property(smallMessageArb, fc.array(edit, { minLength: 1, maxLength: 4 }),
        (msg, edits) => {
          let bytes = encodeMessage(msg);
          for (const { at, deleteBytes, insert } of edits) {
            const from = 9 + (at % Math.max(1, bytes.length - 9));
            bytes = withoutRoomFor(bytes, from, deleteBytes, insert);
          }
          decodeOrCorrupt(reseal(bytes));
        }), { numRuns: 3000 });
    });

    it('names the file and position given', () => {
      const bytes = encodeMessage(BASE);
      bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 1, bytes.length - 1);
      assert.throws(() => decodeMessage(bytes, { file: '00000000000000004096', position: 77 }),
        (err: unknown) => isRaftmqError(err, 'CORRUPT_RECORD')
          && err.message.includes('00000000000000004096') && err.message.includes('77')
          && err.details.file === '00000000000000004096' && err.details.position === 77);
    });

    it('names an unsupported version', () => {
      const bytes = encodeMessage(BASE);
      bytes[0] = 0xb2;
      assert.throws(() => decodeMessage(bytes), (err: unknown) => isCorrupt(err)
        && (err as Error).message.includes('version 2'));
    });

    describe('refuses well-sealed records with impossible fields', () => {
      const tagged = encodeMessage({ ...BASE, tag: 'T' });
      const untagged = encodeMessage({ ...BASE, tag: undefined });
      /** A copy of `source` with the byte at `at` set to `value`. */
      const patch = (source: Buffer, at: number, value: number) =>
        Buffer.from(source).fill(value, at, at + 1);
      const cases: [string, string, () => Buffer][] = [
        ['unknown presence bit', 'unknown presence bits', () => patch(tagged, 9, 0x11)],
        ['tag marked absent but present', 'tag is marked absent', () => patch(tagged, 9, 0)],
        ['delivery marked absent but set', 'deliveryTimestampMs is marked absent',
          () => patch(untagged, 48, 1)],
        ['timestamp beyond 2^53', 'not a safe integer', () => patch(tagged, 26, 0x20)],
        ['body encoding 2', 'unknown enum code 2', () => patch(tagged, 10, 2)],
        ['message type 4', 'unknown enum code 4', () => patch(tagged, 11, 4)],
        ['transaction state 4', 'unknown enum code 4', () => patch(tagged, 12, 4)],
        ['queue id 2^31', 'exceeds 2^31 - 1', () => patch(tagged, 13, 0x80)],
        ['body longer than the record', 'does not fit', () => patch(tagged, 49, 0x7f)],
        ['trailing byte', 'after the end', () => Buffer.concat([tagged, Buffer.from([0])])],
        ['empty topic', 'empty topic', () => {
          const b = Buffer.from(untagged);
          const at = stringsStart(b);
          return withoutRoomFor(b, at, 2 + BASE.topic.length, Buffer.from([0, 0]));
        }],
        ['duplicate property key', 'duplicate property key', () => {
          // BASE's properties are region=eu, shard=17; rename "shard" to "region".
          const b = Buffer.from(untagged);
          const at = b.lastIndexOf(Buffer.from('shard'));
          return withoutRoomFor(b, at - 2, 7, Buffer.from('\u0000\u0006region'));
        }],
      ];
      it('tag running past the record into the bytes after it (peek)', () => {
        const b = Buffer.from(tagged);
        b.writeUInt16BE(1000, stringsStart(b) + 2 + BASE.topic.length);
        const followed = Buffer.concat([reseal(b), Buffer.alloc(2000, 0x41)]);
        assert.throws(() => peekMessageHeader(followed),
          (err: unknown) => isCorrupt(err) && (err as Error).message.includes('past the end'));
      });
      for (const [name, reason, make] of cases) {
        it(name, () => assert.throws(() => decodeMessage(reseal(make())),
          (err: unknown) => isCorrupt(err) && (err as Error).message.includes(reason)));
      }
    });
  });

  describe('the apply path: index fields and sized encoding', () => {
    const indexFields = (msg: StoredMessage, sizeBytes: number) => ({
      sizeBytes, topic: msg.topic, queueId: msg.queueId, tag: msg.tag,
      messageId: msg.messageId, keys: [...msg.keys], storeTimestampMs: msg.storeTimestampMs,
    });
    const fieldsOf = (buf: Buffer, start: number, end: number) => {
      const f = readMessageIndexFields(buf, start, end);
      return { ...f, keys: [...f.keys] };
    };

    it('reads what the full decoder reads, at any place in a buffer', () => {
      const place = fc.record({ before: fc.nat({ max: 100 }), after: fc.nat({ max: 50 }) });
      fc.assert(fc.property(messageArb, place, (msg, { before, after }) => {
        const alone = encodeMessage(msg);
        const buf = Buffer.alloc(before + alone.length + after, 0x5a);
        alone.copy(buf, before);
        assert.deepStrictEqual(fieldsOf(buf, before, before + alone.length),
          indexFields(msg, alone.length));
      }), { numRuns: 300 });
    });

    it('encodes with a precomputed size to the same bytes, and asserts on a wrong size', () => {
      fc.assert(fc.property(messageArb, fc.nat({ max: 40 }), (msg, before) => {
        const size = encodedMessageSize(msg);
        const a = Buffer.alloc(before + size);
        const b = Buffer.alloc(before + size);
        assert.equal(encodeMessageInto(msg, a, before), size);
        assert.equal(encodeSizedMessageInto(msg, b, before, size), size);
        assert.deepStrictEqual(b, a);
        const roomy = Buffer.alloc(before + size + 8);
        assert.throws(() => encodeSizedMessageInto(msg, roomy, before, size + 1),
          (err: unknown) => err instanceof AssertionFailure);
        assert.throws(() => encodeSizedMessageInto(msg, roomy, before, size - 1),
          (err: unknown) => err instanceof AssertionFailure);
      }), { numRuns: 200 });
    });

    it('refuses every cut, every padding and every flipped bit with CORRUPT_RECORD', () => {
      fc.assert(fc.property(smallMessageArb, (msg) => {
        const bytes = encodeMessage(msg);
        const padded = Buffer.concat([bytes, Buffer.alloc(8)]);
        for (let end = 0; end < padded.length; end++) {
          if (end === bytes.length) continue;
          assert.throws(() => readMessageIndexFields(padded, 0, end), isCorrupt, `end ${end}`);
        }
        for (let bit = 0; bit < bytes.length * 8; bit++) {
          const flipped = Buffer.from(bytes);
          flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
          assert.throws(() => readMessageIndexFields(flipped, 0, flipped.length), isCorrupt,
            `bit ${bit}`);
        }
      }), { numRuns: 15 });
    });

    it('only ever throws CORRUPT_RECORD behind a valid length and CRC, and agrees when valid',
      () => {
        const edit = fc.record({ at: fc.nat(), deleteBytes: fc.nat({ max: 4 }),
          insert: fc.uint8Array({ maxLength: 4 }) });
        fc.assert(fc.property(smallMessageArb, fc.array(edit, { minLength: 1, maxLength: 4 }),
          (msg, edits) => {
            let bytes = encodeMessage(msg);
            for (const { at, deleteBytes, insert } of edits) {
              const from = 9 + (at % Math.max(1, bytes.length - 9));
              bytes = withoutRoomFor(bytes, from, deleteBytes, insert);
            }
            const sealed = reseal(bytes);
            const full = decodeOrCorrupt(sealed);
            let fields: ReturnType<typeof fieldsOf> | undefined;
            try {
              fields = fieldsOf(sealed, 0, sealed.length);
            } catch (err) {
              if (!isCorrupt(err)) throw err;
            }
            // The reader checks less than the decoder (not hosts or properties), never more.
            if (full !== undefined) {
              assert.deepStrictEqual(fields, indexFields(full, sealed.length));
            }
          }), { numRuns: 3000 });
      });

    it('refuses a tag marked absent but present, and an empty topic', () => {
      const tagged = encodeMessage({ ...BASE, tag: 'T' });
      const noTag = Buffer.from(tagged).fill(0, 9, 10);
      assert.throws(() => readMessageIndexFields(reseal(noTag), 0, noTag.length),
        (err: unknown) => isCorrupt(err) && (err as Error).message.includes('marked absent'));
      const untagged = encodeMessage({ ...BASE, tag: undefined });
      const at = stringsStart(untagged);
      const empty = reseal(withoutRoomFor(untagged, at, 2 + BASE.topic.length,
        Buffer.from([0, 0])));
      assert.throws(() => readMessageIndexFields(empty, 0, empty.length),
        (err: unknown) => isCorrupt(err) && (err as Error).message.includes('empty topic'));
    });
  });

  describe('tagHashCode', () => {
    it('equals Java String.hashCode', () => {
      // "TagA": 84*31^3 + 97*31^2 + 103*31 + 65 = 2502444 + 93217 + 3193 + 65 = 2598919.
      assert.equal(tagHashCode('TagA'), 2598919);
      assert.equal(tagHashCode(''), 0);
      assert.equal(tagHashCode(undefined), 0);
      // "标签" is U+6807 U+7B7E: 0x6807 * 31 + 0x7B7E = 26631 * 31 + 31614 = 857175.
      assert.equal(tagHashCode('标签'), 857175);
      // "😀" is U+1F600, two UTF-16 units D83D DE00: 55357 * 31 + 56832 = 1772899.
      assert.equal(tagHashCode('😀'), 1772899);
      // Overflow wraps to a signed int, as in Java.
      assert.equal(tagHashCode('Hello World'), -862545276);
      assert.equal(tagHashCode('polygenelubricants'), -(2 ** 31));
    });
  });
});
