/**
 * Load loops and figures of the produce benchmark (produce-bench.ts): a closed loop of
 * concurrent senders, a paced sender that keeps trying through a failover, percentiles, and the
 * CPU time of a process read from /proc.
 */
import * as fs from 'node:fs';

/** Nearest-rank percentile (`q` in [0, 1]); 0 for no samples. */
export function percentile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? 0;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** Prints one row of a table: a left-aligned first cell, then right-aligned ones. */
export function tableRow(cells: readonly (string | number | undefined)[]): void {
  const text = cells.map((c, i) => {
    const s =
      c === undefined
        ? '-'
        : typeof c === 'number'
          ? Number.isInteger(c)
            ? String(c)
            : c.toFixed(2)
          : c;
    return i === 0 ? s.padEnd(22) : s.padStart(11);
  });
  console.log(text.join(' '));
}

/** One closed-loop round: `inflight` senders, each sending again as soon as it is answered. */
export interface ClosedLoopSpec {
  readonly inflight: number;
  readonly messagesPerSend: number;
  readonly durationMs: number;
  /** Bound on the sends of the round, whatever its duration. */
  readonly sendsMax: number;
}

/** What a round measured; latency is per send (one request), issue to acknowledgement. */
export interface LoadResult {
  readonly ackedMessages: number;
  readonly ackedSends: number;
  readonly failedSends: number;
  readonly firstError: string | undefined;
  readonly elapsedMs: number;
  readonly msgsPerSec: number;
  readonly latencyP50Ms: number;
  readonly latencyP90Ms: number;
  readonly latencyP99Ms: number;
  readonly latencyMaxMs: number;
}

/** A failed send makes its sender wait this long, so a broken cluster is not hammered. */
const FAILED_SEND_PAUSE_MS = 20;

const delayMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `send` from `spec.inflight` concurrent loops until the duration or the count runs out. */
export async function closedLoop(
  spec: ClosedLoopSpec,
  send: () => Promise<unknown>,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let issued = 0;
  let failedSends = 0;
  let firstError: string | undefined;
  const startMs = performance.now();
  const endMs = startMs + spec.durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < endMs && issued < spec.sendsMax) {
      issued++;
      const t0 = performance.now();
      try {
        await send();
        latencies.push(performance.now() - t0);
      } catch (err) {
        failedSends++;
        firstError ??= err instanceof Error ? err.message : String(err);
        await delayMs(FAILED_SEND_PAUSE_MS);
      }
    }
  };
  await Promise.all(Array.from({ length: spec.inflight }, worker));
  const elapsedMs = performance.now() - startMs;
  const ackedMessages = latencies.length * spec.messagesPerSend;
  return {
    ackedMessages,
    ackedSends: latencies.length,
    failedSends,
    firstError,
    elapsedMs,
    msgsPerSec: (ackedMessages * 1000) / elapsedMs,
    latencyP50Ms: percentile(latencies, 0.5),
    latencyP90Ms: percentile(latencies, 0.9),
    latencyP99Ms: percentile(latencies, 0.99),
    latencyMaxMs: percentile(latencies, 1),
  };
}

/** Bound on all sends in flight, older ones included, as a multiple of `inflightMax`. */
const INFLIGHT_ALL_FACTOR = 4;

interface AckWaiter {
  readonly issuedFromMs: number;
  readonly resolve: (ackMs: number) => void;
}

/**
 * Issues one send every `intervalMs` (open loop), each retried by the client until its own
 * deadline, so that during an election there are always fresh sends trying.
 * {@link firstAckIssuedAfter} tells when the first send issued after a given moment was
 * acknowledged: a send issued after a kill can only be answered by a live leader. At most
 * `inflightMax` sends issued since that moment are unanswered at a time (older ones do not
 * count, so sends stuck on the killed leader never hold back fresh ones).
 */
export class SteadySender {
  private timer: NodeJS.Timeout | undefined;
  /** Issue time of each send in flight, by its sequence number. */
  private readonly inflight = new Map<number, number>();
  private issuedCount = 0;
  /** Sends issued before this moment do not count against `inflightMax`. */
  private markMs = 0;
  private waiters: AckWaiter[] = [];
  private readonly settled = new Set<Promise<void>>();
  acked = 0;
  failed = 0;
  skipped = 0;
  firstError: string | undefined;

  constructor(
    private readonly send: () => Promise<unknown>,
    private readonly intervalMs: number,
    private readonly inflightMax: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.issue(), this.intervalMs);
  }

  /** Stops issuing and waits for every send in flight to settle. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([...this.settled]);
  }

  /** Resolves with the `performance.now()` at which the first send issued at or after
   *  `fromMs` was acknowledged; rejects after `timeoutMs`. */
  firstAckIssuedAfter(fromMs: number, timeoutMs: number): Promise<number> {
    this.markMs = Math.max(this.markMs, fromMs);
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no send issued after the kill was acknowledged in ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: AckWaiter = {
        issuedFromMs: fromMs,
        resolve: (ackMs) => {
          clearTimeout(timer);
          resolve(ackMs);
        },
      };
      this.waiters.push(waiter);
    });
  }

  private issue(): void {
    let counted = 0;
    for (const issued of this.inflight.values()) if (issued >= this.markMs) counted++;
    if (
      counted >= this.inflightMax ||
      this.inflight.size >= INFLIGHT_ALL_FACTOR * this.inflightMax
    ) {
      this.skipped++;
      return;
    }
    const seq = this.issuedCount++;
    const issuedMs = performance.now();
    this.inflight.set(seq, issuedMs);
    const done = this.send().then(
      () => {
        this.acked++;
        const ackMs = performance.now();
        const ready = this.waiters.filter((w) => issuedMs >= w.issuedFromMs);
        this.waiters = this.waiters.filter((w) => issuedMs < w.issuedFromMs);
        for (const w of ready) w.resolve(ackMs);
      },
      (err: unknown) => {
        // Counted and reported: the client gave up on this send (its retries or deadline ran out).
        this.failed++;
        this.firstError ??= err instanceof Error ? err.message : String(err);
      },
    );
    const settled = done.finally(() => {
      this.inflight.delete(seq);
      this.settled.delete(settled);
    });
    this.settled.add(settled);
  }
}

/** CPU time (user + system) a process has used, in ms, from /proc; undefined elsewhere. */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at field 3.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? ticks * (1000 / CLOCK_TICKS_PER_SEC) : undefined;
  } catch {
    // The process exited (or this is not Linux): the CPU column is left empty.
    return undefined;
  }
}

/** USER_HZ: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_SEC = 100;
