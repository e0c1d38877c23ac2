/*
 * ReceiveStored (proto/fetch.proto, raftmq.fetch.v1.Fetch): pop consumption answered in one
 * frame with the messages as stored. First its encoder (encodeReceiveStoredAnswer) against the
 * generic proto-loader decoder and the client's decodeReceiveStoredReply, for random records,
 * offsets, ASCII and non-ASCII receipt handles and attempts; offsets and attempts a varint of
 * the reply cannot carry are refused with INTERNAL. Then against a one-node broker in process
 * (store on a temp dir), through a raw grpc-js client whose every reply is decoded both ways
 * and must agree: messages are handed out once, each record decodes to a message of the topic
 * at the offset its send got, with attempt 1 and distinct handles; a drained group gets
 * MESSAGE_NOT_FOUND at once; AckMessage settles with the handles; unacked messages come back
 * with attempt 2 after a short invisibility. batch_size 0 is 32 and a huge one is clamped to
 * 1,024; bytes_max 1 still answers one record; tag expressions filter; await_ms long-polls
 * until a message comes. Bad input gets a status (not a gRPC error) naming the problem, and
 * leaves the group's messages untouched. Every call has a deadline; the node, clients and
 * directory are removed after.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import type { BrokerNode } from '../../src/broker/broker-node';
import type { ProduceMessage, SendReceipt, TopicConfig } from '../../src/broker/broker-types';
import { loadFetchDefinition } from '../../src/broker/fetch-service';
import {
  encodeReceiveStoredAnswer,
  type ReceivedRecord,
} from '../../src/broker/rmq-message-encode';
import { decodeReceiveStoredReply, type ReceiveStoredReply } from '../../src/client/pull-wire';
import { isRaftmqError, RmqCode } from '../../src/common/errors';
import { decodeMessage, type StoredMessage } from '../../src/store/message-codec';
import { fcParams } from '../fc-params';
import { RmqRawClient } from './rmq-raw-client';
import { produceMessage, startSingleNode } from './single-node';

/** 4 queues, 12 messages. */
const MAIN = 'RsMain';
/** 2 queues, 1,030 messages (more than one receive may hand out). */
const MANY = 'RsMany';
const MANY_COUNT = 1_030;
/** 2 queues, 9 messages tagged TagA, TagB or nothing in turn. */
const TAGS = 'RsTags';
const TAG_A_IDS = ['ID-tags0', 'ID-tags3', 'ID-tags6'];
const TAG_B_IDS = ['ID-tags1', 'ID-tags4', 'ID-tags7'];
/** Empty until the long-poll test sends to it. */
const POLL = 'RsPoll';
const HEADERS = Object.freeze({ 'x-mq-client-id': 'receive-stored-test' });
const CALL_TIMEOUT_MS = 10_000;

/** A ReceiveStored request (fields in camelCase), as the tests send it unless told. */
const REQUEST = {
  ...{ namespace: '', group: 'rs-group', topic: MAIN, batchSize: 0, invisibleMs: 30_000 },
  ...{ tagExpression: '*', awaitMs: 0, bytesMax: 0 },
};
type Request = typeof REQUEST;

/** A reply that handed out messages, and its records decoded. */
type Got = { readonly reply: ReceiveStoredReply; readonly messages: StoredMessage[] };

/** The generic decoding the client's decoding must match (Buffers compared by content). */
function asGeneric(reply: ReceiveStoredReply): object {
  return {
    status: reply.status,
    records: reply.records.map((r) => Buffer.from(r)),
    offsets: reply.offsets,
    receiptHandles: reply.receiptHandles,
    deliveryAttempts: reply.attempts,
  };
}

describe('ReceiveStored answer encoding', () => {
  let method: grpc.MethodDefinition<unknown, unknown>;
  before(async () => {
    const m = (await loadFetchDefinition()).ReceiveStored;
    assert.ok(m !== undefined);
    method = m;
  });

  const handle = fc.oneof(
    fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 60 }),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }),
    fc.string({ unit: fc.constantFrom('é', '€', '😀', '中', 'a'), minLength: 1, maxLength: 30 }),
  );
  const received: fc.Arbitrary<ReceivedRecord> = fc.record({
    record: fc.record({
      bytes: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      queueOffset: fc.oneof(fc.nat(300), fc.nat(), fc.maxSafeNat()),
    }),
    receiptHandle: handle,
    attempt: fc.oneof(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 0xffff_ffff })),
  });

  it('writes answers both decoders read back as the fields given', () => {
    fc.assert(
      fc.property(fc.array(received, { maxLength: 20 }), (list) => {
        const bytes = encodeReceiveStoredAnswer(list).bytes;
        const expected = {
          status: { code: RmqCode.OK, message: 'OK' },
          records: list.map((r) => Buffer.from(r.record.bytes)),
          offsets: list.map((r) => r.record.queueOffset),
          receiptHandles: list.map((r) => r.receiptHandle),
          deliveryAttempts: list.map((r) => r.attempt),
        };
        assert.deepEqual(method.responseDeserialize(bytes), expected);
        assert.deepEqual(asGeneric(decodeReceiveStoredReply(bytes)), expected);
        // What the generic serializer writes for the same fields reads back the same.
        assert.deepEqual(method.responseDeserialize(method.responseSerialize(expected)), expected);
      }),
      fcParams(300),
    );
  });

  it('refuses offsets and attempts a reply cannot carry with INTERNAL', () => {
    const bad = fc.oneof(
      fc
        .constantFrom(-1, 1.5, 2 ** 53, Number.NaN, Infinity)
        .map((queueOffset) => ({ queueOffset, attempt: 1, why: /queue offset/ })),
      fc
        .constantFrom(0, -1, 1.5, 2 ** 32, Number.NaN)
        .map((attempt) => ({ queueOffset: 0, attempt, why: /attempt/ })),
    );
    const list = fc.array(received, { maxLength: 5 });
    fc.assert(
      fc.property(list, bad, fc.nat(), (good, { queueOffset, attempt, why }, at) => {
        const all = [...good];
        const record = { bytes: Buffer.from([1, 2]), queueOffset };
        all.splice(at % (good.length + 1), 0, { record, receiptHandle: 'h', attempt });
        assert.throws(
          () => encodeReceiveStoredAnswer(all),
          (err: unknown) => isRaftmqError(err, 'INTERNAL') && why.test((err as Error).message),
        );
      }),
      fcParams(200),
    );
  });
});

describe('ReceiveStored against a broker node', function () {
  this.timeout(60_000);
  let dir = '';
  let node: BrokerNode | undefined;
  let client: grpc.Client | undefined;
  let raw: RmqRawClient | undefined;
  let method: grpc.MethodDefinition<unknown, unknown>;
  /** Each message sent, by message id. */
  const sent = new Map<string, SendReceipt>();

  const broker = () => {
    assert.ok(node !== undefined);
    return node.broker;
  };

  async function send(messages: ProduceMessage[]): Promise<void> {
    for (const r of await broker().send(messages, Date.now() + CALL_TIMEOUT_MS)) {
      sent.set(r.messageId, r);
    }
  }

  /** One ReceiveStored call; the reply as both decoders read it, which must agree. */
  function call(
    over: Partial<Request>,
    headers: Readonly<Record<string, string>> = HEADERS,
  ): Promise<ReceiveStoredReply> {
    const request: Request = { ...REQUEST, ...over };
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
    return new Promise((resolve, reject) => {
      assert.ok(client !== undefined);
      client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        (bytes: Buffer) => bytes,
        request,
        metadata,
        { deadline: Date.now() + CALL_TIMEOUT_MS },
        (err, bytes) => {
          if (err !== null || bytes === undefined) return reject(err ?? new Error('no reply'));
          try {
            const reply = decodeReceiveStoredReply(bytes);
            assert.deepEqual(asGeneric(reply), method.responseDeserialize(bytes));
            resolve(reply);
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        },
      );
    });
  }

  /**
   * A receive that must hand out messages of its topic: OK, parallel lists, every record a
   * message of the topic at the queue and offset its send got, non-empty distinct handles.
   */
  async function receive(over: Partial<Request>): Promise<Got> {
    const reply = await call(over);
    assert.deepEqual(reply.status, { code: RmqCode.OK, message: 'OK' });
    const n = reply.records.length;
    assert.ok(n > 0, 'OK with no records');
    const lengths = [reply.offsets, reply.receiptHandles, reply.attempts].map((l) => l.length);
    assert.deepEqual(lengths, [n, n, n], 'lists of different lengths');
    const messages = reply.records.map((record, i) => {
      const m = decodeMessage(record, { file: `record ${i}` });
      assert.equal(m.topic, over.topic ?? MAIN);
      const receipt = sent.get(m.messageId);
      assert.ok(receipt !== undefined, `${m.messageId} was never sent`);
      assert.deepEqual([m.queueId, reply.offsets[i]], [receipt.queueId, receipt.queueOffset]);
      assert.ok((reply.receiptHandles[i] ?? '') !== '', 'empty receipt handle');
      return m;
    });
    assert.equal(new Set(reply.receiptHandles).size, n, 'a receipt handle given twice');
    return { reply, messages };
  }

  /** Asserts a status without records: `code`, and a message matching `reason`. */
  function assertStatus(reply: ReceiveStoredReply, code: number, reason: RegExp): void {
    assert.ok(reply.status !== undefined, 'no status');
    assert.equal(reply.status.code, code, `got ${reply.status.code}: ${reply.status.message}`);
    assert.match(reply.status.message, reason);
    assert.deepEqual(asGeneric(reply), { ...asGeneric(reply), records: [], offsets: [] });
    assert.deepEqual([reply.receiptHandles, reply.attempts], [[], []]);
  }

  const ids = (got: Got): string[] => got.messages.map((m) => m.messageId).sort();
  const idsOf = (topic: string): string[] =>
    [...sent.values()].flatMap((r) => (r.topic === topic ? [r.messageId] : [])).sort();

  /** AckMessage (through the MessagingService) of `entries` of MAIN; its status code. */
  async function ack(
    group: string,
    entries: { messageId: string; receiptHandle: string }[],
  ): Promise<number> {
    assert.ok(raw !== undefined);
    const res = await raw.unary('AckMessage', {
      group: { resourceNamespace: '', name: group },
      topic: { resourceNamespace: '', name: MAIN },
      entries,
    });
    return raw.status(res.status).code;
  }

  before(async function () {
    this.timeout(30_000);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-receive-stored-'));
    node = await startSingleNode(dir, { autoCreateTopics: false });
    const deadlineMs = Date.now() + CALL_TIMEOUT_MS;
    const queueCounts: Record<string, number> = { [MAIN]: 4, [MANY]: 2, [TAGS]: 2, [POLL]: 1 };
    for (const [name, queueCount] of Object.entries(queueCounts)) {
      const config: TopicConfig = {
        name,
        queueCount,
        perm: 'READ_WRITE',
        messageTypes: ['NORMAL'],
      };
      await broker().createTopic(config, deadlineMs);
    }
    await send(Array.from({ length: 12 }, (_, i) => produceMessage(MAIN, `main${i}`)));
    for (let i = 0; i < MANY_COUNT; i += 100) {
      const count = Math.min(100, MANY_COUNT - i);
      await send(Array.from({ length: count }, (_, j) => produceMessage(MANY, `many${i + j}`)));
    }
    const tags = ['TagA', 'TagB', undefined];
    await send(
      Array.from({ length: 9 }, (_, i) => produceMessage(TAGS, `tags${i}`, { tag: tags[i % 3] })),
    );
    const definition = await loadFetchDefinition();
    method = definition.ReceiveStored as grpc.MethodDefinition<unknown, unknown>;
    assert.ok(method !== undefined);
    const options = { 'grpc.max_receive_message_length': 16 * 1024 * 1024 };
    client = new grpc.Client(broker().clientEndpoint, grpc.credentials.createInsecure(), options);
    raw = await RmqRawClient.connect(broker().clientEndpoint);
  });

  after(async function () {
    this.timeout(30_000);
    client?.close();
    raw?.close();
    await node?.stop();
    if (dir !== '') await fs.rm(dir, { recursive: true, force: true });
  });

  it('hands each message out once, then answers MESSAGE_NOT_FOUND at once', async () => {
    const first = await receive({ group: 'rs-once', batchSize: 5 });
    assert.equal(first.messages.length, 5);
    const rest = await receive({ group: 'rs-once', batchSize: 100 });
    assert.equal(rest.messages.length, 7);
    for (const got of [first, rest]) assert.ok(got.reply.attempts.every((a) => a === 1));
    assert.deepEqual([...ids(first), ...ids(rest)].sort(), idsOf(MAIN));
    const handles = [...first.reply.receiptHandles, ...rest.reply.receiptHandles];
    assert.equal(new Set(handles).size, 12);
    const startedMs = performance.now();
    const none = await call({ group: 'rs-once', batchSize: 100 });
    assertStatus(
      none,
      RmqCode.MESSAGE_NOT_FOUND,
      /^no message of RsMain is ready for group rs-once$/,
    );
    assert.ok(performance.now() - startedMs < 1_000, 'await_ms 0 waited');
    // Another group gets every message again.
    assert.deepEqual(ids(await receive({ group: 'rs-other', batchSize: 100 })), idsOf(MAIN));
  });

  it('acks with the handles; the unacked come back with attempt 2', async () => {
    const group = 'rs-retry';
    const first = await receive({ group, batchSize: 100, invisibleMs: 200 });
    assert.deepEqual(ids(first), idsOf(MAIN));
    assert.ok(first.reply.attempts.every((a) => a === 1));
    const acked = [0, 3, 7, 11].map((i) => ({
      messageId: first.messages[i]?.messageId ?? '',
      receiptHandle: first.reply.receiptHandles[i] ?? '',
    }));
    assert.equal(await ack(group, acked), RmqCode.OK);
    const again: StoredMessage[] = [];
    const deadlineMs = Date.now() + 5_000;
    while (again.length < 8 && Date.now() < deadlineMs) {
      const got = await receive({ group, batchSize: 100, invisibleMs: 30_000, awaitMs: 3_000 });
      assert.deepEqual(
        got.reply.attempts,
        got.reply.attempts.map(() => 2),
      );
      again.push(...got.messages);
    }
    assert.deepEqual(
      again.map((m) => m.messageId).sort(),
      idsOf(MAIN).filter((id) => !acked.some((a) => a.messageId === id)),
    );
    // A forged handle is refused by AckMessage: the acks above were checked.
    const forged = [{ messageId: 'x', receiptHandle: 'not-a-handle' }];
    assert.equal(await ack(group, forged), RmqCode.INVALID_RECEIPT_HANDLE);
  });

  it('takes batch_size 0 as 32, clamps a huge one to 1,024, and bytes_max 1 as one', async () => {
    assert.equal((await receive({ group: 'rs-default', topic: MANY })).messages.length, 32);
    const huge = await receive({ group: 'rs-huge', topic: MANY, batchSize: 100_000 });
    assert.equal(huge.messages.length, 1_024);
    const rest = await receive({ group: 'rs-huge', topic: MANY, batchSize: 100_000 });
    assert.equal(rest.messages.length, MANY_COUNT - 1_024);
    assert.deepEqual([...ids(huge), ...ids(rest)].sort(), idsOf(MANY));
    for (const batchSize of [0, 1, 10, 100_000]) {
      const got = await receive({ group: 'rs-bytes', topic: MANY, batchSize, bytesMax: 1 });
      assert.equal(got.messages.length, 1, `batch_size ${batchSize}`);
    }
    // bytes_max bounds the records' bytes, but lets the first through.
    const size = (await receive({ group: 'rs-bytes', topic: MANY, bytesMax: 1 })).reply.records[0]
      ?.length;
    assert.ok(size !== undefined);
    const two = await receive({ group: 'rs-bytes', topic: MANY, batchSize: 8, bytesMax: 2 * size });
    assert.ok(two.reply.records.reduce((n, r) => n + r.length, 0) <= 2 * size);
    assert.ok(two.messages.length >= 1 && two.messages.length <= 2);
  });

  it('hands out only messages whose tag the expression names', async () => {
    const a = await receive({ group: 'rs-tag-a', topic: TAGS, tagExpression: 'TagA' });
    assert.deepEqual(ids(a), TAG_A_IDS);
    assert.ok(a.messages.every((m) => m.tag === 'TagA'));
    const none = await call({ group: 'rs-tag-a', topic: TAGS, tagExpression: 'TagA' });
    assertStatus(none, RmqCode.MESSAGE_NOT_FOUND, /RsTags/);
    const ab = await receive({ group: 'rs-tag-ab', topic: TAGS, tagExpression: ' TagB || TagA' });
    assert.deepEqual(ids(ab), [...TAG_A_IDS, ...TAG_B_IDS].sort());
    const unknown = await call({ group: 'rs-tag-c', topic: TAGS, tagExpression: 'TagC' });
    assertStatus(unknown, RmqCode.MESSAGE_NOT_FOUND, /RsTags/);
    // tagsOf refuses no expression: one with no tag in it means every message.
    for (const [group, tagExpression] of [
      ['rs-tag-all', ''],
      ['rs-tag-bars', ' || '],
    ]) {
      assert.deepEqual(ids(await receive({ group, topic: TAGS, tagExpression })), idsOf(TAGS));
    }
  });

  it('long-polls await_ms and answers with a message sent during it', async () => {
    const group = 'rs-poll';
    let startedMs = performance.now();
    assertStatus(
      await call({ group, topic: POLL, awaitMs: 400 }),
      RmqCode.MESSAGE_NOT_FOUND,
      /RsPoll/,
    );
    const waitedMs = performance.now() - startedMs;
    assert.ok(waitedMs >= 380 && waitedMs < 3_000, `waited ${waitedMs} ms`);
    startedMs = performance.now();
    const [got] = await Promise.all([
      receive({ group, topic: POLL, awaitMs: 1_500 }),
      new Promise((resolve) => setTimeout(resolve, 300)).then(() =>
        send([produceMessage(POLL, 'late')]),
      ),
    ]);
    const tookMs = performance.now() - startedMs;
    assert.deepEqual(ids(got), ['ID-late']);
    assert.ok(tookMs >= 280 && tookMs < 1_400, `answered after ${tookMs} ms`);
  });

  it('answers bad input with a status naming it, and leaves the group as it was', async () => {
    const group = 'rs-bad';
    const cases: [Partial<Request>, number, RegExp][] = [
      [{ topic: 'NoSuchTopic' }, RmqCode.TOPIC_NOT_FOUND, /^topic NoSuchTopic does not exist$/],
      [{ topic: 'bad topic!' }, RmqCode.ILLEGAL_TOPIC, /^topic: topic name "bad topic!" has char/],
      [{ topic: '' }, RmqCode.ILLEGAL_TOPIC, /^topic: topic name is empty$/],
      [{ group: 'bad group!' }, RmqCode.ILLEGAL_CONSUMER_GROUP, /^group: consumer group name "bad/],
      [{ group: '' }, RmqCode.ILLEGAL_CONSUMER_GROUP, /^group: consumer group name is empty$/],
      [
        { invisibleMs: 12 * 3600 * 1000 + 1 },
        RmqCode.ILLEGAL_INVISIBLE_TIME,
        /^invisible_ms 43200001 ms must be in \[0, 43200000\]$/,
      ],
      [{ invisibleMs: 0xffff_ffff }, RmqCode.ILLEGAL_INVISIBLE_TIME, /^invisible_ms 4294967295 /],
      [{ namespace: 'bad ns' }, RmqCode.BAD_REQUEST, /^namespace "bad ns" /],
    ];
    for (const [over, code, reason] of cases) {
      assertStatus(await call({ group, batchSize: 100, ...over }), code, reason);
    }
    for (const headers of [{}, { 'x-mq-client-id': '' }] as Record<string, string>[]) {
      const reply = await call({ group, batchSize: 100 }, headers);
      assertStatus(reply, RmqCode.CLIENT_ID_REQUIRED, /x-mq-client-id/);
    }
    // 12 h exactly is allowed.
    const twelve = await receive({ group: 'rs-12h', batchSize: 1, invisibleMs: 12 * 3600 * 1000 });
    assert.equal(twelve.messages.length, 1);
    // None of the refused calls took a message of the group.
    const all = await receive({ group, batchSize: 100 });
    assert.deepEqual(ids(all), idsOf(MAIN));
    assert.ok(all.reply.attempts.every((a) => a === 1));
  });
});
