/**
 * RaftMember: one real member of a broker group, assembled from the production parts: a
 * NodeDisk, the LevelDB metadata store (`<dataDir>/meta`), the CommitLog (`<dataDir>`), the
 * gRPC transport and the Raft driver. Until the broker state machine exists it applies
 * committed entries to {@link AppliedDigest}, a trivial state machine that counts them and
 * keeps a running checksum, so that tests and benchmarks can compare what each node applied.
 *
 * The applied index is not persisted: on every start the driver applies the log again from the
 * first entry, which rebuilds the digest from the durable log alone.
 */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { systemClock, systemScheduler } from '../common/clock';
import { writeU32LE } from '../common/bytes';
import { crc32cSmall } from '../common/crc32c';
import { RaftmqError } from '../common/errors';
import { componentLogger, type Logger } from '../common/logger';
import { createPrng } from '../common/prng';
import { asNodeId, type NodeId } from '../common/types';
import type { RaftTunables } from '../raft/config';
import type { SoftState } from '../raft/types';
import type { FlushMode } from '../store/commit-log-options';
import { CommitLog } from '../store/commit-log';
import type { SyncStats } from '../store/commit-log-writer';
import { LevelMetaStore } from '../store/level-meta-store';
import { EntryType, recordChecksum, type LogEntry } from '../store/log-record';
import { NodeDisk } from '../store/node-disk';
import { GrpcRaftTransport } from './grpc-raft-transport';
import { RaftDriver, type ProposeAck, type RaftDriverStatus } from './raft-driver';
import type { RaftDriverOptions } from './raft-driver-options';
import type { GrpcRaftTransportOptions } from './grpc-raft-transport-options';

/** Recent applied entries remembered for verification (digest by index, entry checksums). */
export const APPLIED_RING_ENTRIES = 1 << 16;

/**
 * The trivial state machine: applied entries counted and chained into a running checksum
 * (`digest(i) = crc32c(digest(i-1) | checksum(i))`), with a bounded ring of the last
 * {@link APPLIED_RING_ENTRIES} indexes, their digests and entry checksums.
 *
 * An entry's checksum is the CRC32C its CommitLog record carries (`recordChecksum`); a proposer
 * computes the same from its acknowledgement to check what was applied. The digest takes it from
 * the CommitLog, which computed it at append (and answers only when index, term and size match
 * the applied entry), and computes it only when the CommitLog no longer remembers it (entries
 * appended before a restart, or more than a few thousand before the one applied). So the digest
 * covers the entries as this member stored them; that the applied entry is the stored one is
 * what the Raft log guarantees (and the simulator's checks of applied entries test).
 */
export class AppliedDigest {
  private applied = 0;
  private normalCount = 0;
  private running = 0;
  private readonly ringIndexes = new Float64Array(APPLIED_RING_ENTRIES);
  private readonly ringDigests = new Uint32Array(APPLIED_RING_ENTRIES);
  private readonly ringChecksums = new Uint32Array(APPLIED_RING_ENTRIES);
  private readonly pair = Buffer.alloc(8);

  /** @param recentRecordCrc the CommitLog's `recentRecordCrc`. */
  constructor(
    private readonly recentRecordCrc: (
      index: number,
      term: number,
      payloadBytes: number,
    ) => number | undefined,
  ) {}

  get appliedIndex(): number {
    return this.applied;
  }

  /** Normal (non no-op) entries applied. */
  get appliedCount(): number {
    return this.normalCount;
  }

  /** The digest of entries 1..appliedIndex. */
  get digest(): number {
    return this.running;
  }

  apply(entries: readonly LogEntry[]): void {
    for (const entry of entries) {
      if (entry.index !== this.applied + 1) {
        throw new RaftmqError('INTERNAL', `applied ${entry.index} after ${this.applied}`);
      }
      const checksum =
        this.recentRecordCrc(entry.index, entry.term, entry.payload.length) ??
        recordChecksum(entry.index, entry.term, entry.type, entry.payload);
      writeU32LE(this.pair, 0, this.running);
      writeU32LE(this.pair, 4, checksum);
      this.running = crc32cSmall(this.pair, 0, 8);
      this.applied = entry.index;
      if (entry.type === EntryType.NORMAL) this.normalCount += 1;
      const slot = entry.index % APPLIED_RING_ENTRIES;
      this.ringIndexes[slot] = entry.index;
      this.ringDigests[slot] = this.running;
      this.ringChecksums[slot] = checksum;
    }
  }

  /** The digest of entries 1..upTo, or undefined when upTo is not among the recent ones. */
  digestUpTo(upTo: number): number | undefined {
    if (upTo === 0) return 0;
    const slot = upTo % APPLIED_RING_ENTRIES;
    return this.ringIndexes[slot] === upTo && upTo <= this.applied
      ? this.ringDigests[slot]
      : undefined;
  }

  /** The checksum of the entry applied at `index`, or undefined when not among recent ones. */
  checksumAt(index: number): number | undefined {
    const slot = index % APPLIED_RING_ENTRIES;
    return this.ringIndexes[slot] === index && index <= this.applied
      ? this.ringChecksums[slot]
      : undefined;
  }
}

/** How to run one member. */
export interface RaftMemberConfig {
  readonly id: string;
  readonly group: string;
  /** Every member of the group (this one may be included): node id -> "host:port". */
  readonly peers: Readonly<Record<string, string>>;
  readonly listenHost?: string;
  /** 0 picks a free port; the member reports it in `port`. */
  readonly listenPort: number;
  /** Holds `commitlog/`, `index/` and `meta/`. */
  readonly dataDir: string;
  readonly flushMode?: FlushMode;
  /** The CommitLog's `pageCacheKeepBytes` (commit-log-options.ts); its default when absent. */
  readonly pageCacheKeepBytes?: number;
  /** Seeds the election timer randomness; random when absent. */
  readonly seed?: number;
  readonly raft?: Partial<RaftTunables>;
  readonly driver?: Partial<RaftDriverOptions>;
  readonly transport?: Partial<GrpcRaftTransportOptions>;
}

/**
 * Timings of a real group member. The core counts time in ticks; a fine tick (10 ms) with a
 * 50-tick election timeout draws each follower's timeout from 50 distinct values in
 * [500, 1000) ms. With 50 ms ticks and 10-tick timeouts there were only 10, so two followers
 * often timed out in the same tick after a leader died, split the vote, and the failover took
 * a second term (measured: p99 1.4-1.7 s). Heartbeats every 50 ms give 10 chances per election
 * timeout, so a healthy group does not hold spurious elections.
 */
export const MEMBER_TIMING_DEFAULTS = Object.freeze({
  tickIntervalMs: 10,
  electionTimeoutTicks: 50,
  heartbeatIntervalTicks: 5,
  /** Half the election timeout at most, so a restarted follower is reached again in time. */
  reconnectBackoffMaxMs: 250,
});

/** Observers of a member. */
export interface RaftMemberHooks {
  /** Role, term or leader changed. */
  readonly onSoftState?: (softState: SoftState) => void;
  /** This node, as leader, applied the first entry of its term (the new leader committed). */
  readonly onTermCommitted?: (term: number, index: number) => void;
  /** The driver stopped on a failure (the member is useless afterwards). */
  readonly onFatal?: (err: Error) => void;
}

/** What a member reports. */
export interface RaftMemberStatus {
  readonly raft: RaftDriverStatus;
  readonly appliedIndex: number;
  readonly appliedCount: number;
  readonly digest: number;
  readonly port: number;
  /** The CommitLog's sync rounds so far. */
  readonly sync: SyncStats;
}

/** A running member; see the file comment. */
export class RaftMember {
  readonly state: AppliedDigest;
  private driverRef: RaftDriver | undefined;
  private stopping: Promise<void> | undefined;
  private committedTerm = 0;
  private softState: SoftState | undefined;

  private constructor(
    readonly id: NodeId,
    private readonly meta: LevelMetaStore,
    private readonly commitLog: CommitLog,
    private readonly transport: GrpcRaftTransport,
    private readonly hooks: RaftMemberHooks,
  ) {
    this.state = new AppliedDigest((index, term, payloadBytes) =>
      commitLog.recentRecordCrc(index, term, payloadBytes),
    );
  }

  /** Opens the stores, binds the transport and starts the driver; undoes it all on failure. */
  static async start(
    config: RaftMemberConfig,
    logger: Logger,
    hooks: RaftMemberHooks = {},
  ): Promise<RaftMember> {
    const id = asNodeId(config.id);
    const log = componentLogger(logger, { component: 'member', group: config.group, node: id });
    const others = Object.fromEntries(Object.entries(config.peers).filter(([p]) => p !== id));
    const voters = [...new Set([id, ...Object.keys(config.peers).map(asNodeId)])].sort();
    const meta = await LevelMetaStore.open(path.join(config.dataDir, 'meta'));
    const undo: Array<() => Promise<void>> = [() => meta.close()];
    try {
      const commitLog = await CommitLog.open(
        config.dataDir,
        { disk: new NodeDisk(), meta, clock: systemClock, scheduler: systemScheduler, logger: log },
        { flushMode: config.flushMode ?? 'SYNC', pageCacheKeepBytes: config.pageCacheKeepBytes },
      );
      undo.unshift(() => commitLog.close());
      const transport = await GrpcRaftTransport.start(
        {
          reconnectBackoffMaxMs: MEMBER_TIMING_DEFAULTS.reconnectBackoffMaxMs,
          ...config.transport,
          group: config.group,
          selfId: id,
          listenHost: config.listenHost ?? '127.0.0.1',
          listenPort: config.listenPort,
          peers: others,
        },
        logger,
      );
      undo.unshift(() => transport.close());
      const member = new RaftMember(id, meta, commitLog, transport, hooks);
      // Members started in the same millisecond must not share election timeouts.
      const seed = config.seed ?? randomBytes(4).readUInt32LE(0);
      member.driverRef = await RaftDriver.open({
        id,
        peers: voters,
        raft: {
          electionTimeoutTicks: MEMBER_TIMING_DEFAULTS.electionTimeoutTicks,
          heartbeatIntervalTicks: MEMBER_TIMING_DEFAULTS.heartbeatIntervalTicks,
          ...config.raft,
        },
        commitLog,
        meta,
        transport,
        scheduler: systemScheduler,
        clock: systemClock,
        prng: createPrng(seed),
        logger,
        apply: (entries) => member.apply(entries),
        appliedIndex: commitLog.firstIndex() - 1,
        onFatal: hooks.onFatal,
        onSoftState: (softState) => {
          member.softState = softState;
          hooks.onSoftState?.(softState);
        },
        options: { tickIntervalMs: MEMBER_TIMING_DEFAULTS.tickIntervalMs, ...config.driver },
      });
      log.info({ seed, port: transport.port, dataDir: config.dataDir }, 'raft member started');
      return member;
    } catch (err) {
      for (const close of undo) {
        // The start already failed with `err`; a failure to undo is logged, and `err` wins.
        await close().catch((closeErr: unknown) => {
          log.error({ err: closeErr }, 'cleanup after a failed start failed');
        });
      }
      throw err;
    }
  }

  private get driver(): RaftDriver {
    if (this.driverRef === undefined) throw new RaftmqError('STORE_CLOSED', 'member not started');
    return this.driverRef;
  }

  /** The port the transport listens on. */
  get port(): number {
    return this.transport.port;
  }

  /** Resolves when the driver stops: with its fatal error, or undefined after `stop()`. */
  get stopped(): Promise<Error | undefined> {
    return this.driver.stopped;
  }

  /** Proposes entries; resolves after they are committed and applied here. */
  propose(payloads: readonly Uint8Array[]): Promise<ProposeAck> {
    return this.driver.propose(payloads);
  }

  transferLeadership(to: string): void {
    this.driver.transferLeadership(asNodeId(to));
  }

  status(): RaftMemberStatus {
    return {
      raft: this.driver.status(),
      appliedIndex: this.state.appliedIndex,
      appliedCount: this.state.appliedCount,
      digest: this.state.digest,
      port: this.port,
      sync: this.commitLog.syncStats(),
    };
  }

  /** Stops the driver, then the transport and the stores (the log is flushed by its close). */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.driver.close();
      await this.transport.close();
      await this.commitLog.close();
      await this.meta.close();
    })();
    return this.stopping;
  }

  private apply(entries: readonly LogEntry[]): Promise<void> {
    try {
      this.state.apply(entries);
    } catch (err) {
      // The driver stops on a rejected apply; a gap in applied indexes is never survivable.
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const last = entries[entries.length - 1];
    const soft = this.softState;
    if (
      last !== undefined &&
      soft !== undefined &&
      soft.role === 'leader' &&
      last.term === soft.term &&
      this.committedTerm < last.term
    ) {
      this.committedTerm = last.term;
      this.hooks.onTermCommitted?.(last.term, last.index);
    }
    return Promise.resolve();
  }
}
