/*
 * A leader's own CommitLog writes may complete after its followers have committed the entries
 * (`durableLater`): its stored commit index must still never run past its own persisted log,
 * or a crash that loses the log's unsynced tail leaves a node that refuses to start. Run on the
 * simulator with the leader's CommitLog fsyncs 25 ms slower than the followers', every hard
 * state write of every node is checked against that node's log as it is written.
 */
import { strict as assert } from 'node:assert';
import { hardStateCodec } from '../../src/broker/raft-hard-state';
import { MetaKeys, type MetaBatchOp } from '../../src/store/meta';
import { SimCluster } from '../../src/sim/sim-cluster';
import { beforeCommitLogSyncs } from './commitlog-syncs';

const LEADER_SYNC_DELAY_MS = 25;

describe('stored commit index under a slow leader disk', () => {
  for (const seed of [1, 2]) {
    it(`never stores a commit index past the node's persisted log (seed ${seed})`, async () => {
      const cluster = new SimCluster({ seed, nodeCount: 3, tickIntervalMs: 10, syncMsMax: 2 });
      const ahead: string[] = [];
      let commitWrites = 0;
      beforeCommitLogSyncs(cluster, async (id) => {
        if (cluster.leader() === id) {
          await new Promise<void>((resolve) => cluster.loop.after(LEADER_SYNC_DELAY_MS, resolve));
        }
      });
      for (const id of cluster.ids) {
        const node = cluster.node(id);
        const batch = node.meta.batch.bind(node.meta);
        node.meta.batch = async (ops: readonly MetaBatchOp[], options: { sync: boolean }) => {
          await batch(ops, options);
          for (const op of ops) {
            if (op.key !== MetaKeys.raftHardState || op.value === undefined) continue;
            const { commit } = hardStateCodec.decode(op.value);
            const log = node.commitLog;
            if (log === undefined || node.state !== 'up') continue;
            commitWrites += 1;
            if (commit > log.persistedIndex()) {
              ahead.push(`${id}: commit ${commit} > persisted ${log.persistedIndex()}`);
            }
          }
        };
      }
      for (const id of cluster.ids) cluster.start(id);
      await cluster.runFor(300);
      const payload = new TextEncoder().encode('x');
      for (let ms = 0; ms < 1500; ms++) {
        const leader = cluster.leader();
        if (leader !== undefined) for (let k = 0; k < 3; k++) cluster.propose(leader, payload);
        await cluster.runFor(1);
      }
      await cluster.runFor(300);
      assert.ok(commitWrites > 10, `only ${commitWrites} commit writes: the run did little`);
      assert.deepEqual(ahead, []);
      assert.deepEqual(cluster.unexpectedFailures, []);
    });
  }
});
