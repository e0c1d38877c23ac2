/**
 * Rounds of the consume benchmark (consume-bench.ts): filling a topic before a phase,
 * measuring one window of a running load — messages consumed per second, request latency, and
 * each process's CPU time (from /proc) per consumed message — and printing rounds as a table.
 *
 * A window opens once the load has consumed its first message and a ramp has passed (so a
 * consumer's start-up is not measured), and closes after its duration or as soon as the load
 * has consumed its whole backlog (the round is then marked drained: its rate is still messages
 * over the window's own length).
 */
import type { LocalCluster } from '../src/cli/local-cluster';
import { waitUntil } from '../src/cli/raft-node-client';
import type { Producer } from '../src/client/producer';
import type { PullConsumer } from '../src/client/pull-consumer';
import { delayMs, type ConsumeLoad } from './consume-load';
import { closedLoop, median, percentile, processCpuMs, tableRow } from './produce-load';

const LEADER_TIMEOUT_MS = 15_000;
/** How often a window checks whether its load drained its backlog. */
const POLL_MS = 20;
/** After a drain, how long the window waits for the last acks to be counted. */
const SETTLE_MS_MAX = 3_000;

/** One measured window. Latencies are undefined for a load that records none. */
export interface Round {
  readonly messages: number;
  readonly elapsedMs: number;
  readonly msgsPerSec: number;
  readonly latencyP50Ms: number | undefined;
  readonly latencyP99Ms: number | undefined;
  readonly latencyMaxMs: number | undefined;
  readonly failedRequests: number;
  readonly firstError: string | undefined;
  /** The load consumed its whole backlog before the window's duration ran out. */
  readonly drained: boolean;
  readonly leaderChanged: boolean;
  readonly cpuUsPerMsgLeader: number | undefined;
  readonly cpuUsPerMsgFollower: number | undefined;
  readonly cpuUsPerMsgClient: number;
  /** The window on the monotonic clock (µs, as V8 CPU profiles time their samples). */
  readonly monotonicStartUs: number;
  readonly monotonicEndUs: number;
}

const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

export interface WindowSpec {
  /** Time between the first consumed message and the window's start. */
  readonly rampMs: number;
  readonly windowMs: number;
  /** How long the load may take to consume its first message. */
  readonly startTimeoutMs: number;
}

/** CPU ms of every broker node and of this process, now. */
function cpuSnapshot(pids: ReadonlyMap<string, number | undefined>): {
  nodes: Map<string, number | undefined>;
  client: NodeJS.CpuUsage;
} {
  return {
    nodes: new Map([...pids].map(([id, pid]) => [id, processCpuMs(pid)])),
    client: process.cpuUsage(),
  };
}

/** Measures one window of `load` (see the file comment); the load keeps running. */
export async function measureWindow(
  cluster: LocalCluster,
  load: ConsumeLoad,
  spec: WindowSpec,
): Promise<Round> {
  await waitUntil('the first message consumed', spec.startTimeoutMs, () =>
    Promise.resolve(load.seen() > 0 || load.failedRequests > 0 ? true : undefined),
  );
  await delayMs(spec.rampMs);
  const leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
  const pids = new Map(cluster.brokers.map((b) => [b.id, b.pid]));
  const countBefore = await load.count();
  const before = cpuSnapshot(pids);
  const startMs = performance.now();
  const monotonicStartUs = monotonicUs();
  load.takeLatencies();
  while (performance.now() - startMs < spec.windowMs && load.seen() < load.backlog) {
    await delayMs(POLL_MS);
  }
  const drained = load.seen() >= load.backlog;
  if (drained) {
    // The load saw its last message; the broker may not have counted its ack yet.
    const settleEndMs = performance.now() + SETTLE_MS_MAX;
    while ((await load.count()) < load.backlog && performance.now() < settleEndMs) {
      await delayMs(POLL_MS);
    }
  }
  const after = cpuSnapshot(pids);
  const monotonicEndUs = monotonicUs();
  const elapsedMs = performance.now() - startMs;
  const messages = (await load.count()) - countBefore;
  const latencies = load.takeLatencies();
  const afterLeader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
  const perMsg = Math.max(1, messages);
  const usPerMsg = (id: string): number | undefined => {
    const a = after.nodes.get(id);
    const b = before.nodes.get(id);
    return a === undefined || b === undefined ? undefined : ((a - b) * 1000) / perMsg;
  };
  const followers = cluster.nodeIds.filter((id) => id !== leader.nodeId).map(usPerMsg);
  const client = process.cpuUsage(before.client);
  return {
    messages,
    elapsedMs,
    msgsPerSec: (messages * 1000) / elapsedMs,
    latencyP50Ms: latencies.length === 0 ? undefined : percentile(latencies, 0.5),
    latencyP99Ms: latencies.length === 0 ? undefined : percentile(latencies, 0.99),
    latencyMaxMs: latencies.length === 0 ? undefined : percentile(latencies, 1),
    failedRequests: load.failedRequests,
    firstError: load.firstError,
    drained,
    leaderChanged: afterLeader.term !== leader.term,
    cpuUsPerMsgLeader: usPerMsg(leader.nodeId),
    cpuUsPerMsgFollower: followers.includes(undefined)
      ? undefined
      : followers.reduce((s: number, x) => s + (x ?? 0), 0) / followers.length,
    cpuUsPerMsgClient: (client.user + client.system) / perMsg,
    monotonicStartUs,
    monotonicEndUs,
  };
}

/** Creates `name` on the leader (retrying until the leader takes writes). */
export async function createTopic(
  cluster: LocalCluster,
  name: string,
  queueCount: number,
): Promise<void> {
  await waitUntil(`topic ${name} created`, LEADER_TIMEOUT_MS, async () => {
    const leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    const admin = await cluster.admin(leader.nodeId);
    return admin.createTopic({ name, queueCount });
  });
}

/** How a topic was filled. */
export interface Prefill {
  /** Messages stored in the topic (every queue's end offset, summed). */
  readonly stored: number;
  readonly elapsedMs: number;
  readonly failedSends: number;
}

/** Sends `count` messages (batches of `batch.length`, `inflight` sends at a time) to `topic`. */
export async function prefill(
  producer: Producer,
  reader: PullConsumer,
  spec: {
    readonly topic: string;
    readonly queueCount: number;
    readonly count: number;
    readonly batch: readonly { body: Uint8Array }[];
    readonly inflight: number;
    readonly durationMsMax: number;
  },
): Promise<Prefill> {
  const sendsMax = Math.ceil(spec.count / spec.batch.length);
  const result = await closedLoop(
    {
      inflight: spec.inflight,
      messagesPerSend: spec.batch.length,
      durationMs: spec.durationMsMax,
      sendsMax,
    },
    () => producer.send(spec.topic, spec.batch),
  );
  let stored = 0;
  for (let queueId = 0; queueId < spec.queueCount; queueId++) {
    stored += await reader.queryOffset(spec.topic, queueId, 'END');
  }
  return { stored, elapsedMs: result.elapsedMs, failedSends: result.failedSends };
}

/** Prints a table row per round, then what went wrong, if anything. */
export function showRounds(name: string, rs: readonly Round[], showWindows: boolean): void {
  rs.forEach((r, i) =>
    tableRow([
      `${name} #${i + 1}${r.drained ? ' (drained)' : ''}`,
      Math.round(r.msgsPerSec),
      r.latencyP50Ms,
      r.latencyP99Ms,
      r.latencyMaxMs,
      r.failedRequests,
      r.cpuUsPerMsgLeader,
      r.cpuUsPerMsgFollower,
      r.cpuUsPerMsgClient,
    ]),
  );
  if (showWindows) {
    const windows = rs.map((r) => `${r.monotonicStartUs}-${r.monotonicEndUs}`);
    console.log(`  ${name} windows (monotonic us, as in the CPU profiles): ${windows.join(' ')}`);
  }
  const failed = rs.find((r) => r.firstError !== undefined);
  if (failed !== undefined) console.log(`  first failure: ${failed.firstError}`);
  if (rs.some((r) => r.leaderChanged)) console.log('  the leader changed during a round');
}

/** The median of a column; undefined when no round has a value. */
export function medianOf(
  rs: readonly Round[],
  pick: (r: Round) => number | undefined,
): number | undefined {
  const xs = rs.flatMap((r) => (pick(r) === undefined ? [] : [pick(r) as number]));
  return xs.length === 0 ? undefined : median(xs);
}
