// ReadIndex (thesis §6.4) on the cluster harness: a leader answers a read with its commit index
// once a heartbeat round confirmed a majority still follows it; an isolated leader cannot
// confirm and answers nothing; a new leader holds reads until its term's no-op is committed;
// followers refuse with NOT_LEADER; a one-node group answers without a round trip.
import { strict as assert } from 'node:assert';
import { Cluster } from './harness';

describe('raft ReadIndex', () => {
  it('answers with the commit index after a majority confirmed leadership', () => {
    const c = new Cluster({ nodeCount: 3, seed: 31 });
    c.elect('n1');
    c.propose('n1', 'a', 'b');
    assert.ok(c.node('n1').readIndex('r1').ok);
    c.stabilize();
    assert.deepEqual(c.store('n1').readStates, [{ requestId: 'r1', index: 3 }]);
  });

  it('answers nothing while the leader cannot reach a majority', () => {
    const c = new Cluster({ nodeCount: 3, seed: 32 });
    c.elect('n1');
    c.isolate('n1');
    assert.ok(c.node('n1').readIndex('r1').ok);
    c.stabilize();
    assert.deepEqual(c.store('n1').readStates, []);
    c.heal();
    c.tick();
    assert.deepEqual(c.store('n1').readStates.map((r) => r.requestId), ['r1'],
      'heartbeats carry the pending round, so it completes once healed');
  });

  it('holds reads until the new leader has committed its no-op', () => {
    const c = new Cluster({ nodeCount: 3, seed: 33 });
    c.elect('n1');
    c.propose('n1', 'a');
    c.filter = (m) => m.type !== 'AppendResp';
    c.crash('n1');
    const leader = c.electAmong(['n2', 'n3']);
    assert.ok(c.node(leader).readIndex('r1').ok);
    c.stabilize();
    assert.deepEqual(c.store(leader).readStates, [], 'no-op of term 2 not committed yet');
    c.filter = null;
    c.tick();
    assert.deepEqual(c.store(leader).readStates, [{ requestId: 'r1', index: 3 }]);
  });

  it('refuses on a follower and answers at once in a one-node group', () => {
    const c = new Cluster({ nodeCount: 3, seed: 34 });
    c.elect('n1');
    const refused = c.node('n2').readIndex('r1');
    assert.ok(!refused.ok && refused.code === 'NOT_LEADER' && refused.leaderId === 'n1');
    const solo = new Cluster({ nodeCount: 1, seed: 35 });
    solo.tickUntil(() => solo.leader() !== undefined, 30);
    assert.ok(solo.node('n1').readIndex('s1').ok);
    solo.stabilize();
    assert.deepEqual(solo.store('n1').readStates, [{ requestId: 's1', index: 1 }]);
  });

  it('refuses with BUSY beyond readIndexPendingMax', () => {
    const c = new Cluster({ nodeCount: 3, seed: 36, config: { readIndexPendingMax: 2 } });
    c.elect('n1');
    c.isolate('n1');
    assert.ok(c.node('n1').readIndex('r1').ok);
    assert.ok(c.node('n1').readIndex('r2').ok);
    const third = c.node('n1').readIndex('r3');
    assert.ok(!third.ok && third.code === 'BUSY');
  });
});
