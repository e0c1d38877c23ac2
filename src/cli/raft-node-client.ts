/**
 * The parent side of the `raft-node` protocol (see `raft-node-protocol.ts`), for tests and
 * benchmarks: {@link RaftNodeProcess} (one forked `raft-node` child) and {@link LocalRaftGroup}
 * (a group of them on loopback), with the helpers {@link freePorts} and {@link waitUntil}.
 */
import { AssertionError } from 'node:assert';
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { ERROR_CODES, RaftmqError, type ErrorCode } from '../common/errors';
import { SERVER_NODE_FLAGS } from './node-flags';
import type {
  RaftNodeCommand,
  RaftNodeCommands,
  RaftNodeConfig,
  RaftNodeEvent,
  RaftNodeReply,
  RaftNodeRequest,
  RaftNodeStatus,
} from './raft-node-protocol';

/**
 * The node process entry, forked by path and never imported (importing it would not run it, but
 * nothing here needs it). Same extension as this file, so it also works from sources.
 */
const RAFT_NODE_ENTRY = path.join(__dirname, `raft-node${path.extname(__filename)}`);

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

  /** Forks the node (`raft-node.ts`) and waits for its `started` event. */
  static async start(
    config: RaftNodeConfig,
    logPath: string,
    startTimeoutMs = 20_000,
  ): Promise<RaftNodeProcess> {
    const fd = fs.openSync(logPath, 'a');
    let child: ChildProcess;
    try {
      child = fork(RAFT_NODE_ENTRY, [JSON.stringify(config)], {
        stdio: ['ignore', fd, fd, 'ipc'],
        execArgv: [...SERVER_NODE_FLAGS],
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

  /**
   * Calls `listener` with every event received from now on (in order, none dropped, unlike the
   * bounded `events`); returns the function that stops it.
   */
  onEvent(listener: (e: RaftNodeEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
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
 * `timeoutMs`. An error from `check` counts as "not yet" (a node may be restarting, a call may
 * fail while a leader is elected), and the last one is the timeout's `cause`; except a failed
 * assertion (node:assert's AssertionError), which is rethrown at once: a check asserts what
 * must hold whenever it is looked at, and its failure must not wait out the deadline and show
 * up as a timeout.
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
      if (err instanceof AssertionError) throw err;
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

function delayMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
