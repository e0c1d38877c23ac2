/*
 * raftmq's SDK SimpleConsumer (src/client/simple-consumer.ts). First without a cluster: option
 * resolution (INVALID_OPTION naming the field) and argument checks (INVALID_ARGUMENT naming it,
 * before any call). Then against a live 3-node group (LocalCluster: a NameServer and three broker
 * processes on loopback), messages sent by raftmq's Producer, one topic per case: receive returns
 * every field as sent, each message exactly once across many receives, and an acknowledged one
 * never again; an unacknowledged one comes back after its invisibility with attempt 2 and a new
 * handle; ChangeInvisibleDuration 0 hands it out again at once; the handle rules of
 * docs/consumption.md (a delivery's handle stays valid after a change, every older handle is
 * stale once the message is delivered again, and acking a settled message succeeds again); two
 * consumers of one group share messages without duplicates while another group gets them all;
 * an empty topic answers at once with awaitMs 0 and a long poll is woken by a send; an unknown
 * topic and forged, garbled or foreign receipt handles get their typed errors, per message for
 * acks. The fake-server cases of the same client are in pop-wire.test.ts.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCluster } from '../../src/cli/local-cluster';
import { waitUntil } from '../../src/cli/raft-node-client';
import { type OutgoingMessage, Producer } from '../../src/client/producer';
import {
  type ReceivedMessage,
  type ReceiveOptions,
  SimpleConsumer,
  type SimpleConsumerOptions,
} from '../../src/client/simple-consumer';
import { type ErrorCode, isRaftmqError } from '../../src/common/errors';

const QUEUE_COUNT = 2;
const TOPICS = ['SimpleOnce', 'SimpleAgain', 'SimpleChange', 'SimpleShared', 'SimpleEmpty'];
const FORGE_TOPIC = 'SimpleForge';
const ELECTION_TIMEOUT_MS = 15_000;

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, text: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRaftmqError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, text);
    return true;
  });
}

const ids = (messages: readonly ReceivedMessage[]): string[] => messages.map((m) => m.messageId);

describe('SimpleConsumer options and arguments', () => {
  it('refuses bad options with INVALID_OPTION naming the field', async () => {
    const bad: [object, RegExp][] = [
      [{ endpoint: 'h:1' }, /^simpleConsumer\.consumerGroup: /],
      [{ endpoint: 'h:1', consumerGroup: '' }, /^simpleConsumer\.consumerGroup: /],
      [{ endpoint: 'nope', consumerGroup: 'g' }, /^simpleConsumer\.endpoint: must be host:port/],
      [{ endpoint: 'h:1', consumerGroup: 'g', invisibleMs: -1 }, /^simpleConsumer\.invisibleMs/],
      [{ endpoint: 'h:1', consumerGroup: 'g', invisibleMs: 1.5 }, /^simpleConsumer\.invisibleMs/],
      [{ endpoint: 'h:1', consumerGroup: 'g', awaitMs: 600_001 }, /^simpleConsumer\.awaitMs/],
      [{ endpoint: 'h:1', consumerGroup: 'g', callTimeoutMs: 0 }, /^simpleConsumer\.callTimeout/],
      [{ endpoint: 'h:1', consumerGroup: 'g', namespace: 7 }, /^simpleConsumer\.namespace/],
      [{ endpoint: 'h:1', consumerGroup: 'g', colour: 'red' }, /^simpleConsumer\.colour: unknown/],
    ];
    for (const [input, message] of bad) {
      const create = SimpleConsumer.create(input as SimpleConsumerOptions);
      await assert.rejects(create, (e: unknown) => {
        assert.ok(isRaftmqError(e, 'INVALID_OPTION'), `${JSON.stringify(input)}: ${String(e)}`);
        assert.match(e.message, message);
        assert.deepEqual(e.details, { option: /^[^:]+/.exec(e.message)?.[0] });
        return true;
      });
    }
    const ok = await SimpleConsumer.create({ endpoint: 'h:1', consumerGroup: 'g', awaitMs: 0 });
    assert.deepEqual([ok.options.awaitMs, ok.options.invisibleMs], [0, 30_000]);
    ok.close();
  });

  it('checks every argument before calling anything', async () => {
    const sc = await SimpleConsumer.create({ endpoint: '127.0.0.1:1', consumerGroup: 'g' });
    try {
      const invalid = (p: Promise<unknown>, field: RegExp) =>
        rejectsWith(p, 'INVALID_ARGUMENT', field);
      const t = 'T';
      await invalid(
        sc.receive(t, { batchSize: 0 }),
        /^batchSize: must be an integer in \[1, 1024\]/,
      );
      await invalid(sc.receive(t, { batchSize: 1025 }), /^batchSize/);
      await invalid(sc.receive(t, { batchSize: 1.5 }), /^batchSize/);
      await invalid(sc.receive(t, { invisibleMs: -1 }), /^invisibleMs/);
      await invalid(sc.receive(t, { invisibleMs: 12 * 3600 * 1000 + 1 }), /^invisibleMs/);
      await invalid(sc.receive(t, { awaitMs: -1 }), /^awaitMs/);
      await invalid(sc.receive(t, { tagExpression: ' ' }), /^tagExpression: must not be blank/);
      await invalid(sc.receive(t, { tagExpression: '' }), /^tagExpression/);
      await invalid(sc.receive(''), /^topic/);
      const m = { topic: t, receiptHandle: '' } as ReceivedMessage;
      await invalid(sc.ack([m]), /^messages/);
      await invalid(sc.changeInvisibleDuration(m, 0), /^message/);
      const good = { ...m, receiptHandle: 'h' };
      await invalid(sc.changeInvisibleDuration(good, -1), /^invisibleMs/);
      assert.deepEqual(await sc.ack([]), { acked: 0, failures: [] });
    } finally {
      sc.close();
    }
  });
});

describe('SimpleConsumer against a broker group (LocalCluster)', function () {
  this.timeout(60_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  let producer: Producer | undefined;
  const consumers: SimpleConsumer[] = [];

  const live = () => {
    assert.ok(cluster !== undefined && producer !== undefined);
    return { c: cluster, producer };
  };

  async function consumer(group: string, extra: Partial<SimpleConsumerOptions> = {}) {
    assert.ok(cluster !== undefined);
    const endpoint = cluster.namesrvEndpoint;
    const sc = await SimpleConsumer.create({
      endpoint,
      consumerGroup: group,
      callTimeoutMs: 10_000,
      ...extra,
    });
    consumers.push(sc);
    return sc;
  }

  /** Sends `count` messages to `topic`, a few per request; what was sent, by message id. */
  async function send(topic: string, count: number, prefix: string) {
    const sent = new Map<string, OutgoingMessage & { offset: number }>();
    for (let i = 0; i < count; i += 3) {
      const batch: OutgoingMessage[] = [];
      for (let j = i; j < Math.min(count, i + 3); j++) {
        batch.push({
          body: Buffer.from(`${prefix}-${j}`),
          tag: j % 2 === 0 ? 'even' : 'odd',
          keys: [`key-${j}`],
          properties: new Map([['index', String(j)]]),
        });
      }
      const results = await live().producer.send(topic, batch);
      results.forEach((r, k) => sent.set(r.messageId, { ...(batch[k] as OutgoingMessage), ...r }));
    }
    return sent;
  }

  /** Receives from `topic` until `count` messages arrived (none twice) or 15 s passed. */
  async function receiveUntil(
    sc: SimpleConsumer,
    topic: string,
    count: number,
    options: ReceiveOptions,
  ): Promise<ReceivedMessage[]> {
    const got: ReceivedMessage[] = [];
    const deadlineMs = performance.now() + 15_000;
    while (got.length < count && performance.now() < deadlineMs) {
      for (const m of await sc.receive(topic, { awaitMs: 1_000, ...options })) {
        assert.ok(!ids(got).includes(m.messageId), `received twice: ${m.messageId}`);
        got.push(m);
      }
    }
    assert.equal(got.length, count, `received ${got.length} of ${count}`);
    return got;
  }

  before(async function () {
    this.timeout(90_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-simple-'));
    cluster = await LocalCluster.start({ dir, timing: { registerIntervalMs: 500 } });
    const c = cluster;
    await waitUntil('the topics created', ELECTION_TIMEOUT_MS, async () => {
      const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
      const admin = await c.admin(leader.nodeId);
      for (const name of [...TOPICS, FORGE_TOPIC]) {
        if ((await admin.listTopics()).some((t) => t.name === name)) continue;
        await admin.createTopic({ name, queueCount: QUEUE_COUNT });
      }
      return true;
    });
    const probe = await consumer('probe');
    for (const topic of [...TOPICS, FORGE_TOPIC]) {
      await waitUntil(`the route of ${topic}`, ELECTION_TIMEOUT_MS, async () => {
        const route = await probe.route(topic, true);
        return route.groups[0]?.leaderEndpoint !== undefined ? true : undefined;
      });
    }
    producer = await Producer.create({ endpoint: c.namesrvEndpoint });
  });

  after(async function () {
    this.timeout(60_000);
    for (const sc of consumers) sc.close();
    producer?.close();
    await cluster?.stopAll();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('receives every field as sent, each message once, and never again once acked', async () => {
    const topic = 'SimpleOnce';
    const sent = await send(topic, 30, 'once');
    const sc = await consumer('cg-once', { invisibleMs: 1_000 });
    const got: ReceivedMessage[] = [];
    let receives = 0;
    while (got.length < sent.size && receives < 40) {
      const batch = await sc.receive(topic, { batchSize: 7, awaitMs: 1_000 });
      receives++;
      assert.ok(batch.length <= 7, `${batch.length} messages for a batch of 7`);
      for (const m of batch) {
        const s = sent.get(m.messageId);
        assert.ok(s !== undefined, `unknown message ${m.messageId}`);
        assert.ok(!ids(got).includes(m.messageId), `received twice: ${m.messageId}`);
        assert.equal(m.body.toString(), Buffer.from(s.body).toString());
        assert.deepEqual(
          [m.tag, m.keys, [...m.properties]],
          [s.tag, s.keys, [...(s.properties ?? [])]],
        );
        assert.deepEqual([m.topic, m.offset, m.deliveryAttempt], [topic, s.offset, 1]);
        assert.ok(m.queueId >= 0 && m.queueId < QUEUE_COUNT, `queue ${m.queueId}`);
        assert.equal(m.brokerGroup, live().c.layout.group);
        assert.equal(m.messageGroup, undefined);
        assert.ok(typeof m.receiptHandle === 'string' && m.receiptHandle !== '');
        assert.ok((m.storeTimestampMs ?? 0) > 0 && (m.bornTimestampMs ?? 0) > 0);
        got.push(m);
      }
      const result = await sc.ack(batch);
      assert.deepEqual([result.acked, result.failures.length], [batch.length, 0]);
    }
    assert.equal(got.length, sent.size);
    assert.ok(receives >= 5, `${receives} receives for 30 messages in batches of 7`);
    // An unacknowledged message would come back within this wait (invisibility 1 s).
    assert.deepEqual(await sc.receive(topic, { awaitMs: 1_500 }), []);
  });

  it('hands an unacknowledged message out again after its invisibility', async () => {
    const topic = 'SimpleAgain';
    const [id] = [...(await send(topic, 1, 'again')).keys()];
    const sc = await consumer('cg-again');
    const [first] = await receiveUntil(sc, topic, 1, { invisibleMs: 300 });
    assert.ok(first !== undefined && first.messageId === id && first.deliveryAttempt === 1);
    const startedMs = performance.now();
    const [again] = await receiveUntil(sc, topic, 1, { invisibleMs: 30_000, awaitMs: 3_000 });
    assert.ok(again !== undefined);
    assert.ok(performance.now() - startedMs >= 150, 'handed out again before its invisibility');
    assert.deepEqual([again.messageId, again.deliveryAttempt], [id, 2]);
    assert.notEqual(again.receiptHandle, first.receiptHandle);
    // The first delivery's handle is stale once the message was handed out again.
    const stale = await sc.ack([first]);
    assert.equal(stale.acked, 0);
    assert.deepEqual(
      stale.failures.map((f) => [f.message.receiptHandle, f.error.code]),
      [[first.receiptHandle, 'INVALID_RECEIPT_HANDLE']],
    );
    assert.deepEqual(await sc.ack([again]), { acked: 1, failures: [] });
    assert.deepEqual(await sc.receive(topic, { awaitMs: 500 }), []);
  });

  it('changes invisibility: 0 gives a message back at once; handles follow consumption.md', async () => {
    const topic = 'SimpleChange';
    await send(topic, 2, 'change');
    const sc = await consumer('cg-change');
    const [x, y] = await receiveUntil(sc, topic, 2, { invisibleMs: 30_000 });
    assert.ok(x !== undefined && y !== undefined);
    const startedMs = performance.now();
    const xChanged = await sc.changeInvisibleDuration(x, 0);
    assert.notEqual(xChanged.receiptHandle, x.receiptHandle);
    assert.deepEqual({ ...xChanged, receiptHandle: x.receiptHandle }, x);
    const [xAgain] = await receiveUntil(sc, topic, 1, { invisibleMs: 30_000, awaitMs: 5_000 });
    assert.ok(xAgain !== undefined);
    assert.ok(performance.now() - startedMs < 3_000, 'not handed out again at once');
    assert.deepEqual([xAgain.messageId, xAgain.deliveryAttempt], [x.messageId, 2]);
    assert.ok(![x.receiptHandle, xChanged.receiptHandle].includes(xAgain.receiptHandle));

    // A delivery's own handle stays valid after a change of its invisibility.
    const yChanged = await sc.changeInvisibleDuration(y, 60_000);
    assert.notEqual(yChanged.receiptHandle, y.receiptHandle);
    assert.deepEqual(await sc.ack([y]), { acked: 1, failures: [] });
    // Acking a settled message succeeds again, whichever of its handles (pop-state.ts).
    assert.deepEqual(await sc.ack([yChanged]), { acked: 1, failures: [] });

    // Once x was delivered again, its first delivery's handle and that change's are stale.
    const stale = await sc.ack([x, xChanged]);
    assert.equal(stale.acked, 0);
    assert.deepEqual(
      stale.failures.map((f) => f.error.code),
      ['INVALID_RECEIPT_HANDLE', 'INVALID_RECEIPT_HANDLE'],
    );
    await rejectsWith(sc.changeInvisibleDuration(x, 0), 'INVALID_RECEIPT_HANDLE', /stale/);
    assert.deepEqual(await sc.ack([xAgain]), { acked: 1, failures: [] });
    assert.deepEqual(await sc.receive(topic, { awaitMs: 300, invisibleMs: 0 }), []);
  });

  it('shares a group between two consumers without duplicates; another group gets all', async () => {
    const topic = 'SimpleShared';
    const sent = await send(topic, 36, 'shared');
    const pair = [await consumer('cg-shared'), await consumer('cg-shared')];
    const owner = new Map<string, number>();
    const duplicates: string[] = [];
    const counts = [0, 0];
    const deadlineMs = performance.now() + 30_000;
    await Promise.all(
      pair.map(async (sc, who) => {
        // Each stops after 24 of the 36, so the other must take part.
        while (
          (counts[who] ?? 0) < 24 &&
          owner.size < sent.size &&
          performance.now() < deadlineMs
        ) {
          const batch = await sc.receive(topic, { batchSize: 4, awaitMs: 500 });
          for (const m of batch) {
            if (owner.has(m.messageId)) duplicates.push(m.messageId);
            owner.set(m.messageId, who);
            counts[who] = (counts[who] ?? 0) + 1;
          }
          if (batch.length > 0) assert.equal((await sc.ack(batch)).acked, batch.length);
        }
      }),
    );
    assert.deepEqual(duplicates, [], 'no message was handed to both consumers');
    assert.deepEqual([...owner.keys()].sort(), [...sent.keys()].sort());
    assert.ok(
      counts.every((n) => n > 0),
      `both took part: ${counts.join(' + ')}`,
    );

    const other = await consumer('cg-shared-other');
    const all = await receiveUntil(other, topic, sent.size, { batchSize: 16 });
    assert.deepEqual(ids(all).sort(), [...sent.keys()].sort());
    assert.equal((await other.ack(all)).acked, sent.size);
  });

  it('answers an empty topic at once with awaitMs 0, and wakes a long poll on a send', async () => {
    const topic = 'SimpleEmpty';
    const sc = await consumer('cg-empty');
    let startedMs = performance.now();
    assert.deepEqual(await sc.receive(topic, { awaitMs: 0 }), []);
    assert.ok(performance.now() - startedMs < 1_000, 'awaitMs 0 waited');
    startedMs = performance.now();
    const waiting = sc.receive(topic, { awaitMs: 1_500 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const [id] = [...(await send(topic, 1, 'late')).keys()];
    const got = await waiting;
    assert.deepEqual(
      got.map((m) => [m.messageId, m.body.toString()]),
      [[id, 'late-0']],
    );
    assert.ok(performance.now() - startedMs < 1_500 + 1_000, 'the long poll was not woken');
    assert.equal((await sc.ack(got)).acked, 1);
  });

  it('refuses an unknown topic and forged, garbled or foreign receipt handles', async () => {
    const sc = await consumer('cg-forge');
    await rejectsWith(sc.receive('NoSuchTopic', { awaitMs: 0 }), 'TOPIC_NOT_FOUND', /NoSuchTopic/);

    await send(FORGE_TOPIC, 4, 'forge');
    const [a, b, c, d] = await receiveUntil(sc, FORGE_TOPIC, 4, { invisibleMs: 30_000 });
    assert.ok(a !== undefined && b !== undefined && c !== undefined && d !== undefined);
    const last = b.receiptHandle.slice(-1);
    const garbled = {
      ...b,
      receiptHandle: `${b.receiptHandle.slice(0, -1)}${last === '0' ? '1' : '0'}`,
    };
    const forged = { ...b, receiptHandle: 'v1.0.0.1.deadbeef' };
    const nonsense = { ...b, receiptHandle: 'not a handle' };
    // Valid ones in the same call are acked; each bad one fails on its own.
    const mixed = await sc.ack([a, garbled, forged, nonsense]);
    assert.equal(mixed.acked, 1);
    assert.deepEqual(
      mixed.failures.map((f) => [f.message.receiptHandle, f.error.code]),
      [garbled, forged, nonsense].map((m) => [m.receiptHandle, 'INVALID_RECEIPT_HANDLE']),
    );
    await rejectsWith(sc.changeInvisibleDuration(forged, 0), 'INVALID_RECEIPT_HANDLE', /./);
    // A handle of this group is foreign to another one (its check covers the group's name).
    const foreign = await (await consumer('cg-forge-other')).ack([c]);
    assert.deepEqual(
      [foreign.acked, foreign.failures.map((f) => f.error.code)],
      [0, ['INVALID_RECEIPT_HANDLE']],
    );
    // Nothing bad settled anything: b, c and d are still this group's to ack.
    assert.deepEqual(await sc.ack([b, c, d]), { acked: 3, failures: [] });
  });
});
