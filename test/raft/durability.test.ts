// The Ready contract's durability ordering, checked on single nodes driven by hand: answers
// that promise durable state (vote grants, append acknowledgements, a candidate's vote
// requests) come out in `messagesAfterPersist` in the same Ready as the state they promise,
// while a leader's Appends may go out before its own write (thesis §10.2.1); and a leader
// counts its own log toward commitment only after `advance()` says it is durable, or, with
// `leaderWritesAsync`, after `entriesDurable()` does (it applies only such entries, too).
import { strict as assert } from 'node:assert';
import { createPrng } from '../../src/common/prng';
import { asLogIndex, asNodeId, asTerm, type NodeId } from '../../src/common/types';
import type { RaftTunables } from '../../src/raft/config';
import { RaftNode } from '../../src/raft/raft-node';
import type { Message, Ready } from '../../src/raft/types';
import { MemStore } from './harness';

const ids = ['n1', 'n2', 'n3'].map(asNodeId);

function makeNode(id: string, store = new MemStore(), peers: NodeId[] = ids,
  config: Partial<RaftTunables> = {}): RaftNode {
  return new RaftNode({ ...config, id: asNodeId(id), peers, prng: createPrng(1) },
    store.storageState());
}

function drive(node: RaftNode, store: MemStore): Ready {
  const ready = node.ready();
  store.persist(ready);
  node.advance(ready);
  return ready;
}

const types = (messages: readonly Message[]): string[] => messages.map((m) => m.type);

describe('raft durability ordering', () => {
  it('a vote grant leaves only after the vote is persisted', () => {
    const node = makeNode('n2');
    node.step({
      type: 'Vote', from: ids[0] ?? assert.fail(), to: asNodeId('n2'), term: asTerm(1),
      lastIndex: asLogIndex(0), lastTerm: asTerm(0), transfer: false,
    });
    const ready = node.ready();
    assert.deepEqual(ready.hardState, { term: 1, vote: 'n1', commit: 0 });
    assert.deepEqual(types(ready.messages), []);
    assert.deepEqual(types(ready.messagesAfterPersist), ['VoteResp']);
    assert.equal(ready.messagesAfterPersist[0]?.type === 'VoteResp'
      && ready.messagesAfterPersist[0].reject, false);
  });

  it('a candidate asks for votes only once its term and self-vote are persisted', () => {
    const node = makeNode('n1', new MemStore(), ids, { preVote: false });
    node.campaign();
    const ready = node.ready();
    assert.deepEqual(ready.hardState, { term: 1, vote: 'n1', commit: 0 });
    assert.deepEqual(types(ready.messages), []);
    assert.deepEqual(types(ready.messagesAfterPersist), ['Vote', 'Vote']);
  });

  it('pre-votes change nothing durable and go out at once', () => {
    const node = makeNode('n1');
    node.campaign();
    const ready = node.ready();
    assert.equal(ready.hardState, undefined);
    assert.deepEqual(types(ready.messages), ['PreVote', 'PreVote']);
    assert.ok(ready.messages.every((m) => m.term === 1));
    assert.equal(node.status().term, 0);
  });

  it('a follower acknowledges entries only after persisting them', () => {
    const node = makeNode('n2');
    node.step({
      type: 'Append', from: asNodeId('n1'), to: asNodeId('n2'), term: asTerm(1),
      prevIndex: asLogIndex(0), prevTerm: asTerm(0), commit: asLogIndex(0),
      entries: [{ index: asLogIndex(1), term: asTerm(1), type: 'noop', data: new Uint8Array() }],
    });
    const ready = node.ready();
    assert.deepEqual(ready.entries.map((e) => e.index), [1]);
    assert.deepEqual(types(ready.messages), []);
    assert.deepEqual(types(ready.messagesAfterPersist), ['AppendResp']);
  });

  it('a leader sends Appends before its own write but commits only after advance()', () => {
    const stores = new Map(ids.map((id) => [id, new MemStore()]));
    const store = (id: NodeId): MemStore => stores.get(id) ?? assert.fail();
    const nodes = new Map(ids.map((id) => [id, makeNode(id, store(id), ids, { preVote: false })]));
    const node = (id: NodeId): RaftNode => nodes.get(id) ?? assert.fail();
    const [n1, n2] = ids as [NodeId, NodeId, NodeId];
    // Elect n1 with n2's vote, n3 stays silent.
    node(n1).campaign();
    const campaignReady = drive(node(n1), store(n1));
    node(n2).step(campaignReady.messagesAfterPersist.find((m) => m.to === n2) ?? assert.fail());
    const voteReady = drive(node(n2), store(n2));
    node(n1).step(voteReady.messagesAfterPersist[0] ?? assert.fail());
    assert.equal(node(n1).status().role, 'leader');
    // The leader's Ready holds its no-op and the Appends carrying it, sendable at once.
    const leaderReady = node(n1).ready();
    assert.deepEqual(leaderReady.entries.map((e) => e.type), ['noop']);
    const appends = leaderReady.messages.filter((m) => m.type === 'Append');
    assert.equal(appends.length, 2);
    assert.deepEqual(types(leaderReady.messagesAfterPersist), []);
    // n2 persists and acknowledges before the leader's own write is done.
    node(n2).step(appends.find((m) => m.to === n2) ?? assert.fail());
    const ackReady = drive(node(n2), store(n2));
    node(n1).step(ackReady.messagesAfterPersist[0] ?? assert.fail());
    assert.equal(node(n1).status().commitIndex, 0,
      'only n2 has the no-op durable: one of three is no majority');
    // Now the leader's own write completes.
    store(n1).persist(leaderReady);
    node(n1).advance(leaderReady);
    assert.equal(node(n1).status().commitIndex, 1, 'n1 and n2 now hold it durably');
  });

  it('with leaderWritesAsync, a leader goes on before its writes are durable, but counts and '
    + 'applies its own entries only once entriesDurable() reports them', () => {
    const stores = new Map(ids.map((id) => [id, new MemStore()]));
    const store = (id: NodeId): MemStore => stores.get(id) ?? assert.fail();
    const nodes = new Map(ids.map((id) => [id, makeNode(id, store(id), ids,
      { preVote: false, leaderWritesAsync: true })]));
    const node = (id: NodeId): RaftNode => nodes.get(id) ?? assert.fail();
    const [n1, n2, n3] = ids as [NodeId, NodeId, NodeId];
    node(n1).campaign();
    const campaignReady = drive(node(n1), store(n1));
    node(n2).step(campaignReady.messagesAfterPersist.find((m) => m.to === n2) ?? assert.fail());
    node(n1).step(drive(node(n2), store(n2)).messagesAfterPersist[0] ?? assert.fail());
    assert.equal(node(n1).status().role, 'leader');
    // The leader's rounds: messages collected, Readys advanced without waiting for writes.
    let outbox: Message[] = [];
    const applied: number[] = [];
    const leaderRounds = (): Ready[] => {
      const readys: Ready[] = [];
      while (node(n1).hasReady()) {
        const ready = node(n1).ready();
        assert.equal(ready.durableLater, ready.entries.length > 0 ? true : undefined);
        outbox.push(...ready.messages, ...ready.messagesAfterPersist);
        applied.push(...ready.committedEntries.map((e) => e.index));
        node(n1).advance(ready);
        readys.push(ready);
      }
      return readys;
    };
    /** Delivers the leader's messages to `follower` and its answers back, then runs rounds. */
    const exchange = (follower: NodeId): void => {
      for (const m of outbox.filter((x) => x.to === follower)) node(follower).step(m);
      outbox = outbox.filter((x) => x.to !== follower);
      for (const ack of drive(node(follower), store(follower)).messagesAfterPersist) {
        node(n1).step(ack);
      }
      leaderRounds();
    };
    const [noopReady] = leaderRounds();
    assert.deepEqual(noopReady?.entries.map((e) => e.type), ['noop']);
    assert.ok(node(n1).propose([new Uint8Array([7])]).ok);
    const [entryReady] = leaderRounds();
    assert.deepEqual(entryReady?.entries.map((e) => e.index), [2]);
    assert.equal(node(n1).status().durableIndex, 0);
    // n2 gets and acknowledges both; the leader's own writes are pending: 1 of 3 holds them.
    exchange(n2);
    exchange(n2);
    assert.equal(node(n1).status().progress.get(n2)?.match, 2);
    assert.equal(node(n1).status().commitIndex, 0);
    // The no-op's write completes: n1 and n2 hold it now.
    store(n1).persist({ ...noopReady, hardState: undefined });
    node(n1).entriesDurable(noopReady.entries);
    assert.equal(node(n1).status().commitIndex, 1);
    leaderRounds();
    assert.deepEqual(applied, [1]);
    // n3 catches up: both followers hold entry 2, a majority without the leader, so it commits;
    // but the leader applies only what it holds durably itself.
    exchange(n3);
    exchange(n3);
    assert.equal(node(n1).status().commitIndex, 2);
    assert.deepEqual(applied, [1], 'entry 2 waits for the leader\'s own write');
    // Nor does a Ready that hands out new entries apply it: they are written later too.
    assert.ok(node(n1).propose([new Uint8Array([8])]).ok);
    const [laterReady] = leaderRounds();
    assert.deepEqual(laterReady?.entries.map((e) => e.index), [3]);
    assert.deepEqual(applied, [1], 'entry 2 still waits');
    store(n1).persist({ ...entryReady, hardState: undefined });
    node(n1).entriesDurable(entryReady.entries);
    node(n1).entriesDurable(noopReady.entries); // a late, repeated report changes nothing
    assert.equal(node(n1).status().durableIndex, 2);
    leaderRounds();
    assert.deepEqual(applied, [1, 2]);
  });

  it('with leaderWritesAsync, only a leader\'s Ready of entries alone is written later', () => {
    // A one-node group elects itself at once: its first Ready carries the new term and vote
    // with the no-op, and a term or vote is never written later.
    const solo = makeNode('solo', new MemStore(), [asNodeId('solo')], { leaderWritesAsync: true });
    solo.campaign();
    assert.equal(solo.status().role, 'leader');
    const first = solo.ready();
    assert.deepEqual(first.entries.map((e) => e.type), ['noop']);
    assert.equal(first.hardState?.term, 1);
    assert.equal(first.durableLater, undefined);
    // A follower's entries come with acknowledgements, which promise them durable.
    const follower = makeNode('n2', new MemStore(), ids, { leaderWritesAsync: true });
    follower.step({
      type: 'Append', from: asNodeId('n1'), to: asNodeId('n2'), term: asTerm(1),
      prevIndex: asLogIndex(0), prevTerm: asTerm(0), commit: asLogIndex(0),
      entries: [{ index: asLogIndex(1), term: asTerm(1), type: 'noop', data: new Uint8Array() }],
    });
    const acked = follower.ready();
    assert.deepEqual(types(acked.messagesAfterPersist), ['AppendResp']);
    assert.equal(acked.durableLater, undefined);
  });

  it('a one-node leader commits its entries only after advance()', () => {
    const store = new MemStore();
    const node = makeNode('solo', store, [asNodeId('solo')]);
    node.campaign();
    assert.equal(node.status().role, 'leader');
    const first = node.ready();
    assert.deepEqual(first.entries.map((e) => e.type), ['noop']);
    assert.deepEqual(first.committedEntries, []);
    assert.equal(node.status().commitIndex, 0);
    store.persist(first);
    node.advance(first);
    assert.equal(node.status().commitIndex, 1);
    const second = node.ready();
    assert.deepEqual(second.committedEntries.map((e) => e.index), [1]);
    assert.deepEqual(second.hardState, { term: 1, vote: 'solo', commit: 1 });
  });
});

describe('raft snapshot signal', () => {
  it('reports a follower that needs entries before the first index', () => {
    const leader = new RaftNode({ id: asNodeId('n1'), peers: ids.slice(0, 2), prng: createPrng(3),
      preVote: false }, {
      hardState: { term: asTerm(1), vote: null, commit: asLogIndex(10) },
      firstIndex: asLogIndex(6),
      lastIndex: asLogIndex(10),
      termAt: (index) => (index >= 5 && index <= 10 ? asTerm(1) : undefined),
      appliedIndex: asLogIndex(10),
    });
    leader.campaign();
    leader.advance(leader.ready());
    leader.step({ type: 'VoteResp', from: asNodeId('n2'), to: asNodeId('n1'), term: asTerm(2),
      reject: false });
    assert.equal(leader.status().role, 'leader');
    leader.advance(leader.ready());
    // n2's log is empty: it rejects, the hint points before index 6, which only a snapshot has.
    leader.step({ type: 'AppendResp', from: asNodeId('n2'), to: asNodeId('n1'), term: asTerm(2),
      reject: true, matchIndex: asLogIndex(0), rejectedIndex: asLogIndex(10),
      hintTerm: asTerm(0), hintIndex: asLogIndex(1) });
    const ready = leader.ready();
    assert.deepEqual(ready.snapshotsNeeded, ['n2']);
    assert.equal(leader.status().progress.get(asNodeId('n2'))?.state, 'snapshot');
  });
});
