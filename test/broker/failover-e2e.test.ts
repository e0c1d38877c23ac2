/*
 * End-to-end failover and restarts of one broker group: real processes (LocalCluster: a
 * NameServer and three broker nodes on loopback, SYNC flush, re-registration every 500 ms),
 * real gRPC, real files. The cases share the cluster and run in order; every send any of them
 * had acknowledged is checked again by the later ones.
 *
 * 1. The official RocketMQ 5 Node producer sends from several concurrent loops (bounded in
 *    count and time) while the leader is killed with SIGKILL. Every acknowledged send (message
 *    id, queue offset) is then found exactly once, at its offset, in send order, on every node
 *    (read with raftmq's PullConsumer from each node's own endpoint), and the nodes hold the
 *    same queues; the killed node is restarted and checked once it caught up. The NameServer
 *    names the new leader with its higher term.
 * 2. A restarted NameServer gets the whole route back from the brokers' heartbeats, and the
 *    official producer can send through it again.
 * 3. A registration claiming leadership with an older (or the same) term is refused as stale
 *    and the route keeps naming the real leader, also after the leader's next heartbeat. (The
 *    route-table rule is unit-tested in test/namesrv/namesrv-server.test.ts; this is the same
 *    over the NameServer of a live group.)
 * 4. The whole group stopped and started again on the same data serves every acknowledged send.
 *
 * Sends are single-attempt (maxAttempts 1): a client retry of a send whose answer was lost may
 * store it twice (at-least-once), so "exactly once" is a property of single attempts. Every
 * wait polls a condition with a deadline; the cluster and its directory are removed after.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { Producer } from 'rocketmq-client-nodejs';
import {
  LocalCluster,
  type LocalClusterOptions,
  type LocalLeader,
} from '../../src/cli/local-cluster';
import { waitUntil } from '../../src/cli/raft-node-client';
import { PullConsumer, type PulledMessage } from '../../src/client/pull-consumer';
import { NameServerChannels } from '../../src/namesrv/namesrv-channels';

const TOPIC = 'FailoverTopic';
const QUEUE_COUNT = 2;
/** Elections, catch-up and re-registration get generous deadlines: the machine is shared. */
const ELECTION_TIMEOUT_MS = 15_000;
const CONVERGE_TIMEOUT_MS = 20_000;
const CALL_TIMEOUT_MS = 5_000;
const QUIET_LOGGER = { info(): void {}, warn(): void {}, error(): void {}, debug(): void {} };

type TelemetryStream = ReturnType<Producer['createTelemetryStream']>;

/**
 * The official producer, closable even while a node of its route is down: its shutdown()
 * throws before releasing telemetry streams and channels when a node cannot be told of the
 * termination, and its telemetry sessions reconnect on their own every second. close() stops
 * new streams (they get an inert stand-in), cancels the live ones and closes the channels.
 */
class OfficialProducer extends Producer {
  private stopped = false;
  private readonly streams = new Set<TelemetryStream>();

  override createTelemetryStream(
    endpoints: Parameters<Producer['createTelemetryStream']>[0],
  ): TelemetryStream {
    if (this.stopped) return inertStream() as unknown as TelemetryStream;
    const stream = super.createTelemetryStream(endpoints);
    this.streams.add(stream);
    stream.once('status', () => this.streams.delete(stream));
    return stream;
  }

  async close(): Promise<void> {
    this.stopped = true;
    try {
      await this.shutdown();
    } catch {
      // NotifyClientTermination failed (a node of the route is down); released below instead.
    }
    for (const stream of this.streams) {
      stream.on('error', () => undefined); // the CANCELLED status is expected
      stream.cancel();
    }
    this.streams.clear();
    this.getRpcClientManager().close();
  }
}

/** A stream that takes writes and never answers (a session renewed after close() gets it). */
function inertStream(): Duplex {
  return new Duplex({
    objectMode: true,
    read(): void {},
    write(_chunk: unknown, _encoding: BufferEncoding, callback: () => void): void {
      callback();
    },
  });
}

/** An acknowledged send. */
interface Ack {
  readonly messageId: string;
  readonly body: string;
  readonly offset: number;
  readonly loop: string;
  readonly seq: number;
  readonly ackedAtMs: number;
}

/** What a bounded set of send loops did. */
interface SendRun {
  readonly acks: Ack[];
  /** Bodies of every send tried, acknowledged or not. */
  readonly attempted: Set<string>;
  failures: number;
}

/** Starts the official producer on the NameServer (the topic's route must be there). */
async function startOfficialProducer(cluster: LocalCluster): Promise<OfficialProducer> {
  const producer = new OfficialProducer({
    endpoints: cluster.namesrvEndpoint,
    namespace: '',
    logger: QUIET_LOGGER,
    maxAttempts: 1,
    requestTimeout: CALL_TIMEOUT_MS,
    topics: [TOPIC],
  });
  try {
    await producer.startup();
  } catch (err) {
    await producer.close();
    throw err;
  }
  return producer;
}

/**
 * Runs `loopCount` concurrent loops of at most `perLoop` sequential sends each, until
 * `durationMs` has passed; acknowledged sends go to `run.acks` as they come.
 */
async function sendLoops(
  producer: Producer,
  run: SendRun,
  label: string,
  loopCount: number,
  perLoop: number,
  durationMs: number,
): Promise<void> {
  const endMs = Date.now() + durationMs;
  const loop = async (k: number): Promise<void> => {
    for (let seq = 0; seq < perLoop && Date.now() < endMs; seq++) {
      const body = `${label}-${k}-${seq}`;
      run.attempted.add(body);
      try {
        const receipt = await producer.send({ topic: TOPIC, body: Buffer.from(body), tag: label });
        const { messageId, offset } = receipt;
        run.acks.push({
          messageId,
          body,
          offset,
          loop: `${label}-${k}`,
          seq,
          ackedAtMs: Date.now(),
        });
      } catch {
        // Failed sends (the election) may or may not be stored; only acknowledged ones count.
        run.failures += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: loopCount }, (_, k) => loop(k)));
}

/** Every message of every queue of TOPIC on the node at `endpoint`, in offset order. */
async function readQueues(pc: PullConsumer, endpoint: string): Promise<PulledMessage[][]> {
  const queues: PulledMessage[][] = [];
  for (let queueId = 0; queueId < QUEUE_COUNT; queueId++) {
    const messages: PulledMessage[] = [];
    let offset = await pc.queryOffset(TOPIC, queueId, 'BEGINNING', { endpoint });
    const end = await pc.queryOffset(TOPIC, queueId, 'END', { endpoint });
    for (let pulls = 0; offset < end; pulls++) {
      assert.ok(pulls <= end, `pulling ${endpoint} queue ${queueId} makes no progress`);
      const result = await pc.pull(TOPIC, queueId, offset, 32, { endpoint });
      assert.equal(result.status, 'FOUND', `${endpoint} queue ${queueId} at ${offset}`);
      messages.push(...result.messages);
      offset = result.nextOffset;
    }
    queues.push(messages);
  }
  return queues;
}

/** The END offset of each queue on the node at `endpoint`. */
async function queueEnds(pc: PullConsumer, endpoint: string): Promise<number[]> {
  const ends: number[] = [];
  for (let queueId = 0; queueId < QUEUE_COUNT; queueId++) {
    ends.push(await pc.queryOffset(TOPIC, queueId, 'END', { endpoint }));
  }
  return ends;
}

/**
 * Waits until every node in `nodeIds` has applied as much as the leader, then checks each one:
 * offsets contiguous from 0; every acknowledged send exactly once, at its offset, each loop's
 * sends in send order; nothing stored that was never sent; all nodes holding the same queues.
 */
async function checkNodes(
  cluster: LocalCluster,
  nodeIds: readonly string[],
  run: SendRun,
): Promise<void> {
  const pc = await PullConsumer.create({
    endpoint: cluster.namesrvEndpoint,
    callTimeoutMs: CALL_TIMEOUT_MS,
  });
  try {
    const leader = await cluster.waitForLeader(ELECTION_TIMEOUT_MS);
    const endpoints = nodeIds.map((id) => cluster.broker(id).clientEndpoint);
    await waitUntil(`nodes ${nodeIds.join(', ')} caught up`, CONVERGE_TIMEOUT_MS, async () => {
      const target = (await queueEnds(pc, leader.clientEndpoint)).join();
      const ends = await Promise.all(endpoints.map((e) => queueEnds(pc, e)));
      return ends.every((e) => e.join() === target) ? true : undefined;
    });
    let reference: string | undefined;
    for (const [i, endpoint] of endpoints.entries()) {
      const queues = await readQueues(pc, endpoint);
      checkQueues(`node ${nodeIds[i]}`, queues, run);
      const ids = JSON.stringify(queues.map((q) => q.map((m) => m.messageId)));
      reference ??= ids;
      assert.equal(ids, reference, `node ${nodeIds[i]} holds other queues than ${nodeIds[0]}`);
    }
  } finally {
    pc.close();
  }
}

function checkQueues(node: string, queues: readonly PulledMessage[][], run: SendRun): void {
  const found = new Map<string, PulledMessage[]>();
  for (const [queueId, messages] of queues.entries()) {
    for (const [i, m] of messages.entries()) {
      assert.equal(m.offset, i, `${node} queue ${queueId}: offsets not contiguous from 0`);
      assert.equal(m.queueId, queueId);
      assert.ok(run.attempted.has(m.body.toString()), `${node}: stray message ${m.messageId}`);
      found.set(m.messageId, [...(found.get(m.messageId) ?? []), m]);
    }
  }
  const lastByLoop = new Map<string, { queueId: number; offset: number }[]>();
  const acks = [...run.acks].sort((a, b) => a.loop.localeCompare(b.loop) || a.seq - b.seq);
  for (const ack of acks) {
    const copies = found.get(ack.messageId) ?? [];
    const where = copies.map((m) => `queue ${m.queueId} offset ${m.offset}`).join(', ');
    assert.equal(
      copies.length,
      1,
      `${node}: ${ack.body} (${ack.messageId}, acknowledged at offset ${ack.offset}) ` +
        `stored ${copies.length}x: ${where}`,
    );
    const m = copies[0] as PulledMessage;
    assert.equal(m.offset, ack.offset, `${node}: ${ack.body} acknowledged at another offset`);
    assert.equal(m.body.toString(), ack.body);
    // A loop waits for each answer before sending again, so later sends sit later per queue.
    const before = lastByLoop.get(ack.loop) ?? [];
    const prior = before.filter((p) => p.queueId === m.queueId).at(-1);
    assert.ok(prior === undefined || prior.offset < m.offset, `${node}: ${ack.body} out of order`);
    lastByLoop.set(ack.loop, [...before, { queueId: m.queueId, offset: m.offset }]);
  }
}

/** The NameServer's view of the group: leader id and term from GetCluster and GetRoute. */
async function nameServerLeader(
  cluster: LocalCluster,
): Promise<{ clusterLeader: string; termMax: number; routeLeader: string; routeTerm: number }> {
  const address = cluster.namesrvEndpoint;
  const channels = new NameServerChannels([address]);
  try {
    const view = (await channels.call(address, 'GetCluster', {}, CALL_TIMEOUT_MS)) as {
      groups?: { group: string; leaderNodeId: string; leaderTermMax: number }[];
    };
    const route = (await channels.call(address, 'GetRoute', { topic: TOPIC }, CALL_TIMEOUT_MS)) as {
      groups?: { leader?: { nodeId: string; term: number } | null }[];
    };
    const group = view.groups?.find((g) => g.group === cluster.layout.group);
    const leader = route.groups?.[0]?.leader;
    return {
      clusterLeader: group?.leaderNodeId ?? '',
      termMax: Number(group?.leaderTermMax ?? -1),
      routeLeader: leader?.nodeId ?? '',
      routeTerm: Number(leader?.term ?? -1),
    };
  } finally {
    channels.close();
  }
}

/** Waits until the NameServer names `leader` (with its term) in the cluster view and route. */
async function waitForNameServerLeader(cluster: LocalCluster, leader: LocalLeader): Promise<void> {
  await waitUntil(`the NameServer naming ${leader.nodeId}`, CONVERGE_TIMEOUT_MS, async () => {
    const seen = await nameServerLeader(cluster);
    const ok =
      seen.clusterLeader === leader.nodeId &&
      seen.termMax === leader.term &&
      seen.routeLeader === leader.nodeId &&
      seen.routeTerm === leader.term;
    return ok ? true : undefined;
  });
}

/**
 * Creates TOPIC through the node that was just reported leader, in one call: the admin service
 * must wait for that leader to be ready (or forward to a newer one) rather than refuse it.
 */
async function createTopic(cluster: LocalCluster): Promise<void> {
  const leader = await cluster.waitForLeader(ELECTION_TIMEOUT_MS);
  const admin = await cluster.admin(leader.nodeId);
  const topic = { name: TOPIC, queueCount: QUEUE_COUNT };
  await admin.createTopic(topic, { timeoutMs: ELECTION_TIMEOUT_MS });
}

describe('failover end to end (LocalCluster, official client)', function () {
  this.timeout(120_000);
  let dir = '';
  let cluster: LocalCluster | undefined;
  const unexpectedExits: string[] = [];
  const run: SendRun = { acks: [], attempted: new Set(), failures: 0 };

  const options = (): LocalClusterOptions => ({
    dir,
    flushMode: 'SYNC',
    timing: { registerIntervalMs: 500 },
    onUnexpectedExit: (name, exit) => unexpectedExits.push(`${name}: ${exit.signal ?? exit.code}`),
  });
  const live = (): LocalCluster => {
    assert.ok(cluster !== undefined, 'the cluster is not running');
    return cluster;
  };

  before(async function () {
    this.timeout(90_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-failover-'));
    cluster = await LocalCluster.start(options());
    await createTopic(cluster);
    const leader = await cluster.waitForLeader(ELECTION_TIMEOUT_MS);
    await waitForNameServerLeader(cluster, leader);
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed' && cluster !== undefined) {
      for (const b of cluster.brokers) {
        const text = fs.existsSync(b.logPath) ? fs.readFileSync(b.logPath, 'utf8') : '';
        console.error(`---- ${b.id} log tail ----\n${text.slice(-3000)}`);
      }
    }
    assert.deepEqual(unexpectedExits, [], 'a process exited unexpectedly');
  });

  after(async function () {
    this.timeout(60_000);
    await cluster?.stopAll();
    cluster = undefined;
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every acknowledged send through a kill -9 of the leader, on every node', async () => {
    const c = live();
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    const producer = await startOfficialProducer(c);
    let killedAtMs = Number.POSITIVE_INFINITY;
    try {
      const sending = sendLoops(producer, run, 'failover', 4, 60, 40_000);
      const killing = waitUntil('40 acknowledged sends', 30_000, () =>
        Promise.resolve(run.acks.length >= 40 ? true : undefined),
      ).then(async () => {
        killedAtMs = Date.now();
        await c.kill(leader.nodeId, 'SIGKILL');
      });
      await Promise.all([sending, killing]);
      const next = await c.waitForLeader(ELECTION_TIMEOUT_MS, leader.term);
      assert.notEqual(next.nodeId, leader.nodeId);
      const afterKill = run.acks.filter((a) => a.ackedAtMs > killedAtMs).length;
      assert.ok(afterKill > 0, `no send acknowledged after the kill (${run.failures} failed)`);
      await waitForNameServerLeader(c, next);
      assert.ok(next.term > leader.term);

      await checkNodes(c, c.running(), run);
      await c.restart(leader.nodeId);
      await checkNodes(c, c.nodeIds, run);
    } finally {
      await producer.close();
    }
  });

  it('gets every route back after a NameServer restart, and sends through it again', async () => {
    const c = live();
    for (const id of c.nodeIds.filter((n) => !c.running().includes(n))) await c.restart(id);
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    const pc = await PullConsumer.create({ endpoint: c.namesrvEndpoint, routeTtlMs: 0 });
    try {
      // A node restarted just now is routed once the leader hears from it (routes list only
      // the followers the leader hears from).
      const before = await waitUntil('both followers routed', CONVERGE_TIMEOUT_MS, async () => {
        const route = await pc.route(TOPIC, true);
        return route.groups[0]?.followers.length === 2 ? route : undefined;
      });
      await c.restartNameServer();
      await waitForNameServerLeader(c, leader);
      const after = await waitUntil('the full route back', CONVERGE_TIMEOUT_MS, async () => {
        const route = await pc.route(TOPIC, true);
        return route.groups[0]?.followers.length === 2 ? route : undefined;
      });
      assert.deepEqual(after, before);
    } finally {
      pc.close();
    }
    const producer = await startOfficialProducer(c);
    try {
      const [acked, failed] = [run.acks.length, run.failures];
      await sendLoops(producer, run, 'namesrv', 2, 10, 30_000);
      assert.equal(run.failures - failed, 0, 'a send failed through the restarted NameServer');
      assert.equal(run.acks.length - acked, 20);
    } finally {
      await producer.close();
    }
  });

  it('keeps the newer leader in the route when a stale leadership claim arrives', async () => {
    const c = live();
    const leader = await c.waitForLeader(ELECTION_TIMEOUT_MS);
    const address = c.namesrvEndpoint;
    const channels = new NameServerChannels([address]);
    const pc = await PullConsumer.create({ endpoint: address, routeTtlMs: 0 });
    try {
      for (const term of [leader.term - 1, leader.term]) {
        const reply = (await channels.call(
          address,
          'Register',
          {
            cluster: 'DefaultCluster',
            group: c.layout.group,
            nodeId: 'stale-n9',
            endpoint: '127.0.0.1:9',
            role: 'ROLE_LEADER',
            term,
            topics: {
              [TOPIC]: {
                queueCount: QUEUE_COUNT,
                perm: 'PERM_READ_WRITE',
                messageTypes: ['NORMAL'],
              },
            },
          },
          CALL_TIMEOUT_MS,
        )) as { outcome: string; leader?: { nodeId: string; term: number } };
        assert.equal(reply.outcome, 'OUTCOME_STALE_LEADER', `claim of term ${term}`);
        assert.equal(reply.leader?.nodeId, leader.nodeId);
        assert.equal(Number(reply.leader?.term), leader.term);
      }
      const claimedAtMs = Date.now();
      const seen = await nameServerLeader(c);
      assert.equal(seen.routeLeader, leader.nodeId);
      assert.equal((await pc.route(TOPIC)).groups[0]?.leaderEndpoint, leader.clientEndpoint);
      // The real leader's next heartbeat changes nothing either.
      await waitUntil('a heartbeat of the leader', CONVERGE_TIMEOUT_MS, async () => {
        const view = (await channels.call(address, 'GetCluster', {}, CALL_TIMEOUT_MS)) as {
          groups: { nodes: { nodeId: string; lastHeartbeatEpochMs: number }[] }[];
        };
        const node = view.groups[0]?.nodes.find((n) => n.nodeId === leader.nodeId);
        return Number(node?.lastHeartbeatEpochMs ?? 0) > claimedAtMs ? true : undefined;
      });
      await waitForNameServerLeader(c, leader);
      assert.equal((await pc.route(TOPIC)).groups[0]?.leaderEndpoint, leader.clientEndpoint);
    } finally {
      pc.close();
      try {
        const unregister = { group: c.layout.group, nodeId: 'stale-n9' };
        await channels.call(address, 'Unregister', unregister, CALL_TIMEOUT_MS);
      } finally {
        channels.close();
      }
    }
  });

  it('serves every acknowledged send from every node after the whole group restarts', async () => {
    assert.ok(run.acks.length > 0, 'the earlier cases acknowledged nothing');
    await live().stopAll();
    cluster = undefined;
    cluster = await LocalCluster.start(options());
    await cluster.waitForLeader(ELECTION_TIMEOUT_MS);
    await checkNodes(cluster, cluster.nodeIds, run);
  });
});
