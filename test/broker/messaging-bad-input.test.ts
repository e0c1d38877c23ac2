/*
 * Bad input to apache.rocketmq.v2.MessagingService over raw gRPC, against a live 3-node group
 * (LocalCluster: a NameServer and three broker processes on loopback, topic auto-creation off).
 * Each request gets the RocketMQ Code the contract lists (§5.4, §6.6; numbers written out in
 * rmq-raw-client.ts) in the response status, never a gRPC error, with a message saying what is
 * wrong: unknown and illegal topics, illegal tags, too many or too large properties, a missing
 * client-id header, malformed requests (no topic, body, system properties or messages;
 * undecodable bytes; one bad message among good ones). After each one the leader still stores
 * a good message at the next offset of the test topic's only queue and every node reaches that
 * end, so nothing of the bad request was stored. A follower forwards a send to the leader; a
 * request already forwarded once gets HA_NOT_AVAILABLE naming the leader. Last, the leader is
 * killed with SIGKILL while sends to it are in flight (each is acknowledged or lost with the
 * connection, never refused with a non-retryable code), and sends go to the followers at once:
 * they wait for the election within their deadline and are stored by the new leader. Every
 * acknowledged message is then found at its offset on all three nodes once the killed node is
 * back, and the three hold the same queues.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import * as grpcJs from '@grpc/grpc-js';
import type * as grpc from '@grpc/grpc-js';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { LocalCluster, type LocalLeader } from '../../src/cli/local-cluster';
import { waitUntil } from '../../src/cli/raft-node-client';
import {
  clientHeaders,
  CODE,
  createTopic,
  newMessageId,
  printLogTails,
  type PulledMessage,
  type RawSendResult,
  RETRYABLE_CODES,
  RmqRawClient,
  wireMessage,
} from './rmq-raw-client';

/** The topic bad requests aim at: one queue, so "nothing stored" is "the end did not move". */
const TOPIC = 'BadInputTopic';
const ELECTION_TOPIC = 'ElectionTopic';
const LEADER_TIMEOUT_MS = 15_000;
const CONVERGE_TIMEOUT_MS = 15_000;

/** Asserts a refusal: the code on the response and on every entry, and a telling message. */
function assertRefused(result: RawSendResult, code: number, reason: RegExp): void {
  const { status } = result;
  assert.equal(status.code, code, `expected code ${code}, got ${status.code}: ${status.message}`);
  assert.match(status.message, reason);
  for (const entry of result.entries) {
    assert.equal(entry.status.code, code, `entry: ${entry.status.message}`);
    assert.notEqual(entry.status.message, '');
  }
}

describe('MessagingService bad input over raw gRPC against a live 3-node group', function () {
  this.timeout(60_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  let leader: LocalLeader;
  const clients = new Map<string, RmqRawClient>();
  /** Messages stored in TOPIC so far: the offset the next good send must get. */
  let storedCount = 0;

  function client(id: string): RmqRawClient {
    const c = clients.get(id);
    assert.ok(c !== undefined, `no client of ${id}`);
    return c;
  }

  function leaderClient(): RmqRawClient {
    return client(leader.nodeId);
  }

  function followerIds(): string[] {
    return (cluster?.nodeIds ?? []).filter((id) => id !== leader.nodeId);
  }

  /** Waits until every running node's end of `topic` queue `queueId` is `end`. */
  async function waitForEnd(topic: string, queueId: number, end: number): Promise<void> {
    const ids = cluster?.running() ?? [];
    await waitUntil(`end ${end} of ${topic}/${queueId} on ${ids.join(', ')}`, 10_000, async () => {
      const ends = await Promise.all(ids.map((id) => client(id).queueOffset(topic, queueId)));
      ends.forEach((e) => assert.ok(e <= end, `a node holds ${e} messages; expected ${end}`));
      return ends.every((e) => e === end) ? true : undefined;
    });
  }

  /** A good send to the leader lands at the next offset, and every node reaches it. */
  async function assertStillServes(): Promise<void> {
    const res = await leaderClient().send([wireMessage(TOPIC, { tag: 'good' })]);
    assert.equal(res.status.code, CODE.OK, res.status.message);
    assert.equal(res.entries[0]?.offset, storedCount, 'the bad request stored something');
    storedCount++;
    await waitForEnd(TOPIC, 0, storedCount);
  }

  before(async function () {
    this.timeout(45_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-bad-input-'));
    cluster = await LocalCluster.start({ dir, autoCreateTopics: false });
    leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    await createTopic(cluster, { name: TOPIC, queueCount: 1, messageTypes: ['NORMAL', 'FIFO'] });
    await createTopic(cluster, { name: ELECTION_TOPIC, queueCount: 2 });
    leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    for (const b of cluster.brokers)
      clients.set(b.id, await RmqRawClient.connect(b.clientEndpoint));
    await assertStillServes();
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') printLogTails(cluster);
  });

  after(async () => {
    for (const c of clients.values()) c.close();
    await cluster?.stopAll();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers an unknown topic with TOPIC_NOT_FOUND and creates nothing', async () => {
    const res = await leaderClient().send([wireMessage('NoSuchTopic')]);
    assertRefused(res, CODE.TOPIC_NOT_FOUND, /NoSuchTopic.*does not exist/);
    const fromFollower = await client(followerIds()[0] ?? '').send([wireMessage('NoSuchTopic')]);
    assertRefused(fromFollower, CODE.TOPIC_NOT_FOUND, /NoSuchTopic/);
    const topics = await (await cluster!.admin(leader.nodeId)).listTopics();
    assert.deepEqual(topics.map((t) => t.name).sort(), [ELECTION_TOPIC, TOPIC].sort());
    await assertStillServes();
  });

  it('answers illegal and reserved topic names with ILLEGAL_TOPIC', async () => {
    const cases: [string, RegExp][] = [
      ['bad topic!', /topic\.name.*characters outside/],
      ['t'.repeat(128), /128 characters.*at most 127/],
      ['', /topic\.name.*empty/],
      ['TBW102', /reserved/],
      ['%RETRY%group', /reserved/],
    ];
    for (const [name, reason] of cases) {
      assertRefused(await leaderClient().send([wireMessage(name)]), CODE.ILLEGAL_TOPIC, reason);
    }
    await assertStillServes();
  });

  it('answers illegal tags with ILLEGAL_MESSAGE_TAG', async () => {
    const cases: [string, RegExp][] = [
      ['a|b', /system_properties\.tag.*contains the character \|/],
      ['   ', /system_properties\.tag is empty or blank/],
      ['t'.repeat(256), /system_properties\.tag is 256 bytes; at most 255/],
      ['tab\there', /control character/],
    ];
    for (const [tag, reason] of cases) {
      const res = await leaderClient().send([wireMessage(TOPIC, { tag })]);
      assertRefused(res, CODE.ILLEGAL_MESSAGE_TAG, reason);
    }
    await assertStillServes();
  });

  it('answers too many or too large properties with MESSAGE_PROPERTIES_TOO_LARGE', async () => {
    const many = Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`k${i}`, 'v']));
    const tooMany = await leaderClient().send([wireMessage(TOPIC, { userProperties: many })]);
    assertRefused(tooMany, CODE.MESSAGE_PROPERTIES_TOO_LARGE, /129 properties.*at most 128/);
    const large = { big: 'x'.repeat(16 * 1024) };
    const tooLarge = await leaderClient().send([wireMessage(TOPIC, { userProperties: large })]);
    assertRefused(tooLarge, CODE.MESSAGE_PROPERTIES_TOO_LARGE, /16387 bytes.*16384 bytes/);
    const reserved = await leaderClient().send([
      wireMessage(TOPIC, { userProperties: { UNIQ_KEY: 'x' } }),
    ]);
    assertRefused(reserved, CODE.ILLEGAL_MESSAGE_PROPERTY_KEY, /UNIQ_KEY.*reserved/);
    await assertStillServes();
  });

  it('answers a call without x-mq-client-id with CLIENT_ID_REQUIRED', async () => {
    const headers = { 'x-mq-protocol': 'v2', 'x-mq-language': 'HTTP' };
    const send = await leaderClient().send([wireMessage(TOPIC)], { headers });
    assertRefused(send, CODE.CLIENT_ID_REQUIRED, /x-mq-client-id/);
    const queue = { topic: { resourceNamespace: '', name: TOPIC }, id: 0 };
    // GetOffset checks the header before its first await: once a gRPC UNKNOWN error.
    for (const [rpc, request] of [
      ['QueryRoute', { topic: { resourceNamespace: '', name: TOPIC } }],
      ['GetOffset', { group: { resourceNamespace: '', name: 'g' }, messageQueue: queue }],
      ['QueryOffset', { messageQueue: queue, queryOffsetPolicy: 'END' }],
    ] as const) {
      const res = await leaderClient().unary(rpc, request, { headers });
      const status = leaderClient().status(res.status);
      assert.equal(status.code, CODE.CLIENT_ID_REQUIRED, `${rpc}: ${status.message}`);
      assert.match(status.message, /x-mq-client-id/);
    }
    await assertStillServes();
  });

  it('answers malformed messages with the code naming what is missing', async () => {
    const c = leaderClient();
    assertRefused(
      await c.send([wireMessage(TOPIC, { topic: null })]),
      CODE.ILLEGAL_TOPIC,
      /topic is missing/,
    );
    const noBody = await c.send([wireMessage(TOPIC, { body: Buffer.alloc(0) })]);
    assertRefused(noBody, CODE.MESSAGE_BODY_EMPTY, /body is empty/);
    const noProps = await c.send([wireMessage(TOPIC, { systemProperties: null })]);
    assertRefused(noProps, CODE.ILLEGAL_MESSAGE_ID, /system_properties is missing/);
    const noId = await c.send([wireMessage(TOPIC, { messageId: '' })]);
    assertRefused(noId, CODE.ILLEGAL_MESSAGE_ID, /message_id is missing/);
    const fifoNoGroup = await c.send([
      wireMessage(TOPIC, {
        systemProperties: { messageId: newMessageId(), messageType: 'FIFO', keys: [] },
      }),
    ]);
    assertRefused(fifoNoGroup, CODE.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, /FIFO needs.*group/);
    const none = await c.send([]);
    assertRefused(none, CODE.BAD_REQUEST, /messages is empty/);
    assert.equal(none.entries.length, 0);
    await assertStillServes();
  });

  it('answers undecodable bytes with BAD_REQUEST, not a gRPC error', async () => {
    // Field 1 (messages), length-delimited, claiming 2^31 bytes: no valid decoding.
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x01]);
    for (const rpc of ['SendMessage', 'QueryRoute', 'QueryOffset']) {
      const res = await leaderClient().rawBytes(rpc, garbage);
      const status = leaderClient().status(res.status);
      assert.equal(status.code, CODE.BAD_REQUEST, `${rpc}: ${status.message}`);
      assert.match(status.message, /could not be decoded/);
    }
    await assertStillServes();
  });

  it('refuses a compressed request that inflates to millions of messages, and keeps serving', async () => {
    // 2,000,000 empty messages: 4 MB inflated, a few KiB gzip-compressed on the wire. The
    // decoder stops past its bound instead of building millions of objects.
    const bomb = Buffer.alloc(4_000_000);
    for (let i = 0; i < bomb.length; i += 2) bomb[i] = 0x0a;
    const def = await loadMessagingDefinition();
    const method = def.SendMessage;
    assert.ok(method !== undefined);
    const gzip = new grpcJs.Client(leader.clientEndpoint, grpcJs.credentials.createInsecure(), {
      'grpc.default_compression_algorithm': grpcJs.compressionAlgorithms.gzip,
    });
    try {
      const metadata = new grpcJs.Metadata();
      for (const [k, v] of Object.entries(clientHeaders())) metadata.set(k, v);
      const res = await new Promise<{ status?: unknown }>((resolve, reject) =>
        gzip.makeUnaryRequest(
          method.path,
          (b: Buffer) => b,
          method.responseDeserialize,
          bomb,
          metadata,
          { deadline: Date.now() + 20_000 },
          (err, value) => (err === null ? resolve(value as { status?: unknown }) : reject(err)),
        ),
      );
      const status = leaderClient().status(res.status);
      assert.equal(status.code, CODE.BAD_REQUEST, status.message);
      assert.match(status.message, /more than 65536 messages/);
    } finally {
      gzip.close();
    }
    await assertStillServes();
  });

  it('refuses a GZIP body that does not inflate or inflates past 64 MiB, and stores one that does', async () => {
    const gzipMessage = (body: Buffer): object =>
      wireMessage(TOPIC, {
        systemProperties: {
          messageId: newMessageId(),
          bodyEncoding: 'GZIP',
          messageType: 'NORMAL',
        },
        body,
      });
    const c = leaderClient();
    // The official Node consumer inflates GZIP bodies with no bound while it builds a batch:
    // such a message would fail every receive that included it.
    const notGzip = await c.send([wireMessage(TOPIC), gzipMessage(Buffer.from('not gzip'))]);
    assertRefused(notGzip, CODE.BAD_REQUEST, /GZIP but the body does not inflate/);
    const bomb = zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024 + 1), { level: 9 });
    const bombed = await c.send([gzipMessage(bomb)]);
    assertRefused(bombed, CODE.BAD_REQUEST, /inflates to more than 67108864 bytes/);
    const truncated = zlib.gzipSync(Buffer.from('a body')).subarray(0, 12);
    assertRefused(await c.send([gzipMessage(truncated)]), CODE.BAD_REQUEST, /does not inflate/);
    await assertStillServes();
    const good = await c.send([gzipMessage(zlib.gzipSync(Buffer.from('a compressed body')))]);
    assert.equal(good.status.code, CODE.OK, good.status.message);
    storedCount++;
    await assertStillServes();
  });

  it('refuses string fields that are not UTF-8 instead of storing them changed', async () => {
    const def = await loadMessagingDefinition();
    const serialize = def.SendMessage?.requestSerialize as (v: object) => Buffer;
    /** A request with `marker` in a string field, the marker's bytes then replaced by `bytes`. */
    const patched = (message: object, marker: string, bytes: number[]): Buffer => {
      const req = serialize({ messages: [message] });
      const at = req.indexOf(Buffer.from(marker));
      assert.ok(at >= 0 && bytes.length === marker.length);
      Buffer.from(bytes).copy(req, at);
      return req;
    };
    const c = leaderClient();
    const badTag = patched(
      wireMessage(TOPIC, { tag: 'TAGXX' }),
      'TAGXX',
      [0x54, 0x41, 0x47, 0xff, 0xfe],
    );
    const id = newMessageId();
    const badId = patched(wireMessage(TOPIC, { messageId: id }), id.slice(-2), [0xc3, 0x28]);
    for (const req of [badTag, badId]) {
      const status = c.status((await c.rawBytes('SendMessage', req)).status);
      assert.equal(status.code, CODE.BAD_REQUEST, status.message);
      assert.match(status.message, /not valid UTF-8/);
    }
    // A real U+FFFD, sent as UTF-8, is a character like any other.
    const replacement = await c.send([wireMessage(TOPIC, { tag: 'tag\ufffd' })]);
    assert.equal(replacement.status.code, CODE.OK, replacement.status.message);
    storedCount++;
    await assertStillServes();
  });

  it('stores nothing of a request in which one message of several is bad', async () => {
    const good = [wireMessage(TOPIC), wireMessage(TOPIC)];
    const res = await leaderClient().send([...good, wireMessage(TOPIC, { tag: 'x|y' })]);
    assertRefused(res, CODE.ILLEGAL_MESSAGE_TAG, /contains the character \|/);
    assert.equal(res.entries.length, 3);
    assert.match(res.entries[0]?.status.message ?? '', /not stored: message 2 .* invalid/);
    assert.match(res.entries[2]?.status.message ?? '', /^system_properties\.tag/);
    await assertStillServes();
  });

  it('stores a send made to a follower by forwarding it to the leader', async () => {
    for (const id of followerIds()) {
      const messageId = newMessageId();
      const res = await client(id).send([wireMessage(TOPIC, { messageId, tag: 'via-follower' })]);
      assert.equal(res.status.code, CODE.OK, `${id}: ${res.status.message}`);
      assert.equal(res.entries[0]?.messageId, messageId);
      assert.equal(res.entries[0]?.offset, storedCount);
      storedCount++;
      await waitForEnd(TOPIC, 0, storedCount);
      const [stored] = (await client(id).pull(TOPIC, 0, storedCount - 1, 1)).messages;
      assert.equal(stored?.messageId, messageId);
      assert.equal(stored?.tag, 'via-follower');
    }
    await assertStillServes();
  });

  it('answers a request already forwarded once with HA_NOT_AVAILABLE naming the leader', async () => {
    const follower = client(followerIds()[0] ?? '');
    const headers = { ...clientHeaders(), 'x-raftmq-forwarded': '1' };
    const res = await follower.send([wireMessage(TOPIC)], { headers });
    assertRefused(res, CODE.HA_NOT_AVAILABLE, /already forwarded once/);
    assert.ok(RETRYABLE_CODES.has(res.status.code));
    assert.ok(
      res.status.message.includes(`leader: ${leader.nodeId} (${leader.clientEndpoint})`),
      res.status.message,
    );
    await assertStillServes();
  });

  it('acknowledges no send during an election that it then loses', async function () {
    this.timeout(50_000);
    const c = cluster!;
    const old = leader;
    const followers = followerIds();
    /** Acknowledged sends: message id to queue offset. */
    const acked = new Map<string, number>();
    /** One send to node `id`; true if acknowledged. A refusal must be retryable. */
    const send = async (id: string): Promise<boolean> => {
      const messageId = newMessageId();
      let res: RawSendResult;
      try {
        res = await client(id).send([wireMessage(ELECTION_TOPIC, { messageId })]);
      } catch (err) {
        // Only the killed node fails at the gRPC level (its answer may be lost).
        assert.equal(id, old.nodeId, `${id}: ${(err as grpc.ServiceError).message}`);
        return false;
      }
      if (res.status.code !== CODE.OK) {
        assert.ok(RETRYABLE_CODES.has(res.status.code), `${id}: ${res.status.message}`);
        assert.notEqual(res.status.message, '');
        return false;
      }
      acked.set(messageId, res.entries[0]?.offset ?? -1);
      return true;
    };
    // Four senders keep the leader busy, so sends are in flight when it dies.
    const senders = Array.from({ length: 4 }, async () => {
      let ok = true;
      while (ok) ok = await send(old.nodeId);
    });
    await waitUntil('sends acknowledged before the kill', 10_000, () =>
      Promise.resolve(acked.size >= 8 ? true : undefined),
    );
    await c.kill(old.nodeId, 'SIGKILL');
    // A follower waits for the election within the deadline (docs/client-protocol.md).
    const duringElection = followers.flatMap((id) => [send(id), send(id)]);
    await Promise.all(senders);
    const viaFollowers = await Promise.all(duringElection);
    assert.ok(viaFollowers.every(Boolean), 'a send via a follower during the election failed');
    leader = await c.waitForLeader(LEADER_TIMEOUT_MS, old.term);
    assert.notEqual(leader.nodeId, old.nodeId);
    for (const id of followers) assert.ok(await send(id), `a send via ${id} after the election`);
    await c.restart(old.nodeId);
    const stored = await waitForSameQueues(c, ELECTION_TOPIC, 2);
    for (const [messageId, offset] of acked) {
      const m = stored.get(messageId);
      assert.ok(m !== undefined, `acknowledged message ${messageId} was lost`);
      assert.equal(m.queueOffset, offset, `offset of ${messageId}`);
    }
  });

  /**
   * Waits until every node holds the same messages in queues 0..queueCount-1 of `topic`;
   * returns them by message id.
   */
  async function waitForSameQueues(
    c: LocalCluster,
    topic: string,
    queueCount: number,
  ): Promise<Map<string, PulledMessage>> {
    const messages = await waitUntil(
      `the same ${topic} on every node`,
      CONVERGE_TIMEOUT_MS,
      async () => {
        const views = await Promise.all(
          c.nodeIds.map((id) => client(id).readTopic(topic, queueCount)),
        );
        const lines = views.map((v) =>
          v.map((m) => `${m.queueId}/${m.queueOffset}/${m.messageId}`),
        );
        const first = JSON.stringify(lines[0]);
        return lines.every((l) => JSON.stringify(l) === first) ? views[0] : undefined;
      },
    );
    return new Map(messages.map((m) => [m.messageId, m]));
  }
});
