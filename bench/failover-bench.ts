/**
 * `npm run bench:failover`: how long a group of three `raft-node` processes (gRPC on loopback,
 * real store, default timings) takes from kill -9 of its leader to a new leader committing.
 *
 * Each round: wait until all three run and applied the same index; keep the group healthy for a
 * while under a light paced load; kill -9 the leader; the failover time runs from just before
 * the kill to the moment a survivor, as leader, applied the first entry of its term (its no-op),
 * as that node reports it over IPC with its own timestamp; then restart the killed node on its
 * data directory. A node that becomes a candidate outside the failover windows (kill to new
 * leader committed) is a spurious election. Every node's role changes come over IPC.
 *
 * Prints a table per round and the median and p99; the last line is one JSON object.
 * Options: `--quick` (5 rounds), `--rounds N`, `--dir PATH` (`.bench-tmp/` by default); for
 * experiments with timings other than the defaults: `--tick-ms N` (driver tickIntervalMs),
 * `--election-ticks N`, `--heartbeat-ticks N`, `--backoff-max-ms N` (transport
 * reconnectBackoffMaxMs).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { LocalRaftGroup, type RaftNodeProcess } from '../src/cli/raft-node-client';
import { wallMs, type RaftNodeEvent } from '../src/cli/raft-node-protocol';
import { argAfter, benchRoot, hasFlag } from './bench-args';

const quick = hasFlag('--quick');
const root = benchRoot('failover');
const ROUNDS = Number(argAfter('--rounds') ?? (quick ? 5 : 20));
const numberArg = (flag: string): number | undefined => {
  const text = argAfter(flag);
  return text === undefined ? undefined : Number(text);
};
/** Timing overrides; empty (the defaults) unless given on the command line. */
const TIMINGS = {
  driver: { tickIntervalMs: numberArg('--tick-ms') },
  raft: {
    electionTimeoutTicks: numberArg('--election-ticks'),
    heartbeatIntervalTicks: numberArg('--heartbeat-ticks'),
  },
  transport: { reconnectBackoffMaxMs: numberArg('--backoff-max-ms') },
};
const HEALTHY_MS = quick ? 1_000 : 1_500;
const HEALTHY_RATE_PER_SEC = 1_000;
const FAILOVER_TIMEOUT_MS = 15_000;
const RESTART_TIMEOUT_MS = 30_000;

/** Nearest-rank percentile. */
function percentile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? 0;
}

interface Round {
  readonly killed: string;
  readonly elected: string;
  readonly oldTerm: number;
  readonly newTerm: number;
  readonly electionMs: number;
  readonly windowStartMs: number;
  readonly windowEndMs: number;
}

/** Kills the leader and waits for a survivor to commit in a later term. */
async function failoverOnce(group: LocalRaftGroup, procs: RaftNodeProcess[]): Promise<Round> {
  const leader = await group.waitForLeader(FAILOVER_TIMEOUT_MS);
  const survivors = group.running().filter((p) => p.id !== leader.id);
  const killMs = wallMs();
  await group.crash(leader.id);
  const committed = await Promise.any(
    survivors.map(async (p) => {
      const e = await p.waitForEvent(
        (ev) => ev.event === 'termCommitted' && ev.term > leader.term,
        FAILOVER_TIMEOUT_MS,
      );
      return { id: p.id, event: e };
    }),
  );
  const event = committed.event as Extract<RaftNodeEvent, { event: 'termCommitted' }>;
  procs.push(await group.start(leader.id));
  return {
    killed: leader.id,
    elected: committed.id,
    oldTerm: leader.term,
    newTerm: event.term,
    electionMs: event.atMs - killMs,
    windowStartMs: killMs,
    windowEndMs: event.atMs,
  };
}

/** Lets the whole group run healthy under a light load; throws if it cannot converge. */
async function healthyPeriod(group: LocalRaftGroup): Promise<void> {
  await group.waitForConvergence(RESTART_TIMEOUT_MS);
  const leader = await group.waitForLeader(FAILOVER_TIMEOUT_MS);
  const proc = group.node(leader.id);
  if (proc === undefined) throw new Error(`leader ${leader.id} is not running`);
  const load = await proc.request('load', {
    durationMs: HEALTHY_MS,
    sizeBytes: 1024,
    inflightMax: 64,
    batchEntries: 64,
    ratePerSec: HEALTHY_RATE_PER_SEC,
  });
  const errors = Object.keys(load.errors);
  if (errors.length > 0) console.log(`healthy load on ${leader.id} had errors: ${errors.join()}`);
}

/**
 * Campaigns (`role`: candidate or preCandidate) after `fromMs` and outside every failover
 * window, each described as "node +ms after that process started".
 */
function campaignsOutside(
  procs: readonly RaftNodeProcess[],
  rounds: readonly Round[],
  fromMs: number,
  role: string,
): string[] {
  const inWindow = (atMs: number): boolean =>
    rounds.some((r) => atMs >= r.windowStartMs && atMs <= r.windowEndMs);
  const found: string[] = [];
  for (const p of procs) {
    const startedMs = p.events.find((e) => e.event === 'started')?.atMs ?? 0;
    for (const e of p.events) {
      if (e.event === 'softState' && e.role === role && e.atMs > fromMs && !inWindow(e.atMs)) {
        found.push(`${p.id} +${Math.round(e.atMs - startedMs)} ms`);
      }
    }
  }
  return found;
}

/** The role changes of a failover window, as "node role term +ms after the kill". */
function roleChanges(procs: readonly RaftNodeProcess[], round: Round): string {
  const changes: Array<{ atMs: number; text: string }> = [];
  for (const p of procs) {
    for (const e of p.events) {
      if (e.event !== 'softState' || e.atMs < round.windowStartMs) continue;
      if (e.atMs > round.windowEndMs) continue;
      const afterMs = Math.round(e.atMs - round.windowStartMs);
      changes.push({ atMs: e.atMs, text: `${p.id} ${e.role} t${e.term} +${afterMs}` });
    }
  }
  return changes
    .sort((a, b) => a.atMs - b.atMs)
    .map((c) => c.text)
    .join(', ');
}

async function main(): Promise<void> {
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  const load = (): string =>
    os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
  console.log(`failover benchmark, ${ROUNDS} rounds, data under ${root}`);
  console.log(`node ${process.version}, ${os.cpus().length} cpus, load avg ${load()}\n`);
  // JSON drops the options left undefined, so this shows only what differs from the defaults.
  const overrides = JSON.stringify(TIMINGS);
  const noOverrides = JSON.stringify({ driver: {}, raft: {}, transport: {} });
  console.log(`timings: ${overrides === noOverrides ? 'defaults' : `overrides ${overrides}`}`);
  const group = await LocalRaftGroup.start({
    rootDir: root,
    node: { logLevel: 'warn', ...TIMINGS },
  });
  const procs: RaftNodeProcess[] = [...group.running()];
  const rounds: Round[] = [];
  let fromMs = 0;
  try {
    await group.waitForLeader(FAILOVER_TIMEOUT_MS);
    // Spurious elections are counted from here: the first election is not one.
    fromMs = wallMs();
    console.log(
      `${'round'.padEnd(6)}${'killed'.padEnd(8)}${'elected'.padEnd(9)}terms  failover ms`,
    );
    for (let i = 0; i < ROUNDS; i++) {
      await healthyPeriod(group);
      const r = await failoverOnce(group, procs);
      rounds.push(r);
      const terms = `${r.oldTerm}->${r.newTerm}`.padEnd(7);
      console.log(
        `${String(i + 1).padEnd(6)}${r.killed.padEnd(8)}${r.elected.padEnd(9)}${terms}` +
          `${r.electionMs.toFixed(1).padStart(11)}`,
      );
    }
    await healthyPeriod(group);
  } finally {
    await group.stopAll();
    fs.rmSync(root, { recursive: true, force: true });
  }
  const times = rounds.map((r) => r.electionMs);
  const spurious = campaignsOutside(procs, rounds, fromMs, 'candidate');
  const preVotes = campaignsOutside(procs, rounds, fromMs, 'preCandidate');
  const figures = {
    bench: 'failover',
    electionMsP50: Number(percentile(times, 0.5).toFixed(1)),
    electionMsP99: Number(percentile(times, 0.99).toFixed(1)),
    spuriousElections: spurious.length,
  };
  const multiTerm = rounds.filter((r) => r.newTerm > r.oldTerm + 1);
  console.log('');
  console.log(
    `failover ms: median ${figures.electionMsP50}, p99 ${figures.electionMsP99}, ` +
      `min ${Math.min(...times).toFixed(1)}, max ${Math.max(...times).toFixed(1)}`,
  );
  console.log(`rounds needing more than one term: ${multiTerm.length}`);
  for (const r of multiTerm)
    console.log(`  term ${r.oldTerm}->${r.newTerm}: ${roleChanges(procs, r)}`);
  const list = (xs: string[]): string => (xs.length > 0 ? ` (${xs.join(', ')})` : '');
  console.log(`spurious elections (outside failover windows): ${spurious.length}${list(spurious)}`);
  console.log(`pre-votes outside failover windows: ${preVotes.length}${list(preVotes)}`);
  console.log('targets: median < 1000 ms, p99 < 1500 ms, no spurious elections');
  console.log(`load avg after: ${load()}`);
  console.log(JSON.stringify(figures));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
