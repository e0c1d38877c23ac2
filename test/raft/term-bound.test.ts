// Terms and indexes from peers are bounded by TERM_MAX and LOG_INDEX_MAX (2^52), so the core's
// `term + 1` and `index + 1` stay exact and storable. A message of any type whose term (or a
// term or index in its body) is beyond the bound is dropped as malformed without touching the
// node's term; before the bound, one message of term 2^53 - 1 from a member was adopted
// durably and the receiver's next campaign asked the store for 2^53. A node already at TERM_MAX
// refuses to campaign, and a TimeoutNow of a later term (no honest leader sends one) is dropped.
import { strict as assert } from 'node:assert';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import { LOG_INDEX_MAX, TERM_MAX, type Entry, type Message } from '../../src/raft/types';
import { Cluster } from './harness';

const n = asNodeId;
/** The bound, spelled out so these tests do not lean on the constant they check. */
const BOUND = 2 ** 52;

/** Messages from n1 to n2 with `term` in the envelope, one of each type. */
function everyType(term: number): Message[] {
  const base = { from: n('n1'), to: n('n2'), term: asTerm(term) };
  const index = asLogIndex(1);
  return [
    { ...base, type: 'PreVote', lastIndex: index, lastTerm: asTerm(1) },
    { ...base, type: 'PreVoteResp', reject: false },
    { ...base, type: 'Vote', lastIndex: index, lastTerm: asTerm(1), transfer: false },
    { ...base, type: 'VoteResp', reject: false },
    { ...base, type: 'Append', prevIndex: index, prevTerm: asTerm(1), commit: index,
      entries: [] },
    { ...base, type: 'AppendResp', reject: false, matchIndex: index, rejectedIndex: index,
      hintTerm: asTerm(0), hintIndex: index },
    { ...base, type: 'Heartbeat', commit: index, context: 0 },
    { ...base, type: 'HeartbeatResp', context: 0 },
    { ...base, type: 'TimeoutNow' },
  ];
}

describe('raft term and index bounds', () => {
  it('bounds terms and indexes at 2^52', () => {
    assert.equal(TERM_MAX, BOUND);
    assert.equal(LOG_INDEX_MAX, BOUND);
  });

  for (const term of [Number.MAX_SAFE_INTEGER, BOUND + 1]) {
    it(`drops a message of every type whose term is ${term}, keeping the node's term`, () => {
      const c = new Cluster({ nodeCount: 3, seed: 51 });
      c.elect('n1');
      const before = c.node('n2').status();
      const messages = everyType(term);
      for (const message of messages) c.node('n2').step(message);
      assert.equal(c.node('n2').stats.messagesMalformed, messages.length);
      assert.deepEqual(c.node('n2').status(), before);
      c.stabilize();
      for (let i = 0; i < 30; i++) c.tick();
      assert.equal(c.leader(), 'n1');
      assert.equal(c.node('n2').status().term, before.term);
    });
  }

  it('drops messages with a term or an index in the body beyond the bound', () => {
    const c = new Cluster({ nodeCount: 3, seed: 52 });
    c.elect('n1');
    const term = c.node('n2').status().term;
    const base = { from: n('n1'), to: n('n2'), term };
    const entry = (index: number, entryTerm: number): Entry => ({
      index: asLogIndex(index), term: asTerm(entryTerm), type: 'normal', data: new Uint8Array(),
    });
    const big = BOUND + 1;
    const bad: unknown[] = [
      { ...base, type: 'Vote', lastIndex: big, lastTerm: 1, transfer: false },
      { ...base, type: 'PreVote', lastIndex: 1, lastTerm: big },
      { ...base, type: 'Append', prevIndex: big, prevTerm: 1, commit: 1, entries: [] },
      { ...base, type: 'Append', prevIndex: 1, prevTerm: 1, commit: big, entries: [] },
      { ...base, type: 'Append', prevIndex: BOUND, prevTerm: 1, commit: 1,
        entries: [entry(big, 1)] },
      { ...base, type: 'AppendResp', reject: true, matchIndex: 0, rejectedIndex: 1,
        hintTerm: big, hintIndex: 1 },
      { ...base, type: 'AppendResp', reject: true, matchIndex: 0, rejectedIndex: big,
        hintTerm: 0, hintIndex: 1 },
      { ...base, type: 'AppendResp', reject: true, matchIndex: 0, rejectedIndex: 1,
        hintTerm: 0, hintIndex: big },
      { ...base, type: 'Heartbeat', commit: big, context: 0 },
    ];
    for (const message of bad) c.node('n2').step(message as Message);
    assert.equal(c.node('n2').stats.messagesMalformed, bad.length);
  });

  it('a node whose term reached the bound refuses to campaign and counts it', () => {
    const c = new Cluster({ nodeCount: 3, seed: 53 });
    c.crash('n1');
    c.store('n1').hardState = { term: asTerm(BOUND), vote: null, commit: asLogIndex(0) };
    c.restart('n1');
    const votes: Message[] = [];
    c.filter = (m) => {
      if (m.from === 'n1') votes.push(m);
      return true;
    };
    c.campaign('n1');
    for (let i = 0; i < 50; i++) c.tick([n('n1')]);
    c.stabilize();
    const status = c.node('n1').status();
    assert.equal(status.term, BOUND);
    assert.equal(status.role, 'follower');
    assert.deepEqual(votes, []);
    assert.ok(c.node('n1').stats.campaignsRefusedTermMax >= 2);
    // Once per election timeout (10 to 20 ticks), not once per tick.
    assert.ok(c.node('n1').stats.campaignsRefusedTermMax <= 6);
  });

  it('drops a TimeoutNow of a later term', () => {
    const c = new Cluster({ nodeCount: 3, seed: 54 });
    c.elect('n1');
    const term = c.node('n2').status().term;
    c.node('n2').step({ type: 'TimeoutNow', from: n('n1'), to: n('n2'), term: asTerm(term + 1) });
    assert.equal(c.node('n2').stats.messagesUnexpected, 1);
    c.stabilize();
    assert.equal(c.leader(), 'n1');
    assert.equal(c.node('n2').status().term, term);
  });
});
