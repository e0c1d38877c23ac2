/*
 * Pop consumption on a real broker node (a one-node group, in process, real store on a temp
 * dir): receive hands out each message once, with attempt 1 and a receipt handle; ack settles
 * it for good; an invisibility change extends or gives back a message and keeps the delivery
 * handle valid; an expired message comes back with its attempt raised, and after the group's
 * last attempt it goes to `%DLQ%<group>` instead, where it can be read back; FIFO groups hold a
 * message group back until its earlier message is settled; two groups each get every message;
 * tag filters settle what they skip; a receive reads from the store only as many records as it
 * hands out, and more only past what a filter skips; stale and forged handles are refused;
 * progress reports the frontier and lag; a restarted node keeps acks and in-flight messages. Short
 * invisibilities (tens of ms) stand in for time; every wait has a deadline.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { RaftmqError, isRaftmqError } from '../../src/common/errors';
import { decodeMessage } from '../../src/store/message-codec';
import { USER_PROPERTY_LIMITS } from '../../src/store/message-limits';
import type { BrokerNode } from '../../src/broker/broker-node';
import { produceMessage, startSingleNode } from './single-node';
import type { ProduceMessage } from '../../src/broker/broker-types';
import {
  dlqTopicOf,
  type PopReceiveRequest,
  type PoppedMessage,
  type PopServiceDeps,
} from '../../src/broker/pop-service';
import { freePorts } from '../../src/cli/raft-node-client';

const TOPIC = 'orders';
const ALL = (): boolean => true;

function message(body: string, extra: Partial<ProduceMessage> = {}): ProduceMessage {
  return produceMessage(TOPIC, body, extra);
}

function startNode(dir: string, ports: number[]): Promise<BrokerNode> {
  return startSingleNode(dir, { autoCreateTopics: true, defaultQueueCount: 2 }, ports);
}

describe('pop service on a broker node', function () {
  this.timeout(60_000);
  let dir: string;
  let ports: number[];
  let node: BrokerNode | undefined;

  const broker = () => {
    assert.ok(node !== undefined);
    return node.broker;
  };
  const deadline = (): number => Date.now() + 5_000;
  const receive = (over: Partial<PopReceiveRequest> = {}): Promise<PoppedMessage[]> =>
    broker().pop.receive(
      {
        group: 'G',
        topic: TOPIC,
        filter: ALL,
        batchSize: 32,
        invisibleMs: 60_000,
        pollUntilMs: Date.now(),
        ...over,
      },
      deadline(),
    );
  const bodies = (got: PoppedMessage[]): string[] =>
    got.map((p) => Buffer.from(decodeMessage(p.record.bytes).body).toString()).sort();
  const send = async (...messages: ProduceMessage[]): Promise<void> => {
    for (const m of messages) await broker().send([m], deadline());
  };

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-pop-'));
    ports = await freePorts(2);
    node = await startNode(dir, ports);
  });

  afterEach(async () => {
    await node?.stop();
    node = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('hands each message out once, settles acks, and redelivers what expires', async () => {
    await send(message('a'), message('b'), message('c'));
    const first = await receive({ invisibleMs: 300 });
    assert.deepEqual(bodies(first), ['a', 'b', 'c']);
    assert.ok(first.every((p) => p.attempt === 1 && p.receiptHandle.startsWith('v1.')));
    assert.deepEqual(await receive(), [], 'nothing visible while in flight');
    const [a, b] = [...first].sort((x, y) => bodies([x])[0]!.localeCompare(bodies([y])[0]!));
    await broker().pop.ack('G', TOPIC, a!.receiptHandle, deadline());
    // Renewal keeps the delivery handle valid; the message then waits the new duration.
    await broker().pop.changeInvisible('G', TOPIC, b!.receiptHandle, 60_000, deadline());
    const again = await receive({ pollUntilMs: Date.now() + 3_000 });
    assert.deepEqual(bodies(again), ['c']);
    assert.equal(again[0]?.attempt, 2);
    // The first delivery of c is stale now.
    const c1 = first.find((p) => bodies([p])[0] === 'c');
    await assert.rejects(broker().pop.ack('G', TOPIC, c1!.receiptHandle, deadline()), (e) =>
      isRaftmqError(e, 'INVALID_RECEIPT_HANDLE'),
    );
    await broker().pop.ack('G', TOPIC, again[0].receiptHandle, deadline());
    await broker().pop.ack('G', TOPIC, b!.receiptHandle, deadline());
    // Acking twice is harmless; a forged handle is refused.
    await broker().pop.ack('G', TOPIC, a!.receiptHandle, deadline());
    await assert.rejects(broker().pop.ack('G', TOPIC, 'v1.0.0.1.0', deadline()), (e) =>
      isRaftmqError(e, 'INVALID_RECEIPT_HANDLE'),
    );
    await assert.rejects(
      broker().pop.ack('OTHER', TOPIC, b!.receiptHandle, deadline()),
      (e) => isRaftmqError(e, 'INVALID_RECEIPT_HANDLE'),
      'a handle of another group',
    );
    assert.deepEqual(await receive({ invisibleMs: 0 }), []);
    const progress = broker().pop.progress('G');
    assert.equal(
      progress.reduce((n, p) => n + p.lag, 0),
      0,
    );
    assert.equal(
      progress.reduce((n, p) => n + p.brokerOffset, 0),
      3,
    );
  });

  it('gives a message back at once with a 0 ms change', async () => {
    await send(message('x'));
    const [x] = await receive();
    const handle = await broker().pop.changeInvisible('G', TOPIC, x!.receiptHandle, 0, deadline());
    assert.notEqual(handle, x!.receiptHandle);
    const [again] = await receive();
    assert.equal(again?.attempt, 2);
  });

  it('moves a message to the dead-letter queue after the last attempt', async () => {
    await broker().createGroup({ name: 'D', maxDeliveryAttempts: 2, fifo: false }, deadline());
    await send(message('poison'));
    for (let attempt = 1; attempt <= 2; attempt++) {
      const got = await receive({ group: 'D', invisibleMs: 50, pollUntilMs: Date.now() + 3_000 });
      assert.equal(got[0]?.attempt, attempt);
    }
    assert.deepEqual(await receive({ group: 'D', pollUntilMs: Date.now() + 500 }), []);
    const dlq = await broker().readQueue('%DLQ%D', 0, 0, 10);
    assert.equal(dlq.length, 1);
    assert.equal(Buffer.from(dlq[0]!.message.body).toString(), 'poison');
    assert.equal(dlq[0]!.message.userProperties.get('DLQ_ORIGIN_TOPIC'), TOPIC);
    assert.equal(
      broker()
        .pop.progress('D')
        .reduce((n, p) => n + p.lag, 0),
      0,
    );
  });

  it('dead-letters a message with all the properties a producer may set', async () => {
    // 128 properties of 16 KiB in all: the copy adds three more (its origin), which the store
    // makes room for. Before, the copy broke the store's limits and every receive of the group
    // failed with RECORD_TOO_LARGE.
    const { countMax, sizeBytesMax } = USER_PROPERTY_LIMITS;
    const userProperties = new Map(
      Array.from({ length: countMax }, (_, i) => [
        `p${String(i).padStart(3, '0')}`,
        'v'.repeat(sizeBytesMax / countMax - 4),
      ]),
    );
    await broker().createGroup({ name: 'D', maxDeliveryAttempts: 1, fifo: false }, deadline());
    await send(message('full', { userProperties }));
    assert.deepEqual(bodies(await receive({ group: 'D', invisibleMs: 50 })), ['full']);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await send(message('next'));
    const after = await receive({ group: 'D', pollUntilMs: Date.now() + 3_000 });
    assert.deepEqual(bodies(after), ['next'], 'the group goes on consuming');
    const [copy] = await broker().readQueue('%DLQ%D', 0, 0, 10);
    assert.equal(copy?.message.userProperties.size, countMax + 3);
    assert.equal(copy?.message.userProperties.get('DLQ_ORIGIN_TOPIC'), TOPIC);
  });

  it('dead-letters the messages of a group whose name is too long for %DLQ%<group>', async () => {
    const long = 'L'.repeat(127);
    const twin = `${'L'.repeat(126)}M`;
    const topic = dlqTopicOf(long);
    assert.ok(topic.length <= 127 && topic.startsWith('%DLQ%LLL'), topic);
    assert.notEqual(dlqTopicOf(twin), topic, 'a shared prefix does not share the topic');
    assert.equal(dlqTopicOf('D'), '%DLQ%D');
    await broker().createGroup({ name: long, maxDeliveryAttempts: 1, fifo: false }, deadline());
    await send(message('poison'));
    const got = await receive({ group: long, invisibleMs: 50, pollUntilMs: Date.now() + 3_000 });
    assert.equal(got.length, 1);
    // Before, this receive failed with ILLEGAL_TOPIC, and so did every later one.
    assert.deepEqual(await receive({ group: long, pollUntilMs: Date.now() + 500 }), []);
    const dlq = await broker().readQueue(topic, 0, 0, 10);
    assert.equal(Buffer.from(dlq[0]!.message.body).toString(), 'poison');
  });

  it('leaves a message renewed while it is dead-lettered with its consumer', async () => {
    await broker().createGroup({ name: 'R', maxDeliveryAttempts: 1, fifo: true }, deadline());
    await send(message('r1', { messageGroup: 'k' }), message('r2', { messageGroup: 'k' }));
    const [p] = await receive({ group: 'R', invisibleMs: 50, pollUntilMs: Date.now() + 3_000 });
    assert.ok(p !== undefined);
    await new Promise<void>((resolve) => setTimeout(resolve, 100));
    // A receive finds r1 past its last attempt and stores its dead-letter copy; meanwhile its
    // consumer renews its lease.
    const moving = receive({ group: 'R', invisibleMs: 50 });
    const renewed = await broker().pop.changeInvisible(
      'R',
      TOPIC,
      p.receiptHandle,
      30_000,
      deadline(),
    );
    await moving;
    // r1 is still the consumer's: not settled, so r2 of its message group is not handed out.
    assert.deepEqual(await receive({ group: 'R', pollUntilMs: Date.now() + 300 }), []);
    assert.equal(
      broker()
        .pop.progress('R')
        .reduce((n, q) => n + q.inflightCount, 0),
      1,
    );
    await broker().pop.ack('R', TOPIC, renewed, deadline());
    const next = await receive({ group: 'R', pollUntilMs: Date.now() + 3_000 });
    assert.deepEqual(bodies(next), ['r2']);
  });

  it('answers a dead-letter request that raced a redelivery with INVALID_RECEIPT_HANDLE', async () => {
    await broker().createGroup({ name: 'W', maxDeliveryAttempts: 17, fifo: false }, deadline());
    await send(message('w1'));
    const [p] = await receive({ group: 'W', invisibleMs: 50, pollUntilMs: Date.now() + 3_000 });
    assert.ok(p !== undefined);
    await new Promise<void>((resolve) => setTimeout(resolve, 100));
    const forward = broker().pop.forwardToDeadLetter('W', TOPIC, p.receiptHandle, deadline());
    const other = await receive({ group: 'W', invisibleMs: 30_000 });
    // Before, the forward answered OK while another consumer held the message.
    await assert.rejects(forward, (err: unknown) => isRaftmqError(err, 'INVALID_RECEIPT_HANDLE'));
    assert.deepEqual(bodies(other), ['w1']);
  });

  it('stores one dead-letter copy when the leader fails between the copy and the settle', async () => {
    await broker().createGroup({ name: 'D', maxDeliveryAttempts: 1, fifo: false }, deadline());
    await send(message('once'), message('other'));
    // The settle that follows a stored copy fails once, as if the leader had died there: the
    // message stays in flight and the next move finds its copy.
    const deps = (broker().pop as unknown as { deps: PopServiceDeps }).deps;
    const submit = deps.submit.bind(deps);
    let injected = 0;
    deps.submit = (command, deadlineMs) => {
      if (command.op === 'pop.settle' && command.reason === 'dlq' && injected === 0) {
        injected++;
        return Promise.reject(new RaftmqError('NOT_LEADER', 'injected: stopped after the copy'));
      }
      return submit(command, deadlineMs);
    };
    const got = await receive({ group: 'D', invisibleMs: 50, pollUntilMs: Date.now() + 3_000 });
    assert.deepEqual(bodies(got), ['once', 'other']);
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(receive({ group: 'D', pollUntilMs: Date.now() + 500 }), (e) =>
      isRaftmqError(e, 'NOT_LEADER'),
    );
    assert.equal(injected, 1);
    assert.deepEqual(await receive({ group: 'D', pollUntilMs: Date.now() + 500 }), []);
    const dlq = await broker().readQueue('%DLQ%D', 0, 0, 10);
    assert.deepEqual(dlq.map((m) => Buffer.from(m.message.body).toString()).sort(), [
      'once',
      'other',
    ]);
    assert.equal(
      broker()
        .pop.progress('D')
        .reduce((n, p) => n + p.lag + p.inflightCount, 0),
      0,
    );
  });

  it('hands out at most 4 MiB of messages per receive, always at least one', async () => {
    const MIB = 1024 * 1024;
    for (let i = 0; i < 7; i++) await send(message(`big${i}`, { body: Buffer.alloc(MIB, i) }));
    const sizes: number[] = [];
    for (let round = 0; round < 4; round++) {
      const got = await receive({ batchSize: 32, pollUntilMs: Date.now() + 200 });
      sizes.push(got.length);
      for (const p of got) await broker().pop.ack('G', TOPIC, p.receiptHandle, deadline());
    }
    // 1 MiB bodies with their headers: three fit in 4 MiB (the two queues share the budget).
    assert.deepEqual(sizes, [3, 3, 1, 0]);
  });

  it('dead-letters on request only with a current handle', async () => {
    await send(message('fwd'));
    const [first] = await receive({ invisibleMs: 0 });
    const [again] = await receive();
    await assert.rejects(
      broker().pop.forwardToDeadLetter('G', TOPIC, first!.receiptHandle, deadline()),
      (e) => isRaftmqError(e, 'INVALID_RECEIPT_HANDLE'),
      'the first delivery is stale',
    );
    await broker().pop.forwardToDeadLetter('G', TOPIC, again!.receiptHandle, deadline());
    const dlq = await broker().readQueue('%DLQ%G', 0, 0, 10);
    assert.deepEqual(
      dlq.map((m) => Buffer.from(m.message.body).toString()),
      ['fwd'],
    );
    assert.deepEqual(await receive(), []);
  });

  it('holds a FIFO message group back until its earlier message is settled', async () => {
    await broker().createGroup({ name: 'F', maxDeliveryAttempts: 5, fifo: true }, deadline());
    await send(
      message('g1-0', { messageGroup: 'g1' }),
      message('g1-1', { messageGroup: 'g1' }),
      message('g1-2', { messageGroup: 'g1' }),
    );
    const order: string[] = [];
    for (let i = 0; i < 3; i++) {
      const got = await receive({ group: 'F', pollUntilMs: Date.now() + 3_000 });
      assert.equal(got.length, 1, 'one message of the group at a time');
      order.push(bodies(got)[0]!);
      assert.deepEqual(await receive({ group: 'F' }), [], 'the next waits for the ack');
      await broker().pop.ack('F', TOPIC, got[0]!.receiptHandle, deadline());
    }
    assert.deepEqual(order, ['g1-0', 'g1-1', 'g1-2']);
  });

  it("settles an expired message the group's changed filter no longer takes", async () => {
    // A FIFO group changes its subscription (tag X -> Y) while an X message is in flight.
    await broker().createGroup({ name: 'S', maxDeliveryAttempts: 3, fifo: true }, deadline());
    await send(message('x1', { messageGroup: 'A', tag: 'X' }));
    const first = await receive({ group: 'S', filter: (t) => t === 'X', invisibleMs: 50 });
    assert.deepEqual(bodies(first), ['x1']);
    await send(
      message('y1', { messageGroup: 'A', tag: 'Y' }),
      message('y2', { messageGroup: 'B', tag: 'Y' }),
    );
    await new Promise<void>((resolve) => setTimeout(resolve, 100));
    const byY = { group: 'S', filter: (t: string | undefined) => t === 'Y' };
    const got: string[] = [];
    for (let i = 0; i < 5 && got.length < 2; i++) {
      const popped = await receive({ ...byY, pollUntilMs: Date.now() + 500 });
      got.push(...bodies(popped));
      for (const p of popped) await broker().pop.ack('S', TOPIC, p.receiptHandle, deadline());
    }
    // Before, x1 stayed in flight for good: the queue (FIFO) handed out nothing more.
    assert.deepEqual(got.sort(), ['y1', 'y2']);
    const progress = broker().pop.progress('S');
    assert.equal(
      progress.reduce((n, p) => n + p.inflightCount, 0),
      0,
    );
  });

  it('holds a message group back after its consumer group is switched to FIFO', async () => {
    await broker().createGroup({ name: 'T', maxDeliveryAttempts: 5, fifo: false }, deadline());
    await send(message('a1', { messageGroup: 'A' }));
    const first = await receive({ group: 'T', pollUntilMs: Date.now() + 3_000 });
    assert.deepEqual(bodies(first), ['a1']);
    await broker().updateGroup({ name: 'T', maxDeliveryAttempts: 5, fifo: true }, deadline());
    await send(message('a2', { messageGroup: 'A' }));
    // a1 is still in flight: a2 of the same message group waits (before, it went out).
    assert.deepEqual(await receive({ group: 'T', pollUntilMs: Date.now() + 300 }), []);
    await broker().pop.ack('T', TOPIC, first[0]!.receiptHandle, deadline());
    const second = await receive({ group: 'T', pollUntilMs: Date.now() + 3_000 });
    assert.deepEqual(bodies(second), ['a2']);
  });

  it("forgets a deleted group's pop state, also across a restart", async () => {
    await broker().createGroup({ name: 'X', maxDeliveryAttempts: 5, fifo: false }, deadline());
    await send(message('x1'), message('x2'));
    const got = await receive({ group: 'X', pollUntilMs: Date.now() + 3_000 });
    assert.ok(got.length >= 1);
    assert.ok(broker().pop.progress('X').length > 0);
    await broker().deleteGroup('X', deadline());
    // Before, its in-flight records and queue rows stayed on every node for good.
    assert.deepEqual(broker().pop.progress('X'), []);
    await node?.stop();
    node = await startNode(dir, ports);
    assert.deepEqual(broker().pop.progress('X'), []);
    // Made again, the group starts afresh: both messages are handed out.
    await broker().createGroup({ name: 'X', maxDeliveryAttempts: 5, fifo: false }, deadline());
    const again: PoppedMessage[] = [];
    for (let i = 0; i < 5 && again.length < 2; i++) {
      again.push(...(await receive({ group: 'X', pollUntilMs: Date.now() + 1_000 })));
    }
    assert.deepEqual(bodies(again), ['x1', 'x2']);
  });

  it('gives every group every message and settles what a tag filter skips', async () => {
    await send(
      message('t1', { tag: 'A' }),
      message('t2', { tag: 'B' }),
      message('t3', { tag: 'A' }),
    );
    const onlyA = await receive({ group: 'GA', filter: (tag) => tag === 'A' });
    assert.deepEqual(bodies(onlyA), ['t1', 't3']);
    const everything = await receive({ group: 'GB' });
    assert.deepEqual(bodies(everything), ['t1', 't2', 't3']);
    for (const p of onlyA) await broker().pop.ack('GA', TOPIC, p.receiptHandle, deadline());
    assert.equal(
      broker()
        .pop.progress('GA')
        .reduce((n, p) => n + p.lag, 0),
      0,
    );
  });

  it('reads from the store only what a receive hands out, more only past a filter', async () => {
    await broker().createTopic(
      { name: 'one', queueCount: 1, perm: 'READ_WRITE', messageTypes: ['NORMAL'] },
      deadline(),
    );
    const tags = ['B', 'B', 'B', 'A', 'A', 'A', 'A', 'A'];
    await send(...tags.map((tag, i) => message(`m${i}`, { topic: 'one', tag })));
    const b = broker();
    const readQueueRecords = b.readQueueRecords.bind(b);
    let recordsRead = 0;
    b.readQueueRecords = async (topic, queueId, offset, count) => {
      const got = await readQueueRecords(topic, queueId, offset, count);
      recordsRead += got.length;
      return got;
    };
    const two = await receive({ group: 'R', topic: 'one', batchSize: 2 });
    assert.deepEqual(bodies(two), ['m0', 'm1']);
    assert.equal(recordsRead, 2, 'a receive of 2 reads 2 records, not the whole queue');
    const onlyA = await receive({
      group: 'RA',
      topic: 'one',
      batchSize: 2,
      filter: (tag) => tag === 'A',
    });
    assert.deepEqual(bodies(onlyA), ['m3', 'm4'], 'the scan went on past the skipped ones');
    for (const p of onlyA) await b.pop.ack('RA', 'one', p.receiptHandle, deadline());
    assert.equal(
      b.pop.progress('RA').reduce((n, p) => n + p.lag, 0),
      3,
      'skipped and acked messages are settled; m5..m7 are left',
    );
  });

  it('wakes a long poll when a message arrives', async () => {
    await broker().createTopic(
      { name: TOPIC, queueCount: 2, perm: 'READ_WRITE', messageTypes: ['NORMAL'] },
      deadline(),
    );
    const polling = receive({ pollUntilMs: Date.now() + 5_000 });
    await new Promise((r) => setTimeout(r, 100));
    await send(message('late'));
    assert.deepEqual(bodies(await polling), ['late']);
  });

  it('keeps acks and in-flight messages across a restart', async () => {
    await send(message('p'), message('q'));
    const got = await receive({ invisibleMs: 400 });
    const p = got.find((m) => bodies([m])[0] === 'p');
    await broker().pop.ack('G', TOPIC, p!.receiptHandle, deadline());
    await node?.stop();
    node = await startNode(dir, ports);
    const after = await receive({ pollUntilMs: Date.now() + 3_000 });
    assert.deepEqual(bodies(after), ['q']);
    assert.equal(after[0]?.attempt, 2);
  });
});
