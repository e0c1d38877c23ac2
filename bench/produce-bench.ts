/**
 * `npm run bench:produce`: produce throughput, send latency and failover as clients see them,
 * against a NameServer and one 3-node broker group on loopback (`LocalCluster`: child
 * processes, SYNC flush, so every acknowledged message is fsync'd on a majority), 1 KiB
 * messages to one topic of 8 queues. Both clients use the NameServer as their access point.
 *
 * - official: the official Node client (`rocketmq-client-nodejs`), one message per send,
 *   `OFFICIAL_INFLIGHT` sends in flight. Its route lists the followers too (rmq-route.ts), so
 *   it spreads sends over all three nodes and the followers forward theirs to the leader.
 * - batched: raftmq's producer (src/client/producer.ts), `BATCH_MESSAGES` messages per
 *   SendMessage, `BATCH_INFLIGHT` requests in flight.
 * - failover: kill -9 of the leader, 20 times, with steady senders running; time to the first
 *   acknowledged send (see produce-failover.ts).
 *
 * Throughput phases: a warm-up, then rounds (medians reported); latency is per send, from issue
 * to acknowledgement; the CPU columns are each process's CPU time (from /proc) per acknowledged
 * message. The load average is printed at start and end: other work on the machine moves every
 * figure. The last line of output is one JSON object.
 *
 * Options: `--quick` (a smoke run), `--rounds N` (failover rounds), `--only
 * official,batched,failover`, `--dir PATH` (where to write; `.bench-tmp/` by default),
 * `--cpu-prof DIR` (every child writes a V8 CPU profile to DIR when it stops cleanly; nodes
 * killed in the failover phase write none), `--page-cache-keep-bytes N` (the brokers'
 * CommitLog option; -1 releases nothing, to compare), `--batch-inflight N` (batched requests
 * in flight, 8 by default).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Producer as OfficialProducer, type ILogger } from 'rocketmq-client-nodejs';
import { LocalCluster } from '../src/cli/local-cluster';
import { waitUntil } from '../src/cli/raft-node-client';
import { Producer } from '../src/client/producer';
import { failoverPhase, printFailoverSummary, type FailoverRound } from './produce-failover';
import {
  closedLoop,
  median,
  percentile,
  processCpuMs,
  tableRow,
  type ClosedLoopSpec,
  type LoadResult,
} from './produce-load';
import { runWithClientFlags } from './client-flags';
import { argAfter, benchRoot, hasFlag, intArg, pageCacheKeepArg } from './bench-args';

const quick = hasFlag('--quick');
const root = benchRoot('produce');
const cpuProfDir = argAfter('--cpu-prof');
const pageCacheKeepBytes = pageCacheKeepArg();
const PHASE_NAMES = ['official', 'batched', 'failover'];
const PHASES = new Set((argAfter('--only') ?? PHASE_NAMES.join()).split(','));

const TOPIC = 'BenchProduce';
const QUEUE_COUNT = 8;
const BODY = randomBytes(1024);
const ROUNDS = quick ? 1 : 3;
const ROUND_MS = quick ? 1_500 : 5_000;
const WARMUP_MS = quick ? 500 : 2_000;
const SENDS_PER_ROUND_MAX = 2_000_000;
const OFFICIAL_INFLIGHT = 128;
const BATCH_MESSAGES = 128;
const BATCH_INFLIGHT = intArg('--batch-inflight', 8, 1, 256);
const FAILOVER_ROUNDS = Number(argAfter('--rounds') ?? (quick ? 1 : 20));
const LEADER_TIMEOUT_MS = 15_000;
/** Rounds cut by a leader change are run again, this many times at most. */
const RETRIES_MAX = 2;

/** Throws naming the option when a command-line value is out of range. */
function checkArgs(): void {
  if (!Number.isSafeInteger(FAILOVER_ROUNDS) || FAILOVER_ROUNDS < 0 || FAILOVER_ROUNDS > 1000) {
    throw new Error(`--rounds: must be an integer in [0, 1000], got ${argAfter('--rounds')}`);
  }
  const unknown = [...PHASES].filter((p) => !PHASE_NAMES.includes(p));
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

/** A logger for the official client that prints nothing and counts what it would have. */
class QuietLogger implements ILogger {
  warnings = 0;
  errors = 0;
  firstError: string | undefined;
  info(): void {}
  debug(): void {}
  warn(): void {
    this.warnings++;
  }
  error(...logArgs: unknown[]): void {
    this.errors++;
    this.firstError ??= logArgs.map(String).join(' ').slice(0, 300);
  }
}

/**
 * A throughput round, with each process's CPU time per acknowledged message and the CommitLog
 * fdatasync rounds of 10 ms or longer on the three nodes during it (the disk stalling, or a
 * process waiting for a CPU); and, where the brokers time their fdatasync calls, how many of
 * those rounds the calls alone took that long (the disk's share, with the pool thread's wait to
 * run once it answered).
 */
interface Round extends LoadResult {
  readonly cpuUsPerMsgLeader: number | undefined;
  readonly cpuUsPerMsgFollower: number | undefined;
  readonly cpuUsPerMsgClient: number;
  readonly slowSyncs: number | undefined;
  readonly slowDiskSyncs: number | undefined;
}

/** A broker's slow fdatasync rounds so far, and of those its slow calls (undefined: untimed). */
interface SlowCounts {
  readonly rounds: number;
  readonly calls: number | undefined;
}

/** The slow fdatasync rounds each running broker reported so far (undefined if one did not). */
async function slowSyncsOf(cluster: LocalCluster): Promise<Map<string, SlowCounts> | undefined> {
  try {
    return new Map(
      await Promise.all(
        cluster.brokers.map(async (b): Promise<[string, SlowCounts]> => {
          const status = await (await cluster.admin(b.id)).nodeStatus({ timeoutMs: 2_000 });
          const calls = status.timedSyncs === 0 ? undefined : status.slowSyncCalls;
          return [b.id, { rounds: status.slowSyncs, calls }];
        }),
      ),
    );
  } catch {
    return undefined;
  }
}

/** The slow rounds (or calls) of every broker between two readings; undefined if unknown. */
function slowBetween(
  before: Map<string, SlowCounts> | undefined,
  after: Map<string, SlowCounts> | undefined,
  pick: (c: SlowCounts) => number | undefined,
): number | undefined {
  if (before === undefined || after === undefined) return undefined;
  let sum = 0;
  for (const [id, a] of after) {
    const now = pick(a);
    if (now === undefined) return undefined;
    const b = before.get(id);
    sum += now - (b === undefined ? 0 : (pick(b) ?? 0));
  }
  return sum;
}

/** Runs one closed-loop round on a stable leader; a round cut by a leader change runs again. */
async function measuredRound(
  cluster: LocalCluster,
  spec: ClosedLoopSpec,
  send: () => Promise<unknown>,
): Promise<Round> {
  for (let attempt = 0; ; attempt++) {
    const leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    const pids = new Map(cluster.brokers.map((b) => [b.id, b.pid]));
    const slowBefore = await slowSyncsOf(cluster);
    const before = new Map([...pids].map(([id, pid]) => [id, processCpuMs(pid)]));
    const clientBefore = process.cpuUsage();
    const result = await closedLoop(spec, send);
    const client = process.cpuUsage(clientBefore);
    const slowAfter = await slowSyncsOf(cluster);
    const after = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    const usPerMsg = (id: string): number | undefined => {
      const a = processCpuMs(pids.get(id));
      const b = before.get(id);
      return a === undefined || b === undefined
        ? undefined
        : ((a - b) * 1000) / Math.max(1, result.ackedMessages);
    };
    const followers = cluster.nodeIds.filter((id) => id !== leader.nodeId).map(usPerMsg);
    const round: Round = {
      ...result,
      cpuUsPerMsgLeader: usPerMsg(leader.nodeId),
      cpuUsPerMsgFollower: followers.includes(undefined)
        ? undefined
        : followers.reduce((s: number, x) => s + (x ?? 0), 0) / followers.length,
      cpuUsPerMsgClient: (client.user + client.system) / Math.max(1, result.ackedMessages),
      slowSyncs: slowBetween(slowBefore, slowAfter, (c) => c.rounds),
      slowDiskSyncs: slowBetween(slowBefore, slowAfter, (c) => c.calls),
    };
    if (after.term === leader.term || attempt >= RETRIES_MAX) return round;
    console.log(`leader changed during a round (term ${leader.term} -> ${after.term}); again`);
  }
}

/** A warm-up, then `ROUNDS` measured rounds. */
async function throughputPhase(
  cluster: LocalCluster,
  spec: Omit<ClosedLoopSpec, 'durationMs' | 'sendsMax'>,
  send: () => Promise<unknown>,
): Promise<Round[]> {
  const sendsMax = SENDS_PER_ROUND_MAX;
  await closedLoop({ ...spec, durationMs: WARMUP_MS, sendsMax }, send);
  const rounds: Round[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    rounds.push(await measuredRound(cluster, { ...spec, durationMs: ROUND_MS, sendsMax }, send));
  }
  return rounds;
}

function showRounds(name: string, rounds: readonly Round[]): void {
  rounds.forEach((r, i) =>
    tableRow([
      `${name} #${i + 1}`,
      Math.round(r.msgsPerSec),
      r.latencyP50Ms,
      r.latencyP90Ms,
      r.latencyP99Ms,
      r.latencyMaxMs,
      r.failedSends,
      r.cpuUsPerMsgLeader,
      r.cpuUsPerMsgFollower,
      r.cpuUsPerMsgClient,
      r.slowSyncs,
      r.slowDiskSyncs ?? '-',
    ]),
  );
  const failed = rounds.find((r) => r.firstError !== undefined);
  if (failed !== undefined) console.log(`  first failed send: ${failed.firstError}`);
}

const fixed = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** The clients of the benchmark, connected and ready to send. */
interface Clients {
  readonly sdk: Producer;
  readonly official: OfficialProducer;
  readonly logger: QuietLogger;
}

async function startClients(cluster: LocalCluster): Promise<Clients> {
  // A leader takes writes once it applied an entry of its term; until then, NOT_LEADER.
  await waitUntil('the topic created', LEADER_TIMEOUT_MS, async () => {
    const leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    const admin = await cluster.admin(leader.nodeId);
    return admin.createTopic({ name: TOPIC, queueCount: QUEUE_COUNT });
  });
  const sdk = await Producer.create({ endpoint: cluster.namesrvEndpoint });
  // The first send also waits for the NameServer to learn the topic.
  await sdk.send(TOPIC, [{ body: BODY }]);
  const logger = new QuietLogger();
  const official = new OfficialProducer({
    endpoints: cluster.namesrvEndpoint,
    namespace: '',
    logger,
    topics: [TOPIC],
  });
  await official.startup();
  return { sdk, official, logger };
}

async function stopClients(clients: Clients): Promise<void> {
  clients.sdk.close();
  try {
    await clients.official.shutdown();
  } catch (err) {
    // Its termination notice to a node it lost during the failover rounds is best-effort; the
    // process ends with process.exit, so the channels it leaves open do not keep it alive.
    console.log(`official client shutdown: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function printThroughput(officialRounds: readonly Round[], batchedRounds: readonly Round[]): void {
  console.log(`1 KiB messages, 3 nodes, SYNC; warm-up ${WARMUP_MS} ms, ${ROUNDS} x ${ROUND_MS} ms`);
  console.log(`official: 1 message per send, ${OFFICIAL_INFLIGHT} sends in flight`);
  console.log(`batched: ${BATCH_MESSAGES} messages per send, ${BATCH_INFLIGHT} sends in flight`);
  console.log('latency per send; cpu: CPU us per message, leader (L), follower (F), client (C)');
  console.log(
    'slow syncs: CommitLog fdatasync rounds of 10 ms or longer, three nodes; slow disk: those ' +
      'whose fdatasync calls alone took that long (the rest waited for a CPU; "-": not timed)',
  );
  const header = ['run', 'msgs/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'failed'];
  tableRow([...header, 'cpu L', 'cpu F', 'cpu C', 'slow syncs', 'slow disk']);
  showRounds('official', officialRounds);
  showRounds('batched', batchedRounds);
  for (const [name, rounds] of [
    ['official', officialRounds],
    ['batched', batchedRounds],
  ] as const) {
    if (rounds.length === 0) continue;
    const med = (pick: (r: Round) => number): number => median(rounds.map(pick));
    tableRow([
      `median ${name}`,
      Math.round(med((r) => r.msgsPerSec)),
      med((r) => r.latencyP50Ms),
      med((r) => r.latencyP90Ms),
      med((r) => r.latencyP99Ms),
    ]);
  }
  console.log('');
}

/** The figures of the last line. */
function summarize(
  officialRounds: readonly Round[],
  batchedRounds: readonly Round[],
  failover: readonly FailoverRound[],
  loadAvgAtStart: number,
): Record<string, string | number> {
  const med = (rounds: readonly Round[], pick: (r: Round) => number): number =>
    median(rounds.map(pick));
  const acks = failover.map((r) => r.firstAckMs);
  const elected = failover.map((r) => r.electedMs);
  const officialAcks = failover.flatMap((r) =>
    r.officialFirstAckMs === undefined ? [] : [r.officialFirstAckMs],
  );
  return {
    bench: 'produce',
    officialClientMsgsPerSec: Math.round(med(officialRounds, (r) => r.msgsPerSec)),
    batchedMsgsPerSec: Math.round(med(batchedRounds, (r) => r.msgsPerSec)),
    sendLatencyP50Ms: fixed(med(officialRounds, (r) => r.latencyP50Ms)),
    sendLatencyP99Ms: fixed(med(officialRounds, (r) => r.latencyP99Ms)),
    firstAckAfterKillMsP50: fixed(percentile(acks, 0.5), 1),
    firstAckAfterKillMsP99: fixed(percentile(acks, 0.99), 1),
    batchedSendLatencyP50Ms: fixed(med(batchedRounds, (r) => r.latencyP50Ms)),
    batchedSendLatencyP99Ms: fixed(med(batchedRounds, (r) => r.latencyP99Ms)),
    electedAfterKillMsP50: fixed(percentile(elected, 0.5), 1),
    officialFirstAckAfterKillMsP50: fixed(percentile(officialAcks, 0.5), 1),
    officialFirstAckAfterKillMsP99: fixed(percentile(officialAcks, 0.99), 1),
    loadAvg1mAtStart: fixed(loadAvgAtStart),
  };
}

/** Runs the phases asked for; returns the figures of the last line. */
async function runPhases(
  cluster: LocalCluster,
  clients: Clients,
  loadAvgAtStart: number,
): Promise<Record<string, string | number>> {
  const { sdk, official, logger } = clients;
  const sendOfficial = (): Promise<unknown> => official.send({ topic: TOPIC, body: BODY });
  const batch = Array.from({ length: BATCH_MESSAGES }, () => ({ body: BODY }));
  const sendBatch = (): Promise<unknown> => sdk.send(TOPIC, batch);
  const officialRounds = PHASES.has('official')
    ? await throughputPhase(
        cluster,
        { inflight: OFFICIAL_INFLIGHT, messagesPerSend: 1 },
        sendOfficial,
      )
    : [];
  const batchedRounds = PHASES.has('batched')
    ? await throughputPhase(
        cluster,
        { inflight: BATCH_INFLIGHT, messagesPerSend: BATCH_MESSAGES },
        sendBatch,
      )
    : [];
  printThroughput(officialRounds, batchedRounds);
  let failover: FailoverRound[] = [];
  if (PHASES.has('failover')) {
    console.log(`failover: ${FAILOVER_ROUNDS} rounds, kill -9 of the leader; ms after the kill`);
    failover = await failoverPhase(cluster, sdk, official, {
      rounds: FAILOVER_ROUNDS,
      topic: TOPIC,
      body: BODY,
    });
    printFailoverSummary(failover);
  }
  console.log(`official client log: ${logger.warnings} warnings, ${logger.errors} errors`);
  if (logger.firstError !== undefined) console.log(`  first error: ${logger.firstError}`);
  return summarize(officialRounds, batchedRounds, failover, loadAvgAtStart);
}

async function main(): Promise<void> {
  checkArgs();
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  const loadAvgAtStart = os.loadavg()[0] ?? 0;
  console.log(`produce benchmark (${quick ? 'quick' : 'full'}), data under ${root}`);
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
    const clients = await startClients(cluster);
    try {
      figures = await runPhases(cluster, clients, loadAvgAtStart);
    } finally {
      await stopClients(clients);
    }
  } finally {
    await cluster.stopAll();
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log(
    'targets: batched >= 50000 msgs/s; first ack after kill median < 1500, p99 < 3000 ms',
  );
  console.log(`load avg after: ${loadText()}`);
  console.log(JSON.stringify(figures));
}

// process.exit: a failed official-client shutdown leaves gRPC channels open (see stopClients).
// On Linux, stdout to a file or pipe is written synchronously, so nothing printed is lost.
runWithClientFlags(main);
