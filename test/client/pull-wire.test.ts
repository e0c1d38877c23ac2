/*
 * The PullConsumer's hand-written frame decoder (src/client/pull-wire.ts) against the generic
 * protobuf encoder: random PullMessageResponse frames (status, message or next offset) written
 * by the encoder of the project's .proto files decode to the same fields; broken bytes throw
 * an Error and never hang or return garbage silently past the end. The same for FetchQueue
 * replies (`decodeFetchReply`), whose offsets protobuf may write packed or one per field.
 */
import { strict as assert } from 'node:assert';
import { isDeepStrictEqual } from 'node:util';
import type * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { loadFetchDefinition } from '../../src/broker/fetch-service';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
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

  it('throws on truncated or random bytes rather than reading past them', () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), (frame, cut) => {
        const bytes = method.responseSerialize(frame);
        if (bytes.length === 0) return;
        const short = bytes.subarray(0, cut % bytes.length);
        try {
          decodePullFrame(short);
        } catch (err) {
          assert.ok(err instanceof Error);
        }
      }),
      fcParams(300),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        try {
          decodePullFrame(Buffer.from(b));
        } catch (err) {
          assert.ok(err instanceof Error);
        }
      }),
      fcParams(300),
    );
    // A length that runs past the end of the frame.
    assert.throws(() => decodePullFrame(Buffer.from([0x12, 0x05, 0x01])), /runs past/);
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

  it('throws on truncated or random bytes rather than reading past them', () => {
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
          assert.ok(err instanceof Error);
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
        try {
          decodeFetchReply(Buffer.from(b));
        } catch (err) {
          assert.ok(err instanceof Error);
        }
      }),
      fcParams(300),
    );
    // A record whose length runs past the end of the reply.
    assert.throws(() => decodeFetchReply(Buffer.from([0x1a, 0x05, 0x01])), /runs past/);
  });
});
