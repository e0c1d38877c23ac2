/*
 * The producer's hand-written codec (src/client/send-wire.ts), without a cluster: requests of
 * random messages (unicode topics, tags, keys, ids, hosts, properties and groups, empty ones
 * included; bodies empty to 300 bytes; timestamps with and without nanos) decode with the
 * generic decoder (test/generic-codec.ts) to exactly the fields given; and answers the generic
 * encoder writes (statuses present or absent, offsets of either sign up to 2^53) decode to
 * their codes and offsets.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import type { WireMessage } from '../../src/broker/rmq-wire';
import {
  decodeSendReply,
  encodeSendRequest,
  type SendWireMessage,
} from '../../src/client/send-wire';
import { type OutgoingMessage, Producer } from '../../src/client/producer';
import { fcParams } from '../fc-params';
import { genericMessagingMethod } from '../generic-codec';

const text = fc.oneof(
  fc.constant(''),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  // Across the 64-character bound of the ASCII path (proto-writer.ts).
  fc.string({ unit: 'binary-ascii', minLength: 60, maxLength: 70 }),
  // Lone surrogates: written (and so read back) as U+FFFD.
  fc.constantFrom('\ud800', 'a\udc00b', '\udfff\ud800', 'x'.repeat(63) + '\ud800'),
);
/** What a string becomes through UTF-8: itself, but for lone surrogates. */
const viaUtf8 = (s: string): string => Buffer.from(s, 'utf8').toString('utf8');
// Property keys, `__proto__` among them (the generic decoder keeps it as an own property).
const propKey = fc.oneof(text, fc.constant('__proto__'));

const messageArb: fc.Arbitrary<SendWireMessage & { id: string }> = fc
  .record(
    {
      body: fc.uint8Array({ maxLength: 300 }),
      // null: a plain JavaScript caller's "no tag", written as absent.
      tag: fc.oneof(text, fc.constant(null)),
      keys: fc.array(text, { maxLength: 3 }),
      properties: fc.uniqueArray(fc.tuple(propKey, text), {
        maxLength: 3,
        selector: ([k]) => viaUtf8(k),
      }),
      messageGroup: fc.oneof(text, fc.constant(null)),
      id: text,
    },
    { requiredKeys: ['body', 'id'] },
  )
  .map((m) => ({ ...m, properties: m.properties && new Map(m.properties) }));

describe('encodeSendRequest and decodeSendReply (send-wire.ts)', () => {
  let send: grpc.MethodDefinition<unknown, unknown>;
  before(async () => {
    send = await genericMessagingMethod('SendMessage');
  });

  it('writes what the generic decoder reads back, for any unicode strings', () => {
    fc.assert(
      fc.property(
        text,
        text,
        fc.integer({ min: 0, max: 2 ** 42 }),
        fc.array(messageArb, { minLength: 1, maxLength: 20 }),
        (topic, bornHost, bornTimestampMs, messages) => {
          const bytes = encodeSendRequest(
            { topic, bornHost, bornTimestampMs },
            messages,
            messages.map((m) => m.id),
          );
          const decoded = send.requestDeserialize(bytes) as { messages: WireMessage[] };
          assert.equal(decoded.messages.length, messages.length);
          decoded.messages.forEach((got, i) => {
            const m = messages[i] as SendWireMessage & { id: string };
            assert.deepEqual(got.topic, { resourceNamespace: '', name: viaUtf8(topic) });
            assert.deepEqual(Buffer.from(got.body), Buffer.from(m.body));
            assert.deepEqual(
              { ...got.userProperties },
              Object.fromEntries(
                [...(m.properties ?? [])].map(([k, v]) => [viaUtf8(k), viaUtf8(v)]),
              ),
            );
            const sp = got.systemProperties;
            assert.ok(sp !== null);
            const tag = m.tag ?? undefined;
            const group = m.messageGroup ?? undefined;
            assert.equal(sp.tag, tag === undefined ? undefined : viaUtf8(tag));
            assert.deepEqual(sp.keys, (m.keys ?? []).map(viaUtf8));
            assert.equal(sp.messageId, viaUtf8(m.id));
            assert.equal(sp.bodyEncoding, 'IDENTITY');
            assert.equal(sp.messageType, group === undefined ? 'NORMAL' : 'FIFO');
            assert.equal(sp.messageGroup, group === undefined ? undefined : viaUtf8(group));
            assert.equal(sp.bornHost, viaUtf8(bornHost));
            assert.deepEqual(sp.bornTimestamp, {
              seconds: Math.floor(bornTimestampMs / 1000),
              nanos: (bornTimestampMs % 1000) * 1_000_000,
            });
          });
        },
      ),
      fcParams(300),
    );
  });

  it('encodes a send larger than its scratch space (thousands of messages and keys)', () => {
    const messages = Array.from({ length: 3000 }, (_, i) => ({
      body: Buffer.from(`b${i}`),
      keys: [`k${i}`, `l${i}`, `m${i}`],
      properties: new Map([[`p${i}`, `v${i}`]]),
      messageGroup: i % 2 === 0 ? `g${i}` : undefined,
    }));
    const ids = messages.map((_, i) => `id${i}`);
    const bytes = encodeSendRequest(
      { topic: 't', bornHost: 'h', bornTimestampMs: 0 },
      messages,
      ids,
    );
    const decoded = send.requestDeserialize(bytes) as { messages: WireMessage[] };
    assert.equal(decoded.messages.length, 3000);
    decoded.messages.forEach((got, i) => {
      assert.deepEqual(got.systemProperties?.keys, [`k${i}`, `l${i}`, `m${i}`]);
      assert.equal(got.systemProperties?.messageId, `id${i}`);
      assert.equal(got.systemProperties?.messageGroup, i % 2 === 0 ? `g${i}` : undefined);
      assert.deepEqual({ ...got.userProperties }, { [`p${i}`]: `v${i}` });
    });
  });

  it('refuses a count of ids that does not match the messages', () => {
    assert.throws(
      () => encodeSendRequest({ topic: 't', bornHost: 'h', bornTimestampMs: 0 }, [], ['x']),
      /1 ids for 0 messages/,
    );
  });

  it('reads codes, message ids and offsets of what the generic encoder writes', () => {
    const status = fc.option(
      fc.record({
        code: fc.constantFrom('OK', 'BAD_REQUEST', 'TOPIC_NOT_FOUND'),
        message: fc.string({ unit: 'grapheme', maxLength: 20 }),
      }),
      { nil: undefined },
    );
    const codes: Record<string, number> = { OK: 20000, BAD_REQUEST: 40000, TOPIC_NOT_FOUND: 40402 };
    fc.assert(
      fc.property(
        status,
        fc.array(
          fc.record({
            status,
            // Well-formed text: protobuf.js writes a lone surrogate as bytes no decoder reads back.
            messageId: fc.string({ unit: 'grapheme', maxLength: 20 }),
            offset: fc.maxSafeInteger(),
            recallHandle: text,
          }),
          { maxLength: 20 },
        ),
        (top, entries) => {
          const bytes = send.responseSerialize({ status: top, entries });
          const got = decodeSendReply(bytes);
          const want = (s: { code: string; message: string } | undefined) =>
            s && { code: codes[s.code], message: s.message };
          assert.deepEqual(got.status, want(top));
          assert.deepEqual(
            got.entries,
            entries.map((e) => ({
              status: want(e.status),
              messageId: e.messageId,
              offset: e.offset,
            })),
          );
        },
      ),
      fcParams(300),
    );
  });

  it('refuses messages of the wrong types before sending anything', async () => {
    // The producer is never connected: these fail before the first call.
    const producer = await Producer.create({ endpoint: '127.0.0.1:1' });
    try {
      const bad = (m: object) => producer.send('T', [m as OutgoingMessage]);
      await assert.rejects(bad({ body: 'text' }), /messages\[0\]\.body must be a Uint8Array/);
      await assert.rejects(bad({ body: new Uint8Array(1), tag: 7 }), /tag must be a string/);
      await assert.rejects(
        bad({ body: new Uint8Array(1), keys: [1] }),
        /keys must be an array of strings/,
      );
      await assert.rejects(
        bad({ body: new Uint8Array(1), properties: new Map([['k', 1]]) }),
        /properties must be a Map of strings to strings/,
      );
      await assert.rejects(
        bad({ body: new Uint8Array(1), properties: { k: 'v' } }),
        /properties must be a Map/,
      );
      await assert.rejects(bad({ body: new Uint8Array(1), keys: 'abc' }), /keys must be an array/);
      await assert.rejects(
        producer.send('T', [null as unknown as OutgoingMessage]),
        /must be an object/,
      );
    } finally {
      producer.close();
    }
  });

  it('throws on bytes that are not a SendMessageResponse', () => {
    assert.throws(() => decodeSendReply(Buffer.from([0x12, 0x05, 0x01])), /past its end/);
  });
});
