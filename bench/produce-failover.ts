/**
 * The failover phase of the produce benchmark (produce-bench.ts): leader failover as clients
 * see it. Steady senders run throughout (raftmq's producer, and the official client for
 * comparison). Each round waits until all three nodes run and each applied what the leader had
 * committed, and until both senders get through; then it kills the leader with SIGKILL and
 * times, from just before the kill, (a) until a majority of the survivors report the same new
 * leader (admin NodeStatus, polled every 20 ms) and (b) until the first send issued after the
 * kill is acknowledged (only a new leader can have stored it); then it restarts the killed node
 * on its data.
 */
import type { Producer as OfficialProducer } from 'rocketmq-client-nodejs';
import type { LocalCluster, LocalLeader } from '../src/cli/local-cluster';
import { waitUntil } from '../src/cli/raft-node-client';
import type { Producer } from '../src/client/producer';
import { percentile, SteadySender, tableRow } from './produce-load';

/** One send every this often from raftmq's producer (the official client: every 2x). */
const STEADY_INTERVAL_MS = 10;
/**
 * Sends of a steady sender issued since the kill and in flight, at most: enough that one of
 * them retries soon after the new leader is known, few enough that their retries (each asks the
 * NameServer for the route again) do not load the survivors during the election.
 */
const STEADY_INFLIGHT_MAX = 8;
const LEADER_TIMEOUT_MS = 15_000;
const FIRST_ACK_TIMEOUT_MS = 15_000;
const CATCH_UP_TIMEOUT_MS = 30_000;

/** What the phase sends. */
export interface FailoverSpec {
  readonly rounds: number;
  readonly topic: string;
  readonly body: Buffer;
}

export interface FailoverRound {
  readonly killed: string;
  readonly elected: string;
  readonly oldTerm: number;
  readonly newTerm: number;
  /** Kill to a majority of the survivors reporting the new leader. */
  readonly electedMs: number;
  /** Kill to the first acknowledgement, raftmq's producer. */
  readonly firstAckMs: number;
  /** The same for the official client; undefined when it got none in time. */
  readonly officialFirstAckMs: number | undefined;
}

/** Waits until every node runs, agrees on the leader, and applied what it had committed. */
export async function waitForHealthyGroup(cluster: LocalCluster): Promise<LocalLeader> {
  const leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
  const target = (await (await cluster.admin(leader.nodeId)).nodeStatus()).commitIndex;
  await waitUntil('every node caught up', CATCH_UP_TIMEOUT_MS, async () => {
    if (cluster.running().length !== cluster.nodeIds.length) return undefined;
    const statuses = await Promise.all(
      cluster.nodeIds.map(async (id) => (await cluster.admin(id)).nodeStatus({ timeoutMs: 500 })),
    );
    return statuses.every((s) => s.appliedIndex >= target && s.term === leader.term)
      ? true
      : undefined;
  });
  return leader;
}

/** One round: healthy group, kill -9 of the leader, new leader and first acks, restart. */
async function failoverOnce(
  cluster: LocalCluster,
  steady: SteadySender,
  officialSteady: SteadySender,
): Promise<FailoverRound> {
  const leader = await waitForHealthyGroup(cluster);
  // Both senders must be getting through before the kill.
  const nowMs = performance.now();
  await steady.firstAckIssuedAfter(nowMs, FIRST_ACK_TIMEOUT_MS);
  await officialSteady.firstAckIssuedAfter(nowMs, FIRST_ACK_TIMEOUT_MS);
  const killMs = performance.now();
  const firstAck = steady.firstAckIssuedAfter(killMs, FIRST_ACK_TIMEOUT_MS);
  // Awaited below; this handler only keeps a failure before that point from also becoming an
  // unhandled rejection of this promise.
  firstAck.catch(() => undefined);
  const officialFirstAck = officialSteady
    .firstAckIssuedAfter(killMs, FIRST_ACK_TIMEOUT_MS)
    .catch((err: unknown) => {
      // The official client's figure is for comparison only; a round it misses is shown as -.
      console.log(`  official client: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    });
  await cluster.kill(leader.nodeId, 'SIGKILL');
  const elected = await cluster.waitForLeader(LEADER_TIMEOUT_MS, leader.term);
  const electedMs = performance.now() - killMs;
  const ackMs = await firstAck;
  const officialAckMs = await officialFirstAck;
  await cluster.restart(leader.nodeId);
  return {
    killed: leader.nodeId,
    elected: elected.nodeId,
    oldTerm: leader.term,
    newTerm: elected.term,
    electedMs,
    firstAckMs: ackMs - killMs,
    officialFirstAckMs: officialAckMs === undefined ? undefined : officialAckMs - killMs,
  };
}

/** Runs `spec.rounds` failover rounds, printing a table row for each. */
export async function failoverPhase(
  cluster: LocalCluster,
  producer: Producer,
  official: OfficialProducer,
  spec: FailoverSpec,
): Promise<FailoverRound[]> {
  const steady = new SteadySender(
    () => producer.send(spec.topic, [{ body: spec.body }]),
    STEADY_INTERVAL_MS,
    STEADY_INFLIGHT_MAX,
  );
  const officialSteady = new SteadySender(
    () => official.send({ topic: spec.topic, body: spec.body }),
    2 * STEADY_INTERVAL_MS,
    STEADY_INFLIGHT_MAX,
  );
  steady.start();
  officialSteady.start();
  const rounds: FailoverRound[] = [];
  try {
    tableRow(['round', 'killed', 'elected', 'terms', 'elected ms', 'first ack', 'official']);
    for (let i = 0; i < spec.rounds; i++) {
      const r = await failoverOnce(cluster, steady, officialSteady);
      rounds.push(r);
      const terms = `${r.oldTerm}->${r.newTerm}`;
      const { killed, elected, electedMs, firstAckMs, officialFirstAckMs } = r;
      tableRow([`#${i + 1}`, killed, elected, terms, electedMs, firstAckMs, officialFirstAckMs]);
    }
    await waitForHealthyGroup(cluster);
  } finally {
    await Promise.all([steady.stop(), officialSteady.stop()]);
  }
  const report = (name: string, s: SteadySender): void =>
    console.log(
      `${name} steady sender: ${s.acked} acked, ${s.failed} failed, ${s.skipped} skipped` +
        (s.firstError === undefined ? '' : ` (first failure: ${s.firstError})`),
    );
  report('raftmq producer', steady);
  report('official client', officialSteady);
  return rounds;
}

/** Median, p99, min and max of each column of the rounds. */
export function printFailoverSummary(rounds: readonly FailoverRound[]): void {
  if (rounds.length === 0) return;
  const line = (name: string, xs: readonly number[]): void => {
    if (xs.length === 0) return;
    const at = (q: number): string => percentile(xs, q).toFixed(1);
    console.log(
      `${name}: median ${at(0.5)} ms, p99 ${at(0.99)} ms, min ${at(0)}, max ${at(1)}` +
        ` (${xs.length} rounds)`,
    );
  };
  line(
    'new leader seen after kill',
    rounds.map((r) => r.electedMs),
  );
  line(
    'first ack after kill, raftmq producer',
    rounds.map((r) => r.firstAckMs),
  );
  line(
    'first ack after kill, official client',
    rounds.flatMap((r) => (r.officialFirstAckMs === undefined ? [] : [r.officialFirstAckMs])),
  );
}
