/**
 * LocalCluster: one NameServer and one broker group of N nodes as child processes on loopback,
 * for `npm start`, integration tests and benchmarks.
 *
 * Layout under the base directory: `conf/namesrv.json` and `conf/<nodeId>.json` (the files the
 * binaries read; they hold the ports), `logs/<name>.log` (each child's stdout and stderr,
 * appended), `<nodeId>/` (each node's data). Starting again on the same directory reads the
 * ports back from `conf/`, so the nodes find their data and each other again.
 *
 * Children are spawned with an IPC channel: they announce readiness over it, and they stop
 * cleanly when it closes, so a launcher that dies (even by kill -9) leaves no node running.
 * Processes are signalled by pid only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RaftmqError } from '../common/errors';
import { AdminClient } from '../broker/admin-client';
import type { BrokerTimingConfig, BrokerNodeConfig } from '../broker/broker-node-config';
import type { PeerEndpoints } from '../broker/broker-types';
import type { FlushMode } from '../store/commit-log-options';
import { SERVER_NODE_FLAGS } from './node-flags';
import { freePorts, waitUntil, type ExitInfo } from './raft-node-client';
import type { ReadyEvent } from './process-main';

export type { ExitInfo };

const BROKER_ENTRY = path.join(__dirname, `broker${path.extname(__filename)}`);
const NAMESRV_ENTRY = path.join(__dirname, `namesrv${path.extname(__filename)}`);
const HOST = '127.0.0.1';
const NAMESRV = 'namesrv';

/** Options of {@link LocalCluster.start}. */
export interface LocalClusterOptions {
  /** Base directory (created when missing). */
  readonly dir: string;
  /** Broker group name (default `broker-a`). */
  readonly group?: string;
  readonly cluster?: string;
  /** Nodes in the group, 1..9 (default 3); ids are n1..nN. */
  readonly nodeCount?: number;
  readonly flushMode?: FlushMode;
  readonly autoCreateTopics?: boolean;
  readonly timing?: Partial<BrokerTimingConfig>;
  /** Other broker configuration fields. */
  readonly broker?: Partial<
    Pick<
      BrokerNodeConfig,
      | 'defaultQueueCount'
      | 'autoCreateGroups'
      | 'maxBodyBytes'
      | 'autoRenewInvisibleMs'
      | 'preferredLeader'
      | 'pageCacheKeepBytes'
    >
  >;
  /** Environment of the children, over this process's. */
  readonly env?: Readonly<Record<string, string>>;
  /** `--log-level` of the children (default: theirs, `info`). */
  readonly logLevel?: string;
  /** How long a child may take to announce readiness (default 30 s). */
  readonly startTimeoutMs?: number;
  /** Called when a child exits without having been asked to. */
  readonly onUnexpectedExit?: (name: string, exit: ExitInfo) => void;
}

/** A broker node of the cluster. */
export interface LocalBroker {
  readonly id: string;
  readonly clientEndpoint: string;
  readonly raftEndpoint: string;
  /** Undefined while the node is not running. */
  readonly pid: number | undefined;
  readonly dataDir: string;
  readonly configPath: string;
  readonly logPath: string;
}

/** A leader, as its group agrees on it. */
export interface LocalLeader {
  readonly nodeId: string;
  readonly term: number;
  readonly clientEndpoint: string;
}

/** The endpoints a cluster directory holds (see {@link LocalCluster.describe}). */
export interface LocalClusterLayout {
  readonly group: string;
  readonly namesrvEndpoint: string;
  readonly peers: Readonly<Record<string, PeerEndpoints>>;
}

/** One child process. */
class Child {
  readonly exited: Promise<ExitInfo>;
  private exit: ExitInfo | undefined;
  private expected = false;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    readonly logPath: string,
    onUnexpectedExit: ((name: string, exit: ExitInfo) => void) | undefined,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        if (!this.expected) onUnexpectedExit?.(name, this.exit);
        resolve(this.exit);
      });
    });
  }

  /** Spawns `entry` and waits for its ready announcement. */
  static async spawn(
    name: string,
    args: readonly string[],
    logPath: string,
    options: LocalClusterOptions,
  ): Promise<Child> {
    const entry = name === NAMESRV ? NAMESRV_ENTRY : BROKER_ENTRY;
    const logArgs = options.logLevel === undefined ? [] : ['--log-level', options.logLevel];
    const fd = fs.openSync(logPath, 'a');
    let proc: ChildProcess;
    try {
      proc = spawn(process.execPath, [...SERVER_NODE_FLAGS, entry, ...args, ...logArgs], {
        stdio: ['ignore', fd, fd, 'ipc'],
        env: { ...process.env, ...options.env },
      });
    } finally {
      fs.closeSync(fd);
    }
    const child = new Child(name, proc, logPath, options.onUnexpectedExit);
    const timeoutMs = options.startTimeoutMs ?? 30_000;
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`not ready in ${timeoutMs} ms`)),
          timeoutMs,
        );
        proc.on('message', (m: Partial<ReadyEvent>) => {
          if (m?.event !== 'ready') return;
          clearTimeout(timer);
          resolve();
        });
        void child.exited.then((e) => {
          clearTimeout(timer);
          reject(new Error(`exited before ready (${e.signal ?? String(e.code)})`));
        });
      });
    } catch (err) {
      await child.kill('SIGKILL');
      throw new RaftmqError('INTERNAL', `${name}: ${String(err)}; log tail:\n${child.logTail()}`, {
        cause: err,
      });
    }
    return child;
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  get pid(): number | undefined {
    return this.alive ? this.child.pid : undefined;
  }

  /** Sends `signal` by pid unless exited; resolves on exit. */
  kill(signal: NodeJS.Signals): Promise<ExitInfo> {
    this.expected = true;
    if (this.alive && this.child.pid !== undefined) process.kill(this.child.pid, signal);
    return this.exited;
  }

  /** SIGTERM, then SIGKILL if still running after `timeoutMs`. */
  async stop(timeoutMs: number): Promise<ExitInfo> {
    const timer = setTimeout(() => void this.kill('SIGKILL'), timeoutMs);
    try {
      return await this.kill('SIGTERM');
    } finally {
      clearTimeout(timer);
    }
  }

  logTail(bytes = 4000): string {
    const text = fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, 'utf8') : '';
    return text.slice(-bytes);
  }
}

/** A NameServer and a broker group on loopback; see the file comment. */
export class LocalCluster {
  private readonly children = new Map<string, Child>();
  private readonly admins = new Map<string, Promise<AdminClient>>();

  private constructor(
    readonly dir: string,
    readonly layout: LocalClusterLayout,
    private readonly options: LocalClusterOptions,
  ) {}

  /** Writes the configuration (reusing ports found in `conf/`), starts every process. */
  static async start(options: LocalClusterOptions): Promise<LocalCluster> {
    const dir = path.resolve(options.dir);
    const count = options.nodeCount ?? 3;
    if (!Number.isSafeInteger(count) || count < 1 || count > 9) {
      throw new RaftmqError(
        'INVALID_OPTION',
        `localCluster.nodeCount: must be in [1, 9], got ${count}`,
      );
    }
    const ids = Array.from({ length: count }, (_, i) => `n${i + 1}`);
    const group = options.group ?? 'broker-a';
    for (const sub of ['conf', 'logs']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    const layout = LocalCluster.describe(dir) ?? (await freshLayout(group, ids));
    if (layout.group !== group || Object.keys(layout.peers).join() !== ids.join()) {
      throw new RaftmqError(
        'INVALID_OPTION',
        `localCluster.dir: ${dir} holds group ${layout.group} of nodes ` +
          `${Object.keys(layout.peers).join(', ')}; asked for ${group} of ${ids.join(', ')}`,
      );
    }
    const cluster = new LocalCluster(dir, layout, options);
    cluster.writeConfigs();
    try {
      await cluster.startChild(NAMESRV);
      await Promise.all(ids.map((id) => cluster.startChild(id)));
    } catch (err) {
      // Leave no orphans: the caller never gets the cluster to stop them.
      await cluster.stopAll();
      throw err;
    }
    return cluster;
  }

  /** The layout a cluster directory holds, or undefined when it holds none. */
  static describe(dir: string): LocalClusterLayout | undefined {
    const conf = path.join(dir, 'conf');
    const namesrvFile = path.join(conf, `${NAMESRV}.json`);
    const firstFile = path.join(conf, 'n1.json');
    if (!fs.existsSync(namesrvFile) || !fs.existsSync(firstFile)) return undefined;
    const readJson = (file: string): unknown => {
      try {
        return JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch (err) {
        throw new RaftmqError(
          'INVALID_OPTION',
          `localCluster.dir: ${file} is not readable JSON (${err instanceof Error ? err.message : String(err)}); fix or remove it`,
        );
      }
    };
    const namesrv = readJson(namesrvFile) as { port?: unknown };
    const first = readJson(firstFile) as Partial<BrokerNodeConfig>;
    if (typeof namesrv.port !== 'number' || typeof first.group !== 'string' || !first.peers) {
      throw new RaftmqError('INVALID_OPTION', `localCluster.dir: ${conf} has malformed files`);
    }
    return { group: first.group, namesrvEndpoint: `${HOST}:${namesrv.port}`, peers: first.peers };
  }

  get namesrvEndpoint(): string {
    return this.layout.namesrvEndpoint;
  }

  /** The NameServer's pid; undefined while it is not running. */
  get namesrvPid(): number | undefined {
    return this.children.get(NAMESRV)?.pid;
  }

  get nodeIds(): string[] {
    return Object.keys(this.layout.peers);
  }

  get brokers(): LocalBroker[] {
    return this.nodeIds.map((id) => this.broker(id));
  }

  broker(id: string): LocalBroker {
    const peer = this.layout.peers[id];
    if (peer === undefined) throw new RaftmqError('INVALID_ARGUMENT', `no node ${id}`);
    return {
      id,
      clientEndpoint: peer.client,
      raftEndpoint: peer.raft,
      pid: this.children.get(id)?.pid,
      dataDir: path.join(this.dir, id),
      configPath: path.join(this.dir, 'conf', `${id}.json`),
      logPath: path.join(this.dir, 'logs', `${id}.log`),
    };
  }

  /** Ids of the nodes running now. */
  running(): string[] {
    return this.nodeIds.filter((id) => this.children.get(id)?.alive === true);
  }

  /** A (cached) admin client of node `id`. */
  admin(id: string): Promise<AdminClient> {
    let client = this.admins.get(id);
    if (client === undefined) {
      client = AdminClient.connect(this.broker(id).clientEndpoint, { timeoutMs: 5_000 });
      this.admins.set(id, client);
      client.catch(() => this.admins.delete(id));
    }
    return client;
  }

  /**
   * Waits for a leader above `termAbove` that a majority of the group reports (itself included),
   * asking each running node's NodeStatus.
   */
  waitForLeader(timeoutMs: number, termAbove = 0): Promise<LocalLeader> {
    const majority = Math.floor(this.nodeIds.length / 2) + 1;
    return waitUntil(`a leader above term ${termAbove}`, timeoutMs, async () => {
      const answers = await Promise.allSettled(
        this.running().map(async (id) => (await this.admin(id)).nodeStatus({ timeoutMs: 500 })),
      );
      const statuses = answers.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
      const leader = statuses.find((s) => s.role === 'leader' && s.term > termAbove);
      if (leader === undefined) return undefined;
      const agreeing = statuses.filter(
        (s) => s.term === leader.term && s.leaderId === leader.nodeId,
      ).length;
      return agreeing >= majority
        ? { nodeId: leader.nodeId, term: leader.term, clientEndpoint: leader.clientEndpoint }
        : undefined;
    });
  }

  /** Sends `signal` to node `id` (or `namesrv`) and waits for it to exit. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitInfo | undefined> {
    return this.children.get(id)?.kill(signal);
  }

  /** Stops node `id` if it runs, then starts it again with the same configuration and data. */
  async restart(id: string): Promise<void> {
    this.broker(id);
    await this.children.get(id)?.stop(this.stopTimeoutMs());
    await this.startChild(id);
  }

  async restartNameServer(): Promise<void> {
    await this.children.get(NAMESRV)?.stop(this.stopTimeoutMs());
    await this.startChild(NAMESRV);
  }

  /** Stops every process (SIGTERM, then SIGKILL after `timeoutMs`) and closes admin clients. */
  async stopAll(timeoutMs = this.stopTimeoutMs()): Promise<void> {
    await Promise.all([...this.children.values()].map((c) => c.stop(timeoutMs)));
    const admins = [...this.admins.values()];
    this.admins.clear();
    for (const settled of await Promise.allSettled(admins)) {
      if (settled.status === 'fulfilled') settled.value.close();
    }
  }

  /** The pids of every child running now (for checks that none is left). */
  pids(): number[] {
    return [...this.children.values()].flatMap((c) => (c.pid === undefined ? [] : [c.pid]));
  }

  private stopTimeoutMs(): number {
    return 15_000;
  }

  private async startChild(name: string): Promise<void> {
    if (this.children.get(name)?.alive === true) {
      throw new RaftmqError('INVALID_ARGUMENT', `${name} is already running`);
    }
    const config = path.join(this.dir, 'conf', `${name}.json`);
    const logPath = path.join(this.dir, 'logs', `${name}.log`);
    const child = await Child.spawn(name, ['--config', config], logPath, this.options);
    this.children.set(name, child);
  }

  private writeConfigs(): void {
    const o = this.options;
    const [, port] = /:(\d+)$/.exec(this.namesrvEndpoint) ?? [];
    writeJson(path.join(this.dir, 'conf', `${NAMESRV}.json`), {
      listenHost: HOST,
      port: Number(port),
    });
    for (const id of this.nodeIds) {
      writeJson(this.broker(id).configPath, {
        ...o.broker,
        cluster: o.cluster ?? 'DefaultCluster',
        group: this.layout.group,
        nodeId: id,
        peers: this.layout.peers,
        listenHost: HOST,
        dataDir: this.broker(id).dataDir,
        namesrvAddrs: [this.namesrvEndpoint],
        flushMode: o.flushMode ?? 'SYNC',
        autoCreateTopics: o.autoCreateTopics ?? false,
        ...(o.timing === undefined ? {} : { timing: o.timing }),
      });
    }
  }
}

async function freshLayout(group: string, ids: readonly string[]): Promise<LocalClusterLayout> {
  const ports = await freePorts(1 + 2 * ids.length);
  const at = (i: number): string => `${HOST}:${ports[i] ?? 0}`;
  const peers = Object.fromEntries(
    ids.map((id, i) => [id, { raft: at(1 + 2 * i), client: at(2 + 2 * i) }]),
  );
  return { group, namesrvEndpoint: at(0), peers };
}

/** Writes `value` as JSON through a temporary file, so a crash never leaves half a file. */
function writeJson(file: string, value: unknown): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  fs.renameSync(tmp, file);
}
