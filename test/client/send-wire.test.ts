/*
 * The producer's hand-written codec (src/client/send-wire.ts), without a cluster: requests of
 * random messages (unicode topics, tags, keys, ids, hosts, properties and groups, empty ones
 * included; bodies empty to 300 bytes; timestamps with and without nanos) decode with the
 * generic decoder the broker uses to exactly the fields given; and answers the generic encoder
 * writes (statuses present or absent, offsets up to 2^53) decode to their codes and offsets.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import type { WireMessage } from '../../src/broker/rmq-wire';
import {
  decodeSendReply,
  encodeSendRequest,
  type SendWireMessage,
} from '../../src/client/send-wire';
import { fcParams } from '../fc-params';

const text = fc.oneof(
  fc.constant(''),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
);
// A map key `__proto__` cannot survive the generic decoder's plain object (rmq-wire.ts).
const propKey = text.filter((k) => k !== '__proto__');

const messageArb: fc.Arbitrary<SendWireMessage & { id: string }> = fc
  .record(
    {
      body: fc.uint8Array({ maxLength: 300 }),
      tag: text,
      keys: fc.array(text, { maxLength: 3 }),
      properties: fc.uniqueArray(fc.tuple(propKey, text), { maxLength: 3, selector: ([k]) => k }),
      messageGroup: text,
      id: text,
    },
    { requiredKeys: ['body', 'id'] },
  )
  .map((m) => ({ ...m, properties: m.properties && new Map(m.properties) }));

describe('encodeSendRequest and decodeSendReply (send-wire.ts)', () => {
  let send: grpc.MethodDefinition<unknown, unknown>;
  before(async () => {
    const def = await loadMessagingDefinition();
    assert.ok(def.SendMessage !== undefined);
    send = def.SendMessage;
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
            assert.deepEqual(got.topic, { resourceNamespace: '', name: topic });
            assert.deepEqual(Buffer.from(got.body), Buffer.from(m.body));
            assert.deepEqual({ ...got.userProperties }, Object.fromEntries(m.properties ?? []));
            const sp = got.systemProperties;
            assert.ok(sp !== null);
            assert.equal(sp.tag, m.tag);
            assert.deepEqual(sp.keys, m.keys ?? []);
            assert.equal(sp.messageId, m.id);
            assert.equal(sp.bodyEncoding, 'IDENTITY');
            assert.equal(sp.messageType, m.messageGroup === undefined ? 'NORMAL' : 'FIFO');
            assert.equal(sp.messageGroup, m.messageGroup);
            assert.equal(sp.bornHost, bornHost);
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

  it('refuses a count of ids that does not match the messages', () => {
    assert.throws(
      () => encodeSendRequest({ topic: 't', bornHost: 'h', bornTimestampMs: 0 }, [], ['x']),
      /1 ids for 0 messages/,
    );
  });

  it('reads codes and offsets of what the generic encoder writes', () => {
    const status = fc.option(
      fc.record({ code: fc.constantFrom('OK', 'BAD_REQUEST', 'TOPIC_NOT_FOUND'), message: text }),
      { nil: undefined },
    );
    const codes: Record<string, number> = { OK: 20000, BAD_REQUEST: 40000, TOPIC_NOT_FOUND: 40402 };
    fc.assert(
      fc.property(
        status,
        fc.array(
          fc.record({ status, messageId: text, offset: fc.maxSafeNat(), recallHandle: text }),
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
            entries.map((e) => ({ status: want(e.status), offset: e.offset })),
          );
        },
      ),
      fcParams(300),
    );
  });

  it('throws on bytes that are not a SendMessageResponse', () => {
    assert.throws(() => decodeSendReply(Buffer.from([0x12, 0x05, 0x01])), /past its end/);
  });
});
