/*
 * The hand-written encoders of delivered messages (src/broker/rmq-stored-frame.ts, from stored
 * records) and of send and ack answers (src/broker/rmq-message-encode.ts) against the generic
 * one: for random stored messages and delivery options, the frame written from the stored
 * record must decode (with the project's .proto files, as the official clients decode it) to
 * exactly what the generic serializer makes of the decoded message built as an object tree.
 * `wireMessage` below is that object tree, written from the contract's field list: the
 * reference the encoder follows. Send, ack and fetch answers are checked the same way, and a
 * damaged record is refused with CORRUPT_RECORD, never another error.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { bodyMd5Hex, type DeliveryOptions } from '../../src/broker/rmq-convert';
import {
  encodeAckAnswer,
  encodeFetchAnswer,
  encodeSendAccepted,
} from '../../src/broker/rmq-message-encode';
import { loadFetchDefinition } from '../../src/broker/fetch-service';
import { isRaftmqError, RmqCode } from '../../src/common/errors';
import { encodeStoredFrame } from '../../src/broker/rmq-stored-frame';
import { decodeMessage, encodeMessage } from '../../src/store/message-codec';
import { unwrapNamespace } from '../../src/broker/rmq-validate';
import { msToTimestamp, type WireMessage } from '../../src/broker/rmq-wire';
import type { LocatedMessage } from '../../src/store/message-store';
import type { StoredMessage } from '../../src/store/message-format';
import { fcParams } from '../fc-params';

/** The delivered message as the object tree proto-loader's serializer takes. */
function wireMessage(located: LocatedMessage, options: DeliveryOptions): WireMessage {
  const m = located.message;
  const ns = options.namespace ?? '';
  return {
    topic: { resourceNamespace: ns, name: unwrapNamespace(ns, m.topic) },
    userProperties: Object.fromEntries(m.userProperties),
    systemProperties: {
      tag: m.tag,
      keys: [...m.keys],
      messageId: m.messageId,
      bodyDigest: { type: 'MD5', checksum: bodyMd5Hex(m.body) },
      bodyEncoding: m.bodyEncoding,
      messageType: m.messageType,
      bornTimestamp: msToTimestamp(m.bornTimestampMs),
      bornHost: m.bornHost,
      storeTimestamp: msToTimestamp(m.storeTimestampMs),
      storeHost: m.storeHost,
      deliveryTimestamp:
        m.deliveryTimestampMs === undefined ? undefined : msToTimestamp(m.deliveryTimestampMs),
      receiptHandle: options.receiptHandle,
      queueId: m.queueId,
      queueOffset: located.queueOffset,
      invisibleDuration:
        options.invisibleDurationMs === undefined
          ? undefined
          : msToTimestamp(options.invisibleDurationMs),
      deliveryAttempt: options.deliveryAttempt ?? m.reconsumeCount + 1,
      messageGroup: m.messageGroup,
      traceContext: m.traceContext,
    },
    body: m.body,
  };
}

const text = fc.string({ unit: 'grapheme', maxLength: 40 });
const optText = fc.option(text, { nil: undefined });
const ms = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 4_102_444_800_000 }));
const uint = fc.oneof(fc.nat(300), fc.nat(), fc.maxSafeNat());

const storedArb: fc.Arbitrary<StoredMessage> = fc.record({
  topic: fc.constantFrom('T', 'ns%T', 'ns2%Topic_1'),
  queueId: fc.nat(65_535),
  body: fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)),
  bodyEncoding: fc.constantFrom('IDENTITY' as const, 'GZIP' as const),
  tag: optText,
  keys: fc.array(text, { maxLength: 4 }),
  userProperties: fc
    .uniqueArray(fc.tuple(text, text), { maxLength: 5, selector: ([k]) => k })
    .map((pairs) => new Map(pairs)),
  messageId: text,
  bornTimestampMs: ms,
  storeTimestampMs: ms,
  deliveryTimestampMs: fc.option(ms, { nil: undefined }),
  bornHost: text,
  storeHost: text,
  flags: fc.constant(0),
  reconsumeCount: fc.nat(20),
  messageGroup: optText,
  messageType: fc.constantFrom(
    'NORMAL' as const,
    'FIFO' as const,
    'DELAY' as const,
    'TRANSACTION' as const,
  ),
  transactionState: fc.constant('NONE' as const),
  traceContext: optText,
});

const deliveryArb: fc.Arbitrary<DeliveryOptions> = fc.record(
  {
    namespace: fc.constantFrom('', 'ns', 'other'),
    deliveryAttempt: fc.integer({ min: 1, max: 1000 }),
    receiptHandle: text,
    invisibleDurationMs: fc.oneof(fc.constant(0), fc.nat(86_400_000)),
  },
  { requiredKeys: [] },
);

/**
 * Stored messages within the store's limits (non-empty ids, keys and present strings, no NUL,
 * a message group under 64 bytes), with multi-byte characters so that copying UTF-8 is tested.
 */
const word = fc.string({ unit: fc.constantFrom(...'abXY09_-é€😀'), minLength: 1, maxLength: 12 });
const optWord = fc.option(word, { nil: undefined });
const storableArb: fc.Arbitrary<StoredMessage> = fc
  .tuple(
    storedArb,
    fc.record({
      tag: optWord,
      keys: fc.array(word, { maxLength: 4 }),
      userProperties: fc
        .uniqueArray(fc.tuple(word, text), { maxLength: 5, selector: ([k]) => k })
        .map((pairs) => new Map(pairs)),
      messageId: word,
      messageGroup: optWord,
      bornHost: word,
      traceContext: optWord,
    }),
  )
  .map(([m, strings]) => ({ ...m, ...strings }));

describe('delivered message encoding', () => {
  let methods: grpc.ServiceDefinition;
  before(async () => {
    methods = await loadMessagingDefinition();
  });

  for (const rpc of ['ReceiveMessage', 'PullMessage'] as const) {
    it(`writes ${rpc} frames that decode to what the generic encoder writes`, () => {
      const method = methods[rpc];
      assert.ok(method !== undefined);
      fc.assert(
        fc.property(
          storableArb,
          fc.option(uint, { nil: undefined }),
          deliveryArb,
          (stored, queueOffset, delivery) => {
            const record = encodeMessage(stored);
            const message = decodeMessage(record);
            const located: LocatedMessage = { message, queueOffset, position: 0, sizeBytes: 1 };
            const frame = encodeStoredFrame(record, queueOffset, delivery);
            const bytes = method.responseSerialize(frame);
            const reference = method.responseSerialize({
              message: wireMessage(located, delivery),
            });
            assert.deepEqual(
              method.responseDeserialize(bytes),
              method.responseDeserialize(reference),
            );
          },
        ),
        fcParams(300),
      );
    });
  }

  it('refuses what a protobuf varint of these fields cannot carry', () => {
    const base = fc.sample(storableArb, { numRuns: 1, seed: 1 })[0] as StoredMessage;
    const record = encodeMessage(base);
    assert.throws(() => encodeStoredFrame(record, -1), /cannot encode queue offset -1/);
    assert.throws(
      () => encodeStoredFrame(record, 1, { invisibleDurationMs: 1.5 }),
      /cannot encode invisible duration 1.5/,
    );
  });
});

describe('stored send answer encoding', () => {
  let methods: grpc.ServiceDefinition;
  before(async () => {
    methods = await loadMessagingDefinition();
  });

  it('writes SendMessage answers that decode to what the generic encoder writes', () => {
    const method = methods.SendMessage;
    assert.ok(method !== undefined);
    const accepted = fc.record({ messageId: text, offset: uint });
    fc.assert(
      fc.property(
        fc.array(accepted, { maxLength: 40 }),
        fc.constantFrom(RmqCode.OK, RmqCode.BAD_REQUEST, RmqCode.UNSUPPORTED),
        text,
        (entries, code, message) => {
          const bytes = method.responseSerialize(encodeSendAccepted(entries, code, message));
          const status = { code, message };
          const reference = method.responseSerialize({
            status,
            entries: entries.map((e) => ({
              status,
              messageId: e.messageId,
              transactionId: '',
              offset: e.offset,
              recallHandle: '',
            })),
          });
          assert.deepEqual(
            method.responseDeserialize(bytes),
            method.responseDeserialize(reference),
          );
        },
      ),
      fcParams(300),
    );
  });

  it('refuses a queue offset that is not a non-negative safe integer', () => {
    for (const offset of [-1, 1.5, 2 ** 53]) {
      assert.throws(
        () => encodeSendAccepted([{ messageId: 'm', offset }], RmqCode.OK, 'OK'),
        /queue offset/,
      );
    }
  });
});

describe('AckMessage answer encoding', () => {
  let methods: grpc.ServiceDefinition;
  before(async () => {
    methods = await loadMessagingDefinition();
  });

  it('writes AckMessage answers that decode to what the generic encoder writes', () => {
    const method = methods.AckMessage;
    assert.ok(method !== undefined);
    const status = fc.record({
      code: fc.constantFrom(
        RmqCode.OK,
        RmqCode.INVALID_RECEIPT_HANDLE,
        RmqCode.BAD_REQUEST,
        'OK',
        'INVALID_RECEIPT_HANDLE',
      ),
      message: text,
    });
    const entry = fc.record({ messageId: text, receiptHandle: text, status });
    fc.assert(
      fc.property(status, fc.array(entry, { maxLength: 40 }), (top, entries) => {
        const bytes = method.responseSerialize(encodeAckAnswer(top, entries));
        const reference = method.responseSerialize({ status: top, entries });
        assert.deepEqual(method.responseDeserialize(bytes), method.responseDeserialize(reference));
      }),
      fcParams(300),
    );
  });

  it('refuses a status code that is not a RocketMQ code', () => {
    assert.throws(
      () => encodeAckAnswer({ code: 'NO_SUCH_CODE', message: '' }, []),
      /unknown status code NO_SUCH_CODE/,
    );
  });
});

describe('delivery frames from damaged stored records', () => {
  it('refuse a damaged record with a typed error, never anything else', () => {
    fc.assert(
      fc.property(
        storableArb,
        fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 4 }),
        fc.nat(),
        (message, flips, cut) => {
          const record = Buffer.from(encodeMessage(message));
          for (const [at, value] of flips) record[at % record.length] = value;
          const damaged = record.subarray(0, record.length - (cut % 8));
          try {
            encodeStoredFrame(damaged, 1, { namespace: 'ns' });
          } catch (err) {
            assert.ok(
              isRaftmqError(err, 'CORRUPT_RECORD'),
              `expected CORRUPT_RECORD, got ${String(err)}`,
            );
          }
        },
      ),
      fcParams(500),
    );
  });
});

describe('FetchQueue answer encoding', () => {
  it('writes FetchQueue answers that decode to what the generic encoder writes', async () => {
    const method = (await loadFetchDefinition()).FetchQueue;
    assert.ok(method !== undefined);
    const record = fc.record({
      bytes: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      queueOffset: uint,
    });
    fc.assert(
      fc.property(uint, fc.array(record, { maxLength: 20 }), (nextOffset, records) => {
        const bytes = method.responseSerialize(encodeFetchAnswer(nextOffset, records));
        const reference = method.responseSerialize({
          status: { code: RmqCode.OK, message: 'OK' },
          nextOffset,
          records: records.map((r) => r.bytes),
          offsets: records.map((r) => r.queueOffset),
        });
        assert.deepEqual(method.responseDeserialize(bytes), method.responseDeserialize(reference));
      }),
      fcParams(300),
    );
  });
});
