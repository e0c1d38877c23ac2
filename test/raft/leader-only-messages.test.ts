// Append, Heartbeat and TimeoutNow come only from the leader of their term, and a term has at
// most one (Raft §5.2). A follower that knows its leader drops them, counted as unexpected,
// when another member sends them in that term: a TimeoutNow from a follower no longer deposes
// a live leader, and an Append from a non-leader no longer replaces entries the follower
// acknowledged (which a leader had committed: two entries ended up applied at one index). A
// follower that does not know the leader yet (just restarted) drops an Append that would
// replace an entry of the Append's own term, counted as malformed: the leader of a term never
// rewrites an entry of that term. Scenarios on the in-memory harness, which checks safety.
import { strict as assert } from 'node:assert';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import type { AppendMessage, Message } from '../../src/raft/types';
import { Cluster } from './harness';

const n = asNodeId;

/**
 * n1 leads term 3 and committed its no-op at index 3 with n2 alone; n2 holds terms [1, 2, 3]
 * but only knows commit 2 (commit-only messages from n1 to n2 are lost), and n3, cut off from
 * n1, never got index 3.
 */
function n1LeadsTerm3(seed: number): Cluster {
  const c = new Cluster({ nodeCount: 3, seed });
  c.elect('n1');
  assert.ok(c.node('n1').transferLeadership(n('n2')).ok);
  c.stabilize();
  assert.equal(c.leader(), 'n2');
  c.filter = (m: Message) => {
    if ((m.from === 'n1' && m.to === 'n3') || (m.from === 'n3' && m.to === 'n1')) return false;
    if (m.from === 'n1' && m.to === 'n2') {
      if (m.type === 'Heartbeat') return false;
      if (m.type === 'Append' && m.entries.length === 0) return false;
    }
    return true;
  };
  assert.ok(c.node('n2').transferLeadership(n('n1')).ok);
  c.stabilize();
  const s1 = c.node('n1').status();
  assert.equal(s1.role, 'leader');
  assert.equal(s1.term, 3);
  assert.equal(s1.commitIndex, 3);
  assert.equal(c.node('n2').status().commitIndex, 2);
  assert.deepEqual(c.logTerms('n2'), [1, 2, 3]);
  return c;
}

/** An Append of term 3 from n3 to n2 replacing index 3 with an entry of term 2. */
function forgedAppend(): AppendMessage {
  return {
    type: 'Append', from: n('n3'), to: n('n2'), term: asTerm(3), prevIndex: asLogIndex(2),
    prevTerm: asTerm(2), commit: asLogIndex(2),
    entries: [{ index: asLogIndex(3), term: asTerm(2), type: 'normal',
      data: new TextEncoder().encode('forged') }],
  };
}

describe('raft messages only the leader sends', () => {
  it('a TimeoutNow from a follower does not depose the live leader', () => {
    const c = new Cluster({ nodeCount: 3, seed: 11 });
    c.elect('n1');
    const term = c.node('n2').status().term;
    c.node('n2').step({ type: 'TimeoutNow', from: n('n3'), to: n('n2'), term: asTerm(term) });
    c.stabilize();
    assert.equal(c.leader(), 'n1');
    assert.equal(c.node('n2').status().term, term);
    assert.equal(c.node('n2').stats.messagesUnexpected, 1);
  });

  it('a TimeoutNow from the leader still hands leadership over', () => {
    const c = new Cluster({ nodeCount: 3, seed: 13 });
    c.elect('n1');
    const term = c.node('n2').status().term;
    c.node('n2').step({ type: 'TimeoutNow', from: n('n1'), to: n('n2'), term: asTerm(term) });
    c.stabilize();
    assert.equal(c.leader(), 'n2');
  });

  it('a Heartbeat from a non-leader of the current term is dropped', () => {
    const c = new Cluster({ nodeCount: 3, seed: 14 });
    c.elect('n1');
    const term = c.node('n2').status().term;
    c.node('n2').step({ type: 'Heartbeat', from: n('n3'), to: n('n2'), term: asTerm(term),
      commit: asLogIndex(0), context: 0 });
    assert.equal(c.node('n2').status().leaderId, 'n1');
    assert.equal(c.node('n2').stats.messagesUnexpected, 1);
    assert.equal(c.node('n2').hasReady(), false, 'answered a heartbeat from a non-leader');
  });

  it('an Append from a non-leader does not replace entries acknowledged to the leader', () => {
    const c = n1LeadsTerm3(12);
    const unexpectedBefore = c.node('n2').stats.messagesUnexpected;
    c.node('n2').step(forgedAppend());
    assert.equal(c.node('n2').stats.messagesUnexpected, unexpectedBefore + 1);
    c.stabilize();
    assert.deepEqual(c.logTerms('n2'), [1, 2, 3]);
    assert.equal(c.node('n2').status().leaderId, 'n1');
  });

  it('after the forged Append the group still applies one entry per index', () => {
    const c = n1LeadsTerm3(12);
    c.node('n2').step(forgedAppend());
    c.stabilize();
    // n1 applied its no-op at 3. It goes down; the others elect a leader and go on: the
    // harness throws if two nodes apply different entries at one index.
    c.crash('n1');
    c.filter = null;
    c.electAmong(['n2', 'n3']);
    c.propose(c.leader() ?? 'n2', 'after');
    c.stabilize();
    assert.deepEqual(c.logTerms('n2').slice(0, 3), [1, 2, 3]);
  });

  it('a follower not knowing the leader drops an Append rewriting an entry of its term', () => {
    const c = n1LeadsTerm3(15);
    // n2 restarts: term 3 is durable, the leader of term 3 is not known yet.
    c.crash('n2');
    c.restart('n2');
    assert.equal(c.node('n2').status().leaderId, null);
    c.node('n2').step(forgedAppend());
    assert.equal(c.node('n2').stats.messagesMalformed, 1);
    assert.equal(c.node('n2').status().leaderId, null);
    c.stabilize();
    assert.deepEqual(c.logTerms('n2'), [1, 2, 3]);
  });
});
