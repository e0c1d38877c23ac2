// Leader election scenarios, each a short script over the in-memory cluster harness: a leader is
// elected and its no-op committed everywhere; a split vote is resolved by randomized timeouts;
// PreVote keeps a partitioned node from inflating terms and disrupting the leader when it
// rejoins; CheckQuorum makes an isolated leader step down; the leader lease makes followers
// ignore vote requests while their leader is alive; two pre-candidates with equal logs do not
// split the vote.
import { strict as assert } from 'node:assert';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import { Cluster } from './harness';

describe('raft election', () => {
  it('elects one leader and commits its no-op everywhere', () => {
    const c = new Cluster({ nodeCount: 3, seed: 7 });
    c.tickUntil(() => c.leader() !== undefined, 40);
    const leader = c.leader();
    assert.ok(leader !== undefined);
    c.tick();
    for (const id of c.ids) {
      const status = c.node(id).status();
      assert.equal(status.leaderId, leader);
      assert.equal(status.term, 1, 'PreVote means the first election is term 1');
      assert.equal(status.commitIndex, 1);
      assert.deepEqual(
        c.store(id).applied.map((e) => e.type),
        ['noop'],
      );
    }
  });

  it('resolves a split vote with randomized timeouts', () => {
    const c = new Cluster({ nodeCount: 4, seed: 3, config: { preVote: false } });
    // n1 can reach only n3, n2 only n4: each candidate gets 2 of the 4 votes, neither wins.
    c.partition(['n1', 'n3'], ['n2', 'n4']);
    c.node('n1').campaign();
    c.node('n2').campaign();
    c.stabilize();
    assert.equal(c.leader(), undefined);
    assert.equal(c.node('n1').status().role, 'candidate');
    assert.equal(c.node('n2').status().role, 'candidate');
    c.heal();
    c.tickUntil(() => c.leader() !== undefined, 60);
    const leader = c.leader();
    assert.ok(leader !== undefined);
    assert.ok(c.node(leader).status().term >= 2);
  });

  it('two followers timing out together after the leader dies do not split the vote', () => {
    const c = new Cluster({ nodeCount: 3, seed: 5 });
    c.elect('n1');
    const term = c.node('n1').status().term;
    c.crash('n1');
    // Keep n2 and n3 apart until both are pre-candidates with expired leader leases.
    c.partition(['n2'], ['n3']);
    c.tickUntil(() => ['n2', 'n3'].every((id) => c.node(id).status().role === 'preCandidate'), 100);
    c.heal();
    // Both start a pre-vote round in the same instant, as when their timers fire together.
    c.node('n2').campaign();
    c.node('n3').campaign();
    c.stabilize();
    assert.equal(c.leader(), 'n2', 'the lower id wins the tie');
    assert.equal(c.node('n2').status().term, term + 1, 'one term, no split vote');
    assert.equal(c.node('n3').status().leaderId, 'n2');
  });

  it('PreVote: a rejoining partitioned node does not disrupt the leader', () => {
    const c = new Cluster({ nodeCount: 3, seed: 11 });
    c.elect('n1');
    const term = c.node('n1').status().term;
    c.isolate('n3');
    for (let i = 0; i < 100; i++) c.tick();
    assert.equal(c.node('n3').status().term, term, 'pre-votes do not bump the term');
    assert.equal(c.node('n3').status().role, 'preCandidate');
    c.heal();
    for (let i = 0; i < 5; i++) c.tick();
    assert.equal(c.leader(), 'n1');
    for (const id of c.ids) {
      assert.equal(c.node(id).status().term, term);
      assert.equal(c.node(id).status().leaderId, 'n1');
    }
  });

  it('without PreVote or CheckQuorum the same rejoin does disrupt (the contrast)', () => {
    const c = new Cluster({
      nodeCount: 3,
      seed: 11,
      config: { preVote: false, checkQuorum: false },
    });
    c.elect('n1');
    const term = c.node('n1').status().term;
    c.isolate('n3');
    for (let i = 0; i < 100; i++) c.tick();
    assert.ok(c.node('n3').status().term > term + 1);
    c.heal();
    // n3 drops n1's heartbeats of the older term and campaigns again at its inflated term.
    c.tickUntil(() => c.node('n1').status().term > term, 40);
  });

  it('CheckQuorum: an isolated leader steps down within an election timeout or two', () => {
    const c = new Cluster({ nodeCount: 3, seed: 5 });
    c.elect('n1');
    c.isolate('n1');
    const ticks = c.tickUntil(() => c.node('n1').status().role === 'follower', 25);
    assert.ok(ticks <= 20, `stepped down after ${ticks} ticks`);
    c.tickUntil(() => c.leader() !== undefined && c.leader() !== 'n1', 60);
    c.heal();
    c.tick();
    assert.notEqual(c.leader(), 'n1');
    assert.equal(c.node('n1').status().leaderId, c.leader());
  });

  it('leader lease: a follower with a live leader ignores (pre)vote requests', () => {
    const c = new Cluster({ nodeCount: 3, seed: 5 });
    c.elect('n1');
    const n2 = c.node('n2');
    const term = n2.status().term;
    const request = {
      type: 'Vote' as const,
      from: asNodeId('n3'),
      to: asNodeId('n2'),
      term: asTerm(term + 5),
      lastIndex: asLogIndex(100),
      lastTerm: asTerm(term),
      transfer: false,
    };
    n2.step(request);
    assert.equal(n2.stats.voteRequestsInLease, 1);
    assert.equal(n2.status().term, term);
    assert.equal(n2.hasReady(), false, 'no answer at all');
    // The same request flagged as a leadership transfer goes through the lease.
    n2.step({ ...request, transfer: true });
    assert.equal(n2.status().term, term + 5);
    assert.equal(n2.status().vote, 'n3');
  });
});
