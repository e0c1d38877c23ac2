/*
 * The Raft driver writes the commit index in the background, at most once every 10 ticks, into
 * the same metadata record as the term and vote. These tests run simulated 3-node groups in
 * which every unsynced metadata batch lands after a random simulated delay (as LevelDB may
 * finish writes in any order), through leader changes, and record every hard-state write as it
 * lands. They check that a stored term never goes back and a stored vote never changes within
 * its term (a commit write that carried an older term and vote and landed after a newer one
 * would undo a vote), and that commit writes stay at one per 10 ticks per node however many
 * Readies are handled.
 */
import { strict as assert } from 'node:assert';
import { hardStateCodec } from '../../src/broker/raft-hard-state';
import type { NodeId } from '../../src/common/types';
import type { HardState } from '../../src/raft/types';
import type { MetaBatchOp } from '../../src/store/meta';
import { MetaKeys } from '../../src/store/meta';
import { SimCluster } from '../../src/sim/sim-cluster';

const TICK_MS = 10;

interface Landed {
  readonly node: NodeId;
  readonly atMs: number;
  readonly hardState: HardState;
}

/** Delays every unsynced batch of every node by [0, 4) simulated ms; records hard states. */
function instrument(cluster: SimCluster, landed: Landed[]): void {
  for (const id of cluster.ids) {
    const meta = cluster.node(id).meta;
    const batch = meta.batch.bind(meta);
    const prng = cluster.prng.fork();
    meta.batch = (ops: readonly MetaBatchOp[], options: { sync: boolean }): Promise<void> => {
      const record = (): void => {
        for (const op of ops) {
          if (op.key === MetaKeys.raftHardState && op.value !== undefined) {
            landed.push({
              node: id,
              atMs: cluster.clock.monotonicMs(),
              hardState: hardStateCodec.decode(op.value),
            });
          }
        }
      };
      if (options.sync) {
        return batch(ops, options).then(record);
      }
      const delayMs = prng.nextInt(0, 4);
      return new Promise<void>((resolve, reject) => {
        cluster.loop.after(delayMs, () => {
          batch(ops, options).then(() => {
            record();
            resolve();
          }, reject);
        });
      });
    };
  }
}

async function runFor(cluster: SimCluster, ms: number): Promise<void> {
  for (let t = 0; t < ms; t += TICK_MS) await cluster.runFor(TICK_MS);
}

describe('RaftDriver commit index writes', () => {
  for (const seed of [11, 12, 13, 14, 15, 16]) {
    it(`never let an older term or vote land over a newer one (seed ${seed})`, async () => {
      const cluster = new SimCluster({ seed, nodeCount: 3, tickIntervalMs: TICK_MS, syncMsMax: 6 });
      const landed: Landed[] = [];
      instrument(cluster, landed);
      for (const id of cluster.ids) cluster.start(id);
      const payload = new TextEncoder().encode('x');
      await runFor(cluster, 300);
      // Proposals every simulated millisecond keep a commit write pending on every node, while
      // leadership moves (and terms change) every 50 ms or so.
      for (let ms = 0; ms < 3_000; ms++) {
        const leader = cluster.leader();
        if (leader !== undefined) {
          cluster.propose(leader, payload);
          if (ms % 50 === 0) {
            const others = cluster.ids.filter((id) => id !== leader);
            cluster.transfer(leader, others[(ms / 50) % others.length] as NodeId);
          }
          if (ms % 700 === 350) cluster.network.isolate(leader);
          if (ms % 700 === 550) cluster.network.heal();
        }
        await cluster.runFor(1);
      }
      cluster.network.heal();
      await runFor(cluster, 300);
      for (const id of cluster.ids) {
        let last: HardState | undefined;
        for (const l of landed.filter((x) => x.node === id)) {
          const h = l.hardState;
          if (last !== undefined) {
            assert.ok(h.term >= last.term, `${id} at ${l.atMs} ms: term ${last.term} -> ${h.term}`);
            if (h.term === last.term && last.vote !== null) {
              assert.equal(h.vote, last.vote, `${id} at ${l.atMs} ms: vote changed in term`);
            }
          }
          last = h;
        }
        assert.ok(landed.some((x) => x.node === id && x.hardState.commit > 0), `${id} commits`);
      }
      assert.deepEqual(cluster.history.violations, []);
      assert.deepEqual(cluster.unexpectedFailures, []);
    });
  }

  it('writes the commit index at most once every 10 ticks on each node', async () => {
    const cluster = new SimCluster({
      seed: 21,
      nodeCount: 3,
      tickIntervalMs: TICK_MS,
      syncMsMax: 1,
    });
    const landed: Landed[] = [];
    instrument(cluster, landed);
    for (const id of cluster.ids) cluster.start(id);
    await runFor(cluster, 500);
    const leader = cluster.leader();
    assert.ok(leader !== undefined);
    const startMs = cluster.clock.monotonicMs();
    const payload = new TextEncoder().encode('y');
    let acked = 0;
    // Many small rounds: several Readies per tick on every node.
    for (let i = 0; i < 400; i++) {
      cluster.propose(leader, payload, (ok) => {
        if (ok) acked++;
      });
      await cluster.runFor(1);
    }
    await runFor(cluster, 200);
    const elapsedTicks = (cluster.clock.monotonicMs() - startMs) / TICK_MS;
    assert.ok(acked > 300, `acked ${acked}`);
    for (const id of cluster.ids) {
      const writes = landed.filter((l) => l.node === id && l.atMs >= startMs).length;
      assert.ok(writes <= elapsedTicks / 10 + 2,
        `${id}: ${writes} writes in ${elapsedTicks} ticks`);
      assert.ok(writes > 0, `${id} wrote its commit index`);
    }
  });
});
