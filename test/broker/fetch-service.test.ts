/*
 * FetchQueue (proto/fetch.proto) against a real broker node: a one-node group in process with
 * its store on a temp dir. Besides the node's own client server, Fetch services over the same
 * broker with small limits (fetchCountMax 4, long polls capped at 1 s; one with a small
 * pullBytesMax) run on loopback servers of their own; their backend reports each long poll
 * and says one topic's queue starts at 2 (as after old segments were deleted). Calls go
 * through a raw grpc-js client of the loaded definition. Bad input gets the RocketMQ Code in
 * the reply's status, never a gRPC error, and no records: no client id header, an unknown,
 * illegal or unreadable topic, a queue id out of range, an empty or illegal group, a malformed
 * namespace, an offset that is no queue offset, and bytes that do not decode. An offset beyond
 * the end gets ILLEGAL_OFFSET with next_offset at the end; one below the queue's first is moved
 * up to it. count_max is capped at fetchCountMax and bytes_max at pullBytesMax; bytes_max
 * bounds the records' bytes yet always lets one through; a tag expression skips other
 * messages; the namespace comes from the header before the request; await_ms long-polls:
 * MESSAGE_NOT_FOUND after the wait (capped by the broker and by the call's deadline), the
 * message that came during it, or what there is when the service closes. Every record of every
 * reply decodes with decodeMessage and belongs to the queue asked. Every wait has a deadline;
 * the servers, the node and the directory are removed after.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Broker } from '../../src/broker/broker';
import { BrokerNode } from '../../src/broker/broker-node';
import type { ProduceMessage, QueueRange, TopicConfig } from '../../src/broker/broker-types';
import { loadFetchDefinition } from '../../src/broker/fetch-service';
import { bindServer, shutdownServer } from '../../src/broker/grpc-util';
import {
  MESSAGING_SERVER_OPTIONS,
  type MessagingServiceOptions,
  type ServiceBackend,
} from '../../src/broker/messaging-options';
import { createMessagingService, type MessagingService } from '../../src/broker/messaging-service';
import { RmqCode } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import { decodeMessage, type StoredMessage } from '../../src/store/message-codec';
import { produceMessage, startSingleNode } from './single-node';

/** Seven messages at offsets 0..6: tags even/odd for 0..5, none for 6. */
const TOPIC = 'FetchTopic';
/** Four messages, behind a backend that says the queue starts at MOVED_FIRST. */
const MOVED = 'FetchMoved';
const MOVED_FIRST = 2;
/** Empty until the long-poll test sends to it. */
const POLL = 'FetchPoll';
const WRITE_ONLY = 'FetchWriteOnly';
const NAMESPACED = 'ns1%Spaced';
const FETCH_COUNT_MAX = 4;
const LONG_POLL_MS_MAX = 1_000;
const CALL_TIMEOUT_MS = 10_000;
const CLIENT_ID = 'fetch-service-test';

interface FetchRequest {
  namespace: string;
  group: string;
  topic: string;
  queueId: number;
  offset: number;
  countMax: number;
  bytesMax: number;
  tagExpression: string;
  awaitMs: number;
}

/** A reply as the client's decoder gives it (every field present). */
interface FetchReply {
  readonly status: { readonly code: number; readonly message: string } | null;
  readonly nextOffset: number;
  readonly records: readonly Buffer[];
  readonly offsets: readonly number[];
}

/** A Fetch service on its own server, with a client of it. */
interface Served {
  readonly endpoint: string;
  readonly service: MessagingService;
  readonly client: grpc.Client;
  stop(): Promise<void>;
}

type UnaryFn = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, reply?: FetchReply) => void,
) => grpc.ClientUnaryCall;

function message(body: string, extra: Partial<ProduceMessage> = {}): ProduceMessage {
  return produceMessage(TOPIC, body, {
    keys: [`key-${body}`],
    userProperties: new Map([['body', body]]),
    ...extra,
  });
}

/** A long poll the service asked the backend for. */
interface Wait {
  readonly topic: string;
  readonly offset: number;
  readonly timeoutMs: number;
}

/**
 * `broker`, except that `topic`'s queues start at `first` (as if older segments were gone),
 * and that each long poll is reported to `onWait` before it starts.
 */
function instrumented(
  broker: Broker,
  topic: string,
  first: number,
  onWait: (wait: Wait) => void,
): ServiceBackend {
  return new Proxy(broker, {
    get(target, prop) {
      if (prop === 'queueRange') {
        return (t: string, queueId: number): QueueRange => {
          const range = target.queueRange(t, queueId);
          return t === topic ? { min: Math.min(first, range.max), max: range.max } : range;
        };
      }
      if (prop === 'waitForMessages') {
        return (t: string, queueId: number, offset: number, ms: number, signal?: AbortSignal) => {
          onWait({ topic: t, offset, timeoutMs: ms });
          return target.waitForMessages(t, queueId, offset, ms, signal);
        };
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function'
        ? (value as (...args: unknown[]) => unknown).bind(target)
        : value;
    },
  });
}

function startNode(dir: string): Promise<BrokerNode> {
  return startSingleNode(dir, { autoCreateTopics: false });
}

describe('FetchQueue against a broker node', function () {
  this.timeout(60_000);
  let dir = '';
  let node: BrokerNode | undefined;
  /** The small-limits service, and a client of the node's own client server. */
  let served: Served | undefined;
  let client: grpc.Client | undefined;
  let nodeClient: grpc.Client | undefined;
  /** Sends its request as the bytes it is given. */
  let rawClient: grpc.Client | undefined;
  /** The stored size of each TOPIC message, by offset. */
  let sizes: number[] = [];
  /** The long polls the small-limits service started, and who waits for the next one. */
  const waits: Wait[] = [];
  const waitListeners: (() => void)[] = [];

  /** Resolves when the service starts its next long poll; rejects after `timeoutMs`. */
  function nextWait(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no long poll in ${timeoutMs} ms`)),
        timeoutMs,
      );
      waitListeners.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  const broker = (): Broker => {
    assert.ok(node !== undefined);
    return node.broker;
  };

  function unary(
    via: grpc.Client | undefined,
    request: unknown,
    headers: Record<string, string>,
    deadlineMs: number,
  ): Promise<FetchReply> {
    assert.ok(via !== undefined);
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
    const fn = (via as unknown as { FetchQueue: UnaryFn }).FetchQueue.bind(via);
    return new Promise((resolve, reject) => {
      fn(request, metadata, { deadline: deadlineMs }, (err, reply) => {
        if (err !== null) reject(err);
        else if (reply === undefined) reject(new Error('no reply'));
        else resolve(reply);
      });
    });
  }

  /**
   * One FetchQueue call (TOPIC queue 0 from 0 unless `over` says otherwise). Checks that the
   * reply has an offset per record and that every record decodes and belongs to the queue
   * asked; returns the reply and the decoded messages.
   */
  async function fetch(
    over: Partial<FetchRequest> = {},
    options: { headers?: Record<string, string>; via?: grpc.Client; timeoutMs?: number } = {},
  ): Promise<{ reply: FetchReply; messages: StoredMessage[] }> {
    const request: FetchRequest = {
      namespace: '',
      group: 'fetch-group',
      topic: TOPIC,
      queueId: 0,
      offset: 0,
      countMax: 0,
      bytesMax: 0,
      tagExpression: '*',
      awaitMs: 0,
      ...over,
    };
    const headers = options.headers ?? { 'x-mq-client-id': CLIENT_ID };
    const deadlineMs = Date.now() + (options.timeoutMs ?? CALL_TIMEOUT_MS);
    const reply = await unary(options.via ?? client, request, headers, deadlineMs);
    assert.equal(reply.records.length, reply.offsets.length, 'a record without an offset');
    const ns = headers['x-mq-namespace'] ?? request.namespace;
    const storedTopic = ns === '' ? request.topic : `${ns}%${request.topic}`;
    const messages = reply.records.map((record, i) => {
      const m = decodeMessage(record, { file: `record ${i} of the reply` });
      assert.deepEqual([m.topic, m.queueId], [storedTopic, request.queueId]);
      return m;
    });
    return { reply, messages };
  }

  /** Asserts a refusal: `code` in the status, a message matching `reason`, no records. */
  function assertRefused(reply: FetchReply, code: number, reason: RegExp): void {
    const status = reply.status;
    assert.ok(status !== null, 'no status');
    assert.equal(status.code, code, `expected ${code}, got ${status.code}: ${status.message}`);
    assert.match(status.message, reason);
    assert.deepEqual([reply.records.length, reply.offsets.length], [0, 0]);
  }

  function assertOk(reply: FetchReply, offsets: number[], nextOffset: number): void {
    assert.deepEqual(reply.status, { code: RmqCode.OK, message: 'OK' });
    assert.deepEqual([reply.offsets, reply.nextOffset], [offsets, nextOffset]);
  }

  /**
   * A Fetch service over the node's broker (instrumented: see {@link instrumented}) with
   * `options`, on its own loopback server, and a client of it.
   */
  async function serve(options: Partial<MessagingServiceOptions>): Promise<Served> {
    const onWait = (wait: Wait): void => {
      waits.push(wait);
      for (const wake of waitListeners.splice(0)) wake();
    };
    const backend = instrumented(broker(), MOVED, MOVED_FIRST, onWait);
    const service = await createMessagingService(backend, options, silentLogger());
    const server = new grpc.Server(MESSAGING_SERVER_OPTIONS);
    server.addService(service.fetch.definition, service.fetch.handlers);
    const endpoint = `127.0.0.1:${await bindServer(server, '127.0.0.1:0')}`;
    const Fetch = grpc.makeGenericClientConstructor(await loadFetchDefinition(), 'Fetch');
    const served = new Fetch(endpoint, grpc.credentials.createInsecure());
    return {
      endpoint,
      service,
      client: served,
      stop: async () => {
        served.close();
        await service.close();
        await shutdownServer(server, 5_000, silentLogger());
      },
    };
  }

  before(async function () {
    this.timeout(30_000);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-fetch-'));
    node = await startNode(dir);
    const deadlineMs = Date.now() + 10_000;
    const topic = (name: string, over: Partial<TopicConfig> = {}): TopicConfig => ({
      name,
      queueCount: 1,
      perm: 'READ_WRITE',
      messageTypes: ['NORMAL'],
      ...over,
    });
    for (const t of [topic(TOPIC), topic(MOVED), topic(POLL), topic(NAMESPACED)]) {
      await broker().createTopic(t, deadlineMs);
    }
    await broker().createTopic(topic(WRITE_ONLY, { perm: 'WRITE' }), deadlineMs);
    for (let i = 0; i < 6; i++) {
      await broker().send([message(`m${i}`, { tag: i % 2 === 0 ? 'even' : 'odd' })], deadlineMs);
    }
    await broker().send([message('m6')], deadlineMs);
    for (let i = 0; i < 4; i++) {
      await broker().send([message(`moved${i}`, { topic: MOVED })], deadlineMs);
    }
    await broker().send([message('spaced', { topic: NAMESPACED })], deadlineMs);

    served = await serve({
      fetchCountMax: FETCH_COUNT_MAX,
      longPollingTimeoutMsMax: LONG_POLL_MS_MAX,
    });
    client = served.client;
    const definition = await loadFetchDefinition();
    const Fetch = grpc.makeGenericClientConstructor(definition, 'Fetch');
    const insecure = grpc.credentials.createInsecure();
    nodeClient = new Fetch(broker().clientEndpoint, insecure);
    const method = definition.FetchQueue;
    assert.ok(method !== undefined);
    const RawFetch = grpc.makeGenericClientConstructor(
      { FetchQueue: { ...method, requestSerialize: (bytes: Buffer) => bytes } },
      'RawFetch',
    );
    rawClient = new RawFetch(served.endpoint, insecure);
    sizes = (await fetch({ countMax: 7 }, { via: nodeClient })).reply.records.map((r) => r.length);
    assert.equal(sizes.length, 7);
  });

  after(async function () {
    this.timeout(30_000);
    nodeClient?.close();
    rawClient?.close();
    await served?.stop();
    await node?.stop();
    if (dir !== '') await fs.rm(dir, { recursive: true, force: true });
  });

  it("serves FetchQueue on the node's own client endpoint", async () => {
    const { reply, messages } = await fetch({ countMax: 100 }, { via: nodeClient });
    assertOk(reply, [0, 1, 2, 3, 4, 5, 6], 7);
    assert.deepEqual(
      messages.map((m) => [m.messageId, Buffer.from(m.body).toString(), m.tag, m.keys]),
      [0, 1, 2, 3, 4, 5, 6].map((i) => [
        `ID-m${i}`,
        `m${i}`,
        i === 6 ? undefined : i % 2 === 0 ? 'even' : 'odd',
        [`key-m${i}`],
      ]),
    );
    assert.deepEqual([...(messages[3]?.userProperties ?? [])], [['body', 'm3']]);
    const noId = await fetch({}, { via: nodeClient, headers: {} });
    assertRefused(noId.reply, RmqCode.CLIENT_ID_REQUIRED, /x-mq-client-id/);
  });

  it('answers a call without x-mq-client-id with CLIENT_ID_REQUIRED', async () => {
    const headerSets: Record<string, string>[] = [
      {},
      { 'x-mq-client-id': '' },
      { 'x-mq-namespace': 'ns1' },
    ];
    for (const headers of headerSets) {
      const { reply } = await fetch({}, { headers });
      assertRefused(reply, RmqCode.CLIENT_ID_REQUIRED, /the request has no x-mq-client-id header/);
    }
  });

  it('answers unknown, illegal and unreadable topics', async () => {
    const unknown = await fetch({ topic: 'NoSuchTopic' });
    assertRefused(unknown.reply, RmqCode.TOPIC_NOT_FOUND, /^topic NoSuchTopic does not exist$/);
    // Reads may name reserved topics (the DLQ is read this way): not found, not illegal.
    const reserved = await fetch({ topic: 'TBW102' });
    assertRefused(reserved.reply, RmqCode.TOPIC_NOT_FOUND, /^topic TBW102 does not exist$/);
    const illegal: [string, RegExp][] = [
      ['bad topic!', /^topic: topic name "bad topic!" has characters outside/],
      ['', /^topic: topic name is empty$/],
      ['t'.repeat(128), /^topic: topic name is 128 characters with its namespace; at most 127$/],
    ];
    for (const [topic, reason] of illegal) {
      assertRefused((await fetch({ topic })).reply, RmqCode.ILLEGAL_TOPIC, reason);
    }
    const writeOnly = await fetch({ topic: WRITE_ONLY });
    assertRefused(writeOnly.reply, RmqCode.FORBIDDEN, /^topic FetchWriteOnly is not readable$/);
  });

  it('answers a queue id out of range with BAD_REQUEST', async () => {
    for (const queueId of [1, 4_294_967_295]) {
      const { reply } = await fetch({ queueId });
      const reason = new RegExp(`^queue_id ${queueId} is not a queue of ${TOPIC} \\(0\\.\\.0\\)$`);
      assertRefused(reply, RmqCode.BAD_REQUEST, reason);
    }
  });

  it('answers an empty or illegal group with ILLEGAL_CONSUMER_GROUP', async () => {
    const cases: [string, RegExp][] = [
      ['', /^group: consumer group name is empty$/],
      ['bad group!', /^group: consumer group name "bad group!" has characters outside/],
      ['g'.repeat(128), /^group: consumer group name is 128 characters/],
    ];
    for (const [group, reason] of cases) {
      assertRefused((await fetch({ group })).reply, RmqCode.ILLEGAL_CONSUMER_GROUP, reason);
    }
  });

  it('takes the namespace from the header first, then the request', async () => {
    const byField = await fetch({ namespace: 'ns1', topic: 'Spaced' });
    assertOk(byField.reply, [0], 1);
    assert.equal(byField.messages[0]?.messageId, 'ID-spaced');
    const headers = { 'x-mq-client-id': CLIENT_ID, 'x-mq-namespace': 'ns1' };
    const byHeader = await fetch({ namespace: 'other', topic: 'Spaced' }, { headers });
    assertOk(byHeader.reply, [0], 1);
    const wrong = await fetch({ namespace: 'other', topic: 'Spaced' });
    assertRefused(wrong.reply, RmqCode.TOPIC_NOT_FOUND, /^topic other%Spaced does not exist$/);
    const bad = await fetch({ namespace: 'bad ns' });
    assertRefused(bad.reply, RmqCode.BAD_REQUEST, /^namespace "bad ns" .* \[a-zA-Z0-9_-\]$/);
  });

  it('answers an offset beyond the end with ILLEGAL_OFFSET and the end', async () => {
    const { reply } = await fetch({ offset: 100 });
    assert.deepEqual(reply.status, {
      code: RmqCode.ILLEGAL_OFFSET,
      message: 'offset 100 is beyond the end of the queue (7)',
    });
    assert.deepEqual([reply.nextOffset, reply.records.length], [7, 0]);
    // At the end itself: nothing yet.
    const atEnd = await fetch({ offset: 7 });
    assert.deepEqual(atEnd.reply.status, {
      code: RmqCode.MESSAGE_NOT_FOUND,
      message: `no message at offset 7 of ${TOPIC} queue 0`,
    });
    assert.deepEqual([atEnd.reply.nextOffset, atEnd.reply.records.length], [7, 0]);
    // Not a queue offset at all (above 2^53): refused before the queue is looked at.
    const huge = await fetch({ offset: 2 ** 60 });
    assertRefused(huge.reply, RmqCode.ILLEGAL_OFFSET, /^offset \d+ is not a queue offset$/);
  });

  it("moves an offset below the queue's first up to it", async () => {
    for (const offset of [0, 1, 2]) {
      const { reply, messages } = await fetch({ topic: MOVED, offset });
      assertOk(reply, [2, 3], 4);
      assert.deepEqual(
        messages.map((m) => m.messageId),
        ['ID-moved2', 'ID-moved3'],
      );
    }
    const last = await fetch({ topic: MOVED, offset: 3 });
    assertOk(last.reply, [3], 4);
  });

  it('answers undecodable bytes with BAD_REQUEST in the reply, not a gRPC error', async () => {
    const garbage = [
      Buffer.from([0x0f, 0xff, 0xff]), // field 1 with wire type 7, which does not exist
      Buffer.from([0x20, 0x80]), // field 4 (queue_id): a varint cut after its first byte
    ];
    for (const bytes of garbage) {
      const deadlineMs = Date.now() + CALL_TIMEOUT_MS;
      const reply = await unary(rawClient, bytes, { 'x-mq-client-id': CLIENT_ID }, deadlineMs);
      assertRefused(reply, RmqCode.BAD_REQUEST, /^the request could not be decoded: /);
    }
    // The same client's well-formed request is served (the raw path itself works).
    const method = (await loadFetchDefinition()).FetchQueue;
    assert.ok(method !== undefined);
    const good = method.requestSerialize({ group: 'g', topic: TOPIC, countMax: 1 });
    const headers = { 'x-mq-client-id': CLIENT_ID };
    const reply = await unary(rawClient, good, headers, Date.now() + CALL_TIMEOUT_MS);
    assertOk(reply, [0], 1);
  });

  it('caps count_max at the broker fetchCountMax', async () => {
    for (const countMax of [0, FETCH_COUNT_MAX, FETCH_COUNT_MAX + 1, 100_000]) {
      const { reply } = await fetch({ countMax });
      assertOk(reply, [0, 1, 2, 3], 4);
    }
    assertOk((await fetch({ countMax: 2 })).reply, [0, 1], 2);
    assertOk((await fetch({ countMax: 2, offset: 5 })).reply, [5, 6], 7);
    assertOk((await fetch({ countMax: 100, offset: 5 })).reply, [5, 6], 7);
  });

  it('answers at most bytes_max of records, and always one', async () => {
    const [s0, s1, s2] = sizes as [number, number, number];
    const cases: [number, number, number[]][] = [
      [1, 0, [0]],
      [1, 4, [4]],
      [s0 - 1, 0, [0]],
      [s0, 0, [0]],
      [s0 + s1 - 1, 0, [0]],
      [s0 + s1, 0, [0, 1]],
      [s0 + s1 + s2, 0, [0, 1, 2]],
    ];
    for (const [bytesMax, offset, offsets] of cases) {
      const { reply } = await fetch({ bytesMax, offset });
      assertOk(reply, offsets, (offsets.at(-1) ?? 0) + 1);
      const total = reply.records.reduce((n, r) => n + r.length, 0);
      assert.ok(reply.records.length === 1 || total <= bytesMax, `${total} > ${bytesMax}`);
    }
  });

  it("caps bytes_max at the broker's pullBytesMax", async () => {
    const [s0, s1] = sizes as [number, number];
    const small = await serve({ pullBytesMax: s0 + s1 });
    try {
      for (const bytesMax of [0, s0 + s1, s0 + s1 + 1, 4_294_967_295]) {
        const { reply } = await fetch({ bytesMax }, { via: small.client });
        assertOk(reply, [0, 1], 2);
      }
      assertOk((await fetch({ bytesMax: 1 }, { via: small.client })).reply, [0], 1);
    } finally {
      await small.stop();
    }
  });

  it('skips messages the tag expression does not match', async () => {
    const cases: [string, number, number[], number][] = [
      ['odd', 0, [1, 3, 5], 7],
      ['even', 0, [0, 2, 4], 7],
      [' odd || even ', 0, [0, 1, 2, 3], 4],
      ['*', 4, [4, 5, 6], 7],
      ['', 4, [4, 5, 6], 7],
      ['odd||*', 4, [4, 5, 6], 7],
      ['odd', 2, [3, 5], 7],
      ['even', 5, [], 7],
      ['no-such-tag', 0, [], 7],
    ];
    for (const [tagExpression, offset, offsets, nextOffset] of cases) {
      const { reply, messages } = await fetch({ tagExpression, offset });
      assertOk(reply, offsets, nextOffset);
      const tags = new Set(tagExpression.split('||').map((t) => t.trim()));
      if (!tags.has('*') && !tags.has('')) {
        assert.ok(
          messages.every((m) => m.tag !== undefined && tags.has(m.tag)),
          tagExpression,
        );
      }
    }
    // The filter counts toward count_max and bytes_max only what it lets through.
    assertOk((await fetch({ tagExpression: 'odd', countMax: 2 })).reply, [1, 3], 4);
    assertOk((await fetch({ tagExpression: 'odd', bytesMax: 1 })).reply, [1], 2);
  });

  it('long-polls await_ms and answers MESSAGE_NOT_FOUND when nothing came', async () => {
    const notFound = {
      code: RmqCode.MESSAGE_NOT_FOUND,
      message: `no message at offset 0 of ${POLL} queue 0`,
    };
    const timed = async (awaitMs: number, timeoutMs = CALL_TIMEOUT_MS) => {
      const startedMs = performance.now();
      const from = waits.length;
      const { reply } = await fetch({ topic: POLL, awaitMs }, { timeoutMs });
      assert.deepEqual([reply.status, reply.nextOffset], [notFound, 0]);
      assert.equal(waits.length, from + 1, 'one long poll');
      const wait = waits[from];
      assert.ok(wait !== undefined);
      assert.deepEqual([wait.topic, wait.offset], [POLL, 0]);
      return { tookMs: performance.now() - startedMs, waitMs: wait.timeoutMs };
    };
    const short = await timed(300);
    assert.equal(short.waitMs, 300);
    assert.ok(short.tookMs >= 280 && short.tookMs < 5_000, `answered after ${short.tookMs} ms`);

    // The broker's cap (longPollingTimeoutMsMax) ends a longer wait.
    const capped = await timed(60_000);
    assert.equal(capped.waitMs, LONG_POLL_MS_MAX);
    assert.ok(capped.tookMs >= LONG_POLL_MS_MAX - 20 && capped.tookMs < 5_000);

    // So does the call's deadline, less the reserve kept to answer in time (100 ms).
    const early = await timed(60_000, 800);
    assert.ok(early.waitMs > 500 && early.waitMs <= 700, `waited ${early.waitMs} ms`);
    assert.ok(early.tookMs >= 480 && early.tookMs < 800, `answered after ${early.tookMs} ms`);

    // No wait at all without await_ms.
    const from = waits.length;
    const { reply } = await fetch({ topic: POLL });
    assert.deepEqual([reply.status, reply.nextOffset, waits.length], [notFound, 0, from]);
  });

  it('answers a long poll with the message that came during it', async () => {
    const startedMs = performance.now();
    // The send goes once the fetch waits; both are awaited together, so neither fails unseen.
    const [{ reply, messages }] = await Promise.all([
      fetch({ topic: POLL, awaitMs: 20_000 }),
      nextWait(5_000).then(() =>
        broker().send([message('late', { topic: POLL })], Date.now() + 5_000),
      ),
    ]);
    assertOk(reply, [0], 1);
    assert.equal(messages[0]?.messageId, 'ID-late');
    assert.ok(performance.now() - startedMs < 5_000, 'the long poll was not woken');
  });

  it('ends a long poll when the service closes, and waits no more after', async () => {
    const closing = await serve({});
    try {
      const notFound = {
        code: RmqCode.MESSAGE_NOT_FOUND,
        message: `no message at offset 7 of ${TOPIC} queue 0`,
      };
      const startedMs = performance.now();
      const [{ reply }] = await Promise.all([
        fetch({ offset: 7, awaitMs: 20_000 }, { via: closing.client }),
        nextWait(5_000).then(() => closing.service.close()),
      ]);
      assert.deepEqual([reply.status, reply.nextOffset], [notFound, 7]);
      const after = await fetch({ offset: 7, awaitMs: 20_000 }, { via: closing.client });
      assert.deepEqual([after.reply.status, after.reply.nextOffset], [notFound, 7]);
      const tookMs = performance.now() - startedMs;
      assert.ok(tookMs < 5_000, `answered after ${tookMs} ms`);
    } finally {
      await closing.stop();
    }
  });
});
