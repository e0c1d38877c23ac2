/*
 * Broker.send on a real one-node broker (in process, real store on a temp dir): a send of many
 * messages over several topics resolves each topic once (an unknown one is auto-created once,
 * not once per message), answers one receipt per message in order (message id, topic, the
 * server's round-robin queue, offsets that continue each queue, the entry's index), and stores
 * every field of each message with the broker's queue, store time and store host. A send that
 * names a read-only topic or a message type its topic refuses is refused whole: nothing of it
 * is stored. A send whose answer was lost with a leader is settled from the id index: its
 * receipts when stored, 'none' when not, undefined when mixed or no newer term applied.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { isRaftmqError } from '../../src/common/errors';
import { BrokerNode } from '../../src/broker/broker-node';
import type { ProduceMessage } from '../../src/broker/broker-types';
import { produceMessage, startSingleNode } from './single-node';

function message(n: number, topic: string, extra: Partial<ProduceMessage> = {}): ProduceMessage {
  return produceMessage(topic, `body-${n}`, {
    tag: n % 2 === 0 ? `tag${n % 3}` : undefined,
    keys: [`k${n}`],
    userProperties: new Map([['n', String(n)]]),
    messageId: `ID-${n}`,
    bornTimestampMs: 1_700_000_000_000 + n,
    messageType: 'NORMAL',
    ...extra,
  });
}

describe('Broker.send', function () {
  this.timeout(60_000);
  let dir: string;
  let node: BrokerNode | undefined;
  const deadline = (): number => Date.now() + 5_000;
  const broker = () => {
    assert.ok(node !== undefined);
    return node.broker;
  };

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-send-'));
    node = await startSingleNode(dir, { autoCreateTopics: true, defaultQueueCount: 3 });
  });

  afterEach(async () => {
    await node?.stop();
    node = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('resolves each topic once and answers a receipt per message, in order', async () => {
    const b = broker();
    await b.createTopic(
      { name: 'known', queueCount: 2, perm: 'READ_WRITE', messageTypes: ['NORMAL'] },
      deadline(),
    );
    let ensured = 0;
    const ensureTopic = b.ensureTopic.bind(b);
    b.ensureTopic = (name, deadlineMs) => {
      ensured++;
      return ensureTopic(name, deadlineMs);
    };
    const messages = Array.from({ length: 60 }, (_, n) =>
      message(n, n % 3 === 0 ? 'known' : 'fresh'),
    );
    const before = Date.now();
    const receipts = await b.send(messages, deadline());
    assert.equal(ensured, 1, 'the unknown topic is created once, the known one not at all');
    assert.equal(receipts.length, messages.length);
    const next = new Map<string, number>();
    for (const [i, r] of receipts.entries()) {
      const m = messages[i] as ProduceMessage;
      assert.equal(r.messageId, m.messageId);
      assert.equal(r.topic, m.topic);
      assert.equal(r.index, receipts[0]?.index, 'one send, one entry');
      const key = `${r.topic}/${r.queueId}`;
      assert.equal(r.queueOffset, next.get(key) ?? 0, `offsets continue ${key}`);
      next.set(key, r.queueOffset + 1);
    }
    // Round-robin over each topic's queues, per message.
    assert.deepEqual(
      new Set(receipts.filter((r) => r.topic === 'known').map((r) => r.queueId)),
      new Set([0, 1]),
    );
    assert.deepEqual(
      new Set(receipts.filter((r) => r.topic === 'fresh').map((r) => r.queueId)),
      new Set([0, 1, 2]),
    );
    for (const [i, r] of receipts.entries()) {
      const [stored] = await b.readQueue(r.topic, r.queueId, r.queueOffset, 1);
      const m = messages[i] as ProduceMessage;
      assert.ok(stored !== undefined);
      assert.deepEqual(
        { ...stored.message, body: Buffer.from(stored.message.body) },
        {
          ...m,
          body: Buffer.from(m.body),
          queueId: r.queueId,
          storeTimestampMs: stored.message.storeTimestampMs,
          storeHost: b.clientEndpoint,
          deliveryTimestampMs: undefined,
          messageGroup: undefined,
          traceContext: undefined,
        },
      );
      assert.ok(stored.message.storeTimestampMs >= before - 1000);
    }
    // The same send again: the topic exists now.
    await b.send(messages.slice(0, 5), deadline());
    assert.equal(ensured, 1);
  });

  it('settles an in-doubt send from the id index once a newer term has applied', async () => {
    const b = broker();
    const messages = Array.from({ length: 40 }, (_, n) => message(n, 'doubt'));
    const receipts = await b.send(messages, deadline());
    const term = b.roleView().term;
    const ref = (m: ProduceMessage): ProduceMessage => m;
    // A send of the previous term: this node has applied its own term since.
    const found = await b.findStoredSend(messages.slice(5, 9).map(ref), term - 1, deadline());
    assert.ok(found !== undefined && found !== 'none');
    assert.deepEqual(
      found.map((r) => [r.messageId, r.topic, r.queueId, r.queueOffset]),
      receipts.slice(5, 9).map((r) => [r.messageId, r.topic, r.queueId, r.queueOffset]),
    );
    const unknown = [message(900, 'doubt'), message(901, 'doubt')].map(ref);
    assert.equal(await b.findStoredSend(unknown, term - 1, deadline()), 'none');
    const mixed = [ref(messages[0] as ProduceMessage), ...unknown];
    assert.equal(await b.findStoredSend(mixed, term - 1, deadline()), undefined, 'cannot tell');
    const second = messages[1] as ProduceMessage;
    const otherTopic = [{ ...second, topic: 'other' }];
    assert.equal(await b.findStoredSend(otherTopic, term - 1, deadline()), 'none');
    // Another message under a stored message's id (ids are the clients' own) is not stored.
    const otherBody = [{ ...second, body: Buffer.from('another body') }];
    assert.equal(await b.findStoredSend(otherBody, term - 1, deadline()), 'none');
    const otherBorn = [{ ...second, bornTimestampMs: second.bornTimestampMs + 1 }];
    assert.equal(await b.findStoredSend(otherBorn, term - 1, deadline()), 'none');
    // Two messages of one send under one id: one stored copy cannot answer for both.
    assert.equal(await b.findStoredSend([second, second], term - 1, deadline()), undefined);
    // No newer term than the one the send went out in: it waits, then cannot tell.
    const startedMs = Date.now();
    assert.equal(await b.findStoredSend(messages.map(ref), term, Date.now() + 300), undefined);
    assert.ok(Date.now() - startedMs >= 250);
  });

  it('refuses a whole send naming a read-only topic or a refused message type', async () => {
    const b = broker();
    await b.createTopic(
      { name: 'ro', queueCount: 1, perm: 'READ', messageTypes: ['NORMAL'] },
      deadline(),
    );
    await b.createTopic(
      { name: 'plain', queueCount: 1, perm: 'READ_WRITE', messageTypes: ['NORMAL'] },
      deadline(),
    );
    await assert.rejects(
      b.send([message(1, 'plain'), message(2, 'ro')], deadline()),
      (err: unknown) => isRaftmqError(err, 'PERMISSION_DENIED'),
    );
    const fifo = message(3, 'plain', { messageType: 'FIFO', messageGroup: 'g' });
    await assert.rejects(b.send([message(4, 'plain'), fifo], deadline()), (err: unknown) =>
      isRaftmqError(err, 'MESSAGE_TYPE_MISMATCH'),
    );
    assert.deepEqual(b.queueRange('plain', 0), { min: 0, max: 0 }, 'nothing stored');
    assert.deepEqual(b.queueRange('ro', 0), { min: 0, max: 0 });
    // A refused send creates no topic for its other messages, whichever comes first.
    await assert.rejects(b.send([message(5, 'fresh1'), fifo], deadline()), (err: unknown) =>
      isRaftmqError(err, 'MESSAGE_TYPE_MISMATCH'),
    );
    await assert.rejects(
      b.send([message(6, 'fresh2'), message(7, 'ro')], deadline()),
      (err: unknown) => isRaftmqError(err, 'PERMISSION_DENIED'),
    );
    assert.equal(b.getTopic('fresh1'), undefined);
    assert.equal(b.getTopic('fresh2'), undefined);
    // A good send still creates its topics.
    await b.send([message(8, 'fresh1'), message(9, 'plain')], deadline());
    assert.equal(b.getTopic('fresh1')?.perm, 'READ_WRITE');
  });

  it("refuses a consumer offset past a queue's end, and takes one at it", async () => {
    const b = broker();
    await b.createTopic(
      { name: 'offsets', queueCount: 1, perm: 'READ_WRITE', messageTypes: ['NORMAL'] },
      deadline(),
    );
    await b.send([message(1, 'offsets'), message(2, 'offsets')], deadline());
    await assert.rejects(b.updateOffset('G1', 'offsets', 0, 3, deadline()), (err: unknown) =>
      isRaftmqError(err, 'OUT_OF_RANGE'),
    );
    await assert.rejects(b.updateOffset('G1', 'offsets', 0, 2 ** 50, deadline()), /past the end/);
    assert.equal(b.getOffset('G1', 'offsets', 0), undefined);
    await b.updateOffset('G1', 'offsets', 0, 2, deadline());
    assert.equal(b.getOffset('G1', 'offsets', 0), 2);
  });
});
