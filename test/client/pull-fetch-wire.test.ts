/*
 * The PullConsumer's side of raftmq's Fetch protocol, against fake servers on loopback (grpc-js
 * servers built from the project's own definitions, with hand-written handlers). A server that
 * has no Fetch service answers FetchQueue UNIMPLEMENTED: the pull falls back to PullMessage,
 * the endpoint is remembered (FetchQueue is asked once, PullMessage every time) and the
 * PullMessage request carries the pull's fields. A FetchQueue that lies is refused with a typed
 * error: INTERNAL for a protocol break (a record of another topic, namespace or queue; offsets
 * out of order, repeated, below the requested offset or at or past next_offset; records and
 * offsets of different lengths; more records than asked; an OK reply that does not move past
 * the requested offset), CORRUPT_RECORD for a record that fails its own checks (a flipped byte,
 * a truncated or empty record), and each non-OK status the code STATUS_ERRORS maps it to; a
 * gRPC error other than UNIMPLEMENTED is not a fallback. A good reply decodes every field and
 * honours the consumer's namespace, and a consumer asks no more bytes than it can receive in
 * one reply. Servers and consumers are closed after each suite.
 */
import { strict as assert } from 'node:assert';
import { gzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { type FetchRequest, loadFetchDefinition } from '../../src/broker/fetch-service';
import { bindServer, shutdownServer } from '../../src/broker/grpc-util';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { PullConsumer, type PulledMessage } from '../../src/client/pull-consumer';
import { type ErrorCode, isRaftmqError, RmqCode } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import { encodeMessage, type StoredMessage } from '../../src/store/message-codec';

const TOPIC = 'FetchTopic';
const GROUP = 'fetch-wire-group';
const CLIENT_ID = 'fetch-wire-client';

/** What a fake handler answers: a reply object or a gRPC error. */
type Answer = object | grpc.ServiceError;

interface FakeServer {
  readonly endpoint: string;
  close(): Promise<void>;
}

async function listen(
  services: readonly [grpc.ServiceDefinition, grpc.UntypedServiceImplementation][],
): Promise<FakeServer> {
  const server = new grpc.Server();
  for (const [definition, handlers] of services) server.addService(definition, handlers);
  const port = await bindServer(server, '127.0.0.1:0');
  return {
    endpoint: `127.0.0.1:${port}`,
    close: () => shutdownServer(server, 2_000, silentLogger()),
  };
}

/** A gRPC error as a handler passes it to its callback. */
function grpcFailure(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/** A stored message of TOPIC queue 0 with every field set; `over` changes some. */
function stored(over: Partial<StoredMessage> = {}): StoredMessage {
  return {
    topic: TOPIC,
    queueId: 0,
    body: Buffer.from('body-0'),
    bodyEncoding: 'IDENTITY',
    tag: 'TagA',
    keys: ['key-0', 'k0'],
    userProperties: new Map([
      ['index', '0'],
      ['colour', 'blue'],
    ]),
    messageId: 'MSG-0',
    bornTimestampMs: 1_700_000_000_123,
    storeTimestampMs: 1_700_000_000_456,
    bornHost: '10.0.0.1:1234',
    storeHost: '127.0.0.1:8081',
    flags: 0,
    reconsumeCount: 0,
    messageGroup: undefined,
    messageType: 'NORMAL',
    transactionState: 'NONE',
    ...over,
  };
}

/** An OK FetchQueue reply. */
function ok(records: readonly Buffer[], offsets: readonly number[], nextOffset: number): object {
  return { status: { code: RmqCode.OK, message: 'OK' }, nextOffset, records, offsets };
}

/** Asserts that `promise` rejects with a RaftmqError of `code` whose message matches `text`. */
async function rejectsWith(
  promise: Promise<unknown>,
  code: ErrorCode,
  text: RegExp,
): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRaftmqError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, text);
    return true;
  });
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('PullConsumer falls back to PullMessage on a server without Fetch', () => {
  /** Requests each fake PullMessage handler received, by server. */
  const pulls = { bare: [] as unknown[], refusing: [] as unknown[] };
  let fetchCalls = 0;
  let bare: FakeServer | undefined;
  let refusing: FakeServer | undefined;
  const consumers: PullConsumer[] = [];

  /** A PullMessage handler answering MESSAGE_NOT_FOUND with next offset 5, as the broker does. */
  const pullMessage =
    (into: unknown[]): grpc.handleServerStreamingCall<unknown, unknown> =>
    (call) => {
      into.push(call.request);
      call.write({ status: { code: RmqCode.MESSAGE_NOT_FOUND, message: 'x' } });
      call.write({ nextOffset: 5 });
      call.end();
    };

  before(async () => {
    const messaging = await loadMessagingDefinition();
    const fetch = await loadFetchDefinition();
    // Only MessagingService.PullMessage (grpc-js answers every other method UNIMPLEMENTED);
    // Fetch is not registered at all.
    bare = await listen([[messaging, { PullMessage: pullMessage(pulls.bare) }]]);
    // Fetch registered, but FetchQueue answers UNIMPLEMENTED itself: the calls can be counted.
    refusing = await listen([
      [messaging, { PullMessage: pullMessage(pulls.refusing) }],
      [
        fetch,
        {
          FetchQueue: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => {
            fetchCalls++;
            callback(grpcFailure(grpc.status.UNIMPLEMENTED, 'no Fetch here'));
          },
        },
      ],
    ]);
  });

  after(async () => {
    for (const c of consumers) c.close();
    await bare?.close();
    await refusing?.close();
  });

  async function consumer(options: { pullProtocol?: 'fetch' | 'pull-message' } = {}) {
    assert.ok(bare !== undefined);
    const c = await PullConsumer.create({
      endpoint: bare.endpoint,
      consumerGroup: GROUP,
      clientId: CLIENT_ID,
      callTimeoutMs: 5_000,
      ...options,
    });
    consumers.push(c);
    return c;
  }

  it('pulls by PullMessage when Fetch is not registered, again on the second pull', async () => {
    assert.ok(bare !== undefined);
    const c = await consumer();
    const endpoint = bare.endpoint;
    for (let i = 0; i < 2; i++) {
      const result = await c.pull(TOPIC, 3, 4, 16, { endpoint, tagExpression: 'TagA||TagB' });
      assert.deepEqual(result, { status: 'NO_NEW_MSG', messages: [], nextOffset: 5 });
    }
    assert.equal(pulls.bare.length, 2);
    const expected = {
      group: { resourceNamespace: '', name: GROUP },
      messageQueue: { topic: { resourceNamespace: '', name: TOPIC }, id: 3 },
      offset: 4,
      batchSize: 16,
      filterExpression: { type: 'TAG', expression: 'TagA||TagB' },
      longPollingTimeout: { seconds: 0, nanos: 0 },
    };
    for (const request of pulls.bare) assert.deepEqual(pick(request, expected), expected);
  });

  it('asks FetchQueue once per endpoint, then only PullMessage', async () => {
    assert.ok(refusing !== undefined);
    const c = await consumer();
    const endpoint = refusing.endpoint;
    const before = { fetch: fetchCalls, pull: pulls.refusing.length };
    for (let i = 0; i < 3; i++) {
      const result = await c.pull(TOPIC, 0, 0, 1, { endpoint, awaitMs: 10 });
      assert.deepEqual(result, { status: 'NO_NEW_MSG', messages: [], nextOffset: 5 });
    }
    assert.equal(fetchCalls - before.fetch, 1, 'FetchQueue was asked again');
    assert.equal(pulls.refusing.length - before.pull, 3);
    // The last request asked for a 10 ms long poll.
    const last = pulls.refusing.at(-1) as { longPollingTimeout: unknown };
    assert.deepEqual(last.longPollingTimeout, { seconds: 0, nanos: 10_000_000 });
    // Another consumer has not learned it: it asks once too.
    const other = await consumer();
    await other.pull(TOPIC, 0, 0, 1, { endpoint });
    assert.equal(fetchCalls - before.fetch, 2);
  });

  it("never asks FetchQueue with pullProtocol 'pull-message'", async () => {
    assert.ok(refusing !== undefined);
    const c = await consumer({ pullProtocol: 'pull-message' });
    const before = { fetch: fetchCalls, pull: pulls.refusing.length };
    for (let i = 0; i < 2; i++) {
      const result = await c.pull(TOPIC, 0, 0, 1, { endpoint: refusing.endpoint });
      assert.equal(result.status, 'NO_NEW_MSG');
    }
    assert.equal(fetchCalls, before.fetch);
    assert.equal(pulls.refusing.length - before.pull, 2);
  });
});

/** The fields of `actual` that `expected` names (proto-loader adds every other field). */
function pick(actual: unknown, expected: object): unknown {
  if (typeof actual !== 'object' || actual === null) return actual;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(expected)) {
    const got = (actual as Record<string, unknown>)[key];
    out[key] = typeof value === 'object' && value !== null ? pick(got, value as object) : got;
  }
  return out;
}

describe('PullConsumer reads FetchQueue replies', () => {
  let server: FakeServer | undefined;
  /** What the next FetchQueue call answers. */
  let answer: (request: FetchRequest) => Answer = () => ok([], [], 0);
  const calls: { request: FetchRequest; metadata: grpc.Metadata }[] = [];
  let pc: PullConsumer | undefined;
  let pcNs: PullConsumer | undefined;

  const endpoint = (): string => {
    assert.ok(server !== undefined);
    return server.endpoint;
  };
  const live = (): PullConsumer => {
    assert.ok(pc !== undefined);
    return pc;
  };
  /** One pull of TOPIC queue 0 from offset 10, at most 4 messages, answered by `reply`. */
  const pullAnswered = (reply: Answer, countMax = 4, consumer = live()) => {
    answer = () => reply;
    return consumer.pull(TOPIC, 0, 10, countMax, { endpoint: endpoint() });
  };
  const malformed = (why: string): RegExp =>
    new RegExp(`^malformed FetchQueue response from ${escape(endpoint())}: ${why}$`);

  before(async () => {
    const fetch = await loadFetchDefinition();
    server = await listen([
      [
        fetch,
        {
          FetchQueue: (
            call: grpc.ServerUnaryCall<FetchRequest, unknown>,
            callback: grpc.sendUnaryData<unknown>,
          ) => {
            calls.push({ request: call.request, metadata: call.metadata });
            const reply = answer(call.request);
            if (reply instanceof Error) callback(reply);
            else callback(null, reply);
          },
        },
      ],
    ]);
    const common = { endpoint: server.endpoint, consumerGroup: GROUP, clientId: CLIENT_ID };
    pc = await PullConsumer.create(common);
    pcNs = await PullConsumer.create({ ...common, namespace: 'ns' });
  });

  after(async () => {
    pc?.close();
    pcNs?.close();
    await server?.close();
  });

  it('decodes every field of a good reply and sends every field of the pull', async () => {
    const first = stored();
    const second = stored({
      body: Buffer.from([0, 1, 2, 255]),
      tag: undefined,
      keys: [],
      userProperties: new Map(),
      messageId: 'MSG-1',
      messageGroup: 'group-1',
      messageType: 'FIFO',
      bornTimestampMs: 0,
      storeTimestampMs: Number.MAX_SAFE_INTEGER,
    });
    // Offset 12 was skipped (a filter): next_offset may lie past the last record.
    answer = () => ok([encodeMessage(first), encodeMessage(second)], [10, 11], 13);
    const before = calls.length;
    const result = await live().pull(TOPIC, 0, 10, 4, {
      endpoint: endpoint(),
      tagExpression: 'TagA || TagB',
      awaitMs: 25,
    });
    const expected: PulledMessage[] = [
      {
        messageId: 'MSG-0',
        topic: TOPIC,
        queueId: 0,
        offset: 10,
        body: Buffer.from('body-0'),
        bodyEncoding: 'IDENTITY',
        tag: 'TagA',
        keys: ['key-0', 'k0'],
        properties: new Map([
          ['index', '0'],
          ['colour', 'blue'],
        ]),
        messageGroup: undefined,
        bornTimestampMs: 1_700_000_000_123,
        storeTimestampMs: 1_700_000_000_456,
      },
      {
        messageId: 'MSG-1',
        topic: TOPIC,
        queueId: 0,
        offset: 11,
        body: Buffer.from([0, 1, 2, 255]),
        bodyEncoding: 'IDENTITY',
        tag: undefined,
        keys: [],
        properties: new Map(),
        messageGroup: 'group-1',
        bornTimestampMs: 0,
        storeTimestampMs: Number.MAX_SAFE_INTEGER,
      },
    ];
    assert.deepEqual(result, { status: 'FOUND', messages: expected, nextOffset: 13 });
    assert.equal(calls.length, before + 1);
    const call = calls.at(-1);
    assert.ok(call !== undefined);
    assert.deepEqual(call.request, {
      namespace: '',
      group: GROUP,
      topic: TOPIC,
      queueId: 0,
      offset: 10,
      countMax: 4,
      // What the consumer can receive in one reply (8 MiB by default), less the reply's own
      // fields.
      bytesMax: 8 * 1024 * 1024 - 32 * 1024,
      tagExpression: 'TagA || TagB',
      awaitMs: 25,
    });
    assert.deepEqual(call.metadata.get('x-mq-client-id'), [CLIENT_ID]);
    assert.deepEqual(call.metadata.get('x-mq-namespace'), []);
  });

  it('honours the namespace: asks ns, checks ns%Topic, answers Topic', async () => {
    assert.ok(pcNs !== undefined);
    const record = encodeMessage(stored({ topic: `ns%${TOPIC}` }));
    const result = await pullAnswered(ok([record], [10], 11), 4, pcNs);
    assert.equal(result.status, 'FOUND');
    assert.deepEqual(
      result.messages.map((m) => [m.topic, m.messageId, m.offset]),
      [[TOPIC, 'MSG-0', 10]],
    );
    const call = calls.at(-1);
    assert.ok(call !== undefined);
    assert.deepEqual([call.request.namespace, call.request.topic], ['ns', TOPIC]);
    assert.deepEqual(call.metadata.get('x-mq-namespace'), ['ns']);
    // A record stored without the namespace is another topic to this consumer.
    await rejectsWith(
      pullAnswered(ok([encodeMessage(stored())], [10], 11), 4, pcNs),
      'INTERNAL',
      malformed(`a record of ${TOPIC}:0 for ns%${TOPIC}:0`),
    );
    // And one stored with it is another topic to a consumer without a namespace.
    await rejectsWith(
      pullAnswered(ok([record], [10], 11)),
      'INTERNAL',
      malformed(`a record of ns%${TOPIC}:0 for ${TOPIC}:0`),
    );
  });

  it('answers the statuses a pull may end with', async () => {
    const notFound = {
      status: { code: RmqCode.MESSAGE_NOT_FOUND, message: 'none' },
      nextOffset: 10,
    };
    assert.deepEqual(await pullAnswered(notFound), {
      status: 'NO_NEW_MSG',
      messages: [],
      nextOffset: 10,
    });
    const illegal = { status: { code: RmqCode.ILLEGAL_OFFSET, message: 'beyond' }, nextOffset: 7 };
    assert.deepEqual(await pullAnswered(illegal), {
      status: 'OFFSET_ILLEGAL',
      messages: [],
      nextOffset: 7,
    });
    // Records were read past a filter and none matched.
    assert.deepEqual(await pullAnswered(ok([], [], 14)), {
      status: 'NO_MATCHED_MSG',
      messages: [],
      nextOffset: 14,
    });
  });

  it('refuses records of another topic or queue with INTERNAL', async () => {
    const other = encodeMessage(stored({ topic: 'Other' }));
    await rejectsWith(
      pullAnswered(ok([other], [10], 11)),
      'INTERNAL',
      malformed(`a record of Other:0 for ${TOPIC}:0`),
    );
    const otherQueue = encodeMessage(stored({ queueId: 1 }));
    await rejectsWith(
      pullAnswered(ok([otherQueue], [10], 11)),
      'INTERNAL',
      malformed(`a record of ${TOPIC}:1 for ${TOPIC}:0`),
    );
    // The bad record second: the good one before it does not make the reply acceptable.
    const good = encodeMessage(stored());
    await rejectsWith(
      pullAnswered(ok([good, otherQueue], [10, 11], 12)),
      'INTERNAL',
      malformed(`a record of ${TOPIC}:1 for ${TOPIC}:0`),
    );
  });

  it('refuses offsets out of order, repeated, below the offset or past next_offset', async () => {
    const r = encodeMessage(stored());
    const cases: [number[], number, string][] = [
      [[11, 10], 12, 'offset 10 out of order \\(next offset 12\\)'],
      [[10, 10], 12, 'offset 10 out of order \\(next offset 12\\)'],
      [[9], 10, 'offset 9 out of order \\(next offset 10\\)'],
      [[10], 10, 'offset 10 out of order \\(next offset 10\\)'],
      [[10, 12], 12, 'offset 12 out of order \\(next offset 12\\)'],
      [[13], 11, 'offset 13 out of order \\(next offset 11\\)'],
    ];
    for (const [offsets, next, why] of cases) {
      const records = offsets.map(() => r);
      await rejectsWith(pullAnswered(ok(records, offsets, next)), 'INTERNAL', malformed(why));
    }
  });

  it('refuses records and offsets of different lengths, and more records than asked', async () => {
    const r = encodeMessage(stored());
    await rejectsWith(
      pullAnswered(ok([r, r], [10], 12)),
      'INTERNAL',
      malformed('2 records with 1 offsets'),
    );
    await rejectsWith(
      pullAnswered(ok([r], [10, 11], 12)),
      'INTERNAL',
      malformed('1 records with 2 offsets'),
    );
    await rejectsWith(
      pullAnswered(ok([], [10], 12)),
      'INTERNAL',
      malformed('0 records with 1 offsets'),
    );
    await rejectsWith(
      pullAnswered(ok([r, r, r], [10, 11, 12], 13), 2),
      'INTERNAL',
      malformed('3 messages, 2 asked'),
    );
    // Exactly as many as asked is fine.
    const two = await pullAnswered(ok([r, r], [10, 11], 12), 2);
    assert.deepEqual(
      two.messages.map((m) => m.offset),
      [10, 11],
    );
  });

  it('refuses a record that fails its own checks with CORRUPT_RECORD', async () => {
    const good = encodeMessage(stored());
    const from = `corrupt stored message in FetchQueue reply from ${escape(endpoint())}`;
    const corrupt = (why: string): RegExp => new RegExp(`^${from} at position .*: ${why}`);
    const flip = (at: number): Buffer => {
      const b = Buffer.from(good);
      b[at] = (b[at] ?? 0) ^ 0x01;
      return b;
    };
    const cases: [string, Buffer, RegExp][] = [
      ['a flipped body byte', flip(good.indexOf('body-0')), corrupt('CRC32C mismatch')],
      ['a flipped last byte', flip(good.length - 1), corrupt('CRC32C mismatch')],
      ['a flipped CRC byte', flip(6), corrupt('CRC32C mismatch')],
      ['a flipped magic byte', flip(0), corrupt('unsupported format version 0')],
      [
        'a truncated record',
        good.subarray(0, good.length - 1),
        corrupt(`length field says ${good.length} bytes, ${good.length - 1} available`),
      ],
      [
        'a padded record',
        Buffer.concat([good, Buffer.from([0])]),
        corrupt(`length field says ${good.length} bytes, ${good.length + 1} available`),
      ],
      ['an empty record', Buffer.alloc(0), corrupt('only 0 bytes')],
    ];
    for (const [what, bad, why] of cases) {
      await assert.rejects(
        pullAnswered(ok([good, bad], [10, 11], 12)),
        (err: unknown) => {
          assert.ok(isRaftmqError(err, 'CORRUPT_RECORD'), `${what}: got ${String(err)}`);
          assert.match(err.message, why, what);
          return true;
        },
        what,
      );
    }
  });

  it('refuses an OK reply whose next_offset does not move past the requested offset', async () => {
    // The broker answers MESSAGE_NOT_FOUND when it read nothing, so an OK reply always moves
    // on; taking one that does not would make a consumer pull the same offset forever (10) or
    // read again what it had (9).
    for (const next of [10, 9, 0]) {
      await rejectsWith(pullAnswered(ok([], [], next)), 'INTERNAL', /malformed FetchQueue/);
    }
  });

  it('maps each non-OK status to its error code', async () => {
    const cases: [number, string, ErrorCode][] = [
      [RmqCode.TOPIC_NOT_FOUND, 'TOPIC_NOT_FOUND', 'TOPIC_NOT_FOUND'],
      [RmqCode.BAD_REQUEST, 'BAD_REQUEST', 'INVALID_ARGUMENT'],
      [RmqCode.ILLEGAL_TOPIC, 'ILLEGAL_TOPIC', 'ILLEGAL_TOPIC'],
      [RmqCode.ILLEGAL_CONSUMER_GROUP, 'ILLEGAL_CONSUMER_GROUP', 'ILLEGAL_CONSUMER_GROUP'],
      [RmqCode.ILLEGAL_FILTER_EXPRESSION, 'ILLEGAL_FILTER_EXPRESSION', 'ILLEGAL_FILTER_EXPRESSION'],
      [RmqCode.CLIENT_ID_REQUIRED, 'CLIENT_ID_REQUIRED', 'CLIENT_ID_REQUIRED'],
      [RmqCode.FORBIDDEN, 'FORBIDDEN', 'PERMISSION_DENIED'],
      [RmqCode.CONSUMER_GROUP_NOT_FOUND, 'CONSUMER_GROUP_NOT_FOUND', 'GROUP_NOT_FOUND'],
      [RmqCode.TOO_MANY_REQUESTS, 'TOO_MANY_REQUESTS', 'BUSY'],
      [RmqCode.HA_NOT_AVAILABLE, 'HA_NOT_AVAILABLE', 'NOT_LEADER'],
      [RmqCode.PROXY_TIMEOUT, 'PROXY_TIMEOUT', 'TIMEOUT'],
      [RmqCode.UNSUPPORTED, 'UNSUPPORTED', 'UNSUPPORTED'],
      [RmqCode.INTERNAL_SERVER_ERROR, 'INTERNAL_SERVER_ERROR', 'INTERNAL'],
      [RmqCode.MESSAGE_CORRUPTED, 'MESSAGE_CORRUPTED', 'INTERNAL'],
      [0, 'CODE_UNSPECIFIED', 'INTERNAL'],
      [12_345, '12345', 'INTERNAL'],
    ];
    const r = encodeMessage(stored());
    for (const [code, name, errorCode] of cases) {
      // Records beside a failure status are not delivered.
      const reply = { status: { code, message: `lie ${code}` }, nextOffset: 11 };
      await assert.rejects(
        pullAnswered({ ...reply, records: [r], offsets: [10] }),
        (err: unknown) => {
          assert.ok(isRaftmqError(err, errorCode), `${code}: got ${String(err)}`);
          assert.equal(err.message, `FetchQueue: ${name}: lie ${code}`);
          assert.deepEqual(err.details, { status: name, endpoint: endpoint() });
          return true;
        },
        String(code),
      );
    }
  });

  it('reports a gRPC failure of FetchQueue without falling back to PullMessage', async () => {
    const cases: [grpc.status, ErrorCode][] = [
      [grpc.status.INTERNAL, 'INTERNAL'],
      [grpc.status.RESOURCE_EXHAUSTED, 'BUSY'],
      [grpc.status.UNAVAILABLE, 'NOT_LEADER'],
      [grpc.status.DEADLINE_EXCEEDED, 'TIMEOUT'],
    ];
    for (const [status, code] of cases) {
      const failure = grpcFailure(status, `failed with ${status}`);
      const text = new RegExp(`^FetchQueue to ${escape(endpoint())}: failed with ${status}$`);
      await rejectsWith(pullAnswered(failure), code, text);
    }
    // Still by FetchQueue: the endpoint was not taken for one without Fetch.
    const before = calls.length;
    const result = await pullAnswered(ok([encodeMessage(stored())], [10], 11));
    assert.equal(result.messages.length, 1);
    assert.equal(calls.length, before + 1);
  });

  it('inflates a GZIP body and keeps one that does not inflate as stored', async () => {
    const gz = encodeMessage(stored({ bodyEncoding: 'GZIP', body: gzipSync('inflated') }));
    const bad = encodeMessage(stored({ bodyEncoding: 'GZIP', body: Buffer.from('raw') }));
    const result = await pullAnswered(ok([gz, bad], [10, 11], 12));
    assert.deepEqual(
      result.messages.map((m) => [m.body.toString(), m.bodyEncoding]),
      [
        ['inflated', 'IDENTITY'],
        ['raw', 'GZIP'],
      ],
    );
  });

  it('asks for no more bytes than it can receive', async () => {
    // A server that answers as the broker does: records up to bytes_max (0: its own
    // pullBytesMax, 4 MiB by default), always at least one. Four 20 KiB records are more than
    // a consumer receiving 64 KiB frames can take in one reply; PullMessage would send them in
    // four frames. The consumer must say so in bytes_max, or every such pull fails (BUSY, from
    // grpc-js's RESOURCE_EXHAUSTED) however often it is retried.
    const receiveMessageBytesMax = 64 * 1024;
    const small = await PullConsumer.create({
      endpoint: endpoint(),
      clientId: CLIENT_ID,
      receiveMessageBytesMax,
    });
    try {
      const records = [0, 1, 2, 3].map((i) =>
        encodeMessage(stored({ body: Buffer.alloc(20 * 1024, i), messageId: `BIG-${i}` })),
      );
      answer = (request) => {
        const limit = request.bytesMax === 0 ? 4 * 1024 * 1024 : request.bytesMax;
        let n = 1;
        let bytes = records[0]?.length ?? 0;
        while (n < records.length && bytes + (records[n]?.length ?? 0) <= limit) {
          bytes += records[n]?.length ?? 0;
          n++;
        }
        return ok(records.slice(0, n), [10, 11, 12, 13].slice(0, n), 10 + n);
      };
      const result = await small.pull(TOPIC, 0, 10, 4, { endpoint: endpoint() });
      const request = calls.at(-1)?.request;
      assert.ok(request !== undefined);
      assert.ok(
        request.bytesMax > 0 && request.bytesMax < receiveMessageBytesMax,
        `asked bytes_max ${request.bytesMax}, receives at most ${receiveMessageBytesMax}`,
      );
      assert.equal(result.status, 'FOUND');
      assert.ok(result.messages.length >= 1 && result.messages.length < 4);
    } finally {
      small.close();
    }
  });
});
