/**
 * `npm run bench:consume`: consume throughput against a NameServer and one 3-node broker group
 * on loopback (`LocalCluster`: child processes, SYNC flush, so every receive and ack is a Raft
 * entry fsync'd on a majority before it is answered), 1 KiB messages, topics of 8 queues. Each
 * phase first fills its own topic with raftmq's producer (batched sends), then runs a warm-up
 * round and measured rounds (medians reported):
 *
 * - push: the official Node client's PushConsumer (`rocketmq-client-nodejs`), through the
 *   NameServer (its one access point); it receives 32 messages per ReceiveMessage (the broker's
 *   Settings) and acks each message with its own AckMessage. Messages/s received and acked,
 *   as the broker counts settled messages.
 * - batched: raftmq's SDK SimpleConsumer receiving `POP_BATCH` messages by ReceiveStored
 *   (raftmq's Fetch protocol: the stored records and their receipt handles in one frame), then
 *   one AckMessage carrying every receipt of the batch, from `POP_CONSUMERS` loops at once.
 *   Messages/s acknowledged.
 * - batched-rmq: the same by raw RocketMQ 5 ReceiveMessage (one frame per message, with its
 *   MD5 digest) on the leader.
 * - pull: raftmq's PullConsumer reading by offset over raftmq's Fetch protocol (stored records,
 *   one reply per pull), `PULL_COUNT` asked per pull (the broker caps it at its
 *   `fetchCountMax`), one loop per queue, the queues spread over the leader and both
 *   followers, each queue read again from offset 0 at its end. Messages/s read.
 * - pull-message: the same over RocketMQ 5 PullMessage (one frame per message; the broker caps
 *   a pull at its `pullBatchSizeMax`).
 *
 * Every pop round uses a fresh consumer group, so each one consumes the same backlog from
 * offset 0; a round that consumes the whole backlog before its time is marked drained. Latency
 * is per request (a receive-and-ack cycle, or a pull). The CPU columns are each process's CPU
 * time per consumed message. The load average is printed at start and end: other work on the
 * machine moves every figure. The last line of output is one JSON object.
 *
 * Options: `--quick` (a smoke run), `--only push,batched,batched-rmq,pull,pull-message`,
 * `--dir PATH` (where to write; `.bench-tmp/` by default), `--cpu-prof DIR` (every child writes
 * a V8 CPU profile to DIR when it stops; see cpu-prof-preload.ts), `--page-cache-keep-bytes N`
 * (the brokers' CommitLog option; -1 releases nothing, to compare).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MESSAGING_SERVICE_DEFAULTS } from '../src/broker/messaging-options';
import { POP_SERVICE_DEFAULTS } from '../src/broker/pop-service';
import { LocalCluster } from '../src/cli/local-cluster';
import { Producer } from '../src/client/producer';
import { SimpleConsumer } from '../src/client/simple-consumer';
import { PULL_COUNT_MAX, PullConsumer } from '../src/client/pull-consumer';
import { BatchedPopLoad, PullLoad, PushLoad, QuietLogger, type ConsumeLoad } from './consume-load';
import { type BatchedReceiver, PopClient, SdkReceiver } from './consume-pop-client';
import {
  createTopic,
  measureWindow,
  medianOf,
  prefill,
  showRounds,
  type Round,
} from './consume-round';
import { percentile, tableRow } from './produce-load';
import { runWithClientFlags } from './client-flags';
import { argAfter, benchRoot, hasFlag, pageCacheKeepArg } from './bench-args';

const quick = hasFlag('--quick');
const root = benchRoot('consume');
const cpuProfDir = argAfter('--cpu-prof');
const pageCacheKeepBytes = pageCacheKeepArg();
const PHASE_NAMES = ['push', 'batched', 'batched-rmq', 'pull', 'pull-message'] as const;
type PhaseName = (typeof PHASE_NAMES)[number];
const PHASES = new Set((argAfter('--only') ?? PHASE_NAMES.join()).split(','));

const QUEUE_COUNT = 8;
const BODY = randomBytes(1024);
const ROUNDS = quick ? 1 : 3;
const ROUND_MS = quick ? 1_500 : 5_000;
const WARMUP_MS = quick ? 1_000 : 2_000;
const RAMP_MS = 300;
const START_TIMEOUT_MS = 20_000;
/** Bound on any round's load, whatever its window does. */
const LOAD_MS_MAX = 60_000;
const REQUESTS_PER_ROUND_MAX = 1_000_000;
/**
 * Messages each phase stores first. A pop round consumes at most that many (a faster one is
 * marked drained); a pull round reads its queues around again, so a small backlog serves it.
 */
const PREFILL: Readonly<Record<PhaseName, number>> = quick
  ? { push: 15_000, batched: 40_000, 'batched-rmq': 40_000, pull: 20_000, 'pull-message': 20_000 }
  : {
      push: 40_000,
      batched: 320_000,
      'batched-rmq': 160_000,
      pull: 40_000,
      'pull-message': 40_000,
    };
const PREFILL_BATCH = Array.from({ length: 128 }, () => ({ body: BODY }));
const PREFILL_INFLIGHT = 8;
const PREFILL_MS_MAX = 180_000;
const POP_CONSUMERS = 4;
const POP_BATCH = 1024;
const ACK_ENTRIES_MAX = 1024;
const POP_INVISIBLE_MS = 60_000;
const POP_LONG_POLL_MS = 1_000;
const POP_TIMEOUT_MS = 10_000;
const PULL_COUNT = PULL_COUNT_MAX;
const SHUTDOWN_MS_MAX = 40_000;

function checkArgs(): void {
  const unknown = [...PHASES].filter((p) => !(PHASE_NAMES as readonly string[]).includes(p));
  if (unknown.length > 0) {
    throw new Error(`--only: unknown phase ${unknown.join()}; phases: ${PHASE_NAMES.join()}`);
  }
}

function loadText(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

const fixed = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** What every phase uses: the cluster, a producer and a reader for filling and checking. */
interface Bench {
  readonly cluster: LocalCluster;
  readonly producer: Producer;
  readonly reader: PullConsumer;
  readonly logger: QuietLogger;
  readonly pushLoads: PushLoad[];
}

/** Creates the phase's topic and fills it; returns how many messages it holds. */
async function fillTopic(bench: Bench, phase: PhaseName, topic: string): Promise<number> {
  await createTopic(bench.cluster, topic, QUEUE_COUNT);
  const filled = await prefill(bench.producer, bench.reader, {
    topic,
    queueCount: QUEUE_COUNT,
    count: PREFILL[phase],
    batch: PREFILL_BATCH,
    inflight: PREFILL_INFLIGHT,
    durationMsMax: PREFILL_MS_MAX,
  });
  const rate = Math.round((filled.stored * 1000) / filled.elapsedMs);
  const seconds = (filled.elapsedMs / 1000).toFixed(1);
  console.log(
    `${phase}: ${topic} filled with ${filled.stored} messages in ${seconds} s ` +
      `(${rate} msgs/s, ${filled.failedSends} failed sends)`,
  );
  return filled.stored;
}

/** One round of a phase: starts a load, measures one window, stops the load. */
async function runRound(
  bench: Bench,
  start: () => Promise<ConsumeLoad>,
  windowMs: number,
): Promise<Round> {
  const load = await start();
  try {
    return await measureWindow(bench.cluster, load, {
      rampMs: RAMP_MS,
      windowMs,
      startTimeoutMs: START_TIMEOUT_MS,
    });
  } finally {
    await load.stop();
  }
}

/** A warm-up round, then `ROUNDS` measured ones; `start(i)` starts round i's load. */
async function rounds(bench: Bench, start: (i: number) => Promise<ConsumeLoad>): Promise<Round[]> {
  await runRound(bench, () => start(0), WARMUP_MS);
  const out: Round[] = [];
  for (let i = 1; i <= ROUNDS; i++) out.push(await runRound(bench, () => start(i), ROUND_MS));
  return out;
}

async function pushPhase(bench: Bench): Promise<Round[]> {
  const topic = 'BenchPush';
  const backlog = await fillTopic(bench, 'push', topic);
  const leader = await bench.cluster.waitForLeader(START_TIMEOUT_MS);
  const admin = await bench.cluster.admin(leader.nodeId);
  return rounds(bench, async (i) => {
    const load = await PushLoad.start({
      endpoint: bench.cluster.namesrvEndpoint,
      group: `bench_push_${i}`,
      topic,
      backlog,
      admin,
      logger: bench.logger,
    });
    bench.pushLoads.push(load);
    return load;
  });
}

async function batchedPhase(bench: Bench, phase: 'batched' | 'batched-rmq'): Promise<Round[]> {
  const topic = phase === 'batched' ? 'BenchPop' : 'BenchPopRmq';
  const backlog = await fillTopic(bench, phase, topic);
  const clients: BatchedReceiver[] = [];
  const loads: BatchedPopLoad[] = [];
  try {
    const result = await rounds(bench, async (i) => {
      const leader = await bench.cluster.waitForLeader(START_TIMEOUT_MS);
      for (const c of clients.splice(0)) c.close();
      const group = `bench_pop_${i}`;
      for (let k = 0; k < POP_CONSUMERS; k++) {
        clients.push(
          phase === 'batched'
            ? new SdkReceiver(
                await SimpleConsumer.create({
                  endpoint: bench.cluster.namesrvEndpoint,
                  consumerGroup: group,
                }),
                topic,
              )
            : await PopClient.create(leader.clientEndpoint, group, topic),
        );
      }
      const spec = {
        batchSize: POP_BATCH,
        invisibleMs: POP_INVISIBLE_MS,
        longPollMs: POP_LONG_POLL_MS,
        timeoutMs: POP_TIMEOUT_MS,
        ackEntriesMax: ACK_ENTRIES_MAX,
      };
      const load = new BatchedPopLoad(clients, spec, backlog, LOAD_MS_MAX, REQUESTS_PER_ROUND_MAX);
      loads.push(load);
      return load;
    });
    const stage = (pick: (l: BatchedPopLoad) => number[]): string => {
      const xs = loads.slice(1).flatMap(pick);
      return `p50 ${percentile(xs, 0.5).toFixed(1)} ms, p99 ${percentile(xs, 0.99).toFixed(1)} ms`;
    };
    console.log(
      `${phase}: receive (messages handed out) ${stage((l) => l.receiveMs)}; ` +
        `AckMessage ${stage((l) => l.ackMs)} (measured rounds)`,
    );
    return result;
  } finally {
    for (const c of clients) c.close();
  }
}

async function pullPhase(bench: Bench, phase: 'pull' | 'pull-message'): Promise<Round[]> {
  const topic = phase === 'pull' ? 'BenchPull' : 'BenchPullMessage';
  await fillTopic(bench, phase, topic);
  const reader =
    phase === 'pull'
      ? bench.reader
      : await PullConsumer.create({
          endpoint: bench.cluster.namesrvEndpoint,
          pullProtocol: 'pull-message',
        });
  const ids = bench.cluster.nodeIds;
  const leader = await bench.cluster.waitForLeader(START_TIMEOUT_MS);
  // The leader first, so with 8 queues it serves 3 and each follower serves 3 or 2.
  const order = [leader.nodeId, ...ids.filter((id) => id !== leader.nodeId)];
  const assignments = Array.from({ length: QUEUE_COUNT }, (_, queueId) => ({
    queueId,
    endpoint: bench.cluster.broker(order[queueId % order.length] ?? leader.nodeId).clientEndpoint,
  }));
  const loads: PullLoad[] = [];
  const result = await rounds(bench, (_i) => {
    const load = new PullLoad(
      reader,
      topic,
      assignments,
      PULL_COUNT,
      LOAD_MS_MAX,
      REQUESTS_PER_ROUND_MAX,
    );
    loads.push(load);
    return Promise.resolve(load);
  });
  const byNode = order.map((id) => {
    const endpoint = bench.cluster.broker(id).clientEndpoint;
    const read = loads.reduce((s, l) => s + (l.byEndpoint.get(endpoint) ?? 0), 0);
    return `${id}${id === leader.nodeId ? ' (leader)' : ''} ${read}`;
  });
  console.log(`${phase}: messages read per node over all rounds: ${byNode.join(', ')}`);
  if (reader !== bench.reader) reader.close();
  return result;
}

function printTable(all: ReadonlyMap<PhaseName, Round[]>): void {
  console.log('');
  console.log(`1 KiB messages, 3 nodes, SYNC; warm-up ${WARMUP_MS} ms, ${ROUNDS} x ${ROUND_MS} ms`);
  console.log(
    `push: official PushConsumer, ${MESSAGING_SERVICE_DEFAULTS.receiveBatchSize} per receive ` +
      '(Settings), one AckMessage per message',
  );
  console.log(
    `batched: ${POP_CONSUMERS} loops of the SDK SimpleConsumer: ReceiveStored(batch ` +
      `${POP_BATCH}, server max ${POP_SERVICE_DEFAULTS.batchSizeMax}) + AckMessage(up to ` +
      `${ACK_ENTRIES_MAX} entries); batched-rmq: the same by RocketMQ 5 ReceiveMessage`,
  );
  console.log(
    `pull: ${QUEUE_COUNT} loops (one per queue) over leader and followers, ${PULL_COUNT} asked ` +
      `per pull; Fetch (server fetchCountMax ${MESSAGING_SERVICE_DEFAULTS.fetchCountMax}), ` +
      `pull-message: PullMessage (server pullBatchSizeMax ` +
      `${MESSAGING_SERVICE_DEFAULTS.pullBatchSizeMax})`,
  );
  console.log(
    'latency per request (receive+ack cycle, or pull); cpu: CPU us per message, ' +
      'leader (L), follower (F), client (C)',
  );
  tableRow(['run', 'msgs/s', 'p50 ms', 'p99 ms', 'max ms', 'failed', 'cpu L', 'cpu F', 'cpu C']);
  for (const [name, rs] of all) showRounds(name, rs, cpuProfDir !== undefined);
  for (const [name, rs] of all) {
    tableRow([
      `median ${name}`,
      Math.round(medianOf(rs, (r) => r.msgsPerSec) ?? 0),
      medianOf(rs, (r) => r.latencyP50Ms),
      medianOf(rs, (r) => r.latencyP99Ms),
      undefined,
      undefined,
      medianOf(rs, (r) => r.cpuUsPerMsgLeader),
      medianOf(rs, (r) => r.cpuUsPerMsgFollower),
      medianOf(rs, (r) => r.cpuUsPerMsgClient),
    ]);
  }
  console.log('');
}

function summarize(
  all: ReadonlyMap<PhaseName, Round[]>,
  loadAvgAtStart: number,
): Record<string, string | number> {
  const rate = (p: PhaseName): number =>
    Math.round(medianOf(all.get(p) ?? [], (r) => r.msgsPerSec) ?? 0);
  const cpu = (p: PhaseName): number =>
    fixed(medianOf(all.get(p) ?? [], (r) => r.cpuUsPerMsgLeader) ?? 0);
  return {
    bench: 'consume',
    pushConsumerMsgsPerSec: rate('push'),
    batchedReceiveAckMsgsPerSec: rate('batched'),
    batchedRmqReceiveAckMsgsPerSec: rate('batched-rmq'),
    pullMsgsPerSec: rate('pull'),
    pullMessageMsgsPerSec: rate('pull-message'),
    pushLeaderCpuUsPerMsg: cpu('push'),
    batchedLeaderCpuUsPerMsg: cpu('batched'),
    batchedRmqLeaderCpuUsPerMsg: cpu('batched-rmq'),
    pullLeaderCpuUsPerMsg: cpu('pull'),
    pullMessageLeaderCpuUsPerMsg: cpu('pull-message'),
    fetchCountMax: MESSAGING_SERVICE_DEFAULTS.fetchCountMax,
    pullBatchSizeMax: MESSAGING_SERVICE_DEFAULTS.pullBatchSizeMax,
    loadAvg1mAtStart: fixed(loadAvgAtStart),
  };
}

async function runPhases(bench: Bench): Promise<Map<PhaseName, Round[]>> {
  const all = new Map<PhaseName, Round[]>();
  if (PHASES.has('push')) all.set('push', await pushPhase(bench));
  if (PHASES.has('batched')) all.set('batched', await batchedPhase(bench, 'batched'));
  if (PHASES.has('batched-rmq')) all.set('batched-rmq', await batchedPhase(bench, 'batched-rmq'));
  if (PHASES.has('pull')) all.set('pull', await pullPhase(bench, 'pull'));
  if (PHASES.has('pull-message')) all.set('pull-message', await pullPhase(bench, 'pull-message'));
  return all;
}

/** Waits (bounded) for every push consumer's shutdown; a failure is reported, not fatal. */
async function shutdownPushLoads(bench: Bench): Promise<void> {
  const results = await Promise.allSettled(
    bench.pushLoads.map((l) => l.shutdownDone(SHUTDOWN_MS_MAX)),
  );
  const failed = results.find((r) => r.status === 'rejected');
  // Reported: the process ends with process.exit, so a consumer left running ends with it.
  if (failed !== undefined) console.log(`push consumer shutdown: ${String(failed.reason)}`);
}

async function main(): Promise<void> {
  checkArgs();
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  const loadAvgAtStart = os.loadavg()[0] ?? 0;
  console.log(`consume benchmark (${quick ? 'quick' : 'full'}), data under ${root}`);
  console.log(`node ${process.version}, ${os.cpus().length} cpus, load avg ${loadText()}`);
  console.log(`client process flags: ${process.execArgv.join(' ')} (bench/client-flags.ts)\n`);
  const env: Record<string, string> =
    cpuProfDir === undefined
      ? {}
      : {
          NODE_OPTIONS: `--require ${path.join(__dirname, 'cpu-prof-preload.js')}`,
          RAFTMQ_CPU_PROF_DIR: path.resolve(cpuProfDir),
        };
  const cluster = await LocalCluster.start({
    dir: root,
    flushMode: 'SYNC',
    logLevel: 'warn',
    env,
    ...(pageCacheKeepBytes === undefined ? {} : { broker: { pageCacheKeepBytes } }),
    onUnexpectedExit: (name, exit) =>
      console.log(`${name} exited unexpectedly (${exit.signal ?? String(exit.code)})`),
  });
  let figures: Record<string, string | number>;
  try {
    await cluster.waitForLeader(START_TIMEOUT_MS);
    const bench: Bench = {
      cluster,
      producer: await Producer.create({ endpoint: cluster.namesrvEndpoint }),
      reader: await PullConsumer.create({ endpoint: cluster.namesrvEndpoint }),
      logger: new QuietLogger(),
      pushLoads: [],
    };
    try {
      const all = await runPhases(bench);
      printTable(all);
      figures = summarize(all, loadAvgAtStart);
    } finally {
      await shutdownPushLoads(bench);
      bench.producer.close();
      bench.reader.close();
    }
    const { warnings, errors, firstError } = bench.logger;
    console.log(`official client log: ${warnings} warnings, ${errors} errors`);
    if (firstError !== undefined) console.log(`  first error: ${firstError}`);
  } finally {
    await cluster.stopAll();
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log('targets: batched >= 30000 msgs/s; pull >= 100000 msgs/s (pull by Fetch)');
  console.log(`load avg after: ${loadText()}`);
  console.log(JSON.stringify(figures));
}

// process.exit: the official PushConsumer's consume service opens a file logger whose flush
// timer is never cleared, so the process would not end by itself. On Linux, stdout to a file or
// pipe is written synchronously, so nothing printed is lost.
runWithClientFlags(main);
