/**
 * `raft-node`: one {@link RaftMember} as its own OS process, driven by its parent over the Node
 * IPC channel (`child_process.fork`). Real-process tests and the Raft benchmarks start three of
 * these on loopback and kill them with SIGKILL; SIGTERM, a `stop` command or the parent going
 * away stop it cleanly.
 *
 * Start: `node raft-node.js '<RaftNodeConfig as JSON>'` (or the JSON in `$RAFTMQ_NODE_CONFIG`).
 *
 * Protocol (JSON over IPC). The parent sends `{ reqId, cmd, args }` and gets one
 * `{ reqId, ok: true, result }` or `{ reqId, ok: false, error: { code, message } }`; the node
 * also sends events `{ event, atMs, ... }` on its own: `started`, `softState` (role, term,
 * leader), `termCommitted` (this node, as leader, applied the first entry of its term) and
 * `fatal`. `atMs` is `performance.timeOrigin + performance.now()`, comparable across processes
 * on one machine. Commands are listed in {@link RaftNodeCommands}; `load` runs a bounded
 * propose loop inside the leader, since IPC would be the bottleneck.
 *
 * The file holds both sides of the protocol: the node process (`main`, run when this file is
 * the entry) and, for tests and benchmarks, {@link RaftNodeProcess} (one child) and
 * {@link LocalRaftGroup} (a group of them on loopback).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { ERROR_CODES, isRaftmqError, RaftmqError, type ErrorCode } from '../common/errors';
import { createLogger, type Logger } from '../common/logger';
import { entryChecksum, RaftMember, type RaftMemberConfig } from '../broker/raft-member';
import { EntryType } from '../store/log-record';

/** What the process is started with. */
export interface RaftNodeConfig extends RaftMemberConfig {
  /** pino level; `$RAFTMQ_LOG_LEVEL` and then `info` when absent. */
  readonly logLevel?: string;
}

/** A node's status as the `status` command answers it. */
export interface RaftNodeStatus {
  readonly id: string;
  readonly pid: number;
  readonly role: string;
  readonly term: number;
  readonly leaderId: string | null;
  readonly commitIndex: number;
  readonly lastIndex: number;
  readonly appliedIndex: number;
  readonly appliedCount: number;
  readonly digest: number;
  readonly stopped: boolean;
  readonly fatal: string | null;
  /** Leader only: each follower's replication state. */
  readonly progress: Record<string, { match: number; next: number; state: string }>;
  /** CPU time this process used so far (user + system). */
  readonly cpuMs: number;
}

/** One acknowledged entry: where it went and its checksum (see `entryChecksum`). */
export interface AckedEntry {
  readonly index: number;
  readonly checksum: number;
}

/** Every command: its arguments and its result. */
export interface RaftNodeCommands {
  status: { args: Record<string, never>; result: RaftNodeStatus };
  /** Proposes `count` distinct entries and answers with those acknowledged. */
  propose: {
    args: { count: number; sizeBytes: number };
    result: { acked: AckedEntry[]; errors: Record<string, number> };
  };
  load: { args: LoadSpec; result: LoadResult };
  /** The digest of applied entries 1..upTo (recent indexes only; OUT_OF_RANGE otherwise). */
  appliedDigest: { args: { upTo: number }; result: { upTo: number; digest: number } };
  /** Checksums of applied entries at these indexes (null where not applied or not recent). */
  appliedChecksums: { args: { indexes: number[] }; result: { checksums: (number | null)[] } };
  transferLeadership: { args: { to: string }; result: Record<string, never> };
  stop: { args: Record<string, never>; result: Record<string, never> };
}

/** The name of a command. */
export type RaftNodeCommand = keyof RaftNodeCommands;

/** A request from the parent. */
export interface RaftNodeRequest<C extends RaftNodeCommand = RaftNodeCommand> {
  readonly reqId: number;
  readonly cmd: C;
  readonly args: RaftNodeCommands[C]['args'];
}

/** A reply to one request. */
export type RaftNodeReply =
  | { readonly reqId: number; readonly ok: true; readonly result: unknown }
  | { readonly reqId: number; readonly ok: false; readonly error: RaftNodeError };

/** A failed command: the RaftmqError code (or UNEXPECTED) and its message. */
export interface RaftNodeError {
  readonly code: string;
  readonly message: string;
}

/** What a node reports on its own. */
export type RaftNodeEvent =
  | {
      readonly event: 'started';
      readonly atMs: number;
      readonly pid: number;
      readonly port: number;
    }
  | {
      readonly event: 'softState';
      readonly atMs: number;
      readonly role: string;
      readonly term: number;
      readonly leaderId: string | null;
    }
  | {
      readonly event: 'termCommitted';
      readonly atMs: number;
      readonly term: number;
      readonly index: number;
    }
  | { readonly event: 'fatal'; readonly atMs: number; readonly message: string };

/** Largest `propose` count and entry size. */
const PROPOSE_COUNT_MAX = 10_000;
const ENTRY_SIZE_BYTES_MAX = 1 << 20;
/** Entries per proposal in `propose` (proposals go one after another). */
const PROPOSE_BATCH_ENTRIES = 64;
/** How long an exiting node waits for its log to drain. */
const EXIT_FLUSH_MS_MAX = 500;
/** Indexes per `appliedChecksums` request. */
const CHECKSUM_INDEXES_MAX = 100_000;

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

function checkInt(value: unknown, min: number, max: number, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new RaftmqError('INVALID_ARGUMENT', `${field} must be an integer in [${min}, ${max}]`);
  }
  return value;
}

type Handlers = {
  [C in RaftNodeCommand]: (
    args: RaftNodeCommands[C]['args'],
  ) => Promise<RaftNodeCommands[C]['result']>;
};

function statusOf(member: RaftMember): RaftNodeStatus {
  const s = member.status();
  const cpu = process.cpuUsage();
  return {
    id: member.id,
    pid: process.pid,
    role: s.raft.role,
    term: s.raft.term,
    leaderId: s.raft.leaderId,
    commitIndex: s.raft.commitIndex,
    lastIndex: s.raft.lastIndex,
    appliedIndex: s.appliedIndex,
    appliedCount: s.appliedCount,
    digest: s.digest,
    stopped: s.raft.stopped,
    fatal: s.raft.fatal,
    progress: Object.fromEntries(s.raft.progress),
    cpuMs: (cpu.user + cpu.system) / 1000,
  };
}

async function proposeDistinct(
  member: RaftMember,
  count: number,
  sizeBytes: number,
): Promise<RaftNodeCommands['propose']['result']> {
  const acked: AckedEntry[] = [];
  const errors: Record<string, number> = {};
  for (let done = 0; done < count; done += PROPOSE_BATCH_ENTRIES) {
    const payloads: Buffer[] = [];
    for (let i = done; i < Math.min(count, done + PROPOSE_BATCH_ENTRIES); i++) {
      payloads.push(randomFillSync(Buffer.alloc(sizeBytes)));
    }
    try {
      const ack = await member.propose(payloads);
      payloads.forEach((payload, i) => {
        const index = ack.firstIndex + i;
        acked.push({ index, checksum: entryChecksum(index, ack.term, EntryType.NORMAL, payload) });
      });
    } catch (err) {
      // Reported to the caller, which decides: a failed proposal may or may not be committed.
      const code = isRaftmqError(err) ? err.code : 'UNEXPECTED';
      errors[code] = (errors[code] ?? 0) + payloads.length;
    }
  }
  return { acked, errors };
}

function handlersFor(member: RaftMember, shutdown: () => Promise<void>): Handlers {
  return {
    status: () => Promise.resolve(statusOf(member)),
    propose: ({ count, sizeBytes }) =>
      proposeDistinct(
        member,
        checkInt(count, 1, PROPOSE_COUNT_MAX, 'count'),
        checkInt(sizeBytes, 0, ENTRY_SIZE_BYTES_MAX, 'sizeBytes'),
      ),
    load: (spec) => runLoad(member, spec),
    appliedDigest: ({ upTo }) => {
      const digest = member.state.digestUpTo(checkInt(upTo, 0, Number.MAX_SAFE_INTEGER, 'upTo'));
      if (digest === undefined) {
        const applied = member.state.appliedIndex;
        throw new RaftmqError('OUT_OF_RANGE', `upTo ${upTo} not recent (applied ${applied})`);
      }
      return Promise.resolve({ upTo, digest });
    },
    appliedChecksums: ({ indexes }) => {
      if (!Array.isArray(indexes) || indexes.length > CHECKSUM_INDEXES_MAX) {
        throw new RaftmqError('INVALID_ARGUMENT', `indexes: up to ${CHECKSUM_INDEXES_MAX}`);
      }
      const checksums = indexes.map((i) => member.state.checksumAt(i) ?? null);
      return Promise.resolve({ checksums });
    },
    transferLeadership: ({ to }) => {
      member.transferLeadership(to);
      return Promise.resolve({});
    },
    stop: async () => {
      await shutdown();
      return {};
    },
  };
}

// ---- The load loop (runs inside the leader) ----------------------------------------------

/** A `load` run: propose for a while, as fast as accepted or paced, inside this node. */
export interface LoadSpec {
  /** How long to propose, at most {@link LOAD_DURATION_MS_MAX}. */
  readonly durationMs: number;
  /** Entries due (sent, when not paced) in the first `warmupMs` are not measured. */
  readonly warmupMs?: number;
  readonly sizeBytes: number;
  /** Proposals in flight at once. */
  readonly inflightMax: number;
  /** Entries per proposal, at most. */
  readonly batchEntries: number;
  /**
   * Paced: entries per second, each entry's latency measured from the time it was due (so a
   * stall counts for every entry it delayed). Absent: proposals as fast as the leader accepts.
   */
  readonly ratePerSec?: number;
  /** Entries proposed, at most. */
  readonly countMax?: number;
}

/**
 * What a `load` run measured. Rates and latencies cover the entries due in the measured window
 * (after the warmup), however late they completed: the run waits for every proposal to settle.
 */
export interface LoadResult {
  readonly proposedEntries: number;
  readonly committedEntries: number;
  readonly measuredEntries: number;
  readonly measuredMs: number;
  readonly entriesPerSec: number;
  readonly latencyP50Ms: number;
  readonly latencyP90Ms: number;
  readonly latencyP99Ms: number;
  readonly latencyMaxMs: number;
  readonly errors: Record<string, number>;
}

/** The longest `load` run. */
export const LOAD_DURATION_MS_MAX = 120_000;
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
      const dueMs = (j: number): number => startMs + ((firstK + j) * 1000) / rate;
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

// ---- The parent side: one child process, and a group of them --------------------------------

/** How a child ended. */
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

interface Pending {
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** Events kept per child, at most (the oldest are dropped). */
const EVENTS_KEPT_MAX = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;

/** One `raft-node` child process, as its parent sees it. */
export class RaftNodeProcess {
  /** Events received, oldest first (bounded). */
  readonly events: RaftNodeEvent[] = [];
  readonly exited: Promise<ExitInfo>;
  private exit: ExitInfo | undefined;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(e: RaftNodeEvent) => void>();
  private nextReqId = 1;

  private constructor(
    readonly config: RaftNodeConfig,
    private readonly child: ChildProcess,
    readonly logPath: string,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        const err = new Error(`raft-node ${config.id} exited (${signal ?? code ?? '?'})`);
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.reject(err);
        }
        this.pending.clear();
        resolve(this.exit);
      });
    });
    child.on('message', (m: RaftNodeReply | RaftNodeEvent) => this.onMessage(m));
  }

  /** Forks the node (this file) and waits for its `started` event. */
  static async start(
    config: RaftNodeConfig,
    logPath: string,
    startTimeoutMs = 20_000,
  ): Promise<RaftNodeProcess> {
    const fd = fs.openSync(logPath, 'a');
    let child: ChildProcess;
    try {
      child = fork(__filename, [JSON.stringify(config)], {
        stdio: ['ignore', fd, fd, 'ipc'],
        execArgv: [],
      });
    } finally {
      fs.closeSync(fd);
    }
    const node = new RaftNodeProcess(config, child, logPath);
    try {
      await node.waitForEvent((e) => e.event === 'started', startTimeoutMs);
    } catch (err) {
      await node.kill('SIGKILL');
      throw new Error(`${String(err)}; log tail:\n${node.logTail()}`, { cause: err });
    }
    return node;
  }

  get id(): string {
    return this.config.id;
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error(`raft-node ${this.id} has no pid`);
    return pid;
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** Sends one command and waits for its reply (rejects on error, timeout or exit). */
  request<C extends RaftNodeCommand>(
    cmd: C,
    args: RaftNodeCommands[C]['args'],
    timeoutMs = REQUEST_TIMEOUT_MS,
  ): Promise<RaftNodeCommands[C]['result']> {
    if (!this.alive) return Promise.reject(new Error(`raft-node ${this.id} is not running`));
    const reqId = this.nextReqId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(reqId);
        reject(new Error(`raft-node ${this.id}: ${cmd} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(reqId, {
        resolve: (r) => resolve(r as RaftNodeCommands[C]['result']),
        reject,
        timer,
      });
      const request: RaftNodeRequest<C> = { reqId, cmd, args };
      this.child.send(request, (err: Error | null) => {
        if (err === null) return;
        clearTimeout(timer);
        this.pending.delete(reqId);
        reject(err);
      });
    });
  }

  status(): Promise<RaftNodeStatus> {
    return this.request('status', {});
  }

  /** Resolves with the first event (already received or to come) that `match` accepts. */
  waitForEvent(match: (e: RaftNodeEvent) => boolean, timeoutMs: number): Promise<RaftNodeEvent> {
    const seen = this.events.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const finish = (err: Error | undefined, e?: RaftNodeEvent): void => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        if (e !== undefined) resolve(e);
        else reject(err ?? new Error('no event'));
      };
      const listener = (e: RaftNodeEvent): void => {
        if (match(e)) finish(undefined, e);
      };
      const timer = setTimeout(
        () => finish(new Error(`raft-node ${this.id}: event not seen in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.listeners.add(listener);
      void this.exited.then(() => finish(new Error(`raft-node ${this.id} exited`)));
    });
  }

  /** Sends `signal` (by pid) unless already exited, and waits for the exit. */
  async kill(signal: 'SIGKILL' | 'SIGTERM'): Promise<ExitInfo> {
    if (this.alive && this.child.pid !== undefined) process.kill(this.child.pid, signal);
    return this.exited;
  }

  /** A clean stop (SIGTERM), then SIGKILL if it has not exited within `timeoutMs`. */
  async stop(timeoutMs = 10_000): Promise<ExitInfo> {
    if (!this.alive) return this.exited;
    const timer = setTimeout(() => {
      if (this.alive) process.kill(this.pid, 'SIGKILL');
    }, timeoutMs);
    try {
      return await this.kill('SIGTERM');
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last `bytes` of the child's output. */
  logTail(bytes = 4000): string {
    const text = fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, 'utf8') : '';
    return text.slice(-bytes);
  }

  private onMessage(m: RaftNodeReply | RaftNodeEvent): void {
    if ('event' in m) {
      if (this.events.length >= EVENTS_KEPT_MAX) this.events.shift();
      this.events.push(m);
      for (const listener of [...this.listeners]) listener(m);
      return;
    }
    const pending = this.pending.get(m.reqId);
    if (pending === undefined) return;
    this.pending.delete(m.reqId);
    clearTimeout(pending.timer);
    if (m.ok) pending.resolve(m.result);
    else
      pending.reject(new RaftmqError(toErrorCode(m.error.code), `${this.id}: ${m.error.message}`));
  }
}

function toErrorCode(code: string): ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, code) ? (code as ErrorCode) : 'INTERNAL';
}

/** Ports free on 127.0.0.1 right now (bound together so they differ, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => net.createServer());
  try {
    return await Promise.all(
      servers.map(
        (server) =>
          new Promise<number>((resolve, reject) => {
            server.once('error', reject);
            server.listen(0, '127.0.0.1', () =>
              resolve((server.address() as net.AddressInfo).port),
            );
          }),
      ),
    );
  } finally {
    await Promise.all(
      servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  }
}

/**
 * Polls `check` until it returns a value other than undefined; throws naming `what` after
 * `timeoutMs`. Errors from `check` count as "not yet" (a node may be restarting).
 */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined>,
  pollMs = 20,
): Promise<T> {
  const deadlineMs = performance.now() + timeoutMs;
  let lastError: unknown;
  while (performance.now() < deadlineMs) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    await delayMs(pollMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
}

/** Options of a {@link LocalRaftGroup}. */
export interface LocalRaftGroupOptions {
  /** Each node gets `<rootDir>/<id>/` for data and `<rootDir>/<id>.log` for output. */
  readonly rootDir: string;
  readonly ids?: readonly string[];
  readonly group?: string;
  /** Settings for every node (raft, driver, flushMode, logLevel...). */
  readonly node?: Partial<Omit<RaftNodeConfig, 'id' | 'peers' | 'listenPort' | 'dataDir'>>;
}

/** A Raft group of `raft-node` processes on loopback, each with a port fixed at creation. */
export class LocalRaftGroup {
  private readonly procs = new Map<string, RaftNodeProcess>();

  private constructor(
    readonly ids: readonly string[],
    private readonly configs: ReadonlyMap<string, RaftNodeConfig>,
    private readonly rootDir: string,
  ) {}

  /** Picks ports, writes configs and starts every node. */
  static async start(options: LocalRaftGroupOptions): Promise<LocalRaftGroup> {
    const ids = options.ids ?? ['n1', 'n2', 'n3'];
    const ports = await freePorts(ids.length);
    const peers = Object.fromEntries(ids.map((id, i) => [id, `127.0.0.1:${ports[i] ?? 0}`]));
    const configs = new Map<string, RaftNodeConfig>();
    ids.forEach((id, i) => {
      configs.set(id, {
        ...options.node,
        id,
        group: options.group ?? 'g1',
        peers,
        listenPort: ports[i] ?? 0,
        dataDir: path.join(options.rootDir, id),
      });
    });
    const group = new LocalRaftGroup(ids, configs, options.rootDir);
    const started = await Promise.allSettled(ids.map((id) => group.start(id)));
    const failed = started.find((r) => r.status === 'rejected');
    if (failed !== undefined) {
      // Leave no orphans behind: the caller never gets the group to stop them.
      await group.stopAll();
      const reason: unknown = failed.reason;
      throw reason instanceof Error ? reason : new Error(String(reason));
    }
    return group;
  }

  /** Starts (or restarts, on the same port and data directory) node `id`. */
  async start(id: string): Promise<RaftNodeProcess> {
    const config = this.configs.get(id);
    if (config === undefined) throw new Error(`unknown node ${id}`);
    if (this.procs.get(id)?.alive === true) throw new Error(`node ${id} is running`);
    const proc = await RaftNodeProcess.start(config, path.join(this.rootDir, `${id}.log`));
    this.procs.set(id, proc);
    return proc;
  }

  /** The running process of node `id`, if any. */
  node(id: string): RaftNodeProcess | undefined {
    const proc = this.procs.get(id);
    return proc?.alive === true ? proc : undefined;
  }

  running(): RaftNodeProcess[] {
    return [...this.procs.values()].filter((p) => p.alive);
  }

  /** kill -9 of node `id`. */
  async crash(id: string): Promise<void> {
    await this.procs.get(id)?.kill('SIGKILL');
  }

  /**
   * Waits for a leader of a term above `termAbove` that has committed an entry of its term
   * (its `termCommitted` event), and returns its status.
   */
  waitForLeader(timeoutMs: number, termAbove = 0): Promise<RaftNodeStatus> {
    return waitUntil(`a leader above term ${termAbove}`, timeoutMs, async () => {
      for (const proc of this.running()) {
        const s = await proc.status();
        const committed = proc.events.some((e) => e.event === 'termCommitted' && e.term === s.term);
        if (s.role === 'leader' && s.term > termAbove && committed) return s;
      }
      return undefined;
    });
  }

  /** Waits until every running node applied the same index, at least `atLeast`. */
  waitForConvergence(timeoutMs: number, atLeast = 0): Promise<number> {
    return waitUntil(`running nodes to apply the same index >= ${atLeast}`, timeoutMs, async () => {
      const statuses = await Promise.all(this.running().map((p) => p.status()));
      const applied = statuses.map((s) => s.appliedIndex);
      const first = applied[0] ?? -1;
      const commit = Math.max(...statuses.map((s) => s.commitIndex));
      return first >= atLeast && first >= commit && applied.every((a) => a === first)
        ? first
        : undefined;
    });
  }

  /** Stops every running node (SIGTERM, then SIGKILL), by pid. */
  async stopAll(): Promise<void> {
    await Promise.all(this.running().map((p) => p.stop()));
  }
}

function send(message: RaftNodeReply | RaftNodeEvent, log: Logger, then?: () => void): void {
  if (process.send === undefined || !process.connected) {
    then?.();
    return;
  }
  process.send(message, undefined, undefined, (err: Error | null) => {
    // The parent went away: nobody is left to tell, and `disconnect` stops the node.
    if (err !== null) log.debug({ err }, 'ipc send failed');
    then?.();
  });
}

function readConfig(): RaftNodeConfig {
  const text = process.argv[2] ?? process.env.RAFTMQ_NODE_CONFIG;
  if (text === undefined) {
    throw new RaftmqError('INVALID_ARGUMENT', 'config: pass JSON as argv[2] or RAFTMQ_NODE_CONFIG');
  }
  const config = JSON.parse(text) as RaftNodeConfig;
  for (const field of ['id', 'group', 'dataDir'] as const) {
    if (typeof config[field] !== 'string' || config[field].length === 0) {
      throw new RaftmqError('INVALID_ARGUMENT', `config.${field} must be a non-empty string`);
    }
  }
  checkInt(config.listenPort, 0, 65535, 'config.listenPort');
  return config;
}

async function main(): Promise<void> {
  const config = readConfig();
  const logger = createLogger({ name: 'raft-node', level: config.logLevel });
  const log = logger.child({ component: 'raft-node', node: config.id });
  const event = (e: RaftNodeEvent): void => send(e, log);
  const member = await RaftMember.start(config, logger, {
    onSoftState: (s) => event({ event: 'softState', atMs: wallMs(), ...s }),
    onTermCommitted: (term, index) =>
      event({ event: 'termCommitted', atMs: wallMs(), term, index }),
  });
  let exiting = false;
  const exit = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // Give the asynchronous log destination a bounded moment to drain, then go.
    setTimeout(() => process.exit(code), EXIT_FLUSH_MS_MAX);
    logger.flush(() => process.exit(code));
  };
  const shutdown = (): Promise<void> => member.stop();
  void member.stopped.then((err) => {
    if (err === undefined) return;
    log.fatal({ err }, 'raft member stopped on a failure');
    send({ event: 'fatal', atMs: wallMs(), message: err.message }, log, () => exit(1));
  });
  const stopAndExit = (why: string): void => {
    log.info({ why }, 'stopping');
    shutdown().then(
      () => exit(0),
      (err: unknown) => {
        log.fatal({ err }, 'clean stop failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stopAndExit('SIGTERM'));
  process.on('disconnect', () => stopAndExit('parent disconnected'));
  const handlers = handlersFor(member, shutdown);
  process.on('message', (raw: unknown) => {
    const request = raw as Partial<RaftNodeRequest> | null;
    if (typeof request !== 'object' || request === null || typeof request.reqId !== 'number') {
      // Only the parent writes to this channel; a malformed message is its bug, not ours.
      log.warn({}, 'ignored a malformed ipc message');
      return;
    }
    const { reqId, cmd } = request;
    const handler =
      typeof cmd === 'string' && Object.prototype.hasOwnProperty.call(handlers, cmd)
        ? (handlers[cmd] as (args: unknown) => Promise<unknown>)
        : undefined;
    const run = async (): Promise<unknown> => {
      if (handler === undefined) {
        throw new RaftmqError('INVALID_ARGUMENT', `unknown command ${String(cmd)}`);
      }
      return handler(request.args ?? {});
    };
    run().then(
      (result) =>
        send({ reqId, ok: true, result }, log, () => {
          if (cmd === 'stop') exit(0);
        }),
      (err: unknown) => {
        const code = isRaftmqError(err) ? err.code : 'UNEXPECTED';
        const message = err instanceof Error ? err.message : String(err);
        log.debug({ err, cmd }, 'command failed');
        send({ reqId, ok: false, error: { code, message } }, log);
      },
    );
  });
  event({ event: 'started', atMs: wallMs(), pid: process.pid, port: member.port });
}

if (require.main === module) {
  main().catch((err: unknown) => {
    // Nothing runs yet that could be left half-done: report and exit non-zero.
    process.stderr.write(`raft-node failed to start: ${String(err)}\n`);
    if (err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  });
}
