/**
 * `npm run bench:disk`: the floor that this machine's disk puts under `bench:raft`'s commit
 * latency, with no Raft, no network and no JavaScript work in the way.
 *
 * Writer processes (three by default, as many as the nodes of a group, all on the one disk of
 * this machine) each append records of 1 KiB plus a CommitLog record header at a paced rate
 * (50,000 per second by default, `bench:raft`'s half rate) in group-commit rounds: a round
 * writes every record that fell due since the last one and fdatasyncs; a record's latency runs
 * from the moment it fell due to the end of the fdatasync that covered it. That is what a
 * CommitLog in SYNC mode pays at least for each entry on each node.
 *
 * Two phases: `quiet` (only the writers run) and `loaded` (as many busy-looping processes as
 * the machine has cores run beside them: a harsher load than a paced `bench:raft`, which keeps
 * the machine 85 to 90% busy). The second shows what the disk and the scheduler of this
 * virtual machine do to fdatasync latency when the CPUs are taken. Each writer also times its
 * fdatasync calls alone (`sync p99`, and `slow syncs`: calls longer than 10 ms): a stall with a
 * fast call waited for a CPU or in its write; a slow call is the disk, or the writer's wait to
 * run again once the disk answered.
 *
 * Options: `--quick` (4 s phases), `--seconds N` (at most 120), `--rate N` (records/s per
 * writer), `--writers N`, `--dir PATH` (`.bench-tmp/` by default). The files take
 * writers x rate x 1,056 bytes per second of a phase (1.6 GB per 10 s phase by default; the
 * benchmark refuses to start without that much free space) and are removed after each phase.
 * The last line of output is one JSON object of the medians over the writers.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LatencyHistogram } from '../src/cli/raft-load';
import { RECORD_HEADER_BYTES } from '../src/store/log-record';
import { median, tableRow as row } from './produce-load';
import { benchRoot, hasFlag, intArg } from './bench-args';

const RECORD_BYTES = 1024 + RECORD_HEADER_BYTES;
/** The largest round a writer makes (it writes the rest in the next). */
const ROUND_BYTES_MAX = 4 * 1024 * 1024;
/** Records that fell due in a writer's first second are not measured (files, caches). */
const WARMUP_MS = 1_000;
/** A round longer than this is a stall. */
const STALL_MS = 10;
/** How long a writer sleeps when nothing is due. */
const IDLE_WAIT_MS = 0.2;
/** A child that has not reported this long after its phase should have ended is killed. */
const CHILD_GRACE_MS = 30_000;
/** Free space asked for beyond what the writers will write. */
const FREE_SPACE_MARGIN = 1.2;

interface SpinnerSpec {
  /** A bound in case the parent is gone: the parent kills a spinner once its writers end. */
  readonly durationMs: number;
}

interface WriterSpec {
  readonly file: string;
  readonly ratePerSec: number;
  readonly durationMs: number;
}

interface WriterResult {
  readonly records: number;
  readonly rounds: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Measured rounds (write + fdatasync) longer than STALL_MS, and their summed time. */
  readonly stalls: number;
  readonly stallMs: number;
  /** The fdatasync calls of the measured rounds alone: p99, and how many took over STALL_MS. */
  readonly syncP99Ms: number;
  readonly slowSyncs: number;
}

/**
 * The writer process: paced group-commit rounds into one file; reports over IPC. Records fall
 * due for `durationMs`; the writer goes on until every one of them is written and synced, so a
 * stall at the end is measured too. Rounds that start within the first WARMUP_MS are not
 * counted, nor are the records that fell due then.
 */
function runWriter(spec: WriterSpec): WriterResult {
  const fd = fs.openSync(spec.file, 'w');
  const buf = Buffer.alloc(ROUND_BYTES_MAX, 0x5a);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const histogram = new LatencyHistogram();
  const syncs = new LatencyHistogram();
  let slowSyncs = 0;
  let done = 0;
  let position = 0;
  let rounds = 0;
  let stalls = 0;
  let stallMs = 0;
  const totalDue = Math.floor((spec.durationMs * spec.ratePerSec) / 1000);
  const startMs = performance.now();
  try {
    while (done < totalDue) {
      const nowMs = performance.now();
      const due = Math.min(totalDue, Math.floor(((nowMs - startMs) * spec.ratePerSec) / 1000));
      if (due <= done) {
        Atomics.wait(sleeper, 0, 0, IDLE_WAIT_MS);
        continue;
      }
      const count = Math.min(due - done, Math.floor(ROUND_BYTES_MAX / RECORD_BYTES));
      const roundStartMs = performance.now();
      const written = fs.writeSync(fd, buf, 0, count * RECORD_BYTES, position);
      if (written !== count * RECORD_BYTES) throw new Error(`short write: ${written} bytes`);
      const syncStartMs = performance.now();
      fs.fdatasyncSync(fd);
      const endMs = performance.now();
      const measured = roundStartMs - startMs >= WARMUP_MS;
      if (measured) {
        rounds += 1;
        syncs.record(endMs - syncStartMs);
        if (endMs - syncStartMs > STALL_MS) slowSyncs += 1;
      }
      if (measured && endMs - roundStartMs > STALL_MS) {
        stalls += 1;
        stallMs += endMs - roundStartMs;
      }
      for (let k = done; k < done + count; k++) {
        const dueMs = startMs + ((k + 1) * 1000) / spec.ratePerSec;
        if (dueMs - startMs >= WARMUP_MS) histogram.record(endMs - dueMs);
      }
      position += count * RECORD_BYTES;
      done += count;
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(spec.file, { force: true });
  }
  return {
    records: histogram.count,
    rounds,
    p50Ms: histogram.quantileMs(0.5),
    p99Ms: histogram.quantileMs(0.99),
    maxMs: histogram.quantileMs(1),
    stalls,
    stallMs,
    syncP99Ms: syncs.quantileMs(0.99),
    slowSyncs,
  };
}

/**
 * The load process: keeps one core busy until the parent kills it (once the writers ended), or
 * until `durationMs`, a bound in case the parent is gone; returns a value to keep the work.
 */
function runSpinner(durationMs: number): number {
  const endMs = Date.now() + durationMs;
  let x = 0;
  while (Date.now() < endMs) {
    for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
  }
  return x;
}

/** How a child ended, and the message it sent (a writer sends its result). */
interface ChildOutcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly message: unknown;
  readonly error?: Error;
}

/**
 * Starts this file as a child in `role`. The promise never rejects: it settles once the child
 * ended and its IPC channel closed (so a message it sent has arrived), or once it could not be
 * started; a child still running `deadlineMs + CHILD_GRACE_MS` from now is killed.
 */
function startChild(
  role: 'writer' | 'spinner',
  payload: WriterSpec | SpinnerSpec,
  deadlineMs: number,
): { child: ChildProcess; outcome: Promise<ChildOutcome> } {
  const child = fork(__filename, [role, JSON.stringify(payload)], { stdio: 'inherit' });
  const outcome = new Promise<ChildOutcome>((resolve) => {
    let message: unknown;
    const timer = setTimeout(() => child.kill('SIGKILL'), deadlineMs + CHILD_GRACE_MS);
    child.on('message', (m) => {
      message = m;
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, message, error });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, message });
    });
  });
  return { child, outcome };
}

function isWriterResult(m: unknown): m is WriterResult {
  return typeof m === 'object' && m !== null && typeof (m as WriterResult).p99Ms === 'number';
}

/** Runs one phase: the spinners (if any) start first, and are killed once the writers end. */
async function runPhase(
  name: string,
  dir: string,
  writers: number,
  spinners: number,
  ratePerSec: number,
  durationMs: number,
): Promise<WriterResult[]> {
  const started: ChildProcess[] = [];
  try {
    const load = Array.from({ length: spinners }, () => {
      const spec: SpinnerSpec = { durationMs: durationMs + CHILD_GRACE_MS };
      const s = startChild('spinner', spec, spec.durationMs);
      started.push(s.child);
      return s;
    });
    const outcomes = await Promise.all(
      Array.from({ length: writers }, (_, i) => {
        const spec: WriterSpec = { file: path.join(dir, `${name}-${i}`), ratePerSec, durationMs };
        const w = startChild('writer', spec, durationMs);
        started.push(w.child);
        return w.outcome;
      }),
    );
    for (const s of load) s.child.kill('SIGKILL');
    const spun = await Promise.all(load.map((s) => s.outcome));
    const failedSpinner = spun.find(
      (o) => o.error !== undefined || (o.code !== null && o.code !== 0),
    );
    if (failedSpinner !== undefined) {
      throw new Error(
        `a busy process failed: ${failedSpinner.error?.message ?? failedSpinner.code}`,
      );
    }
    return outcomes.map((o, i) => {
      if (o.error !== undefined || o.code !== 0 || !isWriterResult(o.message)) {
        const how = o.error?.message ?? `exit ${o.signal ?? o.code}`;
        throw new Error(`${name} writer #${i + 1} failed (${how}) and reported no result`);
      }
      return o.message;
    });
  } finally {
    for (const child of started) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
}

async function main(): Promise<void> {
  const quick = hasFlag('--quick');
  const durationMs = intArg('--seconds', quick ? 4 : 10, 2, 120) * 1000;
  const ratePerSec = intArg('--rate', 50_000, 1, 1_000_000);
  const writers = intArg('--writers', 3, 1, 16);
  const spinners = os.cpus().length;
  const root = benchRoot('disk');
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  const neededBytes = (writers * ratePerSec * RECORD_BYTES * durationMs) / 1000;
  const st = fs.statfsSync(root);
  if (neededBytes * FREE_SPACE_MARGIN > st.bavail * st.bsize) {
    fs.rmSync(root, { recursive: true, force: true });
    throw new Error(
      `${root} has ${((st.bavail * st.bsize) / 1e9).toFixed(1)} GB free; a phase writes ` +
        `${(neededBytes / 1e9).toFixed(1)} GB (fewer --seconds, --writers or --rate)`,
    );
  }
  console.log(`disk benchmark, data under ${root}`);
  console.log(
    `${writers} writers x ${ratePerSec} records/s of ${RECORD_BYTES} bytes, a write and an ` +
      `fdatasync per round; ${durationMs / 1000} s per phase (the first second not measured)`,
  );
  console.log(`loaded: ${spinners} busy processes beside the writers\n`);
  try {
    const quiet = await runPhase('quiet', root, writers, 0, ratePerSec, durationMs);
    const loaded = await runPhase('loaded', root, writers, spinners, ratePerSec, durationMs);
    row([
      'phase',
      'records/s',
      'p50 ms',
      'p99 ms',
      'max ms',
      'rounds',
      'stalls',
      'stall ms',
      'sync p99',
      'slow syncs',
    ]);
    const measuredSec = (durationMs - WARMUP_MS) / 1000;
    // rounds and stalls: those that started after the first WARMUP_MS
    const show = (phase: string, rs: readonly WriterResult[]): void =>
      rs.forEach((r, i) =>
        row([
          `${phase} #${i + 1}`,
          Math.round(r.records / measuredSec),
          r.p50Ms,
          r.p99Ms,
          r.maxMs,
          r.rounds,
          r.stalls,
          Math.round(r.stallMs),
          r.syncP99Ms,
          r.slowSyncs,
        ]),
      );
    show('quiet', quiet);
    show('loaded', loaded);
    console.log(
      `stalls: rounds (write + fdatasync) longer than ${STALL_MS} ms; sync p99 and slow syncs: ` +
        `the fdatasync calls alone (slow: longer than ${STALL_MS} ms); a stall without a slow ` +
        'sync waited for a CPU or in its write',
    );
    const med = (rs: readonly WriterResult[], f: (r: WriterResult) => number): number =>
      Number(median(rs.map(f)).toFixed(2));
    console.log(
      JSON.stringify({
        bench: 'disk',
        ratePerSec,
        writers,
        quietP50Ms: med(quiet, (r) => r.p50Ms),
        quietP99Ms: med(quiet, (r) => r.p99Ms),
        quietStallMs: med(quiet, (r) => r.stallMs),
        loadedP50Ms: med(loaded, (r) => r.p50Ms),
        loadedP99Ms: med(loaded, (r) => r.p99Ms),
        loadedStallMs: med(loaded, (r) => r.stallMs),
        quietSyncP99Ms: med(quiet, (r) => r.syncP99Ms),
        loadedSyncP99Ms: med(loaded, (r) => r.syncP99Ms),
      }),
    );
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

const role = process.argv[2];
if (role === 'writer' || role === 'spinner') {
  const result =
    role === 'writer'
      ? runWriter(JSON.parse(process.argv[3] ?? '{}') as WriterSpec)
      : { spun: runSpinner((JSON.parse(process.argv[3] ?? '{}') as SpinnerSpec).durationMs) };
  // The channel closes once the result is on its way; the process then ends by itself.
  process.send?.(result, () => process.disconnect?.());
} else {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? `bench:disk: ${err.message}` : err);
    process.exitCode = 1;
  });
}
