/**
 * The `load` command: a bounded propose loop that runs inside the leader's `raft-node` process
 * (IPC would be the bottleneck), as fast as accepted or paced, measuring commit latency in a
 * {@link LatencyHistogram}.
 */
import { randomFillSync } from 'node:crypto';
import { isRaftmqError } from '../common/errors';
import type { RaftMember } from '../broker/raft-member';
import {
  checkInt,
  ENTRY_SIZE_BYTES_MAX,
  LOAD_DURATION_MS_MAX,
  type LoadResult,
  type LoadSpec,
} from './raft-node-protocol';

const LOAD_COUNT_MAX = 100_000_000;
const LOAD_INFLIGHT_MAX = 4096;
const LOAD_ERRORS_MAX = 100_000;
const LOAD_PAYLOAD_POOL_SIZE = 256;
const LATENCY_BUCKETS_PER_E = 200;
const LATENCY_US_MAX = 600_000_000;

/** A log-bucketed latency histogram (about 0.5% resolution), bounded in memory. */
export class LatencyHistogram {
  private readonly counts = new Float64Array(
    Math.ceil(Math.log1p(LATENCY_US_MAX) * LATENCY_BUCKETS_PER_E) + 1,
  );
  private total = 0;
  private maxMs = 0;

  get count(): number {
    return this.total;
  }

  record(latencyMs: number, count = 1): void {
    const us = Math.min(LATENCY_US_MAX, Math.max(0, latencyMs * 1000));
    const bucket = Math.floor(Math.log1p(us) * LATENCY_BUCKETS_PER_E);
    this.counts[bucket] = (this.counts[bucket] ?? 0) + count;
    this.total += count;
    this.maxMs = Math.max(this.maxMs, latencyMs);
  }

  /** The latency below which a fraction `q` of the samples fall (bucket upper edge). */
  quantileMs(q: number): number {
    if (q >= 1) return this.maxMs;
    const target = q * this.total;
    let seen = 0;
    for (let b = 0; b < this.counts.length; b++) {
      seen += this.counts[b] ?? 0;
      if (seen > target)
        return Math.min(this.maxMs, Math.expm1((b + 1) / LATENCY_BUCKETS_PER_E) / 1000);
    }
    return this.maxMs;
  }
}

function errorCode(err: unknown): string {
  return isRaftmqError(err) ? err.code : 'UNEXPECTED';
}

function delayMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs a bounded load on `member` (which must lead); see {@link LoadSpec}. */
export async function runLoad(member: RaftMember, spec: LoadSpec): Promise<LoadResult> {
  const durationMs = checkInt(spec.durationMs, 1, LOAD_DURATION_MS_MAX, 'durationMs');
  const warmupMs = checkInt(spec.warmupMs ?? 0, 0, durationMs - 1, 'warmupMs');
  const sizeBytes = checkInt(spec.sizeBytes, 0, ENTRY_SIZE_BYTES_MAX, 'sizeBytes');
  const inflightMax = checkInt(spec.inflightMax, 1, LOAD_INFLIGHT_MAX, 'inflightMax');
  const batchEntries = checkInt(spec.batchEntries, 1, 4096, 'batchEntries');
  const countMax = checkInt(spec.countMax ?? LOAD_COUNT_MAX, 1, LOAD_COUNT_MAX, 'countMax');
  const rate = spec.ratePerSec;
  if (rate !== undefined) checkInt(rate, 1, 10_000_000, 'ratePerSec');
  const pool = Array.from({ length: LOAD_PAYLOAD_POOL_SIZE }, () =>
    randomFillSync(Buffer.alloc(sizeBytes)),
  );
  const startMs = performance.now();
  const endMs = startMs + durationMs;
  const measureFromMs = startMs + warmupMs;
  const histogram = new LatencyHistogram();
  const errors: Record<string, number> = {};
  let proposed = 0;
  let committed = 0;
  let measured = 0;
  let errorCount = 0;
  let halted = false;
  const running = (): boolean =>
    !halted && proposed < countMax && performance.now() < endMs && errorCount < LOAD_ERRORS_MAX;
  /** Proposes `count` entries; `dueMs(j)` is when entry j was due. Never rejects. */
  const proposeBatch = async (count: number, dueMs: (j: number) => number): Promise<void> => {
    const payloads: Buffer[] = [];
    for (let j = 0; j < count; j++) payloads.push(pool[(proposed + j) % pool.length] as Buffer);
    proposed += count;
    try {
      await member.propose(payloads);
      const doneMs = performance.now();
      committed += count;
      for (let j = 0; j < count; j++) {
        const due = dueMs(j);
        if (due < measureFromMs || due > endMs) continue;
        measured += 1;
        histogram.record(doneMs - due);
      }
    } catch (err) {
      // Counted and reported; a leader change or a stopped node ends the run.
      const code = errorCode(err);
      errors[code] = (errors[code] ?? 0) + count;
      errorCount += 1;
      if (code === 'NOT_LEADER' || code === 'STORE_CLOSED' || code === 'STORE_FATAL') {
        halted = true;
      }
      if (code === 'BUSY') await delayMs(1);
    }
  };
  if (rate === undefined) {
    const worker = async (): Promise<void> => {
      while (running()) {
        const count = Math.min(batchEntries, countMax - proposed);
        const sentMs = performance.now();
        await proposeBatch(count, () => sentMs);
      }
    };
    await Promise.all(Array.from({ length: inflightMax }, worker));
  } else {
    await runPaced(rate, startMs, inflightMax, batchEntries, running, (count, firstK) => {
      // Entry k (from 0) falls due when the count due reaches k + 1, at (k + 1) / rate s.
      const dueMs = (j: number): number => startMs + ((firstK + j + 1) * 1000) / rate;
      return proposeBatch(count, dueMs);
    });
  }
  const measuredMs = Math.max(1, endMs - measureFromMs);
  return {
    proposedEntries: proposed,
    committedEntries: committed,
    measuredEntries: measured,
    measuredMs,
    entriesPerSec: (measured * 1000) / measuredMs,
    latencyP50Ms: histogram.quantileMs(0.5),
    latencyP90Ms: histogram.quantileMs(0.9),
    latencyP99Ms: histogram.quantileMs(0.99),
    latencyMaxMs: histogram.quantileMs(1),
    errors,
  };
}

/**
 * Issues entries at `rate` per second: every millisecond, the entries due so far go out in
 * proposals of at most `batchEntries` (as a broker batches concurrent sends), while fewer than
 * `inflightMax` proposals are in flight. Resolves when the run ends and every proposal settled.
 */
async function runPaced(
  rate: number,
  startMs: number,
  inflightMax: number,
  batchEntries: number,
  running: () => boolean,
  proposeBatch: (count: number, firstK: number) => Promise<void>,
): Promise<void> {
  const inflight = new Set<Promise<void>>();
  let issued = 0;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      if (!running()) {
        clearInterval(timer);
        resolve();
        return;
      }
      const due = Math.floor(((performance.now() - startMs) * rate) / 1000);
      while (issued < due && inflight.size < inflightMax && running()) {
        const count = Math.min(batchEntries, due - issued, LOAD_COUNT_MAX - issued);
        const done: Promise<void> = proposeBatch(count, issued).then(() => {
          inflight.delete(done);
        });
        inflight.add(done);
        issued += count;
      }
    };
    const timer = setInterval(pump, 1);
  });
  await Promise.all([...inflight]);
}
