/*
 * Routes advertise only the message types the broker serves (src/broker/served-message-types.ts).
 * The pure rules first: which types a backend serves, which of a topic's types are advertised,
 * and which topic configurations admin refuses. Then a real one-node broker (in process, topic
 * auto-creation on) registered with an in-process NameServer: auto-created and dead-letter topics
 * accept NORMAL and FIFO; a topic whose stored configuration lists every type (as topics created
 * before 2026-12-04 do; put straight into the Raft log here, since admin now refuses it) keeps
 * its configuration but is advertised with NORMAL and FIFO only, in the broker's own route and
 * in the NameServer's; the NameServer's route of a topic no group has yet lists NORMAL and FIFO;
 * admin refuses to create a topic with DELAY or to add TRANSACTION to one (UNSUPPORTED), and
 * still updates the old topic, whose types it keeps.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerCommand } from '../../src/broker/broker-command';
import type { BrokerNode } from '../../src/broker/broker-node';
import type { MessageType, TopicConfig } from '../../src/broker/broker-types';
import {
  advertisedMessageTypes,
  checkServedTopicTypes,
  servedMessageTypes,
} from '../../src/broker/served-message-types';
import { isRaftmqError } from '../../src/common/errors';
import type { NameServer } from '../../src/namesrv/namesrv-server';
import { startNameServer, waitUntil } from '../namesrv/namesrv-harness';
import { produceMessage, startSingleNode } from './single-node';

const EVERY_TYPE: readonly MessageType[] = ['NORMAL', 'FIFO', 'DELAY', 'TRANSACTION'];
const SERVED: readonly MessageType[] = ['NORMAL', 'FIFO'];

function topic(name: string, messageTypes: readonly MessageType[]): TopicConfig {
  return { name, queueCount: 2, perm: 'READ_WRITE', messageTypes };
}

function unsupported(err: unknown): boolean {
  return isRaftmqError(err, 'UNSUPPORTED') && /not supported by this broker/.test(err.message);
}

describe('served message types', () => {
  it('serves DELAY and TRANSACTION only when the backend says so', () => {
    assert.deepEqual(servedMessageTypes({}), SERVED);
    assert.deepEqual(servedMessageTypes({ supportsDelayMessages: true }), [
      'NORMAL',
      'FIFO',
      'DELAY',
    ]);
    assert.deepEqual(
      servedMessageTypes({ supportsDelayMessages: true, supportsTransactionMessages: true }),
      EVERY_TYPE,
    );
  });

  it("advertises the topic's types that are served, in the topic's order", () => {
    assert.deepEqual(advertisedMessageTypes(EVERY_TYPE, SERVED), SERVED);
    assert.deepEqual(advertisedMessageTypes(['FIFO', 'DELAY'], SERVED), ['FIFO']);
    assert.deepEqual(advertisedMessageTypes(['DELAY'], SERVED), []);
  });

  it('refuses a topic that would gain a type not served, not one that already has it', () => {
    assert.throws(
      () => checkServedTopicTypes(topic('t', ['NORMAL', 'DELAY']), undefined, SERVED),
      (err: unknown) => unsupported(err) && /DELAY/.test((err as Error).message),
    );
    checkServedTopicTypes(topic('t', ['FIFO']), undefined, SERVED);
    const old = topic('t', EVERY_TYPE);
    checkServedTopicTypes({ ...old, queueCount: 4 }, old, SERVED);
    assert.throws(
      () =>
        checkServedTopicTypes(topic('t', ['NORMAL', 'TRANSACTION']), topic('t', SERVED), SERVED),
      unsupported,
    );
  });

  describe('on a broker registered with a NameServer', function () {
    this.timeout(60_000);
    let dir: string;
    let namesrv: NameServer | undefined;
    let node: BrokerNode | undefined;
    const deadline = (): number => Date.now() + 5_000;

    const broker = () => {
      assert.ok(node !== undefined);
      return node.broker;
    };
    const registry = () => {
      assert.ok(namesrv !== undefined);
      return namesrv.registry;
    };
    /** The NameServer's types of each queue of `name`, once it has the topic. */
    async function namesrvTypes(name: string): Promise<string[][]> {
      await waitUntil(() => registry().route(name) !== undefined, `the NameServer's ${name}`);
      return (registry().route(name)?.groups ?? []).flatMap((g) =>
        g.queues.map((q) => [...q.messageTypes]),
      );
    }
    /** The broker's own route: the types of each queue. */
    function localTypes(name: string): string[][] {
      const route = broker().localRoute(name);
      assert.ok(route !== undefined, `no route of ${name}`);
      return route.groups.flatMap((g) => g.queues.map((q) => [...q.messageTypes]));
    }

    beforeEach(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-types-'));
      namesrv = await startNameServer();
      node = await startSingleNode(dir, {
        autoCreateTopics: true,
        defaultQueueCount: 2,
        namesrvAddrs: [`127.0.0.1:${namesrv.port}`],
      });
    });

    afterEach(async () => {
      await node?.stop();
      node = undefined;
      await namesrv?.stop();
      namesrv = undefined;
      await fs.rm(dir, { recursive: true, force: true });
    });

    it('creates auto-created and dead-letter topics with NORMAL and FIFO', async () => {
      const b = broker();
      await waitUntil(
        () => registry().autoCreateRoute('Fresh') !== undefined,
        'the NameServer to know the group auto-creates topics',
      );
      const planned = registry().autoCreateRoute('Fresh');
      assert.deepEqual(
        planned?.groups.flatMap((g) => g.queues.map((q) => [...q.messageTypes])),
        [SERVED, SERVED],
      );
      await b.send([produceMessage('Fresh', 'one')], deadline());
      assert.deepEqual(b.getTopic('Fresh')?.messageTypes, SERVED);
      assert.deepEqual(localTypes('Fresh'), [SERVED, SERVED]);
      assert.deepEqual(await namesrvTypes('Fresh'), [SERVED, SERVED]);

      const [popped] = await b.pop.receive(
        {
          group: 'G',
          topic: 'Fresh',
          filter: () => true,
          batchSize: 1,
          invisibleMs: 60_000,
          pollUntilMs: Date.now() + 3_000,
        },
        deadline(),
      );
      assert.ok(popped !== undefined, 'nothing received');
      await b.pop.forwardToDeadLetter('G', 'Fresh', popped.receiptHandle, deadline());
      assert.deepEqual(b.getTopic('%DLQ%G')?.messageTypes, SERVED);
    });

    it('advertises an old topic of every type with NORMAL and FIFO only', async () => {
      const b = broker();
      // Admin refuses such a topic now; a data directory from before holds it in its log.
      const old = topic('Old', EVERY_TYPE);
      const command: BrokerCommand = { op: 'topic.put', topic: old, mode: 'create' };
      await (
        b as unknown as { runCommand(c: BrokerCommand, deadlineMs: number): Promise<void> }
      ).runCommand(command, deadline());
      assert.deepEqual(b.getTopic('Old')?.messageTypes, EVERY_TYPE, 'configuration kept');
      assert.deepEqual(localTypes('Old'), [SERVED, SERVED]);
      assert.deepEqual(await namesrvTypes('Old'), [SERVED, SERVED]);
      const route = await b.route('Old');
      assert.deepEqual(
        route?.groups.flatMap((g) => g.queues.map((q) => [...q.messageTypes])),
        [SERVED, SERVED],
      );
      assert.deepEqual(b.advertisedMessageTypes(old), SERVED);

      // Admin still updates it (its old types stay, still not advertised) but adds none.
      const updated = await b.updateTopic({ ...old, queueCount: 3 }, deadline());
      assert.equal(updated.queueCount, 3);
      assert.deepEqual(updated.messageTypes, EVERY_TYPE);
      assert.deepEqual(localTypes('Old'), [SERVED, SERVED, SERVED]);
    });

    it('refuses admin topics with types the broker does not serve', async () => {
      const b = broker();
      await assert.rejects(b.createTopic(topic('Delayed', ['DELAY']), deadline()), unsupported);
      assert.equal(b.getTopic('Delayed'), undefined);
      await b.createTopic(topic('Plain', ['NORMAL']), deadline());
      await assert.rejects(
        b.updateTopic(topic('Plain', ['NORMAL', 'TRANSACTION']), deadline()),
        unsupported,
      );
      assert.deepEqual(b.getTopic('Plain')?.messageTypes, ['NORMAL']);
    });
  });
});
