// A follower the leader put in snapshot state (it needed entries the leader removed) is probed
// again once per election timeout while it answers heartbeats. Before, nothing took it out of
// that state during the leader's term, so the documented recovery (its data replaced by a copy
// of a peer's, docs/operations.md) left it without entries until another node led. Scenarios on
// a 5-node in-memory group whose leader keeps its quorum throughout: a rebuilt follower catches
// up under the same leader; one that still lacks removed entries goes back to snapshot state,
// is named in `snapshotsNeeded` again, and is sent one probe per election timeout, no more.
import { strict as assert } from 'node:assert';
import { asLogIndex, asNodeId } from '../../src/common/types';
import type { Message } from '../../src/raft/types';
import { Cluster } from './harness';

const n = asNodeId;

/** n2 leads a 5-node group and removed entries n3 (down meanwhile) lacks; n3 is back. */
function n3NeedsSnapshot(seed: number): Cluster {
  const c = new Cluster({ nodeCount: 5, seed });
  c.elect('n1');
  c.crash('n3');
  for (let i = 0; i < 5; i++) c.propose('n1', `a${i}`);
  assert.ok(c.node('n1').transferLeadership(n('n2')).ok);
  c.stabilize();
  assert.equal(c.leader(), 'n2');
  for (let i = 0; i < 5; i++) c.propose('n2', `b${i}`);
  const applied = c.node('n2').status().appliedIndex;
  assert.ok(c.node('n2').compact(asLogIndex(applied)).ok);
  c.restart('n3');
  for (let i = 0; i < 3; i++) c.tick();
  assert.equal(c.node('n2').status().progress.get(n('n3'))?.state, 'snapshot');
  assert.ok(c.store('n2').snapshotsNeeded.includes(n('n3')));
  return c;
}

describe('raft follower in snapshot state', () => {
  it('catches up under the same leader once its data is a copy of a peer\'s', () => {
    const c = n3NeedsSnapshot(21);
    // The operator stops n3 and n4, copies n4's data to n3 and starts both; n1, n2 and n5
    // keep the leader's quorum.
    c.crash('n3');
    c.crash('n4');
    for (let i = 0; i < 3; i++) c.tick();
    const from = c.store('n4');
    const to = c.store('n3');
    to.hardState = { ...from.hardState };
    to.log = [...from.log];
    to.applied = [...from.applied];
    c.restart('n4');
    c.restart('n3');
    for (let i = 0; i < 5; i++) c.propose('n2', `c${i}`);
    for (let i = 0; i < 30; i++) c.tick();
    assert.equal(c.leader(), 'n2', 'same leader throughout');
    const leaderLast = c.node('n2').status().lastIndex;
    assert.equal(c.node('n4').status().lastIndex, leaderLast);
    assert.equal(c.node('n3').status().lastIndex, leaderLast);
    assert.equal(c.node('n2').status().progress.get(n('n3'))?.state, 'replicate');
  });

  it('goes back to snapshot state, probed once per election timeout, while it lacks entries',
    () => {
      const c = n3NeedsSnapshot(22);
      c.store('n2').snapshotsNeeded = [];
      let appendsToN3 = 0;
      c.filter = (m: Message) => {
        if (m.type === 'Append' && m.to === 'n3') appendsToN3 += 1;
        return true;
      };
      const timeoutTicks = c.node('n2').config.electionTimeoutTicks;
      for (let i = 0; i < 3 * timeoutTicks; i++) c.tick();
      assert.equal(c.leader(), 'n2');
      assert.equal(c.node('n2').status().progress.get(n('n3'))?.state, 'snapshot');
      assert.ok(c.store('n2').snapshotsNeeded.includes(n('n3')), 'not named again');
      assert.ok(appendsToN3 >= 2 && appendsToN3 <= 3, `${appendsToN3} probes in 3 timeouts`);
      assert.ok(c.node('n3').status().lastIndex < c.node('n2').status().firstIndex - 1);
    });
});
