/*
 * The bound SendMessage puts on a message's delivery frame (src/broker/delivery-frame-limit.ts).
 * Soundness: for random stored messages with every field drawn up to the store's limits (tag,
 * id, hosts, group, trace context, up to 128 keys of up to 1 KiB, properties up to 16 KiB, in
 * multi-byte characters) and delivery options at their largest (receipt handle, attempt,
 * offset, invisibility, namespace), the ReceiveMessage frame rmq-stored-frame.ts writes is never
 * larger than the bound computed from the body, keys and properties alone; nor is the frame of
 * the message's dead-letter copy, which carries three more properties. At the edges: a message
 * whose bound is exactly 4 MiB passes and one byte more is refused, with
 * MESSAGE_PROPERTIES_TOO_LARGE when keys or properties are what does not fit and
 * MESSAGE_BODY_TOO_LARGE when the body alone does not, each saying by how much; the shortcut
 * for small bodies holds with the largest keys and properties; and SendMessage's conversion
 * applies the check.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { MAX_BODY_BYTES_LIMIT } from '../../src/broker/broker-node-config';
import {
  checkDeliveryFrameSize,
  DELIVERABLE_BODY_SIZE_BYTES_ANY,
  DELIVERY_FRAME_FIXED_BYTES_MAX,
  DELIVERY_FRAME_SIZE_BYTES_MAX,
  deliveryFrameSizeBytesMax,
} from '../../src/broker/delivery-frame-limit';
import { RECEIPT_HANDLE_LENGTH_MAX } from '../../src/broker/receipt-handle';
import { type ProduceContext, toProduceMessage } from '../../src/broker/rmq-convert';
import { encodeStoredFrame } from '../../src/broker/rmq-stored-frame';
import type { WireMessage } from '../../src/broker/rmq-wire';
import { isRaftmqError } from '../../src/common/errors';
import { encodeMessage } from '../../src/store/message-codec';
import type { StoredMessage } from '../../src/store/message-format';
import { MESSAGE_LIMITS, USER_PROPERTY_LIMITS } from '../../src/store/message-limits';
import { fcParams } from '../fc-params';

const L = MESSAGE_LIMITS;
const U = USER_PROPERTY_LIMITS;
/** Characters of 1, 2, 3 and 4 UTF-8 bytes. */
const CHARS = [
  ['a', 1],
  ['é', 2],
  ['€', 3],
  ['😀', 4],
] as const;

/** A string of `char` repeated to at most `sizeBytes` UTF-8 bytes (at least one character). */
function filled(sizeBytes: number, charIndex: number): string {
  const [char, size] = CHARS[charIndex % CHARS.length] ?? CHARS[0];
  return char.repeat(Math.max(1, Math.floor(sizeBytes / size)));
}

/** A string of up to `sizeBytesMax` bytes, skewed towards the largest. */
function sized(sizeBytesMax: number): fc.Arbitrary<string> {
  return fc
    .tuple(
      fc.oneof(fc.constant(sizeBytesMax), fc.integer({ min: 1, max: sizeBytesMax })),
      fc.nat(3),
    )
    .map(([size, c]) => filled(size, c));
}

/** Up to `countMax` properties, up to `sizeBytesMax` of keys and values in all. */
function propertiesArb(countMax: number, sizeBytesMax: number): fc.Arbitrary<Map<string, string>> {
  return fc
    .tuple(fc.integer({ min: 0, max: countMax }), fc.double({ min: 0, max: 1 }), fc.nat(3))
    .map(([count, fill, c]) => {
      const properties = new Map<string, string>();
      if (count === 0) return properties;
      const keys = Array.from({ length: count }, (_, i) => `p${i}`);
      const keyBytes = keys.reduce((sum, k) => sum + k.length, 0);
      const valueBytes = Math.floor(((sizeBytesMax - keyBytes) * fill) / count);
      for (const k of keys) properties.set(k, valueBytes < 4 ? '' : filled(valueBytes, c));
      return properties;
    });
}

const storedArb = (
  propertyCountMax: number,
  propertiesBytesMax: number,
): fc.Arbitrary<StoredMessage> =>
  fc.record({
    topic: fc.constantFrom('T', 'shop%Orders', `ns%${'t'.repeat(L.topicLengthCharsMax - 3)}`),
    queueId: fc.oneof(fc.nat(64), fc.constant(L.queueIdMax)),
    body: fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((b) => Buffer.from(b)),
    bodyEncoding: fc.constantFrom('IDENTITY' as const, 'GZIP' as const),
    tag: fc.option(sized(L.tagSizeBytesMax), { nil: undefined }),
    keys: fc
      .tuple(fc.integer({ min: 0, max: L.keyCountMax }), sized(L.keySizeBytesMax))
      .map(([n, key]) => Array.from({ length: n }, () => key)),
    userProperties: propertiesArb(propertyCountMax, propertiesBytesMax),
    messageId: sized(L.messageIdSizeBytesMax),
    bornTimestampMs: fc.integer({ min: 0, max: 2 ** 52 }),
    storeTimestampMs: fc.integer({ min: 0, max: 2 ** 52 }),
    deliveryTimestampMs: fc.option(fc.integer({ min: 0, max: 2 ** 52 }), { nil: undefined }),
    bornHost: sized(L.hostSizeBytesMax),
    storeHost: sized(L.hostSizeBytesMax),
    flags: fc.constant(0),
    reconsumeCount: fc.integer({ min: 0, max: 0x7fff_fffe }),
    messageGroup: fc.option(sized(L.messageGroupSizeBytesMax), { nil: undefined }),
    messageType: fc.constantFrom('NORMAL' as const, 'FIFO' as const),
    transactionState: fc.constant('NONE' as const),
    traceContext: fc.option(sized(L.traceContextSizeBytesMax), { nil: undefined }),
  });

/** The largest ReceiveMessage frame of a stored message: every delivery option at its largest. */
function largestFrameBytes(m: StoredMessage, namespace: string): number {
  const frame = encodeStoredFrame(encodeMessage(m), Number.MAX_SAFE_INTEGER, {
    namespace,
    deliveryAttempt: 0xffff_ffff,
    receiptHandle: 'h'.repeat(RECEIPT_HANDLE_LENGTH_MAX),
    invisibleDurationMs: Number.MAX_SAFE_INTEGER,
  });
  return frame.bytes.length;
}

/** The copy broker.ts stores in a dead-letter queue. */
function deadLetterCopy(m: StoredMessage): StoredMessage {
  const userProperties = new Map(m.userProperties);
  userProperties.set('DLQ_ORIGIN_TOPIC', m.topic);
  userProperties.set('DLQ_ORIGIN_MESSAGE_ID', m.messageId);
  userProperties.set('DLQ_ORIGIN_QUEUE', `${L.queueIdMax}:${Number.MAX_SAFE_INTEGER}`);
  const group = 'g'.repeat(L.topicLengthCharsMax - '%DLQ%'.length);
  return { ...m, topic: `%DLQ%${group}`, queueId: 0, userProperties };
}

function keysOfBytes(framedBytes: number): string[] {
  // Each key of up to 1 KiB takes 3 bytes of framing (tag and a two-byte length).
  const keys: string[] = [];
  let left = framedBytes;
  while (left > 0) {
    const size = Math.min(L.keySizeBytesMax, left - 3);
    assert.ok(size >= 1, `cannot make keys of exactly ${framedBytes} framed bytes`);
    keys.push(`k${'x'.repeat(size - 1)}`);
    left -= size + 3;
  }
  return keys;
}

function refusal(check: () => void, code: string): string {
  try {
    check();
  } catch (err) {
    assert.ok(isRaftmqError(err), String(err));
    assert.equal(err.code, code, err.message);
    return err.message;
  }
  assert.fail(`not refused (${code} expected)`);
}

const NO_PROPERTIES: ReadonlyMap<string, string> = new Map();

describe('delivery frame limit', () => {
  it('bounds every ReceiveMessage frame, and that of its dead-letter copy', () => {
    fc.assert(
      fc.property(
        // Up to the producer's limits; the store's leave room for a dead-letter copy's three.
        storedArb(U.countMax, U.sizeBytesMax),
        fc.constantFrom('', 'shop', 'n'.repeat(120)),
        (m, ns) => {
          const bound = deliveryFrameSizeBytesMax(m.body, m.keys, m.userProperties);
          const frame = largestFrameBytes(m, ns);
          assert.ok(frame <= bound, `frame ${frame} > bound ${bound}`);
          const copy = largestFrameBytes(deadLetterCopy(m), ns);
          assert.ok(copy <= bound, `dead-letter frame ${copy} > bound ${bound}`);
        },
      ),
      fcParams(150),
    );
  });

  it('bounds a frame with every field, body included, at its largest', () => {
    const m: StoredMessage = {
      topic: 'T',
      queueId: L.queueIdMax,
      body: Buffer.alloc(MAX_BODY_BYTES_LIMIT, 7),
      bodyEncoding: 'IDENTITY',
      tag: filled(L.tagSizeBytesMax, 2),
      keys: Array.from({ length: L.keyCountMax }, (_, i) => filled(L.keySizeBytesMax, i)),
      userProperties: new Map([['p', filled(L.propertiesSizeBytesMax - 1, 0)]]),
      messageId: filled(L.messageIdSizeBytesMax, 0),
      bornTimestampMs: 2 ** 52,
      storeTimestampMs: 2 ** 52,
      deliveryTimestampMs: 2 ** 52,
      bornHost: filled(L.hostSizeBytesMax, 0),
      storeHost: filled(L.hostSizeBytesMax, 0),
      flags: 0,
      reconsumeCount: 0,
      messageGroup: filled(L.messageGroupSizeBytesMax, 0),
      messageType: 'FIFO',
      transactionState: 'NONE',
      traceContext: filled(L.traceContextSizeBytesMax, 0),
    };
    const bound = deliveryFrameSizeBytesMax(m.body, m.keys, m.userProperties);
    const frame = largestFrameBytes(m, 'n'.repeat(120));
    assert.ok(frame <= bound, `frame ${frame} > bound ${bound}`);
    assert.ok(frame > DELIVERY_FRAME_SIZE_BYTES_MAX, 'such a message is not deliverable');
    assert.throws(
      () => checkDeliveryFrameSize(m.body, m.keys, m.userProperties),
      (err: unknown) => isRaftmqError(err, 'MESSAGE_PROPERTIES_TOO_LARGE'),
    );
  });

  it('passes a body of the broker maximum without keys and properties', () => {
    const body = new Uint8Array(MAX_BODY_BYTES_LIMIT);
    checkDeliveryFrameSize(body, [], NO_PROPERTIES);
    assert.ok(deliveryFrameSizeBytesMax(body, [], NO_PROPERTIES) <= DELIVERY_FRAME_SIZE_BYTES_MAX);
  });

  it('passes any keys and properties within their limits with a body up to the shortcut', () => {
    const body = new Uint8Array(DELIVERABLE_BODY_SIZE_BYTES_ANY);
    const keys = Array.from({ length: L.keyCountMax }, (_, i) => filled(L.keySizeBytesMax, i));
    const properties = new Map(
      Array.from({ length: U.countMax }, (_, i) => [
        `k${String(i).padStart(3, '0')}`,
        'v'.repeat(U.sizeBytesMax / U.countMax - 4),
      ]),
    );
    assert.ok(deliveryFrameSizeBytesMax(body, keys, properties) <= DELIVERY_FRAME_SIZE_BYTES_MAX);
  });

  it('passes a message whose bound is exactly 4 MiB and refuses one byte more', () => {
    const body = new Uint8Array(MAX_BODY_BYTES_LIMIT);
    const room = DELIVERY_FRAME_SIZE_BYTES_MAX - DELIVERY_FRAME_FIXED_BYTES_MAX - body.length;
    const keys = keysOfBytes(room);
    assert.equal(
      deliveryFrameSizeBytesMax(body, keys, NO_PROPERTIES),
      DELIVERY_FRAME_SIZE_BYTES_MAX,
    );
    checkDeliveryFrameSize(body, keys, NO_PROPERTIES);

    const over = [...keys.slice(0, -1), `${keys.at(-1) ?? ''}x`];
    const message = refusal(
      () => checkDeliveryFrameSize(body, over, NO_PROPERTIES),
      'MESSAGE_PROPERTIES_TOO_LARGE',
    );
    assert.match(message, /are 1 bytes more than a body of 4128768 bytes leaves room for/);
    assert.match(message, /at most 4194304 bytes \(4 MiB\)/);

    // Keys that fill the room exactly leave none for a property.
    const properties = new Map([['p', 'v']]);
    const withProperty = refusal(
      () => checkDeliveryFrameSize(body, keys, properties),
      'MESSAGE_PROPERTIES_TOO_LARGE',
    );
    assert.match(withProperty, /user_properties \(14\) are 14 bytes more/);
  });

  it('refuses as MESSAGE_BODY_TOO_LARGE a body that leaves no room for the other fields', () => {
    const bodyMax = DELIVERY_FRAME_SIZE_BYTES_MAX - DELIVERY_FRAME_FIXED_BYTES_MAX;
    checkDeliveryFrameSize(new Uint8Array(bodyMax), [], NO_PROPERTIES);
    const message = refusal(
      () => checkDeliveryFrameSize(new Uint8Array(bodyMax + 1), ['k'], NO_PROPERTIES),
      'MESSAGE_BODY_TOO_LARGE',
    );
    assert.match(message, new RegExp(`body is ${bodyMax + 1} bytes; at most ${bodyMax - 4} `));
    assert.match(message, /\(5 bytes less\)/);
  });

  it('is applied by SendMessage to each message', () => {
    const ctx: ProduceContext = {
      namespaceHeader: undefined,
      maxBodyBytes: MAX_BODY_BYTES_LIMIT,
      maxDelayMs: 0,
      nowMs: Date.now(),
      peer: '127.0.0.1:1',
    };
    const body = Buffer.alloc(MAX_BODY_BYTES_LIMIT, 1);
    const room = DELIVERY_FRAME_SIZE_BYTES_MAX - DELIVERY_FRAME_FIXED_BYTES_MAX - body.length;
    const wire = (keys: string[]): WireMessage => ({
      topic: { name: 'T', resourceNamespace: '' },
      body,
      userProperties: {},
      systemProperties: {
        messageId: 'ID-1',
        keys,
        bodyEncoding: 'IDENTITY',
        messageType: 'NORMAL',
        bornHost: 'host',
        storeHost: '',
        queueId: 0,
      },
    });
    assert.equal(toProduceMessage(wire(keysOfBytes(room)), ctx).body.length, body.length);
    refusal(
      () => toProduceMessage(wire(keysOfBytes(room + 1)), ctx),
      'MESSAGE_PROPERTIES_TOO_LARGE',
    );
  });
});
