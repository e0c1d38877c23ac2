// The Figure 8 case of the Raft paper (§5.4.2), scripted step by step on five nodes. An entry of
// an old term that a later leader has replicated to a majority must not be committed by counting
// replicas: a node that never had it can still win an election and overwrite it. The script
// builds exactly that state, checks the leader does not commit the entry, then lets the other
// node win and overwrite it; the harness checks throughout that no node ever applies it.
// CheckQuorum is off here so that the script alone decides who may vote (no leader leases).
import { strict as assert } from 'node:assert';
import { Cluster, text } from './harness';

describe('raft Figure 8: commit only entries of the current term by counting', () => {
  it('never commits an old-term entry on a majority until a current-term entry commits', () => {
    const c = new Cluster({
      nodeCount: 5, seed: 8, config: { checkQuorum: false, batchEntriesMax: 1 },
    });
    // (a) n1 leads term 1 and replicates 'a' at index 2 to n2 only.
    c.elect('n1');
    c.partition(['n1', 'n2'], ['n3', 'n4', 'n5']);
    c.propose('n1', 'a');
    assert.deepEqual(c.logTerms('n1'), [1, 1]);
    assert.deepEqual(c.logTerms('n2'), [1, 1]);
    // (b) n5 wins term 2 with n3 and n4, but its own entry at index 2 goes nowhere.
    c.filter = (m) => !(m.from === 'n5' && (m.type === 'Append' || m.type === 'Heartbeat'));
    c.elect('n5');
    assert.equal(c.node('n5').status().term, 2);
    assert.deepEqual(c.logTerms('n5'), [1, 2]);
    assert.deepEqual(c.logTerms('n3'), [1]);
    c.crash('n5');
    // (c) n1 restarts and wins term 3; it replicates 'a' (term 1) to n3 and n4, so four of five
    // nodes hold it, but every Append that would deliver its term-3 no-op is lost (probes that
    // the follower rejects anyway get through, so n1 can find where n3 and n4 diverge).
    c.crash('n1');
    c.restart('n1');
    c.heal();
    c.filter = (m) => !(m.type === 'Append' && m.entries.some((e) => e.index >= 3)
      && c.store(m.to).log.length >= m.prevIndex);
    for (let i = 0; i < 3 && c.node('n1').status().role !== 'leader'; i++) c.campaign('n1');
    assert.equal(c.node('n1').status().role, 'leader');
    assert.equal(c.node('n1').status().term, 3);
    c.tick();
    for (const id of ['n1', 'n2', 'n3', 'n4']) {
      assert.equal(text(c.store(id).log[1] ?? assert.fail()), 'a', `${id} holds 'a'`);
    }
    assert.equal(c.node('n1').status().commitIndex, 1, "'a' is on a majority, yet not committed");
    // (d) n1 crashes; n5 (last term 2 beats last term 1) wins and overwrites index 2.
    c.crash('n1');
    c.filter = null;
    c.restart('n5');
    for (let i = 0; i < 3 && c.node('n5').status().role !== 'leader'; i++) c.campaign('n5');
    assert.equal(c.node('n5').status().role, 'leader');
    c.tick();
    for (const id of ['n2', 'n3', 'n4', 'n5']) {
      assert.deepEqual(c.logTerms(id), [1, 2, 4]);
      assert.deepEqual(c.appliedTexts(id), []);
    }
    c.restart('n1');
    c.tick();
    c.tick();
    assert.deepEqual(c.logTerms('n1'), [1, 2, 4]);
    assert.ok(![...c.appliedAt.values()].some((r) => r.data === 'a'), "'a' was never applied");
  });

  it('commits the old-term entry together with the first entry of the new term (§5.4.2)', () => {
    const c = new Cluster({ nodeCount: 5, seed: 8, config: { checkQuorum: false } });
    c.elect('n1');
    c.partition(['n1', 'n2'], ['n3', 'n4', 'n5']);
    c.propose('n1', 'a');
    c.crash('n1');
    c.restart('n1');
    c.heal();
    for (let i = 0; i < 3 && c.node('n1').status().role !== 'leader'; i++) c.campaign('n1');
    c.tick();
    for (const id of c.ids) assert.deepEqual(c.appliedTexts(id), ['a']);
  });
});
