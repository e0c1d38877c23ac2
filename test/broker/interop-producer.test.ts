/*
 * The official RocketMQ 5 Node client (rocketmq-client-nodejs 1.0.8, unchanged) against a real
 * 3-node group: LocalCluster starts a NameServer and three broker processes on loopback, topic
 * auto-creation off, topics created through the admin service. The Producer starts up (within
 * 3 s) with the NameServer and with a broker (leader or follower) as access point, and learns
 * the maximum body size from the server's Settings; it sends normal messages (tag, keys,
 * properties), FIFO messages (message groups) and a body of the maximum size (4 MiB - 64 KiB),
 * and gets 34-hex message ids and queue offsets back. Each message is then
 * read back with raw PullMessage on every node (so it is committed and applied everywhere) and
 * compared field by field; FIFO messages of one group must share a queue in send order. Errors
 * the client surfaces: NotFoundException (40402) for a missing topic, and its own refusal of a
 * body over the max_body_size the server's Settings announced; the same body sent raw gets
 * MESSAGE_BODY_TOO_LARGE (41301) and nothing is stored. Last, a normal send made right after
 * the leader is killed succeeds within the client's 3 s request timeout (contract §10.13); the
 * killed node is restarted before the producer shuts down. The client logs into a quiet
 * logger, printed when a test fails.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  NotFoundException,
  Producer,
  type ProducerOptions,
  type SendReceipt,
} from 'rocketmq-client-nodejs';
import { LocalCluster, type LocalLeader } from '../../src/cli/local-cluster';
import { waitUntil } from '../../src/cli/raft-node-client';
import {
  CODE,
  createTopic,
  printLogTails,
  type PulledMessage,
  RmqRawClient,
  waitForNameServerRoute,
  QuietLogger as SharedQuietLogger,
  wireMessage,
} from './rmq-raw-client';

const NORMAL_TOPIC = 'InteropNormal';
const FIFO_TOPIC = 'InteropFifo';
const LARGE_TOPIC = 'InteropLarge';
const REFUSED_TOPIC = 'InteropRefused';
const QUEUE_COUNT = 4;
/** The broker's default maximum body, announced in Settings. */
const MAX_BODY_BYTES = 4 * 1024 * 1024 - 64 * 1024;
const LEADER_TIMEOUT_MS = 15_000;
const READ_TIMEOUT_MS = 10_000;
const MESSAGE_ID = /^[0-9A-F]{34}$/;
/**
 * A start-up waits for the Settings reply, which the client may miss when it comes before its
 * wait begins; the server sends it again about 1 s later (contract §10.1). Without that resend
 * start-up would take 5 s or hang.
 */
const STARTUP_MS_MAX = 3_000;

const SETTINGS_RECEIVED = 'Receive settings from remote, endpoints=%s, clientId=%s';

/** The shared quiet logger, also noting when Settings arrived from each endpoint. */
class QuietLogger extends SharedQuietLogger {
  /** When the client last received Settings on its Telemetry stream to each endpoint. */
  readonly settingsAtMs = new Map<string, number>();
  override info(...args: unknown[]): void {
    if (args[0] === SETTINGS_RECEIVED) this.settingsAtMs.set(String(args[1]), Date.now());
    super.info(...args);
  }
}

describe('official rocketmq-client-nodejs Producer against a 3-node group', function () {
  this.timeout(60_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  let leader: LocalLeader;
  let namesrv: RmqRawClient | undefined;
  const clients = new Map<string, RmqRawClient>();
  const producers: Producer[] = [];
  const logger = new QuietLogger();

  function running(): LocalCluster {
    assert.ok(cluster !== undefined, 'the cluster did not start');
    return cluster;
  }

  /** Starts an official Producer on `endpoints` (shut down after the test). */
  async function startProducer(
    endpoints: string,
    options: Partial<ProducerOptions> = {},
  ): Promise<Producer> {
    const producer = new Producer({ endpoints, namespace: '', logger, ...options });
    producers.push(producer);
    await producer.startup();
    return producer;
  }

  /**
   * Waits until every node serves every message of `receipts` from `topic`; returns each
   * node's copies by message id. Any node's copy must match the receipt's offset.
   */
  async function readEverywhere(
    topic: string,
    receipts: readonly SendReceipt[],
  ): Promise<Map<string, PulledMessage>[]> {
    const ids = receipts.map((r) => r.messageId);
    return Promise.all(
      running().nodeIds.map((nodeId) =>
        waitUntil(`${ids.length} messages of ${topic} on ${nodeId}`, READ_TIMEOUT_MS, async () => {
          const raw = clients.get(nodeId);
          assert.ok(raw !== undefined);
          const stored = await raw.readTopic(topic, QUEUE_COUNT);
          const byId = new Map(stored.map((m) => [m.messageId, m]));
          if (!ids.every((id) => byId.has(id))) return undefined;
          for (const r of receipts) assert.equal(byId.get(r.messageId)?.queueOffset, r.offset);
          return byId;
        }),
      ),
    );
  }

  /**
   * Restarts the nodes a test killed, and waits until the client has a Telemetry stream to each
   * again: it re-opens a lost stream every second, forever, and one still pending when it shuts
   * down would keep re-opening (keeping this process alive after the cluster stops).
   */
  async function restoreCluster(): Promise<void> {
    const c = running();
    for (const id of c.nodeIds) {
      if (c.running().includes(id)) continue;
      const sinceMs = Date.now();
      await c.restart(id);
      if (producers.length === 0) continue;
      const endpoint = c.broker(id).clientEndpoint;
      await waitUntil(`the client's Settings from ${id} again`, 20_000, () =>
        Promise.resolve((logger.settingsAtMs.get(endpoint) ?? 0) >= sinceMs ? true : undefined),
      );
    }
  }

  before(async function () {
    this.timeout(45_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-interop-'));
    const c = await LocalCluster.start({ dir, autoCreateTopics: false });
    cluster = c;
    leader = await c.waitForLeader(LEADER_TIMEOUT_MS);
    const types = ['NORMAL', 'FIFO'] as const;
    for (const name of [NORMAL_TOPIC, FIFO_TOPIC, LARGE_TOPIC, REFUSED_TOPIC]) {
      await createTopic(c, { name, queueCount: QUEUE_COUNT, messageTypes: [...types] });
    }
    leader = await c.waitForLeader(LEADER_TIMEOUT_MS);
    namesrv = await RmqRawClient.connect(c.namesrvEndpoint);
    for (const topic of [NORMAL_TOPIC, FIFO_TOPIC, LARGE_TOPIC, REFUSED_TOPIC]) {
      await waitForNameServerRoute(namesrv, topic);
    }
    for (const b of c.brokers) clients.set(b.id, await RmqRawClient.connect(b.clientEndpoint));
  });

  afterEach(async function () {
    this.timeout(45_000);
    // A node a test killed comes back first: the client's shutdown() tells every endpoint of
    // its routes and rejects (leaving its streams open) if one is unreachable (contract §3.6).
    await restoreCluster();
    for (const producer of producers.splice(0)) {
      // Its channel to a restarted node may still be in reconnect backoff: shutdown() may be
      // called again until every endpoint has answered.
      await waitUntil('the producer to shut down', 20_000, () =>
        producer.shutdown().then(() => true),
      );
    }
    if (this.currentTest?.state === 'failed') {
      console.error(`---- client log ----\n${logger.lines.slice(-40).join('\n')}`);
      printLogTails(cluster);
    }
    logger.lines.length = 0;
  });

  after(async () => {
    namesrv?.close();
    for (const c of clients.values()) c.close();
    await cluster?.stopAll();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('starts up with the NameServer as access point', async () => {
    const startMs = Date.now();
    const producer = await startProducer(running().namesrvEndpoint, {
      topics: [NORMAL_TOPIC, FIFO_TOPIC, LARGE_TOPIC],
    });
    assert.ok(producer.isRunning());
    assert.ok(Date.now() - startMs < STARTUP_MS_MAX, `startup took ${Date.now() - startMs} ms`);
    assert.equal(producer.publishingSettings.maxBodySizeBytes, MAX_BODY_BYTES);
  });

  it('starts up with a broker, leader or follower, as access point', async () => {
    const follower = running().brokers.find((b) => b.id !== leader.nodeId);
    assert.ok(follower !== undefined);
    for (const endpoints of [leader.clientEndpoint, follower.clientEndpoint]) {
      const startMs = Date.now();
      const producer = await startProducer(endpoints, { topics: [NORMAL_TOPIC, FIFO_TOPIC] });
      assert.ok(producer.isRunning(), endpoints);
      const tookMs = Date.now() - startMs;
      assert.ok(tookMs < STARTUP_MS_MAX, `startup on ${endpoints} took ${tookMs} ms`);
      assert.equal(producer.publishingSettings.maxBodySizeBytes, MAX_BODY_BYTES);
    }
  });

  it('sends normal messages with tag, keys and properties, stored on every node', async () => {
    const producer = await startProducer(running().namesrvEndpoint, { topics: [NORMAL_TOPIC] });
    const sent = Array.from({ length: 8 }, (_, i) => ({
      topic: NORMAL_TOPIC,
      tag: `Tag${i % 2}`,
      keys: [`key-${i}`, `order-${i}`],
      properties: new Map([
        ['p1', `v${i}`],
        ['unicode', 'żółw ✓'],
      ]),
      body: Buffer.from(`normal message ${i} ${randomBytes(8).toString('hex')}`),
    }));
    const receipts: SendReceipt[] = [];
    for (const m of sent) receipts.push(await producer.send(m));
    for (const r of receipts) {
      assert.match(r.messageId, MESSAGE_ID);
      assert.ok(Number.isSafeInteger(r.offset) && r.offset >= 0, `offset ${r.offset}`);
    }
    assert.equal(new Set(receipts.map((r) => r.messageId)).size, sent.length);
    const views = await readEverywhere(NORMAL_TOPIC, receipts);
    for (const byId of views) {
      sent.forEach((m, i) => {
        const stored = byId.get(receipts[i]?.messageId ?? '');
        assert.ok(stored !== undefined);
        assert.deepEqual(stored.body, m.body);
        assert.equal(stored.tag, m.tag);
        assert.deepEqual(stored.keys, m.keys);
        assert.deepEqual(stored.userProperties, Object.fromEntries(m.properties));
        assert.equal(stored.messageType, 'NORMAL');
        assert.equal(stored.messageGroup, undefined);
        assert.equal(stored.topic, NORMAL_TOPIC);
      });
    }
    // Every node holds each message in the same queue.
    for (const r of receipts) {
      const queues = views.map((v) => v.get(r.messageId)?.queueId);
      assert.ok(
        queues.every((q) => q === queues[0]),
        `queues of ${r.messageId}: ${queues.join()}`,
      );
    }
  });

  it('sends FIFO messages of a group to one queue, in send order, on every node', async () => {
    const producer = await startProducer(leader.clientEndpoint, { topics: [FIFO_TOPIC] });
    const groups = ['order-17', 'order-42', 'order-99'];
    const sent: { group: string; body: Buffer; receipt: SendReceipt }[] = [];
    for (let i = 0; i < 12; i++) {
      const group = groups[i % groups.length] ?? '';
      const body = Buffer.from(`fifo ${group} #${i}`);
      const receipt = await producer.send({ topic: FIFO_TOPIC, messageGroup: group, body });
      assert.match(receipt.messageId, MESSAGE_ID);
      sent.push({ group, body, receipt });
    }
    const views = await readEverywhere(
      FIFO_TOPIC,
      sent.map((s) => s.receipt),
    );
    for (const byId of views) {
      for (const group of groups) {
        const stored = sent
          .filter((s) => s.group === group)
          .map((s) => {
            const m = byId.get(s.receipt.messageId);
            assert.ok(m !== undefined);
            assert.deepEqual(m.body, s.body);
            assert.equal(m.messageGroup, group);
            assert.equal(m.messageType, 'FIFO');
            return m;
          });
        assert.equal(new Set(stored.map((m) => m.queueId)).size, 1, `${group} spans queues`);
        const offsets = stored.map((m) => m.queueOffset);
        assert.deepEqual(
          offsets,
          [...offsets].sort((a, b) => a - b),
          `${group} out of order`,
        );
      }
    }
  });

  it('sends a body of the maximum size (4 MiB - 64 KiB) and reads it back intact', async () => {
    const producer = await startProducer(running().namesrvEndpoint, { topics: [LARGE_TOPIC] });
    const body = randomBytes(MAX_BODY_BYTES);
    const receipt = await producer.send({ topic: LARGE_TOPIC, tag: 'large', body });
    assert.match(receipt.messageId, MESSAGE_ID);
    const md5 = createHash('md5').update(body).digest('hex').toUpperCase();
    for (const byId of await readEverywhere(LARGE_TOPIC, [receipt])) {
      const stored = byId.get(receipt.messageId);
      assert.ok(stored !== undefined);
      assert.equal(stored.body.length, MAX_BODY_BYTES);
      assert.ok(stored.body.equals(body), 'the body changed');
      assert.equal(stored.bodyDigest, md5);
    }
  });

  it('surfaces a missing topic as NotFoundException with TOPIC_NOT_FOUND (40402)', async () => {
    for (const endpoints of [running().namesrvEndpoint, leader.clientEndpoint]) {
      const producer = await startProducer(endpoints);
      await assert.rejects(
        producer.send({ topic: 'InteropMissing', body: Buffer.from('nobody home') }),
        (err: unknown) => {
          assert.ok(err instanceof NotFoundException, `${endpoints}: ${String(err)}`);
          assert.equal(err.code, CODE.TOPIC_NOT_FOUND);
          assert.match(err.message, /InteropMissing/);
          return true;
        },
      );
    }
    const topics = await (await running().admin(leader.nodeId)).listTopics();
    assert.ok(!topics.some((t) => t.name === 'InteropMissing'), 'the missing topic was created');
  });

  it('refuses a body over max_body_size in the client and on the server (41301)', async () => {
    const producer = await startProducer(running().namesrvEndpoint, { topics: [REFUSED_TOPIC] });
    // Over the server's limit, under the client's own default (4 MiB): only Settings say no.
    const body = randomBytes(MAX_BODY_BYTES + 1);
    await assert.rejects(
      producer.send({ topic: REFUSED_TOPIC, body }),
      new RegExp(`body size exceeds the threshold, max size=${MAX_BODY_BYTES} bytes`),
    );
    for (const [nodeId, raw] of clients) {
      const res = await raw.send([wireMessage(REFUSED_TOPIC, { body })]);
      assert.equal(
        res.status.code,
        CODE.MESSAGE_BODY_TOO_LARGE,
        `${nodeId}: ${res.status.message}`,
      );
      assert.match(
        res.status.message,
        new RegExp(`${MAX_BODY_BYTES + 1} bytes; at most ${MAX_BODY_BYTES}`),
      );
      assert.equal(res.entries[0]?.status.code, CODE.MESSAGE_BODY_TOO_LARGE);
    }
    // A good send still works and is the first message of the topic: nothing else was stored.
    const receipt = await producer.send({ topic: REFUSED_TOPIC, body: Buffer.from('fits') });
    assert.equal(receipt.offset, 0);
    for (const [nodeId, raw] of clients) {
      await waitUntil(`one message of ${REFUSED_TOPIC} on ${nodeId}`, READ_TIMEOUT_MS, async () => {
        const stored = await raw.readTopic(REFUSED_TOPIC, QUEUE_COUNT);
        assert.ok(stored.length <= 1, `${nodeId} holds ${stored.length} messages`);
        return stored.length === 1 ? stored : undefined;
      });
    }
  });

  it('sends through a follower right after the leader is killed (SIGKILL)', async () => {
    const c = running();
    const producer = await startProducer(c.namesrvEndpoint, { topics: [NORMAL_TOPIC] });
    await producer.send({ topic: NORMAL_TOPIC, body: Buffer.from('before the kill') });
    const old = leader;
    await c.kill(old.nodeId, 'SIGKILL');
    // The route lists the dead leader and both followers; the client tries the next one at
    // once, and a follower waits for the new leader within the 3 s request timeout.
    const body = Buffer.from('right after the kill');
    const receipt = await producer.send({ topic: NORMAL_TOPIC, body });
    leader = await c.waitForLeader(LEADER_TIMEOUT_MS, old.term);
    for (const nodeId of c.running()) {
      const raw = clients.get(nodeId);
      assert.ok(raw !== undefined);
      await waitUntil(`the message on ${nodeId}`, READ_TIMEOUT_MS, async () => {
        const stored = await raw.readTopic(NORMAL_TOPIC, QUEUE_COUNT);
        const m = stored.find((s) => s.messageId === receipt.messageId);
        return m !== undefined && m.body.equals(body) ? m : undefined;
      });
    }
    await restoreCluster();
  });
});
