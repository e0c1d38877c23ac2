/*
 * A leader hands its new entries to the CommitLog without waiting for them (`durableLater`).
 * These tests run the real driver and CommitLog on simulated disks whose CommitLog fsyncs are
 * made slow or held, and watch from outside: the log's append() and waitPersisted() calls and
 * every message sent. They check that at most 16 such writes (fewer past 32 MiB) are handed
 * out before the driver waits for the oldest, and that everything acknowledged then commits
 * everywhere; that close() with writes outstanding ends in bounded simulated time and a restart
 * on the same disk keeps every acknowledged entry; and that a node never acknowledges an Append
 * beyond its persisted log, also right after leading with writes outstanding.
 */
import { strict as assert } from 'node:assert';
import { LATER_WRITE_BYTES_MAX, LATER_WRITES_MAX, RaftDriver } from '../../src/broker/raft-driver';
import { hardStateCodec } from '../../src/broker/raft-hard-state';
import { ManualClock } from '../../src/common/clock';
import { createPrng } from '../../src/common/prng';
import { asLogIndex, asNodeId, asTerm, type NodeId } from '../../src/common/types';
import type { Message } from '../../src/raft/types';
import { CommitLog } from '../../src/store/commit-log';
import type { DiskFile } from '../../src/store/disk';
import type { LogEntry } from '../../src/store/log-record';
import { MemMetaStore } from '../../src/store/mem-meta-store';
import { getMeta, MetaKeys } from '../../src/store/meta';
import { SimCluster } from '../../src/sim/sim-cluster';
import { SimDisk } from '../../src/sim/sim-disk';
import { SimLoop, SimTimers } from '../../src/sim/sim-loop';
import { SimNetwork, type SimTransport } from '../../src/sim/sim-network';
import { SimTrace } from '../../src/sim/sim-trace';
import { beforeCommitLogSyncs } from '../sim/commitlog-syncs';

const TICK_MS = 10;
const encoder = new TextEncoder();

/**
 * Watches a CommitLog from outside: an append() and the waitPersisted() of its last index that
 * follows it are one write handed out, outstanding until that promise settles. At every append
 * it checks the driver's bound on the writes still outstanding.
 */
class WriteWatch {
  count = 0;
  bytes = 0;
  /** The most writes and bytes outstanding at once (right after a hand-out). */
  countMax = 0;
  bytesMax = 0;
  readonly breaches: string[] = [];
  private appendedBytes = 0;

  attach(log: CommitLog): void {
    const append = log.append.bind(log);
    const waitPersisted = log.waitPersisted.bind(log);
    log.append = (entries: readonly LogEntry[]): number => {
      if (this.count > LATER_WRITES_MAX || (this.count > 1 && this.bytes > LATER_WRITE_BYTES_MAX)) {
        this.breaches.push(`append with ${this.count} writes, ${this.bytes} bytes outstanding`);
      }
      this.appendedBytes = entries.reduce((sum, e) => sum + e.payload.byteLength, 0);
      return append(entries);
    };
    log.waitPersisted = (index: number): Promise<void> => {
      const bytes = this.appendedBytes;
      this.appendedBytes = 0;
      this.count += 1;
      this.bytes += bytes;
      this.countMax = Math.max(this.countMax, this.count);
      this.bytesMax = Math.max(this.bytesMax, this.bytes);
      const settled = (): void => {
        this.count -= 1;
        this.bytes -= bytes;
      };
      const promise = waitPersisted(index);
      promise.then(settled, settled);
      return promise;
    };
  }
}

/** Makes each node's CommitLog fsyncs slower by a set delay, or holds them until released. */
class LogSyncs {
  private readonly extraMs = new Map<NodeId, number>();
  private readonly held = new Map<NodeId, { gate: Promise<void>; release: () => void }>();

  constructor(cluster: SimCluster) {
    beforeCommitLogSyncs(cluster, async (id) => {
      const delayMs = this.extraMs.get(id) ?? 0;
      if (delayMs > 0) await cluster.node(id).timers?.sleep(delayMs);
      for (let h = this.held.get(id); h !== undefined; h = this.held.get(id)) await h.gate;
    });
  }

  slow(id: NodeId, delayMs: number): void {
    this.extraMs.set(id, delayMs);
  }

  hold(id: NodeId): void {
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.held.set(id, { gate, release });
  }

  release(id: NodeId): void {
    this.held.get(id)?.release();
    this.held.delete(id);
  }
}

/** Counts a client's proposals and their outcomes. */
class Client {
  sent = 0;
  acked = 0;
  failed = 0;

  constructor(private readonly cluster: SimCluster) {}

  propose(at: NodeId, text: string): void {
    if (this.cluster.driver(at) === undefined) return;
    this.sent += 1;
    this.cluster.propose(at, encoder.encode(text), (ok) => (ok ? this.acked++ : this.failed++));
  }

  get settled(): boolean {
    return this.acked + this.failed === this.sent;
  }
}

function newCluster(seed: number): { cluster: SimCluster; syncs: LogSyncs; client: Client } {
  const cluster = new SimCluster({ seed, nodeCount: 3, tickIntervalMs: TICK_MS, syncMsMax: 1 });
  const syncs = new LogSyncs(cluster);
  for (const id of cluster.ids) cluster.start(id);
  return { cluster, syncs, client: new Client(cluster) };
}

/** Follows a promise that only settles while the simulation runs. */
function track(promise: Promise<unknown>): { done: boolean; error: unknown } {
  const state: { done: boolean; error: unknown } = { done: false, error: undefined };
  promise.then(
    () => {
      state.done = true;
    },
    (err: unknown) => {
      state.error = err;
      state.done = true;
    },
  );
  return state;
}

/** Runs the simulation until `done()` holds; fails after `msMax` simulated milliseconds. */
async function runUntil(
  cluster: { runFor(ms: number): Promise<unknown> },
  done: () => boolean,
  msMax: number,
): Promise<void> {
  for (let elapsedMs = 0; !done(); elapsedMs += TICK_MS) {
    assert.ok(elapsedMs < msMax, `condition not reached within ${msMax} simulated ms`);
    await cluster.runFor(TICK_MS);
  }
}

async function electLeader(cluster: SimCluster, not?: NodeId): Promise<NodeId> {
  let leader: NodeId | undefined;
  const found = (): boolean => (leader = cluster.leader()) !== undefined && leader !== not;
  await runUntil(cluster, found, 5_000);
  assert.ok(leader !== undefined);
  return leader;
}

function commitLogOf(cluster: SimCluster, id: NodeId): CommitLog {
  const log = cluster.node(id).commitLog;
  assert.ok(log !== undefined, `${id} has no CommitLog`);
  return log;
}

/** Every proposal acknowledged so far is applied on every node. */
function appliedEverywhere(cluster: SimCluster): boolean {
  const acked = cluster.history.maxAckedIndex;
  return cluster.ids.every((id) => (cluster.history.appliedIndexOf.get(id) ?? 0) >= acked);
}

/** Ends a run: heals, waits until every acknowledged proposal is applied everywhere. */
async function settle(cluster: SimCluster, client: Client): Promise<void> {
  cluster.network.heal();
  await runUntil(cluster, () => client.settled && appliedEverywhere(cluster), 5_000);
  assert.ok(client.acked > 0, 'nothing was acknowledged');
  assert.deepEqual(cluster.history.violations, []);
  assert.deepEqual(cluster.unexpectedFailures, []);
}

/** Records every successful AppendResp that leaves a node past its persisted log. */
function watchAcks(cluster: SimCluster): { sent: Message[]; ahead: string[] } {
  const seen = { sent: [] as Message[], ahead: [] as string[] };
  cluster.network.onSend = (m) => {
    if (m.type !== 'AppendResp' || m.reject) return;
    const persisted = commitLogOf(cluster, m.from).persistedIndex();
    seen.sent.push(m);
    if (m.matchIndex > persisted) {
      seen.ahead.push(`${m.from} acked ${m.matchIndex} to ${m.to} with ${persisted} persisted`);
    }
  };
  return seen;
}

describe('RaftDriver writes completed later: backpressure', () => {
  it('hands out at most 16 writes on a slow disk, then drains and commits them all', async () => {
    const { cluster, syncs, client } = newCluster(31);
    const leader = await electLeader(cluster);
    const watch = new WriteWatch();
    watch.attach(commitLogOf(cluster, leader));
    // Each fsync takes 25 ms more on the leader: with a proposal every millisecond, more than
    // 16 writes are handed out per fsync. (Much slower, and a leader whose loop waits for its
    // disk longer than an election timeout sends no heartbeats and loses its leadership.)
    syncs.slow(leader, 25);
    for (let ms = 0; ms < 600; ms++) {
      client.propose(leader, `slow-${ms}`);
      await cluster.runFor(1);
    }
    assert.equal(cluster.leader(), leader, 'the slow leader kept its leadership');
    syncs.slow(leader, 0);
    await runUntil(cluster, () => watch.count === 0, 1_000);
    // After the drain it goes on as before.
    for (let i = 0; i < 50; i++) {
      client.propose(leader, `after-${i}`);
      await cluster.runFor(1);
    }
    await settle(cluster, client);
    assert.deepEqual(watch.breaches, []);
    // The write that reached the bound was handed out, then the loop waited for the oldest.
    assert.equal(watch.countMax, LATER_WRITES_MAX + 1);
    assert.equal(client.acked, client.sent, `${client.failed} proposals failed`);
  });

  it('holds outstanding writes under 32 MiB once there are two or more', async () => {
    // One node whose CommitLog takes 3 MiB entries (11 writes pass the byte bound, long before
    // 16 writes do) and whose fsyncs take 100 ms, on its own simulated loop.
    const clock = new ManualClock();
    const loop = new SimLoop(clock, new SimTrace(() => clock.monotonicMs()));
    const sim = { runFor: (ms: number) => loop.runUntil(loop.nowMs() + ms, () => true, 100_000) };
    const timers = new SimTimers(loop);
    const disk = new SimDisk({ clock, prng: createPrng(41) });
    const open = disk.open.bind(disk);
    disk.open = async (path: string, create: boolean): Promise<DiskFile> => {
      const file = await open(path, create);
      const sync = file.sync.bind(file);
      file.sync = () => timers.sleep(100).then(sync);
      return file;
    };
    const meta = new MemMetaStore();
    const log = await CommitLog.open(
      '/solo',
      { disk, meta, clock, scheduler: timers },
      { segmentSizeBytes: 32 * 1024 * 1024, payloadMaxBytes: 4 * 1024 * 1024 },
    );
    const watch = new WriteWatch();
    watch.attach(log);
    const id = asNodeId('solo');
    let appliedIndex = 0;
    const driver = await RaftDriver.open({
      id,
      peers: [id],
      commitLog: log,
      meta,
      transport: new SimNetwork(loop, createPrng(42), [id]).attach(id),
      scheduler: timers,
      clock,
      prng: createPrng(43),
      apply: (entries) => {
        appliedIndex = entries[entries.length - 1]?.index ?? appliedIndex;
        return Promise.resolve();
      },
      options: { tickIntervalMs: TICK_MS },
    });
    // Leader once its no-op is applied (that first write is waited for: it has a new term).
    await runUntil(sim, () => appliedIndex === 1 && watch.count === 0, 2_000);
    assert.equal(driver.status().role, 'leader');
    const payload = new Uint8Array(3 * 1024 * 1024).fill(7);
    const acks: Promise<unknown>[] = [];
    for (let i = 0; i < 14; i++) {
      acks.push(driver.propose([payload]));
      await sim.runFor(1);
    }
    await runUntil(sim, () => watch.count === 0 && driver.status().proposalsPending === 0, 5_000);
    // After the drain it goes on as before.
    acks.push(driver.propose([payload]));
    await runUntil(sim, () => driver.status().proposalsPending === 0, 1_000);
    await Promise.all(acks);
    assert.deepEqual(watch.breaches, []);
    assert.ok(watch.bytesMax > LATER_WRITE_BYTES_MAX, `only ${watch.bytesMax} bytes outstanding`);
    // The byte bound, not the count, held the writes back.
    assert.ok(watch.countMax > 2 && watch.countMax < LATER_WRITES_MAX, `${watch.countMax} writes`);
    assert.equal(appliedIndex, log.lastIndex());
    const closing = track(driver.close().then(() => log.close()));
    await runUntil(sim, () => closing.done, 1_000);
    assert.equal(closing.error, undefined);
  });
});

describe('RaftDriver writes completed later: close', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  before(() => process.on('unhandledRejection', onUnhandled));
  after(() => process.off('unhandledRejection', onUnhandled));

  // The leader's fsyncs are held while its followers commit a dozen more entries (too few for
  // the loop to wait), and a commit index write falls in that time. Then it closes. After a
  // clean close its fsyncs resume and the CommitLog is closed too (which flushes); a power
  // loss loses what neither store synced, and in the last ending the metadata store's unsynced
  // writes (the commit index) happened to reach the disk while the CommitLog's did not.
  const endings = ['clean close', 'power loss', 'power loss, metadata kept'] as const;
  endings.forEach((ending, n) => {
    it(`closes with writes outstanding; restarts with every acknowledged entry (${ending})`, async () => {
      const { cluster, syncs, client } = newCluster(51 + n);
      const leader = await electLeader(cluster);
      const watch = new WriteWatch();
      watch.attach(commitLogOf(cluster, leader));
      for (let i = 0; i < 20; i++) client.propose(leader, `fast-${i}`);
      await runUntil(cluster, () => client.settled, 1_000);
      syncs.hold(leader);
      for (let i = 0; i < 12; i++) {
        client.propose(leader, `held-${i}`);
        await cluster.runFor(20);
      }
      const { commitIndex } = cluster.status(leader) ?? assert.fail('leader down');
      assert.ok(commitIndex > commitLogOf(cluster, leader).persistedIndex());
      assert.ok(watch.count > 0, 'no write outstanding at close');
      const driver = cluster.driver(leader);
      assert.ok(driver !== undefined);
      const closing = track(driver.close());
      await runUntil(cluster, () => closing.done, 1_000);
      assert.equal(closing.error, undefined);
      assert.equal(await driver.stopped, undefined);
      if (ending === 'clean close') {
        syncs.release(leader);
        const logClosing = track(commitLogOf(cluster, leader).close());
        await runUntil(cluster, () => logClosing.done, 1_000);
        assert.equal(logClosing.error, undefined);
        assert.equal(watch.count, 0, 'a write was left waiting after the log closed');
      }
      assert.deepEqual(cluster.unexpectedFailures, []);
      if (ending === 'power loss, metadata kept') {
        cluster.crash(leader, 'keep');
        cluster.node(leader).disk.crash('lose');
      } else {
        cluster.crash(leader, 'lose');
      }
      syncs.release(leader);
      const stored = await getMeta(
        cluster.node(leader).meta,
        MetaKeys.raftHardState,
        hardStateCodec,
      );
      // Restarted alone, so that what it holds is what it recovered.
      cluster.network.isolate(leader);
      cluster.start(leader);
      const restarted = cluster.node(leader);
      await runUntil(
        cluster,
        () => restarted.state === 'up' || restarted.fatal !== undefined,
        1_000,
      );
      assert.deepEqual(cluster.unexpectedFailures, [], 'the restart failed');
      const log = commitLogOf(cluster, leader);
      assert.ok((stored?.commit ?? 0) <= log.persistedIndex(), 'stored commit past the log');
      for (const acked of cluster.history.acked.values()) {
        assert.equal(log.termAt(acked.index), acked.term, `acknowledged entry ${acked.index} lost`);
      }
      await settle(cluster, client);
      assert.deepEqual(unhandled, []);
    });
  });
});

describe('RaftDriver writes completed later: acknowledgements of an ex-leader', () => {
  it('never acknowledges past its persisted log across a leadership transfer', async () => {
    const { cluster, syncs, client } = newCluster(61);
    cluster.network.setConditions({
      ...cluster.network.getConditions(),
      duplicateProbability: 0.05,
      reorderProbability: 0.05,
      reorderDelayMsMax: 20,
    });
    const acks = watchAcks(cluster);
    const leader = await electLeader(cluster);
    const watch = new WriteWatch();
    watch.attach(commitLogOf(cluster, leader));
    const target = cluster.ids.find((id) => id !== leader) as NodeId;
    syncs.slow(leader, 25);
    let outstandingAtStepDown = -1;
    for (let ms = 0; ms < 400; ms++) {
      const now = cluster.leader();
      if (now !== undefined) client.propose(now, `t-${ms}`);
      if (ms === 150) cluster.transfer(leader, target);
      await cluster.runFor(1);
      if (outstandingAtStepDown < 0 && cluster.status(leader)?.role !== 'leader') {
        outstandingAtStepDown = watch.count;
      }
    }
    assert.equal(cluster.leader(), target, 'leadership did not move');
    assert.ok(
      outstandingAtStepDown > 0,
      'the leader had no write outstanding when it stepped down',
    );
    syncs.slow(leader, 0);
    await settle(cluster, client);
    assert.ok(
      acks.sent.some((m) => m.from === leader && m.to === target),
      'the ex-leader never acknowledged the new leader',
    );
    assert.deepEqual(acks.ahead, []);
  });

  it('answers a probe below its commit index only once its own writes are durable', async () => {
    const { cluster, syncs, client } = newCluster(71);
    const transports = new Map<NodeId, SimTransport>();
    const attach = cluster.network.attach.bind(cluster.network);
    cluster.network.attach = (id: NodeId): SimTransport => {
      const transport = attach(id);
      transports.set(id, transport);
      return transport;
    };
    const acks = watchAcks(cluster);
    const exLeader = await electLeader(cluster);
    for (let i = 0; i < 5; i++) client.propose(exLeader, `durable-${i}`);
    await runUntil(cluster, () => client.settled, 1_000);
    // The followers commit five entries the leader has not made durable (it holds its fsyncs).
    syncs.hold(exLeader);
    for (let i = 0; i < 5; i++) client.propose(exLeader, `held-${i}`);
    await cluster.runFor(30);
    const { commitIndex, term } = cluster.status(exLeader) ?? assert.fail('ex-leader down');
    const persisted = commitLogOf(cluster, exLeader).persistedIndex();
    assert.ok(commitIndex > persisted, `commit ${commitIndex}, persisted ${persisted}`);
    // Cut off, it loses its leadership to a new leader of a higher term.
    cluster.network.isolate(exLeader);
    const leader = await electLeader(cluster, exLeader);
    const status = cluster.status(leader) ?? assert.fail('new leader down');
    assert.ok(status.term > term);
    // A probe from the new leader below the ex-leader's commit index (where every log matches)
    // is answered with that commit index, and brings no entry of its own to wait for: only the
    // driver's wait for its later writes holds the answer back. (Today's leader first probes at
    // its own last index, and the no-op it then sends is waited for, which covers the older
    // writes; the driver does not count on that.)
    const prevIndex = commitIndex - 1;
    const probe: Message = {
      type: 'Append',
      from: leader,
      to: exLeader,
      term: asTerm(status.term),
      prevIndex: asLogIndex(prevIndex),
      prevTerm: asTerm(commitLogOf(cluster, leader).termAt(prevIndex) ?? assert.fail('no term')),
      entries: [],
      commit: asLogIndex(status.commitIndex),
    };
    const deliver = transports.get(exLeader)?.handler ?? assert.fail('no transport');
    deliver(probe);
    await cluster.runFor(200);
    assert.deepEqual(acks.ahead, [], 'acknowledged entries its own log had not made durable');
    syncs.release(exLeader);
    const answer = (): Message | undefined =>
      acks.sent.find((m) => m.from === exLeader && m.term === status.term);
    await runUntil(cluster, () => answer() !== undefined, 1_000);
    const sent = answer();
    assert.ok(sent?.type === 'AppendResp' && sent.matchIndex === commitIndex, 'the probe answer');
    await settle(cluster, client);
    assert.deepEqual(acks.ahead, []);
  });
});
