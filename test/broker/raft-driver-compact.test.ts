/*
 * RaftDriver.compact on the simulator (three drivers over real CommitLogs on simulated disks):
 * a compaction beyond the applied index is refused; one within it runs between Readys, after
 * which the CommitLog's prefix can be removed under the running group; a follower that was down
 * meanwhile is then put in snapshot state by the leader (no crash, no load of removed entries),
 * and the leader and the other follower go on committing. The leader logs `snapshot needed`
 * once for that follower, though it probes it again every election timeout, and once more on a
 * relapse after it stopped leading and leads again.
 */
import { strict as assert } from 'node:assert';
import pino from 'pino';
import { isRaftmqError } from '../../src/common/errors';
import type { NodeId } from '../../src/common/types';
import { SimCluster } from '../../src/sim/sim-cluster';

const TICK_MS = 10;
const encoder = new TextEncoder();

async function runUntil(cluster: SimCluster, done: () => boolean, msMax: number): Promise<void> {
  for (let elapsedMs = 0; elapsedMs < msMax; elapsedMs += TICK_MS) {
    if (done()) return;
    await cluster.runFor(TICK_MS);
  }
  assert.ok(done(), `condition not reached within ${msMax} simulated ms`);
}

/** Settles `promise` while the simulation runs; returns its outcome. */
async function settle<T>(cluster: SimCluster, promise: Promise<T>): Promise<T> {
  let outcome: { ok: true; value: T } | { ok: false; err: unknown } | undefined;
  promise.then(
    (value) => (outcome = { ok: true, value }),
    (err: unknown) => (outcome = { ok: false, err }),
  );
  await runUntil(cluster, () => outcome !== undefined, 5_000);
  assert.ok(outcome !== undefined);
  if (!outcome.ok) throw outcome.err;
  return outcome.value;
}

async function proposeAll(cluster: SimCluster, leader: NodeId, count: number): Promise<void> {
  let acked = 0;
  for (let i = 0; i < count; i++) {
    cluster.propose(leader, encoder.encode(`${i}-`.padEnd(200, 'p')), (ok) => {
      if (ok) acked++;
    });
  }
  await runUntil(cluster, () => acked === count, 10_000);
}

describe('RaftDriver compaction', () => {
  it('compacts under a running group; a follower that missed the prefix needs a snapshot', async () => {
    const cluster = new SimCluster({
      seed: 31,
      nodeCount: 3,
      tickIntervalMs: TICK_MS,
      syncMsMax: 2,
    });
    for (const id of cluster.ids) cluster.start(id);
    let leader: NodeId | undefined;
    await runUntil(cluster, () => (leader = cluster.leader()) !== undefined, 5_000);
    assert.ok(leader !== undefined);
    const lagging = cluster.ids.find((id) => id !== leader) as NodeId;
    const live = cluster.ids.find((id) => id !== leader && id !== lagging) as NodeId;
    await proposeAll(cluster, leader, 5);
    cluster.crash(lagging, 'keep');
    await proposeAll(cluster, leader, 60);

    const driver = cluster.driver(leader);
    const log = cluster.node(leader).commitLog;
    assert.ok(driver !== undefined && log !== undefined);
    const applied = driver.status().appliedIndex;
    await assert.rejects(settle(cluster, driver.compact(applied + 2)), (err) =>
      isRaftmqError(err, 'INVALID_ARGUMENT'),
    );
    const point = applied - 2;
    await settle(cluster, driver.compact(point));
    assert.equal(driver.status().firstIndex, point);
    const first = await settle(cluster, log.removePrefix(point));
    assert.ok(first > 1 && first <= point, `first index ${first}`);

    cluster.start(lagging);
    await runUntil(
      cluster,
      () => cluster.status(leader as NodeId)?.progress.get(lagging)?.state === 'snapshot',
      5_000,
    );
    const before = cluster.status(live)?.appliedIndex ?? 0;
    await proposeAll(cluster, leader, 5);
    await runUntil(cluster, () => (cluster.status(live)?.appliedIndex ?? 0) >= before + 5, 2_000);
    assert.equal(cluster.status(leader)?.stopped, false);
    assert.deepEqual(cluster.unexpectedFailures, []);
    assert.deepEqual(cluster.history.violations, []);
  });

  it('logs snapshot needed once per follower, and again after a change of leader', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
    const cluster = new SimCluster({
      seed: 32,
      nodeCount: 3,
      tickIntervalMs: TICK_MS,
      syncMsMax: 2,
      logger,
    });
    const warnings = (node: NodeId): number =>
      lines.filter((line) => {
        const record = JSON.parse(line) as { node?: string; msg?: string };
        return record.node === node && record.msg?.startsWith('snapshot needed') === true;
      }).length;
    for (const id of cluster.ids) cluster.start(id);
    let leader: NodeId | undefined;
    await runUntil(cluster, () => (leader = cluster.leader()) !== undefined, 5_000);
    assert.ok(leader !== undefined);
    const first = leader;
    const lagging = cluster.ids.find((id) => id !== first) as NodeId;
    const other = cluster.ids.find((id) => id !== first && id !== lagging) as NodeId;
    const driver = cluster.driver(first);
    const log = cluster.node(first).commitLog;
    assert.ok(driver !== undefined && log !== undefined);

    /** `lagging` misses entries `first` then removes, and comes back needing a snapshot. */
    const laggingNeedsSnapshot = async (): Promise<void> => {
      cluster.crash(lagging, 'keep');
      await proposeAll(cluster, first, 30);
      const point = driver.status().appliedIndex - 2;
      await settle(cluster, driver.compact(point));
      await settle(cluster, log.removePrefix(point));
      cluster.start(lagging);
      await runUntil(
        cluster,
        () => cluster.status(first)?.progress.get(lagging)?.state === 'snapshot',
        5_000,
      );
    };

    await proposeAll(cluster, first, 5);
    await laggingNeedsSnapshot();
    // Several election timeouts: the follower is probed and put back each time, warned once.
    await cluster.runFor(2_000);
    assert.equal(cluster.leader(), first);
    assert.equal(warnings(first), 1);

    // `other` still holds every entry: under it, `lagging` catches up.
    cluster.transfer(first, other);
    await runUntil(cluster, () => cluster.leader() === other, 5_000);
    await runUntil(
      cluster,
      () => cluster.status(lagging)?.lastIndex === cluster.status(other)?.lastIndex,
      5_000,
    );
    cluster.transfer(other, first);
    await runUntil(cluster, () => cluster.leader() === first, 5_000);
    await proposeAll(cluster, first, 5);

    await laggingNeedsSnapshot();
    await runUntil(cluster, () => warnings(first) === 2, 2_000);
    assert.deepEqual(cluster.unexpectedFailures, []);
    assert.deepEqual(cluster.history.violations, []);
  });
});
