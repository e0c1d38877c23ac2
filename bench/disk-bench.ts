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
 * the machine has cores run beside them, as a paced `bench:raft` keeps the machine 85 to 90%
 * busy). The second shows what the disk and the scheduler of this virtual machine do to
 * fdatasync latency when the CPUs are taken.
 *
 * Options: `--quick` (4 s phases), `--seconds N`, `--rate N` (records/s per writer),
 * `--writers N`, `--dir PATH` (`.bench-tmp/` by default). The last line of output is one JSON
 * object of the medians over the writers.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LatencyHistogram } from '../src/cli/raft-load';
import { RECORD_HEADER_BYTES } from '../src/store/log-record';
import { median, tableRow as row } from './produce-load';

const args = process.argv.slice(2);
const argAfter = (flag: string): string | undefined =>
  args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined;

/** A whole number argument in [min, max], or the default. */
function intArg(flag: string, fallback: number, min: number, max: number): number {
  const text = argAfter(flag);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`${flag} takes a whole number from ${min} to ${max}`);
  }
  return n;
}

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
  /** Rounds (write + fdatasync) longer than STALL_MS, and their summed time. */
  readonly stalls: number;
  readonly stallMs: number;
}

/** The writer process: paced group-commit rounds into one file; reports over IPC. */
function runWriter(spec: WriterSpec): WriterResult {
  const fd = fs.openSync(spec.file, 'w');
  const buf = Buffer.alloc(ROUND_BYTES_MAX, 0x5a);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const histogram = new LatencyHistogram();
  let done = 0;
  let position = 0;
  let rounds = 0;
  let stalls = 0;
  let stallMs = 0;
  const startMs = performance.now();
  try {
    for (;;) {
      const nowMs = performance.now();
      if (nowMs - startMs >= spec.durationMs) break;
      const due = Math.floor(((nowMs - startMs) * spec.ratePerSec) / 1000);
      if (due <= done) {
        Atomics.wait(sleeper, 0, 0, IDLE_WAIT_MS);
        continue;
      }
      const count = Math.min(due - done, Math.floor(ROUND_BYTES_MAX / RECORD_BYTES));
      const roundStartMs = performance.now();
      fs.writeSync(fd, buf, 0, count * RECORD_BYTES, position);
      fs.fdatasyncSync(fd);
      const endMs = performance.now();
      if (endMs - roundStartMs > STALL_MS) {
        stalls += 1;
        stallMs += endMs - roundStartMs;
      }
      for (let k = done; k < done + count; k++) {
        const dueMs = startMs + ((k + 1) * 1000) / spec.ratePerSec;
        if (dueMs - startMs >= WARMUP_MS) histogram.record(endMs - dueMs);
      }
      position += count * RECORD_BYTES;
      done += count;
      rounds += 1;
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
  };
}

/** The load process: keeps one core busy until the deadline; returns a value to keep the work. */
function runSpinner(durationMs: number): number {
  const endMs = Date.now() + durationMs;
  let x = 0;
  while (Date.now() < endMs) {
    for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
  }
  return x;
}

/** Starts this file as a child in `role`; resolves with the message it sends, if any. */
function startChild(
  role: 'writer' | 'spinner',
  payload: unknown,
  deadlineMs: number,
): { child: ChildProcess; result: Promise<unknown> } {
  const child = fork(__filename, [role, JSON.stringify(payload)], { stdio: 'inherit' });
  const result = new Promise<unknown>((resolve, reject) => {
    let message: unknown;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${role} ${child.pid ?? '?'} did not finish in time`));
    }, deadlineMs + CHILD_GRACE_MS);
    child.on('message', (m) => {
      message = m;
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(message);
      else reject(new Error(`${role} ${child.pid ?? '?'} ended with ${signal ?? code}`));
    });
  });
  return { child, result };
}

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
      const s = startChild('spinner', { durationMs: durationMs + 500 }, durationMs);
      started.push(s.child);
      return s.result;
    });
    const results = Array.from({ length: writers }, (_, i) => {
      const spec: WriterSpec = { file: path.join(dir, `${name}-${i}`), ratePerSec, durationMs };
      const w = startChild('writer', spec, durationMs);
      started.push(w.child);
      return w.result;
    });
    const out = (await Promise.all(results)) as WriterResult[];
    await Promise.all(load);
    return out;
  } finally {
    for (const child of started) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
}

async function main(): Promise<void> {
  const quick = args.includes('--quick');
  const durationMs = intArg('--seconds', quick ? 4 : 10, 2, 600) * 1000;
  const ratePerSec = intArg('--rate', 50_000, 1, 1_000_000);
  const writers = intArg('--writers', 3, 1, 16);
  const spinners = os.cpus().length;
  const root = path.join(argAfter('--dir') ?? path.join(process.cwd(), '.bench-tmp'), 'disk');
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  console.log(`disk benchmark, data under ${root}`);
  console.log(
    `${writers} writers x ${ratePerSec} records/s of ${RECORD_BYTES} bytes, a write and an ` +
      `fdatasync per round; ${durationMs / 1000} s per phase (the first second not measured)`,
  );
  console.log(`loaded: ${spinners} busy processes beside the writers\n`);
  try {
    const quiet = await runPhase('quiet', root, writers, 0, ratePerSec, durationMs);
    const loaded = await runPhase('loaded', root, writers, spinners, ratePerSec, durationMs);
    row(['phase', 'records/s', 'p50 ms', 'p99 ms', 'max ms', 'rounds', 'stalls', 'stall ms']);
    const measuredSec = (durationMs - WARMUP_MS) / 1000;
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
        ]),
      );
    show('quiet', quiet);
    show('loaded', loaded);
    console.log(`stalls: rounds (write + fdatasync) longer than ${STALL_MS} ms`);
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
      }),
    );
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

const role = process.argv[2];
if (role === 'writer' || role === 'spinner') {
  const payload = JSON.parse(process.argv[3] ?? '{}') as WriterSpec;
  const result = role === 'writer' ? runWriter(payload) : { spun: runSpinner(payload.durationMs) };
  // The channel closes once the result is on its way; the process then ends by itself.
  process.send?.(result, () => process.disconnect?.());
} else {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
