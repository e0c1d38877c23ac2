/*
 * Pop consumption across a leader failover, end to end: a 3-node group (LocalCluster), 200
 * messages, and a consumer receiving and acknowledging steadily through the NameServer: the
 * official SimpleConsumer (ReceiveMessage), and raftmq's SDK SimpleConsumer (ReceiveStored).
 * After 60 acknowledgements the consumer keeps one received batch unacknowledged and the leader
 * is killed with SIGKILL; the consumer goes on acknowledging everything it gets.
 *
 * Checked afterwards:
 * - no message is handed out after an acknowledgement of it succeeded (receive and ack state
 *   go through the Raft log, so the new leader knows every settled message);
 * - every message held unacknowledged at the kill is handed out again, with a higher attempt;
 * - every message ends settled: acknowledged, or (when an ack's answer was lost with the old
 *   leader) settled by that ack, which the group's progress shows as zero lag.
 * The killed node is restarted before the consumer shuts down (the official client's shutdown
 * needs every endpoint of its routes).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SimpleConsumer, type MessageView } from 'rocketmq-client-nodejs';
import { LocalCluster } from '../../src/cli/local-cluster';
import { Producer } from '../../src/client/producer';
import { SimpleConsumer as SdkSimpleConsumer } from '../../src/client/simple-consumer';
import { createTopic, printLogTails } from './rmq-raw-client';

const TOPIC = 'FailoverConsume';
const GROUP = 'FailoverGroup';
const MESSAGE_COUNT = 200;
const ACKS_BEFORE_KILL = 60;
const INVISIBLE_MS = 2_000;
const RUN_MS_MAX = 60_000;
const LEADER_TIMEOUT_MS = 15_000;

const quietLogger = {
  info: (): void => undefined,
  warn: (): void => undefined,
  error: (): void => undefined,
  debug: (): void => undefined,
  close: (): void => undefined,
};

/** A received message as the test uses it, whichever consumer received it. */
interface Consumed {
  readonly body: string;
  readonly attempt: number;
  /** Resolves when the broker acknowledged it; rejects otherwise. */
  ack(): Promise<void>;
}

/** The consumer under test: receives up to 16 messages (invisible for INVISIBLE_MS). */
interface FailoverConsumer {
  receive(): Promise<Consumed[]>;
  close(): Promise<void>;
}

async function officialConsumer(cluster: LocalCluster): Promise<FailoverConsumer> {
  const consumer = new SimpleConsumer({
    endpoints: cluster.namesrvEndpoint,
    namespace: '',
    consumerGroup: GROUP,
    subscriptions: new Map([[TOPIC, '*']]),
    awaitDuration: 1_000,
    logger: quietLogger,
  });
  await consumer.startup();
  return {
    receive: async () =>
      (await consumer.receive(16, INVISIBLE_MS)).map((m: MessageView) => ({
        body: m.body.toString(),
        attempt: m.deliveryAttempt ?? 0,
        ack: () => consumer.ack(m),
      })),
    close: () => consumer.shutdown(),
  };
}

async function sdkConsumer(cluster: LocalCluster): Promise<FailoverConsumer> {
  const consumer = await SdkSimpleConsumer.create({
    endpoint: cluster.namesrvEndpoint,
    consumerGroup: GROUP,
    awaitMs: 1_000,
  });
  return {
    receive: async () =>
      (await consumer.receive(TOPIC, { batchSize: 16, invisibleMs: INVISIBLE_MS })).map((m) => ({
        body: m.body.toString(),
        attempt: m.deliveryAttempt,
        ack: async () => {
          const result = await consumer.ack([m]);
          if (result.acked !== 1) throw result.failures[0]?.error ?? new Error('not acked');
        },
      })),
    close: () => {
      consumer.close();
      return Promise.resolve();
    },
  };
}

interface Delivery {
  readonly body: string;
  readonly attempt: number;
  /** When the receive call that returned it started. */
  readonly receiveStartMs: number;
}

describe('pop consumption across a leader failover', function () {
  this.timeout(120_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  let consumer: FailoverConsumer | undefined;

  afterEach(async function () {
    if (this.currentTest?.state === 'failed') printLogTails(cluster);
    await consumer?.close().catch(() => undefined);
    await cluster?.stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
    consumer = undefined;
    cluster = undefined;
  });

  const cases: [string, (c: LocalCluster) => Promise<FailoverConsumer>][] = [
    ['the official SimpleConsumer', officialConsumer],
    ["raftmq's SDK SimpleConsumer", sdkConsumer],
  ];
  for (const [name, makeConsumer] of cases) {
    it(`${name}: never redelivers an acknowledged message, redelivers every unacknowledged one`, async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-failover-consume-'));
      cluster = await LocalCluster.start({ dir, autoCreateTopics: false });
      const running = cluster;
      const first = await running.waitForLeader(LEADER_TIMEOUT_MS);
      await createTopic(running, { name: TOPIC, queueCount: 4 });
      await (
        await running.admin(first.nodeId)
      ).createGroup({
        name: GROUP,
        maxDeliveryAttempts: 17,
        fifo: false,
      });
      const producer = await Producer.create({ endpoint: running.namesrvEndpoint });
      try {
        for (let i = 0; i < MESSAGE_COUNT; i += 20) {
          const batch = Array.from({ length: 20 }, (_, j) => ({ body: Buffer.from(`m-${i + j}`) }));
          await producer.send(TOPIC, batch);
        }
      } finally {
        producer.close();
      }
      consumer = await makeConsumer(running);
      const c = consumer;

      const deliveries: Delivery[] = [];
      const ackedAtMs = new Map<string, number>();
      const failedAcks = new Set<string>();
      const held = new Set<string>();
      let killedAtMs = 0;
      const startMs = Date.now();
      let idleSinceMs = Date.now();
      while (Date.now() - startMs < RUN_MS_MAX) {
        const receiveStartMs = Date.now();
        let got: Consumed[] = [];
        try {
          got = await c.receive();
        } catch {
          // An endpoint of the dead leader, or the election: try again.
        }
        if (got.length > 0) idleSinceMs = Date.now();
        for (const m of got) deliveries.push({ body: m.body, attempt: m.attempt, receiveStartMs });
        if (killedAtMs === 0 && ackedAtMs.size >= ACKS_BEFORE_KILL && got.length > 0) {
          for (const m of got) held.add(m.body);
          const leader = await running.waitForLeader(LEADER_TIMEOUT_MS);
          await running.kill(leader.nodeId);
          killedAtMs = Date.now();
          continue;
        }
        await Promise.all(
          got.map((m) =>
            m.ack().then(
              () => {
                if (!ackedAtMs.has(m.body)) ackedAtMs.set(m.body, Date.now());
              },
              () => failedAcks.add(m.body),
            ),
          ),
        );
        if (ackedAtMs.size === MESSAGE_COUNT) break;
        if (killedAtMs > 0 && Date.now() - idleSinceMs > 3 * INVISIBLE_MS) break;
      }

      assert.ok(killedAtMs > 0, 'the leader was killed');
      for (const d of deliveries) {
        const ackedMs = ackedAtMs.get(d.body);
        assert.ok(
          ackedMs === undefined || ackedMs > d.receiveStartMs,
          `${d.body} was handed out again (attempt ${d.attempt}) after its ack succeeded`,
        );
      }
      for (const body of held) {
        const again = deliveries.filter((d) => d.body === body && d.receiveStartMs >= killedAtMs);
        assert.ok(again.length > 0, `${body}, unacknowledged at the kill, came back`);
        assert.ok(
          again.every((d) => d.attempt >= 2),
          `${body} came back with a higher attempt`,
        );
      }
      const unacked = [];
      for (let i = 0; i < MESSAGE_COUNT; i++) {
        if (!ackedAtMs.has(`m-${i}`)) unacked.push(`m-${i}`);
      }
      for (const body of unacked) {
        assert.ok(failedAcks.has(body), `${body} was never acknowledged nor settled by an ack`);
      }

      // The official client's shutdown needs every endpoint of its routes.
      await running.restart(killedNode(running));
      const leader = await running.waitForLeader(LEADER_TIMEOUT_MS);
      const progress = await (await running.admin(leader.nodeId)).consumerProgress(GROUP);
      assert.equal(progress.length, 4);
      assert.equal(
        progress.reduce((n, q) => n + q.lag, 0),
        0,
        'every message settled',
      );
      assert.equal(
        progress.reduce((n, q) => n + q.inflightCount, 0),
        0,
      );
    });
  }
});

/** The node that is not running. */
function killedNode(cluster: LocalCluster): string {
  const down = cluster.nodeIds.filter((id) => !cluster.running().includes(id));
  assert.equal(down.length, 1);
  return down[0] as string;
}
