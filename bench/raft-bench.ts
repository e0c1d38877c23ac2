/**
 * `npm run bench:raft`: replication throughput and commit latency of one Raft group of three
 * `raft-node` processes on loopback (gRPC, the real CommitLog in SYNC mode: every node fsyncs
 * under group commit before it acknowledges), 1 KiB entries.
 *
 * - saturated: the leader proposes as fast as it accepts (a bounded window of proposals of up
 *   to 256 entries, run inside the leader process); figure: committed entries/s;
 * - half rate: a paced load at half the target rate (the issue's "p99 under 10 ms at half that
 *   rate": 50,000 entries/s), or at half the saturated median when the group does not reach the
 *   target, entries issued every millisecond in proposals of what fell due (as a broker batches
 *   concurrent sends); each entry's latency runs from the moment it was due to its commit and
 *   apply on the leader.
 *
 * Each round also shows the CommitLog fdatasync rounds of 10 ms or longer on the three nodes
 * (the disk stalling, or a loop too busy to see the sync done; in a saturated round a sync
 * carries megabytes and is slow by its size) and the time bucket of the longest, so that a
 * round's p99 can be laid beside what the disk did.
 *
 * Each figure is the median of several rounds. The last line of output is one JSON object:
 * entries/s saturated, and the median and p99 commit latency at half that rate. Options:
 * `--quick` (shorter rounds, CI smoke), `--dir PATH` (where to write; `.bench-tmp/` by default),
 * `--rate N` (no saturated rounds: the paced rounds at N entries/s, to study latency at a given
 * rate; the last line's `commitEntriesPerSec` is then the paced rate reached),
 * `--page-cache-keep-bytes N` (the nodes' CommitLog option; -1 releases nothing, to compare).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalRaftGroup } from '../src/cli/raft-node-client';
import { wallMs, type LoadResult, type LoadSpec } from '../src/cli/raft-node-protocol';
import {
  SLOW_SYNC_MS,
  SYNC_BUCKET_BOUNDS_MS,
  type SyncStats,
} from '../src/store/commit-log-writer';
import { pageCacheKeepArg } from './bench-args';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const dirArg = args[args.indexOf('--dir') + 1];
const rateArg = args.includes('--rate') ? Number(args[args.indexOf('--rate') + 1]) : undefined;
if (rateArg !== undefined && !(Number.isSafeInteger(rateArg) && rateArg >= 1)) {
  throw new Error('--rate takes a whole number of entries per second, at least 1');
}
const keepArg = pageCacheKeepArg();
const root = path.join(
  args.includes('--dir') && dirArg ? dirArg : path.join(process.cwd(), '.bench-tmp'),
  'raft',
);

const ENTRY_SIZE_BYTES = 1024;
/** The throughput target; its half is where the latency target applies. */
const TARGET_ENTRIES_PER_SEC = 100_000;
const ROUNDS = quick ? 1 : 3;
const ROUND_MS = quick ? 2_000 : 5_000;
const WARMUP_MS = quick ? 500 : 1_000;
const SATURATED: Omit<LoadSpec, 'durationMs' | 'warmupMs'> = {
  sizeBytes: ENTRY_SIZE_BYTES,
  inflightMax: 16,
  batchEntries: 256,
};
const PACED_BATCH_ENTRIES = 256;
const PACED_INFLIGHT_MAX = 1024;
/** Rounds lost to a leader change are run again, this many times at most. */
const RETRIES_MAX = 3;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

function row(cells: readonly (string | number)[]): void {
  const text = cells.map((c, i) => {
    const s = typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toFixed(2)) : c;
    return i === 0 ? s.padEnd(22) : s.padStart(12);
  });
  console.log(text.join(' '));
}

function loadText(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

/**
 * A load round, the CPU time each node spent per committed entry during it, and the CommitLog
 * fdatasync rounds of 10 ms or longer on all three nodes with the bucket of the longest; and,
 * where the nodes time their fdatasync calls (the timed-sync addon), how many of those rounds
 * the calls alone took that long (the disk stalling, or the pool thread's wait to run again once
 * it answered: the others waited for a CPU).
 */
interface Round extends LoadResult {
  readonly leaderCpuUsPerEntry: number;
  readonly followersCpuUsPerEntry: number;
  readonly slowSyncs: number;
  /** Undefined when a node does not time its calls. */
  readonly slowDiskSyncs: number | undefined;
  readonly longestSync: string;
}

/** A node's CPU time and fdatasync rounds, at one moment. */
interface NodeSample {
  readonly cpuMs: number;
  readonly sync: SyncStats;
}

/** The index of the bucket of the longest sync in `after` and not in `before` (-1: none). */
function longestSyncBucket(before: readonly number[], after: readonly number[]): number {
  for (let b = after.length - 1; b >= 0; b--) {
    if ((after[b] ?? 0) > (before[b] ?? 0)) return b;
  }
  return -1;
}

/** A bucket's range in ms, as text ("20-50", ">=200"; "-" for none). */
function bucketText(bucket: number): string {
  if (bucket < 0) return '-';
  const lo = bucket === 0 ? 0 : SYNC_BUCKET_BOUNDS_MS[bucket - 1];
  const hi = SYNC_BUCKET_BOUNDS_MS[bucket];
  return hi === undefined ? `>=${lo}` : `${lo}-${hi}`;
}

/** Runs `spec` on the current leader; a round cut short by a leader change is run again. */
async function runRound(group: LocalRaftGroup, spec: LoadSpec): Promise<Round> {
  for (let attempt = 0; attempt <= RETRIES_MAX; attempt++) {
    const leader = await group.waitForLeader(15_000);
    const proc = group.node(leader.id);
    if (proc === undefined) continue;
    const sample = async (): Promise<Map<string, NodeSample>> =>
      new Map(
        await Promise.all(
          group.running().map(async (p): Promise<[string, NodeSample]> => {
            const status = await p.status();
            return [p.id, { cpuMs: status.cpuMs, sync: status.sync }];
          }),
        ),
      );
    const before = await sample();
    const result = await proc.request('load', spec, spec.durationMs + 60_000);
    const after = await sample();
    const failed = Object.keys(result.errors).filter((code) => code !== 'BUSY');
    if (failed.length === 0) {
      const usPerEntry = (id: string): number =>
        (((after.get(id)?.cpuMs ?? 0) - (before.get(id)?.cpuMs ?? 0)) * 1000) /
        Math.max(1, result.committedEntries);
      const followers = [...after.keys()].filter((id) => id !== leader.id);
      let slowSyncs = 0;
      let slowDiskSyncs: number | undefined = 0;
      let longest = -1;
      for (const [id, a] of after) {
        const b = before.get(id);
        slowSyncs += a.sync.slowSyncs - (b?.sync.slowSyncs ?? 0);
        slowDiskSyncs =
          slowDiskSyncs === undefined || a.sync.timedSyncs === 0
            ? undefined
            : slowDiskSyncs + a.sync.slowCalls - (b?.sync.slowCalls ?? 0);
        longest = Math.max(longest, longestSyncBucket(b?.sync.buckets ?? [], a.sync.buckets));
      }
      return {
        ...result,
        leaderCpuUsPerEntry: usPerEntry(leader.id),
        followersCpuUsPerEntry:
          followers.reduce((sum, id) => sum + usPerEntry(id), 0) / Math.max(1, followers.length),
        slowSyncs,
        slowDiskSyncs,
        longestSync: bucketText(longest),
      };
    }
    console.log(`round lost (${failed.join(', ')}) on ${leader.id}; running it again`);
  }
  throw new Error(`no clean round in ${RETRIES_MAX + 1} attempts`);
}

async function main(): Promise<void> {
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  console.log(`raft benchmark (${quick ? 'quick' : 'full'}), data under ${root}`);
  console.log(`node ${process.version}, ${os.cpus().length} cpus, load avg ${loadText()}\n`);
  const group = await LocalRaftGroup.start({
    rootDir: root,
    node: { logLevel: 'warn', flushMode: 'SYNC', pageCacheKeepBytes: keepArg },
  });
  try {
    await group.waitForLeader(15_000);
    const benchStartMs = wallMs();
    const warm = { ...SATURATED, durationMs: ROUND_MS / 2, warmupMs: 0 };
    await runRound(group, warm);
    const saturated: Round[] = [];
    for (let round = 0; round < (rateArg === undefined ? ROUNDS : 0); round++) {
      saturated.push(
        await runRound(group, { ...SATURATED, durationMs: ROUND_MS, warmupMs: WARMUP_MS }),
      );
    }
    const maxRate = median(saturated.map((r) => r.entriesPerSec));
    const halfRate =
      rateArg ?? Math.max(1, Math.round(Math.min(maxRate, TARGET_ENTRIES_PER_SEC) / 2));
    const paced: Round[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      paced.push(
        await runRound(group, {
          sizeBytes: ENTRY_SIZE_BYTES,
          inflightMax: PACED_INFLIGHT_MAX,
          batchEntries: PACED_BATCH_ENTRIES,
          ratePerSec: halfRate,
          durationMs: ROUND_MS,
          warmupMs: WARMUP_MS,
        }),
      );
    }
    const figures = {
      bench: 'raft',
      commitEntriesPerSec: Math.round(
        rateArg === undefined ? maxRate : median(paced.map((r) => r.entriesPerSec)),
      ),
      commitLatencyP50Ms: Number(median(paced.map((r) => r.latencyP50Ms)).toFixed(2)),
      commitLatencyP99Ms: Number(median(paced.map((r) => r.latencyP99Ms)).toFixed(2)),
    };
    console.log(`1 KiB entries, 3 processes, SYNC; ${ROUNDS} x ${ROUND_MS} ms rounds`);
    console.log('cpu us/e: CPU time per committed entry on the leader (L), per follower (F)');
    console.log(
      `slow syncs: CommitLog fdatasync rounds of ${SLOW_SYNC_MS} ms or longer, three nodes; ` +
        'slow disk: those whose fdatasync calls alone took that long (the rest waited for a ' +
        'CPU; "-": calls not timed); longest: the bucket (ms) of the longest round',
    );
    row([
      'run',
      'entries/s',
      'p50 ms',
      'p90 ms',
      'p99 ms',
      'max ms',
      'cpu us/e L',
      'cpu us/e F',
      'slow syncs',
      'slow disk',
      'longest',
    ]);
    const show = (name: string, r: Round): void =>
      row([
        name,
        Math.round(r.entriesPerSec),
        r.latencyP50Ms,
        r.latencyP90Ms,
        r.latencyP99Ms,
        r.latencyMaxMs,
        r.leaderCpuUsPerEntry,
        r.followersCpuUsPerEntry,
        r.slowSyncs,
        r.slowDiskSyncs ?? '-',
        r.longestSync,
      ]);
    saturated.forEach((r, i) => show(`saturated #${i + 1}`, r));
    paced.forEach((r, i) => show(`paced ${halfRate}/s #${i + 1}`, r));
    row([rateArg === undefined ? 'median saturated' : 'median paced', figures.commitEntriesPerSec]);
    row([
      rateArg === undefined ? 'median at half rate' : `median at ${rateArg}/s`,
      '',
      figures.commitLatencyP50Ms,
      '',
      figures.commitLatencyP99Ms,
    ]);
    const elections = group
      .running()
      .flatMap((p) => p.events)
      .filter((e) => e.event === 'softState' && e.role === 'candidate' && e.atMs > benchStartMs);
    console.log(`elections during the benchmark (should be 0): ${elections.length}`);
    console.log(
      `targets: >= ${TARGET_ENTRIES_PER_SEC} entries/s; p99 < 10 ms at half rate ` +
        `(half the target, or half the saturated median when below it)`,
    );
    console.log(`load avg after: ${loadText()}`);
    await group.stopAll();
    fs.rmSync(root, { recursive: true, force: true });
    console.log(JSON.stringify(figures));
  } finally {
    await group.stopAll();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
