/*
 * The SimpleConsumer's wire, without a cluster. First the hand-written AckMessageRequest encoder
 * (src/client/pop-wire.ts): random unicode namespaces, groups, topics, message ids and handles
 * (empty ones included; lengths across each varint width; 1,024 entries) decode with the generic
 * decoder of the project's service.proto to exactly what was given; and the stub constructor
 * (rmq-client.ts `loadClientCtor`) sends a Buffer request as it is while still encoding plain
 * objects. Then a SimpleConsumer against fake servers on loopback (grpc-js servers built from the
 * project's definitions, answering QueryRoute with themselves as leader): its AckMessage arrives
 * decodable and per-entry results are read; ReceiveStored replies that lie (lists of different
 * lengths, more records than asked, a damaged record, another topic, an empty handle, attempt 0)
 * are each refused with a typed RaftmqError, and a server without ReceiveStored with UNSUPPORTED.
 */
import { strict as assert } from 'node:assert';
import { gzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { loadFetchDefinition, type ReceiveStoredRequest } from '../../src/broker/fetch-service';
import { bindServer, shutdownServer } from '../../src/broker/grpc-util';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { type AckEntry, decodeAckReply, encodeAckRequest } from '../../src/client/pop-wire';
import { decodeReceiveStoredReply } from '../../src/client/pull-wire';
import { loadClientCtor } from '../../src/client/rmq-client';
import {
  type AckResult,
  type ReceivedMessage,
  SimpleConsumer,
} from '../../src/client/simple-consumer';
import { type ErrorCode, isRaftmqError, RmqCode } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import { encodeMessage, type StoredMessage } from '../../src/store/message-codec';
import { fcParams } from '../fc-params';

const text = fc.oneof(
  fc.constant(''),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
);
const entryArb = fc.record({ messageId: text, receiptHandle: text });

/** What the generic decoder makes of an AckMessageRequest of these fields. */
function expectedAck(ns: string, group: string, topic: string, entries: readonly AckEntry[]) {
  return {
    group: { resourceNamespace: ns, name: group },
    topic: { resourceNamespace: ns, name: topic },
    entries: entries.map((e) => ({ messageId: e.messageId, receiptHandle: e.receiptHandle })),
  };
}

describe('encodeAckRequest and the client stub (pop-wire.ts, rmq-client.ts)', () => {
  let ack: grpc.MethodDefinition<unknown, unknown>;
  let service: grpc.ServiceDefinition;
  before(async () => {
    const def = await loadMessagingDefinition();
    assert.ok(def.AckMessage !== undefined);
    ack = def.AckMessage;
    const Ctor = await loadClientCtor('', { ReceiveStored: decodeReceiveStoredReply });
    service = (Ctor as unknown as { service: grpc.ServiceDefinition }).service;
  });

  it('writes what the generic decoder reads back, for any unicode strings', () => {
    fc.assert(
      fc.property(text, text, text, fc.array(entryArb, { maxLength: 12 }), (ns, g, t, entries) => {
        const expected = expectedAck(ns, g, t, entries);
        assert.deepEqual(ack.requestDeserialize(encodeAckRequest(ns, g, t, entries)), expected);
        // The stub's encoder of the same request as an object agrees.
        const generic = service.AckMessage?.requestSerialize(expected) as Buffer;
        assert.deepEqual(ack.requestDeserialize(generic), expected);
      }),
      fcParams(500),
    );
  });

  it('decodes AckMessage answers as the generic encoder writes them', () => {
    const statusArb = fc.option(
      fc.record({ code: fc.constantFrom(20000, 40013, 30000, 50001), message: text }),
      { nil: undefined },
    );
    const answerArb = fc.record({
      status: statusArb,
      entries: fc.array(fc.record({ messageId: text, receiptHandle: text, status: statusArb }), {
        maxLength: 8,
      }),
    });
    fc.assert(
      fc.property(answerArb, (answer) => {
        const bytes = ack.responseSerialize(answer);
        const plain = (st: typeof answer.status) => (st === undefined ? undefined : { ...st });
        assert.deepEqual(decodeAckReply(bytes), {
          status: plain(answer.status),
          entries: answer.entries.map((e) => ({
            receiptHandle: e.receiptHandle,
            status: plain(e.status),
          })),
        });
        // Cut short, it throws rather than reading past the end, or (cut between two
        // entries) reads the entries the whole answer begins with, and fewer of them.
        if (bytes.length > 0) {
          let part: ReturnType<typeof decodeAckReply> | undefined;
          try {
            part = decodeAckReply(bytes.subarray(0, bytes.length - 1));
          } catch (err) {
            assert.ok(err instanceof Error);
          }
          if (part !== undefined) {
            const full = decodeAckReply(bytes);
            assert.deepEqual(part.entries, full.entries.slice(0, part.entries.length));
            assert.notDeepEqual(part, full);
          }
        }
      }),
      fcParams(300),
    );
  });

  it('writes lengths of every varint width, and 1,024 entries', () => {
    // 127/128 bytes: one or two length bytes; 16,384 two-byte characters: three.
    const long = 'é'.repeat(16_384);
    for (const n of [0, 1, 120, 121, 122, 125, 126, 127, 128, 129, 16_383, 16_384]) {
      const s = 'h'.repeat(n);
      const entries = [
        { messageId: s, receiptHandle: s },
        { messageId: '', receiptHandle: s },
      ];
      const bytes = encodeAckRequest(s, long, s, entries);
      assert.deepEqual(ack.requestDeserialize(bytes), expectedAck(s, long, s, entries), `n=${n}`);
    }
    const many = Array.from({ length: 1_024 }, (_, i) => ({
      messageId: `01ABCDEF${i}`,
      receiptHandle: `v1.${i.toString(16)}.${(i * 7919).toString(16)}.${i + 1}.deadbeef`,
    }));
    const bytes = encodeAckRequest('ns', 'group', 'topic', many);
    assert.deepEqual(ack.requestDeserialize(bytes), expectedAck('ns', 'group', 'topic', many));
  });

  it('writes a lone surrogate as U+FFFD without breaking the framing', () => {
    const bytes = encodeAckRequest('\ud800', 'g\udc00', 't', [
      { messageId: 'a\ud83d', receiptHandle: 'h' },
    ]);
    const r = '\ufffd';
    assert.deepEqual(
      ack.requestDeserialize(bytes),
      expectedAck(r, `g${r}`, 't', [{ messageId: `a${r}`, receiptHandle: 'h' }]),
    );
  });

  it("sends a Buffer request as it is, a plain object by the method's encoder", async () => {
    const def = await loadMessagingDefinition();
    for (const name of ['AckMessage', 'ChangeInvisibleDuration', 'QueryRoute', 'ReceiveStored']) {
      const bytes = Buffer.from([0x0a, 0x00, 0x12, 0x00]);
      assert.equal(service[name]?.requestSerialize(bytes), bytes, name);
    }
    const change = {
      group: { resourceNamespace: 'ns', name: 'g' },
      topic: { resourceNamespace: 'ns', name: 't' },
      receiptHandle: 'v1.0.1.2.3',
      invisibleDuration: { seconds: 1, nanos: 500_000_000 },
      messageId: 'id',
    };
    const encoded = service.ChangeInvisibleDuration?.requestSerialize(change) as Buffer;
    assert.ok(Buffer.isBuffer(encoded) && encoded.length > 0);
    assert.deepEqual(encoded, def.ChangeInvisibleDuration?.requestSerialize(change));
    const receive = { namespace: '', group: 'g', topic: 't', batchSize: 3, awaitMs: 10 };
    const fetch = await loadFetchDefinition();
    const request: unknown = fetch.ReceiveStored?.requestDeserialize(
      service.ReceiveStored?.requestSerialize(receive) as Buffer,
    );
    assert.deepEqual(request, { ...receive, invisibleMs: 0, tagExpression: '', bytesMax: 0 });
    // Replies of ReceiveStored go through the hand-written decoder it was given.
    assert.equal(service.ReceiveStored?.responseDeserialize, decodeReceiveStoredReply);
    await assert.rejects(loadClientCtor('', { NoSuchMethod: decodeReceiveStoredReply }), (e) =>
      isRaftmqError(e, 'INTERNAL'),
    );
  });
});

// ---- A SimpleConsumer against fake servers ----

const TOPIC = 'PopWireTopic';
const BROKER_GROUP = 'fake-group';

type Answer = object | grpc.ServiceError;

function grpcFailure(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

function stored(over: Partial<StoredMessage> = {}): StoredMessage {
  return {
    topic: TOPIC,
    queueId: 1,
    body: Buffer.from('body-0'),
    bodyEncoding: 'IDENTITY',
    tag: 'TagA',
    keys: ['key-0'],
    userProperties: new Map([['index', '0']]),
    messageId: 'MSG-0',
    bornTimestampMs: 1_700_000_000_123,
    storeTimestampMs: 1_700_000_000_456,
    bornHost: '10.0.0.1:1234',
    storeHost: '127.0.0.1:8081',
    flags: 0,
    reconsumeCount: 0,
    messageType: 'NORMAL',
    transactionState: 'NONE',
    ...over,
  };
}

/** An OK ReceiveStored reply. */
function ok(records: Buffer[], offsets: number[], handles: string[], attempts: number[]): object {
  const status = { code: RmqCode.OK, message: 'OK' };
  return { status, records, offsets, receiptHandles: handles, deliveryAttempts: attempts };
}

/** An ack that settled nothing: every message failed with `code`, its message matching `text`. */
function allFailed(result: AckResult, code: ErrorCode, text: RegExp): void {
  assert.equal(result.acked, 0);
  assert.ok(result.failures.length > 0);
  for (const f of result.failures) {
    assert.equal(f.error.code, code);
    assert.match(f.error.message, text);
  }
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, text: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRaftmqError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, text);
    return true;
  });
}

describe('SimpleConsumer against a fake broker (ReceiveStored, AckMessage)', () => {
  const servers: grpc.Server[] = [];
  let endpoint = '';
  let bareEndpoint = '';
  let receiveAnswer: (request: ReceiveStoredRequest) => Answer = () => ok([], [], [], []);
  let ackAnswer: (request: { entries: AckEntry[] }) => Answer = () => ({});
  const receives: ReceiveStoredRequest[] = [];
  const acks: unknown[] = [];
  const consumers: SimpleConsumer[] = [];

  /** A fake on loopback (Fetch only when given handlers); QueryRoute names it the leader. */
  async function listen(fetchHandlers: grpc.UntypedServiceImplementation | undefined) {
    const server = new grpc.Server();
    let port = 0;
    server.addService(await loadMessagingDefinition(), {
      QueryRoute: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
        const broker = {
          name: BROKER_GROUP,
          id: 0,
          endpoints: { scheme: 'IPv4', addresses: [{ host: '127.0.0.1', port }] },
        };
        const queue = { topic: { name: TOPIC }, id: 1, permission: 'READ_WRITE', broker };
        cb(null, { status: { code: RmqCode.OK, message: 'OK' }, messageQueues: [queue] });
      },
      AckMessage: (
        call: grpc.ServerUnaryCall<unknown, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) => {
        acks.push(call.request);
        const a = ackAnswer(call.request as { entries: AckEntry[] });
        if (a instanceof Error) cb(a);
        else cb(null, a);
      },
    });
    if (fetchHandlers !== undefined) server.addService(await loadFetchDefinition(), fetchHandlers);
    port = await bindServer(server, '127.0.0.1:0');
    servers.push(server);
    return `127.0.0.1:${port}`;
  }

  async function consumer(at: string, namespace = ''): Promise<SimpleConsumer> {
    const common = { consumerGroup: 'fake-cg', callTimeoutMs: 2_000, awaitMs: 0 };
    const c = await SimpleConsumer.create({ endpoint: at, namespace, ...common });
    consumers.push(c);
    return c;
  }

  before(async () => {
    endpoint = await listen({
      ReceiveStored: (
        call: grpc.ServerUnaryCall<ReceiveStoredRequest, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) => {
        receives.push(call.request);
        const a = receiveAnswer(call.request);
        if (a instanceof Error) cb(a);
        else cb(null, a);
      },
    });
    bareEndpoint = await listen(undefined);
  });

  after(async () => {
    for (const c of consumers) c.close();
    for (const s of servers) await shutdownServer(s, 2_000, silentLogger());
  });

  const byNamespace = new Map<string, SimpleConsumer>();
  /** One receive of at most 2 messages from the fake, answered by `reply`. */
  const receiveAnswered = async (reply: Answer, namespace = '') => {
    receiveAnswer = () => reply;
    let c = byNamespace.get(namespace);
    if (c === undefined) byNamespace.set(namespace, (c = await consumer(endpoint, namespace)));
    return c.receive(TOPIC, { batchSize: 2 });
  };
  const malformed = (why: string) =>
    new RegExp(`^malformed ReceiveStored response from ${endpoint.replace(/\./g, '\\.')}: ${why}`);

  it('decodes a good reply, sends every field, and acks by hand-encoded bytes', async () => {
    const records = [encodeMessage(stored()), encodeMessage(stored({ messageId: 'MSG-1' }))];
    const c = await consumer(endpoint);
    receiveAnswer = () => ok(records, [10, 11], ['h-10', 'h-11'], [1, 3]);
    const got = await c.receive(TOPIC, { batchSize: 2, invisibleMs: 1_500, tagExpression: 'TagA' });
    assert.deepEqual(receives.at(-1), {
      namespace: '',
      group: 'fake-cg',
      topic: TOPIC,
      batchSize: 2,
      invisibleMs: 1_500,
      tagExpression: 'TagA',
      awaitMs: 0,
      bytesMax: 8 * 1024 * 1024 - 256 * 1024,
    });
    assert.deepEqual(
      got.map((m) => [m.messageId, m.topic, m.queueId, m.offset, m.receiptHandle]),
      [
        ['MSG-0', TOPIC, 1, 10, 'h-10'],
        ['MSG-1', TOPIC, 1, 11, 'h-11'],
      ],
    );
    const first = got[0] as ReceivedMessage;
    assert.deepEqual(
      [first.body.toString(), first.tag, first.keys, [...first.properties], first.brokerGroup],
      ['body-0', 'TagA', ['key-0'], [['index', '0']], BROKER_GROUP],
    );
    assert.equal(got.map((m) => m.deliveryAttempt).join(), '1,3');

    const invalid = { code: RmqCode.INVALID_RECEIPT_HANDLE, message: 'stale' };
    ackAnswer = (request) => ({
      status: { code: 30000, message: 'different results' }, // MULTIPLE_RESULTS
      entries: request.entries.map((e, i) => ({
        ...e,
        status: i === 0 ? { code: RmqCode.OK, message: 'OK' } : invalid,
      })),
    });
    const result = await c.ack(got);
    assert.equal(result.acked, 1);
    assert.deepEqual(
      result.failures.map((f) => [f.message.messageId, f.error.code]),
      [['MSG-1', 'INVALID_RECEIPT_HANDLE']],
    );
    assert.deepEqual(acks.at(-1), {
      group: { resourceNamespace: '', name: 'fake-cg' },
      topic: { resourceNamespace: '', name: TOPIC },
      entries: [
        { messageId: 'MSG-0', receiptHandle: 'h-10' },
        { messageId: 'MSG-1', receiptHandle: 'h-11' },
      ],
    });
    // A reply with the wrong number of results is not read by position: the request failed,
    // and its messages are reported with that failure.
    ackAnswer = () => ({ status: { code: RmqCode.OK, message: 'OK' }, entries: [] });
    allFailed(await c.ack(got), 'INTERNAL', /0 results for 2 entries/);
    // Every entry refused alike: per entry, not a failed call.
    ackAnswer = (request) => ({
      status: invalid,
      entries: request.entries.map((e) => ({ ...e, status: invalid })),
    });
    const none = await c.ack(got);
    assert.deepEqual([none.acked, none.failures.length], [0, 2]);
    // Settled is what the broker says: a reply, or an entry, without a status is refused.
    ackAnswer = (request) => ({ entries: request.entries.map((e) => ({ ...e })) });
    allFailed(await c.ack(got), 'INTERNAL', /no status/);
    ackAnswer = (request) => ({
      status: { code: RmqCode.OK, message: 'OK' },
      entries: request.entries.map((e) => ({ ...e })),
    });
    allFailed(await c.ack(got), 'INTERNAL', /entry 0 has no status/);
  });

  it('honours the namespace: acks in ns, checks ns%Topic, answers Topic', async () => {
    const record = encodeMessage(stored({ topic: `ns%${TOPIC}` }));
    const got = await receiveAnswered(ok([record], [10], ['h'], [1]), 'ns');
    assert.deepEqual(
      got.map((m) => [m.topic, m.messageId]),
      [[TOPIC, 'MSG-0']],
    );
    assert.equal(receives.at(-1)?.namespace, 'ns');
    ackAnswer = (request) => ({
      status: { code: RmqCode.OK, message: 'OK' },
      entries: request.entries.map((e) => ({ ...e, status: { code: RmqCode.OK } })),
    });
    assert.equal((await (byNamespace.get('ns') as SimpleConsumer).ack(got)).acked, 1);
    const request = acks.at(-1) as { group: unknown; topic: unknown };
    assert.deepEqual(
      [request.group, request.topic],
      [
        { resourceNamespace: 'ns', name: 'fake-cg' },
        { resourceNamespace: 'ns', name: TOPIC },
      ],
    );
    await rejectsWith(
      receiveAnswered(ok([encodeMessage(stored())], [10], ['h'], [1]), 'ns'),
      'INTERNAL',
      malformed(`a record of ${TOPIC} for ns%${TOPIC}`),
    );
  });

  it('refuses replies that lie with INTERNAL', async () => {
    const r = encodeMessage(stored());
    const cases: [object, string][] = [
      [ok([r, r], [10], ['a', 'b'], [1, 1]), '2 records with 1 offsets, 2 handles and 2 attempts'],
      [ok([r], [10], ['a', 'b'], [1]), '1 records with 1 offsets, 2 handles and 1 attempts'],
      [ok([r], [10], ['a'], []), '1 records with 1 offsets, 1 handles and 0 attempts'],
      [ok([], [10], [], []), '0 records with 1 offsets, 0 handles and 0 attempts'],
      [ok([r, r, r], [1, 2, 3], ['a', 'b', 'c'], [1, 1, 1]), '3 records, 2 asked'],
      [ok([encodeMessage(stored({ topic: 'Other' }))], [10], ['a'], [1]), `a record of Other`],
      [ok([r], [10], [''], [1]), 'an empty receipt handle'],
      [ok([r], [10], ['a'], [0]), 'attempt 0'],
      [ok([r, r], [10, 11], ['a', 'b'], [1, 0]), 'attempt 0'],
      [{ records: [r], offsets: [10], receiptHandles: ['a'], deliveryAttempts: [1] }, 'no status'],
    ];
    for (const [reply, why] of cases) {
      await rejectsWith(receiveAnswered(reply), 'INTERNAL', malformed(why));
    }
    // An offset beyond 2^53 cannot be named exactly: refused, not rounded.
    const huge = ok([r], [0], ['a'], [1]);
    Object.assign(huge, { offsets: ['18446744073709551615'] });
    await rejectsWith(receiveAnswered(huge), 'INTERNAL', malformed('offset'));
  });

  it('refuses a damaged record with CORRUPT_RECORD', async () => {
    const good = encodeMessage(stored());
    const flipped = Buffer.from(good);
    const at = good.indexOf('body-0');
    flipped[at] = (flipped[at] ?? 0) ^ 0x01;
    for (const bad of [flipped, good.subarray(0, good.length - 1), Buffer.alloc(0)]) {
      await rejectsWith(
        receiveAnswered(ok([good, bad], [10, 11], ['a', 'b'], [1, 1])),
        'CORRUPT_RECORD',
        /ReceiveStored reply from/,
      );
    }
    await rejectsWith(
      receiveAnswered(ok([flipped], [10], ['a'], [1])),
      'CORRUPT_RECORD',
      /CRC32C mismatch/,
    );
  });

  it('answers statuses and gRPC failures with their codes', async () => {
    assert.deepEqual(
      await receiveAnswered({ status: { code: RmqCode.MESSAGE_NOT_FOUND, message: 'none' } }),
      [],
    );
    const status = (code: number) => ({ status: { code, message: `lie ${code}` } });
    await rejectsWith(receiveAnswered(status(RmqCode.TOPIC_NOT_FOUND)), 'TOPIC_NOT_FOUND', /lie/);
    await rejectsWith(receiveAnswered(status(RmqCode.BAD_REQUEST)), 'INVALID_ARGUMENT', /lie/);
    await rejectsWith(
      receiveAnswered(status(RmqCode.ILLEGAL_INVISIBLE_TIME)),
      'ILLEGAL_INVISIBLE_TIME',
      /lie/,
    );
    const failure = grpcFailure(grpc.status.INTERNAL, 'boom');
    await rejectsWith(receiveAnswered(failure), 'INTERNAL', /ReceiveStored to .*: boom/);
    // INTERNAL_ERROR (a stopping node's closed store) is retried; INTERNAL_SERVER_ERROR is not.
    let calls = 0;
    receiveAnswer = () =>
      calls++ === 0
        ? { status: { code: RmqCode.INTERNAL_ERROR, message: 'broker is stopping' } }
        : ok([encodeMessage(stored())], [10], ['h-10'], [1]);
    const c = await consumer(endpoint);
    assert.equal((await c.receive(TOPIC, { batchSize: 2 })).length, 1);
    assert.equal(calls, 2);
    await rejectsWith(
      receiveAnswered(status(RmqCode.INTERNAL_SERVER_ERROR)),
      'INTERNAL',
      /INTERNAL_SERVER_ERROR: lie/,
    );
    // UNIMPLEMENTED by the handler itself, and by a server without the Fetch service at all.
    const unimplemented = grpcFailure(grpc.status.UNIMPLEMENTED, 'no');
    await rejectsWith(receiveAnswered(unimplemented), 'UNSUPPORTED', /official client/);
    const bare = await consumer(bareEndpoint);
    const startedMs = performance.now();
    await rejectsWith(bare.receive(TOPIC), 'UNSUPPORTED', /does not serve raftmq's ReceiveStored/);
    assert.ok(performance.now() - startedMs < 1_500, 'UNSUPPORTED was retried');
  });

  it('inflates GZIP bodies, keeps a damaged one as stored, and refuses a reply over its limit', async () => {
    const gz = encodeMessage(stored({ bodyEncoding: 'GZIP', body: gzipSync('hello, gzip') }));
    const bad = encodeMessage(stored({ bodyEncoding: 'GZIP', body: Buffer.from('not gzip') }));
    const got = await receiveAnswered(ok([gz, bad], [10, 11], ['h-10', 'h-11'], [1, 1]));
    assert.deepEqual(
      got.map((m) => [m.body.toString(), m.bodyEncoding]),
      [
        ['hello, gzip', 'IDENTITY'],
        ['not gzip', 'GZIP'],
      ],
    );
    // Records beside MESSAGE_NOT_FOUND would be made invisible and never seen.
    await rejectsWith(
      receiveAnswered({ status: { code: RmqCode.MESSAGE_NOT_FOUND, message: 'x' }, records: [gz] }),
      'INTERNAL',
      malformed('records with MESSAGE_NOT_FOUND'),
    );
    // A reply over receiveMessageBytesMax fails however often it is sent: not retried.
    const small = await SimpleConsumer.create({
      endpoint,
      consumerGroup: 'fake-cg',
      awaitMs: 0,
      callTimeoutMs: 2_000,
      receiveMessageBytesMax: 64 * 1024,
    });
    consumers.push(small);
    const big = encodeMessage(stored({ body: Buffer.alloc(100 * 1024, 7) }));
    receiveAnswer = () => ok([big], [12], ['h-12'], [1]);
    const before = receives.length;
    await rejectsWith(
      small.receive(TOPIC, { batchSize: 1 }),
      'RECORD_TOO_LARGE',
      /receiveMessageBytesMax/,
    );
    assert.equal(receives.length - before, 1, 'asked once');
  });

  it('reports the messages of a failed request as failures, and refuses an answer for another handle', async () => {
    const records = [encodeMessage(stored()), encodeMessage(stored({ messageId: 'MSG-1' }))];
    const got = await receiveAnswered(ok(records, [10, 11], ['h-10', 'h-11'], [1, 1]));
    const c = byNamespace.get('') as SimpleConsumer;
    ackAnswer = () => ({
      status: { code: RmqCode.BAD_REQUEST, message: 'refused whole' },
      entries: [],
    });
    const whole = await c.ack(got);
    assert.equal(whole.acked, 0);
    assert.deepEqual(
      whole.failures.map((f) => [f.message.messageId, f.error.code]),
      [
        ['MSG-0', 'INVALID_ARGUMENT'],
        ['MSG-1', 'INVALID_ARGUMENT'],
      ],
    );
    ackAnswer = (request) => ({
      status: { code: RmqCode.OK, message: 'OK' },
      entries: request.entries.map((e, i) => ({
        ...e,
        receiptHandle: i === 1 ? 'someone-else' : e.receiptHandle,
        status: { code: RmqCode.OK, message: 'OK' },
      })),
    });
    const swapped = await c.ack(got);
    assert.equal(swapped.acked, 0);
    assert.match(swapped.failures[0]?.error.message ?? '', /entry 1 answers another handle/);
  });
});
