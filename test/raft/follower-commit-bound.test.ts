// A follower raises its commit index no further than the last entry the Append it accepts
// brought (Raft §5.3, AppendEntries step 5: min(leaderCommit, index of last new entry)). Past
// that entry its log may still hold a stale suffix from an older leader, which the Append did
// not vouch for: committing it would apply entries no leader committed. The follower here holds
// such a suffix; the new leader's Append matches only a prefix of it and carries a commit index
// beyond its last entry. The simulator never caught the bound being lost (mutation testing: a
// follower committing up to its own last index survived 80 seeds), so it is tested directly.
import { strict as assert } from 'node:assert';
import { createPrng } from '../../src/common/prng';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import { RaftNode } from '../../src/raft/raft-node';
import type { AppendMessage, AppendRespMessage, Entry } from '../../src/raft/types';
import { MemStore } from './harness';

const n1 = asNodeId('n1');
const n2 = asNodeId('n2');
const n3 = asNodeId('n3');

function entry(index: number, term: number): Entry {
  return { index: asLogIndex(index), term: asTerm(term), type: 'normal',
    data: new TextEncoder().encode(`e${index}t${term}`) };
}

/** A follower n2 whose log is 1..2 of term 1, then a stale suffix 3..5 of term 2. */
function staleFollower(): { node: RaftNode; store: MemStore } {
  const store = new MemStore();
  store.log = [entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2), entry(5, 2)];
  store.hardState = { term: asTerm(2), vote: null, commit: asLogIndex(2) };
  store.applied = store.log.slice(0, 2);
  const node = new RaftNode({ id: n2, peers: [n1, n2, n3], prng: createPrng(7) },
    store.storageState());
  return { node, store };
}

function append(entries: readonly Entry[], prevIndex: number, prevTerm: number,
  commit: number): AppendMessage {
  return { type: 'Append', from: n1, to: n2, term: asTerm(3), prevIndex: asLogIndex(prevIndex),
    prevTerm: asTerm(prevTerm), entries, commit: asLogIndex(commit) };
}

/** Runs the follower's Ready cycles; returns what it applied and acknowledged. */
function settle(node: RaftNode, store: MemStore): { applied: number[]; acks: AppendRespMessage[] } {
  const applied: number[] = [];
  const acks: AppendRespMessage[] = [];
  for (let round = 0; round < 10 && node.hasReady(); round++) {
    const ready = node.ready();
    store.persist(ready);
    for (const m of [...ready.messages, ...ready.messagesAfterPersist]) {
      if (m.type === 'AppendResp') acks.push(m);
    }
    for (const e of ready.committedEntries) applied.push(e.index);
    node.advance(ready);
    for (const request of ready.loads) node.entriesLoaded(request.peer, store.load(request));
  }
  return { applied, acks };
}

describe('raft follower commit bound', () => {
  it('commits no further than the last entry of the Append, even when its log holds more', () => {
    const { node, store } = staleFollower();
    // The leader of term 3 holds 1..3 as the follower does and has committed up to 5 (its own
    // entries 4 and 5 of term 3 are not in this Append).
    node.step(append([entry(3, 2)], 2, 1, 5));
    const { applied, acks } = settle(node, store);
    assert.equal(node.status().commitIndex, 3);
    assert.deepEqual(applied, [3]);
    assert.deepEqual(acks.map((m) => [m.reject, m.matchIndex]), [[false, 3]]);
    // The stale suffix is still there (nothing conflicted) but not committed.
    assert.equal(store.log.length, 5);
  });

  it('an empty Append (a probe) raises the commit index only to its previous index', () => {
    const { node, store } = staleFollower();
    node.step(append([], 3, 2, 5));
    const { applied } = settle(node, store);
    assert.equal(node.status().commitIndex, 3);
    assert.deepEqual(applied, [3]);
  });

  it('the entries that replace the stale suffix are committed up to the leader commit', () => {
    const { node, store } = staleFollower();
    node.step(append([entry(3, 2), entry(4, 3), entry(5, 3)], 2, 1, 5));
    const { applied } = settle(node, store);
    assert.equal(node.status().commitIndex, 5);
    assert.deepEqual(applied, [3, 4, 5]);
    assert.deepEqual(store.log.map((e) => e.term), [1, 1, 2, 3, 3]);
  });
});
