/*
 * The broker's hand-written SendMessageRequest and AckMessageRequest decoders
 * (src/broker/send-request-decode.ts) against the generic ones (test/generic-codec.ts).
 * SendMessage: requests of random messages using every
 * field of Message and SystemProperties (optional ones present or absent; enums named and
 * unnamed, negative ones included; int64 fields negative and beyond 2^32; unicode strings;
 * a `__proto__` property; empty and non-empty bodies) decode to the same object, but for the
 * `_field` names the generic decoder adds for present optional fields; so do messages built
 * field by field, with what protobuf.js never writes (a singular field twice, map entries
 * without key or value, a map key twice, fields out of order). Unknown fields, groups
 * among them, are skipped. Truncated requests decode to what the generic decoder makes of
 * them, or, where it refuses them too, throw a RaftmqError MESSAGE_MALFORMED; so do mistyped
 * bytes; through the service definition such bytes become an UndecodableRequest (answered
 * BAD_REQUEST), never a crash.
 * AckMessage: random groups, topics and entries (lite topics present or absent) decode alike.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import {
  loadMessagingDefinition,
  MESSAGING_REQUEST_BYTES_MAX,
  RPC_REQUEST_BYTES_MAX,
  UndecodableRequest,
} from '../../src/broker/messaging-proto';
import {
  ACK_DECODE_ENTRIES_MAX,
  ACK_ENTRIES_MAX,
  decodeAckRequest,
  decodeSendRequest,
  DECODE_REPEATS_MAX,
  SEND_MESSAGES_MAX,
} from '../../src/broker/send-request-decode';
import { isRaftmqError } from '../../src/common/errors';
import { MESSAGE_LIMITS } from '../../src/store/message-limits';
import { fcParams } from '../fc-params';
import { genericMessagingMethod } from '../generic-codec';

const text = fc.oneof(
  fc.constant(''),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ unit: 'grapheme', maxLength: 8 }),
);
const int64 = fc.oneof(
  fc.integer({ min: -5, max: 5 }),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  fc.integer({ min: -(2 ** 53) + 1, max: 2 ** 53 - 1 }),
);
const int32 = fc.oneof(
  fc.integer({ min: -3, max: 3 }),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
);
/** Enum values by number: named ones, and numbers the schema does not name. */
const enumValue = fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: -3, max: 100 }));
const secondsNanos = fc.record({ seconds: int64, nanos: int32 });
const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

const sysPropsArb = fc.record(
  {
    tag: optional(text),
    keys: fc.array(text, { maxLength: 3 }),
    messageId: text,
    bodyDigest: fc.record({ type: enumValue, checksum: text }),
    bodyEncoding: enumValue,
    messageType: enumValue,
    bornTimestamp: secondsNanos,
    bornHost: text,
    storeTimestamp: optional(secondsNanos),
    storeHost: text,
    deliveryTimestamp: optional(secondsNanos),
    receiptHandle: optional(text),
    queueId: int32,
    queueOffset: optional(int64),
    invisibleDuration: optional(secondsNanos),
    deliveryAttempt: optional(int32),
    messageGroup: optional(text),
    traceContext: optional(text),
    orphanedTransactionRecoveryDuration: optional(secondsNanos),
    deadLetterQueue: optional(fc.record({ topic: text, messageId: text })),
    liteTopic: optional(text),
    priority: optional(int32),
  },
  { requiredKeys: [] },
);

const messageArb = fc.record(
  {
    topic: fc.record({ resourceNamespace: text, name: text }, { requiredKeys: [] }),
    userProperties: fc.dictionary(fc.oneof(text, fc.constant('__proto__')), text, {
      maxKeys: 3,
    }),
    systemProperties: sysPropsArb,
    body: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  },
  { requiredKeys: [] },
);

/**
 * `value` without the `_field: 'field'` names protobuf.js adds for present optional fields
 * (nothing reads them); any other key is kept, and user properties are left as they are.
 */
function withoutOneofNames(value: unknown): unknown {
  if (Buffer.isBuffer(value) || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(withoutOneofNames);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k.length > 1 && k.startsWith('_') && v === k.slice(1)) continue;
    // Defined, not assigned: a user property `__proto__` stays an own property. User
    // properties are kept as they are, whatever their names.
    Object.defineProperty(out, k, {
      value: k === 'userProperties' ? v : withoutOneofNames(v),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/** An `assert.throws` validator: a RaftmqError MESSAGE_MALFORMED whose message matches. */
function malformed(pattern: RegExp): (err: unknown) => boolean {
  return (err) => isRaftmqError(err, 'MESSAGE_MALFORMED') && pattern.test(err.message);
}

/** A varint of a non-negative integer below 2^31. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

describe('decodeSendRequest (send-request-decode.ts)', () => {
  let generic: grpc.MethodDefinition<unknown, unknown>;
  before(async () => {
    generic = await genericMessagingMethod('SendMessage');
  });

  it('decodes every field to what the generic decoder makes of it', () => {
    fc.assert(
      fc.property(fc.array(messageArb, { maxLength: 6 }), (messages) => {
        const bytes = generic.requestSerialize({ messages });
        const want = withoutOneofNames(generic.requestDeserialize(bytes));
        assert.deepEqual(decodeSendRequest(bytes), want);
      }),
      fcParams(300),
    );
  });

  it('agrees with it on messages built field by field: repeats, partial entries, any order', () => {
    // What protobuf.js's encoder never writes: a singular field twice (the last one wins), map
    // entries without a key or value, a map key twice, fields in any order.
    const key = (field: number, type: number): number[] => varint(field * 8 + type);
    const len = (field: number, bytes: readonly number[]): number[] => [
      ...key(field, 2),
      ...varint(bytes.length),
      ...bytes,
    ];
    const str = (field: number, v: string): number[] => len(field, [...Buffer.from(v, 'utf8')]);
    const num = (field: number, n: number): number[] => [...key(field, 0), ...varint(n)];
    const word = fc.string({ unit: 'grapheme-ascii', maxLength: 6 });
    const sysField = fc.oneof(
      word.map((v) => str(1, v)), // tag
      word.map((v) => str(2, v)), // keys
      word.map((v) => str(3, v)), // message_id
      fc.nat(7).map((n) => num(6, n)), // message_type
      fc.nat(1000).map((n) => num(13, n)), // queue_id
      fc
        .tuple(fc.nat(2 ** 30), fc.nat(2 ** 29))
        .map(([sec, ns]) => len(7, [...num(1, sec), ...num(2, ns)])),
    );
    const messageField = fc.oneof(
      fc.tuple(word, word).map(([ns, name]) => len(1, [...str(1, ns), ...str(2, name)])),
      fc
        .record({ k: word, v: word }, { requiredKeys: [] })
        .map(({ k, v }) =>
          len(2, [...(k === undefined ? [] : str(1, k)), ...(v === undefined ? [] : str(2, v))]),
        ),
      fc.constantFrom('__proto__', 'a').map((k) => len(2, [...str(1, k), ...str(2, 'v')])),
      fc.array(sysField, { maxLength: 6 }).map((f) => len(3, f.flat())),
      fc.uint8Array({ maxLength: 8 }).map((b) => len(4, [...b])),
    );
    fc.assert(
      fc.property(
        fc.array(fc.array(messageField, { maxLength: 8 }), { maxLength: 3 }),
        (messages) => {
          const bytes = Buffer.from(messages.flatMap((fields) => len(1, fields.flat())));
          const want = withoutOneofNames(generic.requestDeserialize(bytes));
          assert.deepEqual(decodeSendRequest(bytes), want);
        },
      ),
      fcParams(500),
    );
  });

  it('skips unknown fields of every wire type, groups included', () => {
    const message = { topic: { name: 'T' }, body: Buffer.from('b'), systemProperties: {} };
    const known = generic.requestSerialize({ messages: [message] });
    const key = (field: number, type: number): number[] => varint(field * 8 + type);
    const unknown = Buffer.from([
      ...key(90, 0),
      ...varint(300), // varint
      ...key(91, 1),
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8, // 64-bit
      ...key(92, 2),
      2,
      0x61,
      0x62, // length-delimited
      ...key(93, 5),
      1,
      2,
      3,
      4, // 32-bit
      ...key(94, 3),
      ...key(1, 0),
      7,
      ...key(94, 4), // a group holding a varint
    ]);
    // Unknown fields at the top level and inside a message decode as if absent.
    const inner = generic.requestSerialize({ messages: [message] }).subarray(2);
    const withInner = Buffer.concat([
      Buffer.from([(1 << 3) | 2, ...varint(inner.length + unknown.length)]),
      inner,
      unknown,
    ]);
    const want = withoutOneofNames(generic.requestDeserialize(known));
    assert.deepEqual(decodeSendRequest(Buffer.concat([known, unknown])), want);
    assert.deepEqual(decodeSendRequest(withInner), want);
  });

  it('decodes truncated bytes as the generic decoder does, or refuses them as malformed', () => {
    let refused = 0;
    fc.assert(
      fc.property(
        fc.array(messageArb, { minLength: 1, maxLength: 3 }),
        fc.nat(),
        (messages, cut) => {
          const bytes = generic.requestSerialize({ messages });
          const truncated = bytes.subarray(0, cut % bytes.length);
          let want: unknown;
          try {
            want = withoutOneofNames(generic.requestDeserialize(truncated));
          } catch {
            // The generic decoder refuses them: so must this one, with its own error.
            refused += 1;
            assert.throws(() => decodeSendRequest(truncated), malformed(/./));
            return;
          }
          // A cut between two messages (or before the first) leaves a shorter request.
          assert.deepEqual(decodeSendRequest(truncated), want);
        },
      ),
      fcParams(300),
    );
    // Almost every cut breaks a message; one that does not is checked here by construction.
    assert.ok(refused > 0, 'no truncation was refused');
    const one = { topic: { name: 'T' }, body: Buffer.from('b'), systemProperties: {} };
    const firstOnly = generic.requestSerialize({ messages: [one] });
    const both = generic.requestSerialize({ messages: [one, { ...one, body: Buffer.from('c') }] });
    assert.deepEqual(
      decodeSendRequest(both.subarray(0, firstOnly.length)),
      withoutOneofNames(generic.requestDeserialize(firstOnly)),
    );
    // Field 1 (messages) as a varint; a topic (Message field 1) as a varint.
    assert.throws(
      () => decodeSendRequest(Buffer.from([0x08, 0x01])),
      malformed(/wire type 0, expected 2/),
    );
    assert.throws(
      () => decodeSendRequest(Buffer.from([0x0a, 0x02, 0x08, 0x01])),
      malformed(/field 1 has wire type 0/),
    );
    assert.throws(
      () => decodeSendRequest(Buffer.from([0x0a, 0x05, 0x0a])),
      malformed(/past its end/),
    );
    assert.throws(
      () => decodeSendRequest(Buffer.from([0x17])),
      malformed(/unexpected wire type 7 of field 2/),
    );
  });

  it('reaches the handler as an UndecodableRequest through the service definition', async () => {
    const def = await loadMessagingDefinition();
    assert.ok(def.SendMessage !== undefined);
    const got: unknown = def.SendMessage.requestDeserialize(Buffer.from([0x0a, 0x05, 0x0a]));
    assert.ok(got instanceof UndecodableRequest);
    assert.match(got.reason, /could not be decoded.*past its end/);
  });

  it('stops at its bounds on messages, keys and properties, and on ack entries', () => {
    /** `count` copies of the length-delimited field `key` holding `inner`. */
    const repeated = (key: number, inner: Buffer, count: number): Buffer => {
      const one = Buffer.concat([Buffer.from([key, inner.length]), inner]);
      return Buffer.concat(Array.from({ length: count }, () => one));
    };
    const within = decodeSendRequest(repeated(0x0a, Buffer.alloc(0), SEND_MESSAGES_MAX));
    assert.equal(within.messages.length, SEND_MESSAGES_MAX);
    assert.throws(
      () => decodeSendRequest(repeated(0x0a, Buffer.alloc(0), SEND_MESSAGES_MAX + 1)),
      new RegExp(`more than ${SEND_MESSAGES_MAX} messages`),
    );
    // One message whose system properties (field 3) hold `n` keys (field 2), or which holds `n`
    // user property entries (field 2) of key "k".
    const withKeys = (n: number): Buffer => {
      const sys = repeated(0x12, Buffer.from('k'), n);
      const msg = Buffer.concat([Buffer.from([0x1a]), Buffer.from(varint(sys.length)), sys]);
      return Buffer.concat([Buffer.from([0x0a]), Buffer.from(varint(msg.length)), msg]);
    };
    const withProperties = (n: number): Buffer => {
      const msg = repeated(0x12, Buffer.from([0x0a, 0x01, 0x6b]), n);
      return Buffer.concat([Buffer.from([0x0a]), Buffer.from(varint(msg.length)), msg]);
    };
    const sysOf = (bytes: Buffer): { keys: string[] } =>
      (decodeSendRequest(bytes).messages[0] as { systemProperties: { keys: string[] } })
        .systemProperties;
    assert.equal(sysOf(withKeys(DECODE_REPEATS_MAX)).keys.length, DECODE_REPEATS_MAX);
    assert.throws(() => decodeSendRequest(withKeys(DECODE_REPEATS_MAX + 1)), /more than \d+ keys/);
    assert.doesNotThrow(() => decodeSendRequest(withProperties(DECODE_REPEATS_MAX)));
    assert.throws(
      () => decodeSendRequest(withProperties(DECODE_REPEATS_MAX + 1)),
      /more than \d+ user properties/,
    );
    // The bounds leave room for what the handler refuses with its own codes.
    assert.ok(DECODE_REPEATS_MAX > MESSAGE_LIMITS.keyCountMax);
    assert.ok(DECODE_REPEATS_MAX > MESSAGE_LIMITS.propertyCountMax);
    assert.ok(ACK_DECODE_ENTRIES_MAX > ACK_ENTRIES_MAX);
    const acks = (n: number): Buffer => repeated(0x1a, Buffer.alloc(0), n);
    const ackEntries = (bytes: Buffer): unknown[] => decodeAckRequest(bytes).entries as unknown[];
    assert.equal(ackEntries(acks(ACK_DECODE_ENTRIES_MAX)).length, ACK_DECODE_ENTRIES_MAX);
    assert.throws(
      () => decodeAckRequest(acks(ACK_DECODE_ENTRIES_MAX + 1)),
      /more than \d+ entries/,
    );
  });

  it("does not decode a request over its RPC's byte bound", async () => {
    const def = await loadMessagingDefinition();
    const route = def.QueryRoute;
    assert.ok(route !== undefined);
    // A QueryRoute whose topic name (field 1, Resource.name 2) is just over the bound.
    const name = Buffer.alloc(RPC_REQUEST_BYTES_MAX, 0x61);
    const resource = Buffer.concat([Buffer.from([0x12]), Buffer.from(varint(name.length)), name]);
    const request = Buffer.concat([
      Buffer.from([0x0a]),
      Buffer.from(varint(resource.length)),
      resource,
    ]);
    const got: unknown = route.requestDeserialize(request);
    assert.ok(got instanceof UndecodableRequest);
    assert.match(got.reason, /over the 1048576-byte limit of QueryRoute/);
    const small: unknown = route.requestDeserialize(request.subarray(0, 0));
    assert.ok(!(small instanceof UndecodableRequest));
    // SendMessage and Telemetry have larger bounds.
    assert.ok((MESSAGING_REQUEST_BYTES_MAX.SendMessage ?? 0) > 16 * 1024 * 1024);
    const send = def.SendMessage;
    assert.ok(send !== undefined);
    // A body (Message field 4) just over the generic bound decodes as a SendMessage.
    const body = Buffer.concat([Buffer.from([0x22]), Buffer.from(varint(name.length)), name]);
    const bigSend: unknown = send.requestDeserialize(
      Buffer.concat([Buffer.from([0x0a]), Buffer.from(varint(body.length)), body]),
    );
    assert.ok(
      !(bigSend instanceof UndecodableRequest),
      String((bigSend as { reason?: string }).reason),
    );
  });

  it('decodes AckMessage requests to what the generic decoder makes of them', async () => {
    const ack = await genericMessagingMethod('AckMessage');
    const resource = fc.record({ resourceNamespace: text, name: text }, { requiredKeys: [] });
    const entry = fc.record(
      { messageId: text, receiptHandle: text, liteTopic: optional(text) },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(
        fc.record(
          { group: resource, topic: resource, entries: fc.array(entry, { maxLength: 8 }) },
          { requiredKeys: [] },
        ),
        (request) => {
          const bytes = ack.requestSerialize(request);
          const want = withoutOneofNames(ack.requestDeserialize(bytes));
          assert.deepEqual(decodeAckRequest(bytes), want);
        },
      ),
      fcParams(300),
    );
    // Through the service definition, bytes that do not decode reach the handler as such.
    const def = await loadMessagingDefinition();
    assert.ok(def.AckMessage !== undefined);
    const got: unknown = def.AckMessage.requestDeserialize(Buffer.from([0x1a, 0x05, 0x0a]));
    assert.ok(got instanceof UndecodableRequest);
  });
});
