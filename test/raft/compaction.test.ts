// Log compaction (`RaftNode.compact`, etcd's storage Compact): after it the core asks the store
// for no term below the new first index - 1 and loads nothing below it; a follower that needs
// removed entries is named in `snapshotsNeeded`, one that is up to date keeps replicating, and a
// compaction beyond what is applied or durable is refused. Checked on the in-memory harness,
// whose stores are wrapped so that any question about a removed index is recorded.
import { strict as assert } from 'node:assert';
import { asLogIndex, asNodeId, type Term } from '../../src/common/types';
import type { LoadRequest } from '../../src/raft/types';
import { Cluster, type MemStore } from './harness';

/** Removes the store's entries below `first` (keeping the term before it, as the CommitLog
 * does) and records every later question about them in `asked`. */
function removeBefore(store: MemStore, first: number, asked: string[]): void {
  const termAt = store.termAt;
  const load = store.load.bind(store);
  store.termAt = (index: number): Term | undefined => {
    if (index < first - 1) asked.push(`term ${index}`);
    return termAt(index);
  };
  store.load = (request: LoadRequest) => {
    if (request.fromIndex < first) asked.push(`load ${request.fromIndex}`);
    return load(request);
  };
}

function proposeMany(cluster: Cluster, leader: string, count: number, tag: string): void {
  for (let i = 0; i < count; i++) {
    const result = cluster.propose(leader, `${tag}${i}`);
    assert.ok(result.ok, 'proposal refused');
  }
}

describe('raft log compaction', () => {
  it('a lagging follower needs a snapshot, a live one keeps replicating', () => {
    const cluster = new Cluster({ seed: 7, config: { preVote: false } });
    cluster.elect('n1');
    proposeMany(cluster, 'n1', 5, 'a');
    cluster.crash('n3');
    proposeMany(cluster, 'n1', 10, 'b');
    const asked: string[] = [];
    for (const id of ['n1', 'n2']) {
      const status = cluster.node(id).status();
      const point = status.appliedIndex + 1;
      assert.deepEqual(cluster.node(id).compact(asLogIndex(point)), { ok: true });
      assert.equal(cluster.node(id).status().firstIndex, point);
      removeBefore(cluster.store(id), point, asked);
    }
    cluster.restart('n3');
    proposeMany(cluster, 'n1', 3, 'c');
    for (let i = 0; i < 20; i++) cluster.tick();
    assert.deepEqual(asked, []);
    assert.ok(cluster.store('n1').snapshotsNeeded.includes(asNodeId('n3')));
    assert.equal(cluster.node('n1').status().progress.get(asNodeId('n3'))?.state, 'snapshot');
    assert.deepEqual(cluster.appliedTexts('n2').slice(-3), ['c0', 'c1', 'c2']);
    assert.deepEqual(cluster.appliedTexts('n3'), ['a0', 'a1', 'a2', 'a3', 'a4']);
  });

  it('a follower compacted under the leader still accepts Appends', () => {
    const cluster = new Cluster({ seed: 8 });
    cluster.elect('n1');
    proposeMany(cluster, 'n1', 6, 'a');
    const asked: string[] = [];
    for (const id of cluster.ids) {
      const point = cluster.node(id).status().appliedIndex + 1;
      cluster.node(id).compact(asLogIndex(point));
      removeBefore(cluster.store(id), point, asked);
    }
    proposeMany(cluster, 'n1', 4, 'b');
    for (let i = 0; i < 5; i++) cluster.tick();
    assert.deepEqual(asked, []);
    for (const id of cluster.ids) {
      assert.deepEqual(cluster.appliedTexts(id).slice(-4), ['b0', 'b1', 'b2', 'b3']);
    }
    assert.deepEqual(cluster.store('n1').snapshotsNeeded, []);
  });

  it('refuses to compact beyond applied, and ignores a point at or below the first index', () => {
    const cluster = new Cluster({ seed: 9 });
    cluster.elect('n1');
    proposeMany(cluster, 'n1', 3, 'a');
    const node = cluster.node('n1');
    const applied = node.status().appliedIndex;
    const refused = node.compact(asLogIndex(applied + 2));
    assert.equal(refused.ok, false);
    assert.equal(refused.ok ? '' : refused.code, 'INVALID_ARGUMENT');
    assert.equal(node.status().firstIndex, 1);
    assert.deepEqual(node.compact(asLogIndex(applied + 1)), { ok: true });
    assert.deepEqual(node.compact(asLogIndex(2)), { ok: true });
    assert.equal(node.status().firstIndex, applied + 1);
  });
});
