/*
 * The PullConsumer's hand-written frame decoder (src/client/pull-wire.ts) against the generic
 * protobuf encoder: random PullMessageResponse frames (status, message or next offset) written
 * by the encoder of the project's .proto files decode to the same fields. A frame is one field,
 * so a frame cut anywhere but at its start is broken and must throw a RaftmqError
 * MESSAGE_MALFORMED. Random bytes either throw that, or decode to what an independent walk of
 * their fields says they hold: never garbage read past the end. The same for FetchQueue replies
 * (`decodeFetchReply`), whose offsets protobuf may write packed or one per field.
 */
import { strict as assert } from 'node:assert';
import { isDeepStrictEqual } from 'node:util';
import type * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { loadFetchDefinition } from '../../src/broker/fetch-service';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { isRaftmqError } from '../../src/common/errors';
import { decodeFetchReply, decodePullFrame } from '../../src/client/pull-wire';
import { fcParams } from '../fc-params';

const text = fc.string({ unit: 'grapheme', maxLength: 30 });
const optText = fc.option(text, { nil: undefined });
const ts = fc.option(fc.record({ seconds: fc.nat(4_102_444_800), nanos: fc.nat(999_999_999) }), {
  nil: undefined,
});

const messageArb = fc.record({
  topic: fc.record({ resourceNamespace: text, name: text }),
  userProperties: fc.dictionary(text, text, { maxKeys: 4 }),
  systemProperties: fc.record({
    tag: optText,
    keys: fc.array(text, { maxLength: 3 }),
    messageId: text,
    bodyDigest: fc.constant({ type: 'MD5', checksum: 'ABC' }),
    bodyEncoding: fc.constantFrom('IDENTITY', 'GZIP'),
    messageType: fc.constantFrom('NORMAL', 'FIFO'),
    bornTimestamp: ts,
    bornHost: text,
    storeTimestamp: ts,
    storeHost: text,
    receiptHandle: optText,
    queueId: fc.nat(65_535),
    queueOffset: fc.option(fc.maxSafeNat(), { nil: undefined }),
    deliveryAttempt: fc.option(fc.integer({ min: 1, max: 20 }), { nil: undefined }),
    messageGroup: optText,
    traceContext: optText,
  }),
  body: fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
});

const frameArb = fc.oneof(
  fc.record({
    status: fc.record({
      code: fc.constantFrom(20000, 40401, 40402, 40000, -1, -20000),
      message: text,
    }),
  }),
  fc.record({ message: messageArb }),
  fc.record({ nextOffset: fc.maxSafeNat() }),
);

/** An `assert.throws` validator: a RaftmqError MESSAGE_MALFORMED whose message matches. */
function malformed(pattern: RegExp): (err: unknown) => boolean {
  return (err) => isRaftmqError(err, 'MESSAGE_MALFORMED') && pattern.test(err.message);
}

/**
 * The top-level fields of `bytes` as a protobuf walk that checks nothing but framing sees them
 * (field number and wire type each), or undefined when they are not well framed: a key or varint
 * that runs past the end, a length past the end, wire types 6 and 7, unbalanced groups.
 */
function topLevelFields(bytes: Uint8Array): Array<[field: number, type: number]> | undefined {
  let pos = 0;
  const varint = (): number | undefined => {
    let value = 0;
    for (let i = 0, scale = 1; i < 10; i++, scale *= 128) {
      const b = bytes[pos++];
      if (b === undefined) return undefined;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
    }
    return undefined;
  };
  const fields: Array<[number, number]> = [];
  const groups: number[] = [];
  while (pos < bytes.length) {
    const key = varint();
    if (key === undefined) return undefined;
    const field = Math.floor(key / 8);
    const type = key % 8;
    if (groups.length === 0 && type !== 4) fields.push([field, type]);
    if (type === 0) {
      if (varint() === undefined) return undefined;
    } else if (type === 1 || type === 5) {
      pos += type === 1 ? 8 : 4;
    } else if (type === 2) {
      const len = varint();
      if (len === undefined) return undefined;
      pos += len;
    } else if (type === 3) {
      groups.push(field);
    } else if (type === 4) {
      if (groups.pop() !== field) return undefined;
    } else {
      return undefined;
    }
    if (pos > bytes.length) return undefined;
  }
  return groups.length === 0 ? fields : undefined;
}

const ms = (t: { seconds: number; nanos: number } | undefined): number | undefined =>
  t === undefined ? undefined : t.seconds * 1000 + Math.floor(t.nanos / 1e6);

describe('PullMessage frame decoding (client)', () => {
  let method: grpc.MethodDefinition<unknown, unknown>;
  before(async () => {
    const def = await loadMessagingDefinition();
    assert.ok(def.PullMessage !== undefined);
    method = def.PullMessage;
  });

  it('reads what the generic encoder writes', () => {
    fc.assert(
      fc.property(frameArb, (frame) => {
        const got = decodePullFrame(method.responseSerialize(frame));
        if ('status' in frame) {
          assert.deepEqual(got, { status: { ...frame.status } });
        } else if ('nextOffset' in frame) {
          assert.deepEqual(got, { nextOffset: frame.nextOffset });
        } else {
          const m = frame.message;
          const sp = m.systemProperties;
          assert.deepEqual(got, {
            message: {
              messageId: sp.messageId,
              queueId: sp.queueId,
              queueOffset: sp.queueOffset,
              body: m.body,
              bodyEncoding: sp.bodyEncoding,
              tag: sp.tag,
              keys: sp.keys,
              properties: new Map(Object.entries(m.userProperties)),
              messageGroup: sp.messageGroup,
              bornTimestampMs: ms(sp.bornTimestamp),
              storeTimestampMs: ms(sp.storeTimestamp),
              receiptHandle: sp.receiptHandle,
              deliveryAttempt: sp.deliveryAttempt,
            },
          });
        }
      }),
      fcParams(300),
    );
  });

  it('refuses a truncated frame as malformed', () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), (frame, cut) => {
        const bytes = method.responseSerialize(frame);
        assert.ok(bytes.length > 0, 'a frame holds one field');
        const short = bytes.subarray(0, cut % bytes.length);
        // Cut before its one field, a frame is empty; cut inside it, broken.
        if (short.length === 0) assert.deepEqual(decodePullFrame(short), {});
        else assert.throws(() => decodePullFrame(short), malformed(/./));
      }),
      fcParams(300),
    );
    // A length that runs past the end of the frame.
    assert.throws(() => decodePullFrame(Buffer.from([0x12, 0x05, 0x01])), malformed(/runs past/));
  });

  it('refuses random bytes as malformed, or reads only the fields they hold', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        const bytes = Buffer.from(b);
        const fields = topLevelFields(bytes);
        let frame: ReturnType<typeof decodePullFrame>;
        try {
          frame = decodePullFrame(bytes);
        } catch (err) {
          assert.ok(
            isRaftmqError(err, 'MESSAGE_MALFORMED'),
            `not MESSAGE_MALFORMED: ${String(err)}`,
          );
          return;
        }
        assert.ok(fields !== undefined, 'decoded bytes that are not well framed');
        const has = (field: number, type: number): boolean =>
          fields.some(([f, t]) => f === field && t === type);
        assert.equal(frame.status !== undefined, has(1, 2), 'status');
        assert.equal(frame.message !== undefined, has(2, 2), 'message');
        assert.equal(frame.nextOffset !== undefined, has(3, 0), 'next offset');
      }),
      fcParams(300),
    );
    // Random bytes rarely frame; these do: an unknown varint field, a next offset, a group.
    const framed = Buffer.from([(9 << 3) | 0, 7, (3 << 3) | 0, 42, (5 << 3) | 3, (5 << 3) | 4]);
    assert.deepEqual(topLevelFields(framed), [
      [9, 0],
      [3, 0],
      [5, 3],
    ]);
    assert.deepEqual(decodePullFrame(framed), { nextOffset: 42 });
  });
});

const fetchReplyArb = fc.record(
  {
    status: fc.record({ code: fc.constantFrom(20000, 40401, 40019, -1), message: text }),
    nextOffset: fc.maxSafeNat(),
    records: fc.array(
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      { maxLength: 20 },
    ),
    offsets: fc.array(fc.maxSafeNat(), { maxLength: 20 }),
  },
  { requiredKeys: [] },
);

/** Varint bytes of a safe integer. */
function varint(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
  return out;
}

describe('FetchQueue reply decoding (client)', () => {
  let method: grpc.MethodDefinition<unknown, unknown>;
  before(async () => {
    const def = await loadFetchDefinition();
    assert.ok(def.FetchQueue !== undefined);
    method = def.FetchQueue;
  });

  it('reads what the generic encoder writes', () => {
    fc.assert(
      fc.property(fetchReplyArb, (reply) => {
        const bytes = method.responseSerialize(reply);
        const got = decodeFetchReply(bytes);
        assert.deepEqual(got, {
          status: reply.status === undefined ? undefined : { ...reply.status },
          nextOffset: reply.nextOffset ?? 0,
          records: reply.records ?? [],
          offsets: reply.offsets ?? [],
        });
        // Records are views of the reply, not copies.
        for (const r of got.records) assert.equal(r.buffer, bytes.buffer);
      }),
      fcParams(300),
    );
  });

  it('reads offsets written one per field, as protobuf allows, and skips unknown fields', () => {
    fc.assert(
      fc.property(fc.array(fc.maxSafeNat(), { maxLength: 10 }), (offsets) => {
        const bytes = Buffer.from([
          ...offsets.flatMap((o) => [(4 << 3) | 0, ...varint(o)]),
          (9 << 3) | 0,
          7, // an unknown varint field
          (10 << 3) | 2,
          2,
          0xaa,
          0xbb, // an unknown length-delimited field
          (2 << 3) | 0,
          ...varint(41),
        ]);
        assert.deepEqual(decodeFetchReply(bytes), {
          status: undefined,
          nextOffset: 41,
          records: [],
          offsets,
        });
      }),
      fcParams(100),
    );
  });

  it('refuses truncated or random bytes as malformed, or reads only whole fields', () => {
    fc.assert(
      fc.property(fetchReplyArb, fc.nat(), (reply, cut) => {
        const bytes = method.responseSerialize(reply);
        if (bytes.length === 0) return;
        const full = decodeFetchReply(bytes);
        const at = cut % bytes.length;
        let part;
        try {
          part = decodeFetchReply(bytes.subarray(0, at));
        } catch (err) {
          assert.ok(
            isRaftmqError(err, 'MESSAGE_MALFORMED'),
            `not MESSAGE_MALFORMED: ${String(err)}`,
          );
          return;
        }
        // Cut between two fields: what it read is what the whole reply begins with.
        assert.deepEqual(part.records, full.records.slice(0, part.records.length));
        assert.deepEqual(part.offsets, full.offsets.slice(0, part.offsets.length));
        // And a cut always loses something: whole fields, never part of one unnoticed. (Fields
        // that carry only defaults, say a `next_offset` of 0 written out, are lost unseen.)
        const lost = decodeFetchReply(bytes.subarray(at));
        const nothing = { status: undefined, nextOffset: 0, records: [], offsets: [] };
        if (!isDeepStrictEqual(lost, nothing)) assert.notDeepEqual(part, full);
      }),
      fcParams(300),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        const bytes = Buffer.from(b);
        const fields = topLevelFields(bytes);
        let reply: ReturnType<typeof decodeFetchReply>;
        try {
          reply = decodeFetchReply(bytes);
        } catch (err) {
          assert.ok(
            isRaftmqError(err, 'MESSAGE_MALFORMED'),
            `not MESSAGE_MALFORMED: ${String(err)}`,
          );
          return;
        }
        assert.ok(fields !== undefined, 'decoded bytes that are not well framed');
        const count = (field: number, type: number): number =>
          fields.filter(([f, t]) => f === field && t === type).length;
        assert.equal(reply.records.length, count(3, 2), 'records');
        assert.equal(reply.status !== undefined, count(1, 2) > 0, 'status');
        if (count(4, 2) === 0) assert.equal(reply.offsets.length, count(4, 0), 'offsets');
      }),
      fcParams(300),
    );
    // A record whose length runs past the end of the reply.
    assert.throws(() => decodeFetchReply(Buffer.from([0x1a, 0x05, 0x01])), malformed(/runs past/));
  });
});
