/**
 * One broker node: a Raft member of its broker group plus the services clients and operators
 * call. It opens the store (CommitLog, ConsumeQueues, key index) and the metadata store, loads
 * the broker state machine, starts the Raft transport and driver, serves the RocketMQ 5
 * `MessagingService` and the admin service on the client port, and keeps every NameServer told
 * of its role: at once when it becomes a ready leader or its topics change, and every
 * `registerIntervalMs` otherwise.
 *
 * Stop order: refuse new work (client server first), then the driver, transport and stores, so
 * nothing acknowledged is left unsynced; the CommitLog is flushed by its close.
 */
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { type Logger, componentLogger } from '../common/logger';
import { systemClock, systemScheduler } from '../common/clock';
import { createPrng } from '../common/prng';
import { asNodeId } from '../common/types';
import { LevelMetaStore } from '../store/level-meta-store';
import { MessageStore } from '../store/message-store';
import { NodeDisk } from '../store/node-disk';
import { isPayloadVerified } from '../store/verified-payloads';
import { BrokerRegistrar } from '../namesrv/namesrv-client';
import { FollowerLiveness } from './follower-liveness';
import { NameServerLookup } from '../namesrv/namesrv-lookup';
import type { TopicRegistration } from '../namesrv/route-types';
import { nameKeyedObject, type NodeRegistration } from '../namesrv/namesrv-wire';
import { createAdminService } from './admin-service';
import { Broker } from './broker';
import type { BrokerNodeConfig } from './broker-node-config';
import { BrokerState } from './broker-state';
import {
  CLIENT_FLOW_WINDOW_BYTES,
  bindServer,
  hostPort,
  shutdownServer,
  widenFlowWindows,
} from './grpc-util';
import { GrpcRaftTransport, type GrpcRaftTransportStats } from './grpc-raft-transport';
import { MESSAGING_SERVER_OPTIONS } from './messaging-options';
import { createMessagingService } from './messaging-service';
import { checkNodeIdentity } from './node-identity';
import { RaftDriver, type RaftDriverStatus } from './raft-driver';
import { RetentionTask } from './retention-task';
import { COMMIT_LOG_DEFAULTS } from '../store/commit-log-options';
import { RECORD_HEADER_BYTES } from '../store/log-record';

const SERVER_SHUTDOWN_MS = 2_000;

export class BrokerNode {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly config: BrokerNodeConfig,
    readonly broker: Broker,
    private readonly driver: RaftDriver,
    private readonly transport: GrpcRaftTransport,
    private readonly state: BrokerState,
    private readonly meta: LevelMetaStore,
    private readonly server: grpc.Server,
    /** The periodic retention task (retention-task.ts); `runNow()` runs a round at once. */
    readonly retention: RetentionTask,
    private readonly closeServices: () => Promise<void>,
    private readonly registrar: BrokerRegistrar | undefined,
    private readonly log: Logger,
  ) {}

  /** The broker as the admin service sees it. */
  get adminBackend(): Broker {
    return this.broker;
  }

  /** The Raft transport's counters (messages, drops, rejections, checked checksums). */
  raftTransportStats(): GrpcRaftTransportStats {
    return this.transport.stats();
  }

  /** The Raft driver's status (role, log bounds, followers' progress). */
  raftStatus(): RaftDriverStatus {
    return this.driver.status();
  }

  /** Resolves when the node stops: with the driver's fatal error, or undefined after stop(). */
  get stopped(): Promise<Error | undefined> {
    return this.driver.stopped;
  }

  /** Opens everything and starts serving; undoes what it opened if any step fails. */
  static async start(config: BrokerNodeConfig, logger: Logger): Promise<BrokerNode> {
    const log = componentLogger(logger, {
      component: 'broker',
      group: config.group,
      node: config.nodeId,
    });
    const self = config.peers[config.nodeId];
    if (self === undefined) throw new Error(`node ${config.nodeId} is not among its peers`);
    const undo: Array<() => Promise<void>> = [];
    const run = async <T>(open: () => Promise<T>, close: (v: T) => Promise<void>): Promise<T> => {
      const v = await open();
      undo.unshift(() => close(v));
      return v;
    };
    try {
      const meta = await run(
        () => LevelMetaStore.open(path.join(config.dataDir, 'meta')),
        (m) => m.close(),
      );
      await checkNodeIdentity(meta, config, log);
      const deps = {
        disk: new NodeDisk(),
        meta,
        clock: systemClock,
        scheduler: systemScheduler,
        logger: log,
      };
      const store = await run(
        () =>
          MessageStore.open(config.dataDir, deps, {
            commitLog: {
              flushMode: config.flushMode,
              pageCacheKeepBytes: config.pageCacheKeepBytes,
              segmentSizeBytes: config.segmentSizeBytes,
              // The largest entry fits in a segment (the config checks segmentSizeBytes).
              payloadMaxBytes: Math.min(
                COMMIT_LOG_DEFAULTS.payloadMaxBytes,
                config.segmentSizeBytes - RECORD_HEADER_BYTES,
              ),
              fileReservedTimeMs: config.fileReservedTimeMs,
              retainedBytesMax: config.retainedBytesMax,
            },
          }),
        (s) => s.close(),
      );
      const state = await BrokerState.open(store, meta, systemClock, log);
      const others = Object.fromEntries(
        Object.entries(config.peers)
          .filter(([id]) => id !== config.nodeId)
          .map(([id, p]) => [id, p.raft]),
      );
      const [raftHost, raftPort] = splitHostPort(self.raft);
      const transport = await run(
        () =>
          GrpcRaftTransport.start(
            {
              group: config.group,
              selfId: config.nodeId,
              listenHost: config.listenHost ?? raftHost,
              listenPort: raftPort,
              peers: others,
              reconnectBackoffMaxMs: 250,
            },
            logger,
            {
              // Checksums go only with payloads known good here (verified-payloads.ts): the
              // leader's own message batches and those it received checked.
              recordCrc: (entry) =>
                isPayloadVerified(entry.data)
                  ? store.commitLog.recentRecordCrc(entry.index, entry.term, entry.data.length)
                  : undefined,
            },
          ),
        (t) => t.close(),
      );
      const lookup =
        config.namesrvAddrs.length > 0
          ? new NameServerLookup(config.namesrvAddrs, logger)
          : undefined;
      // Filled in once the Broker exists; the driver's callbacks may fire before that.
      const ref: { broker?: Broker } = {};
      const seed = config.seed ?? randomBytes(4).readUInt32LE(0);
      const voters = Object.keys(config.peers).sort().map(asNodeId);
      const driver = await RaftDriver.open({
        id: asNodeId(config.nodeId),
        peers: voters,
        raft: {
          electionTimeoutTicks: config.timing.electionTimeoutTicks,
          heartbeatIntervalTicks: config.timing.heartbeatIntervalTicks,
          preferredLeaderId:
            config.preferredLeader === null ? null : asNodeId(config.preferredLeader),
        },
        commitLog: store.commitLog,
        meta,
        transport,
        scheduler: systemScheduler,
        clock: systemClock,
        prng: createPrng(seed),
        logger,
        apply: async (entries) => {
          await state.apply(entries);
          const last = entries[entries.length - 1];
          if (last !== undefined) ref.broker?.onApplied(last.term);
        },
        appliedIndex: state.appliedIndex,
        onSoftState: (s) => ref.broker?.onSoftState(s.role, s.term, s.leaderId),
        options: { tickIntervalMs: config.timing.tickIntervalMs },
      });
      undo.unshift(() => driver.close());
      const broker = new Broker(
        config,
        driver,
        state,
        systemClock,
        log,
        lookup && ((t) => lookup.route(t)),
      );
      ref.broker = broker;
      const s0 = driver.status();
      broker.onSoftState(s0.role, s0.term, s0.leaderId);

      const server = new grpc.Server(MESSAGING_SERVER_OPTIONS);
      const messaging = await createMessagingService(
        broker,
        {
          maxBodyBytes: config.maxBodyBytes,
          autoRenew: { invisibleMs: config.autoRenewInvisibleMs },
        },
        logger,
      );
      server.addService(messaging.definition, messaging.handlers);
      server.addService(messaging.fetch.definition, messaging.fetch.handlers);
      const admin = await createAdminService(broker, logger);
      server.addService(admin.definition, admin.handlers);
      const [, clientPort] = splitHostPort(self.client);
      await bindServer(server, hostPort(config.listenHost, clientPort));
      widenFlowWindows(server, log, CLIENT_FLOW_WINDOW_BYTES);
      undo.unshift(() => shutdownServer(server, SERVER_SHUTDOWN_MS, log));

      const b = broker;
      const registrar =
        config.namesrvAddrs.length > 0
          ? new BrokerRegistrar({
              addresses: config.namesrvAddrs,
              snapshot: () => registration(config, b, driver, state),
              intervalMs: config.timing.registerIntervalMs,
              logger,
            })
          : undefined;
      registrar?.start();
      let lastRole = '';
      b.onRoleChange(() => {
        const v = b.roleView();
        const key = `${v.role}/${v.term}/${v.leaderId}/${v.leaderReady}`;
        if (key === lastRole) return;
        lastRole = key;
        registrar?.registerNow();
      });
      state.onTopicsChanged = () => registrar?.registerNow();
      // Followers heard from lately, for routes (follower-liveness.ts): a change re-registers,
      // so the NameServers stop routing to a dead follower within seconds; at most once per
      // window, so that a follower hovering at the window's edge does not make every NameServer
      // take a registration each time it crosses it. Monotonic time: a clock step must not
      // make a live follower look dead (routes, and retention, which stops waiting for it).
      const { tickIntervalMs, electionTimeoutTicks, heartbeatIntervalTicks } = config.timing;
      const livenessWindowMs = 2 * electionTimeoutTicks * tickIntervalMs;
      const liveness = new FollowerLiveness(livenessWindowMs);
      let livenessRegisteredMs = Number.NEGATIVE_INFINITY;
      let livenessRegisterTimer: NodeJS.Timeout | undefined;
      const registerLiveness = (): void => {
        livenessRegisterTimer = undefined;
        livenessRegisteredMs = performance.now();
        registrar?.registerNow();
      };
      const sampleLiveness = (): void => {
        const v = b.roleView();
        const status = driver.status();
        const term = v.role === 'leader' && v.leaderReady ? v.term : undefined;
        if (!liveness.sample(term, status.progress, performance.now())) return;
        b.setLiveFollowers(liveness.liveFollowers);
        const waitMs = livenessRegisteredMs + livenessWindowMs - performance.now();
        if (waitMs <= 0) registerLiveness();
        else livenessRegisterTimer ??= setTimeout(registerLiveness, waitMs).unref();
      };
      const livenessTimer = setInterval(
        sampleLiveness,
        Math.max(10, heartbeatIntervalTicks * tickIntervalMs),
      );
      livenessTimer.unref();
      undo.unshift(() => {
        clearInterval(livenessTimer);
        clearTimeout(livenessRegisterTimer);
        return Promise.resolve();
      });
      const retention = new RetentionTask({
        driver,
        state,
        store,
        liveFollowers: () => liveness.liveFollowers,
        log,
      });
      retention.start(config.timing.retentionCheckIntervalMs);
      undo.unshift(() => retention.stop());
      const node = new BrokerNode(
        config,
        b,
        driver,
        transport,
        state,
        meta,
        server,
        retention,
        async () => {
          clearInterval(livenessTimer);
          clearTimeout(livenessRegisterTimer);
          await retention.stop();
          await messaging.close();
          await admin.close();
          lookup?.close();
        },
        registrar,
        log,
      );
      log.info(
        { client: self.client, raft: self.raft, dataDir: config.dataDir, seed },
        'broker node started',
      );
      return node;
    } catch (err) {
      for (const close of undo) {
        await close().catch((closeErr: unknown) => {
          log.error({ err: closeErr }, 'cleanup after a failed start failed');
        });
      }
      throw err;
    }
  }

  /**
   * Stops serving, then Raft, then the stores. Safe to call more than once. A leader first hands
   * leadership to its most caught-up follower (within an election timeout), so that the group
   * does not wait out an election; and the services end their long-lived calls (Telemetry
   * streams, long polls) before the server's graceful shutdown, which waits for calls in flight
   * and would otherwise wait out its bound for every client's Telemetry stream while this node
   * still led (2.6 s to a new leader with one client connected, against 0.7 s without).
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.handOffLeadership();
      this.broker.close();
      await this.registrar?.stop();
      await this.closeServices();
      await shutdownServer(this.server, SERVER_SHUTDOWN_MS, this.log);
      await this.driver.close();
      await this.transport.close();
      await this.state.close();
      await this.state.store.close();
      await this.meta.close();
      this.log.info({}, 'broker node stopped');
    })();
    return this.stopping;
  }

  /** On a leader, hands leadership to the live follower with the most of the log; best effort. */
  private async handOffLeadership(): Promise<void> {
    const { tickIntervalMs, electionTimeoutTicks, heartbeatIntervalTicks } = this.config.timing;
    let target = this.handOffTarget();
    if (target === null) return;
    if (target === undefined) {
      // No follower heard from since the last CheckQuorum round, which forgets them all: one
      // heartbeat later the live ones have answered.
      await new Promise((resolve) =>
        setTimeout(resolve, tickIntervalMs * heartbeatIntervalTicks + 5),
      );
      target = this.handOffTarget();
      if (target === null || target === undefined) return;
    }
    try {
      await this.broker.transferLeadership(
        target,
        Date.now() + tickIntervalMs * electionTimeoutTicks,
      );
      this.log.info({ to: target }, 'leadership handed off before stopping');
    } catch (err) {
      this.log.info({ err, to: target }, 'leadership not handed off before stopping');
    }
  }

  /**
   * The follower to hand leadership to: of those heard from lately (a transfer to one that is
   * down refuses writes for an election timeout, and then the group still needs an election),
   * the one with the most of the log, the preferred leader on a tie. Undefined when none was
   * heard from lately; null when this node does not lead or has no followers.
   */
  private handOffTarget(): string | undefined | null {
    const status = this.driver.status();
    if (status.role !== 'leader' || status.stopped || status.progress.size === 0) return null;
    let target: string | undefined;
    let best = -1;
    for (const [id, p] of [...status.progress].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      if (!p.recentActive) continue;
      const preferred = id === this.config.preferredLeader;
      if (p.match > best || (p.match === best && preferred)) {
        target = id;
        best = p.match;
      }
    }
    return target;
  }
}

/** What this node tells the NameServers. */
function registration(
  config: BrokerNodeConfig,
  broker: Broker,
  driver: RaftDriver,
  state: BrokerState,
): NodeRegistration {
  const v = broker.roleView();
  const topics = nameKeyedObject<TopicRegistration>();
  for (const t of broker.listTopics()) {
    // Only the types this broker serves: the NameServer's routes list what is registered.
    const messageTypes = broker.advertisedMessageTypes(t);
    topics[t.name] = { queueCount: t.queueCount, perm: t.perm, messageTypes };
  }
  const status = driver.status();
  return {
    cluster: config.cluster,
    group: config.group,
    nodeId: config.nodeId,
    endpoint: broker.clientEndpoint,
    // A leader not yet ready claims nothing: its term's state is not applied yet.
    role: v.role === 'leader' && v.leaderReady ? 'leader' : 'follower',
    term: v.term,
    topics,
    stats: { commitIndex: status.commitIndex, appliedIndex: state.appliedIndex },
    ...(v.role === 'leader' && v.leaderReady && broker.liveFollowers !== undefined
      ? { liveFollowers: broker.liveFollowers }
      : {}),
    // Lets the NameServer answer QueryRoute for a topic no group has yet, as RocketMQ's
    // NameServer does through TBW102; the first send then creates it on this group.
    ...(config.autoCreateTopics
      ? { autoCreateTopics: true, defaultQueueCount: config.defaultQueueCount }
      : {}),
  };
}

function splitHostPort(endpoint: string): [string, number] {
  const i = endpoint.lastIndexOf(':');
  return [endpoint.slice(0, i), Number(endpoint.slice(i + 1))];
}
