// The log's hand-out and durability bookkeeping when a leader's entries conflict with ones the
// driver is writing right now (between ready() and advance()), checked on a follower driven by
// hand: only the prefix that still matches becomes durable, and the next Ready truncates the
// store at the right index. A fast-check property then drives random appends and conflicts
// with random Ready/advance timing and checks that the store always ends up equal to the log.
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { createPrng } from '../../src/common/prng';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import { RaftNode } from '../../src/raft/raft-node';
import type { Entry, Message } from '../../src/raft/types';
import { MemStore } from './harness';

const peers = ['n1', 'n2', 'n3'].map(asNodeId);

function follower(store: MemStore): RaftNode {
  return new RaftNode({ id: asNodeId('n2'), peers, prng: createPrng(2) }, store.storageState());
}

function append(term: number, prevIndex: number, prevTerm: number, terms: number[]): Message {
  return {
    type: 'Append', from: asNodeId('n1'), to: asNodeId('n2'), term: asTerm(term),
    prevIndex: asLogIndex(prevIndex), prevTerm: asTerm(prevTerm), commit: asLogIndex(0),
    entries: terms.map((t, i): Entry => ({
      index: asLogIndex(prevIndex + 1 + i), term: asTerm(t), type: 'normal',
      data: new Uint8Array([t, i]),
    })),
  };
}

describe('raft log under conflicts during a write', () => {
  it('a conflict inside the entries being written', () => {
    const store = new MemStore();
    const node = follower(store);
    node.step(append(1, 0, 0, [1, 1, 1, 1, 1]));
    const first = node.ready();
    assert.deepEqual(first.entries.map((e) => e.index), [1, 2, 3, 4, 5]);
    node.step(append(2, 2, 1, [2])); // a term-2 leader replaces index 3 on
    store.persist(first);
    node.advance(first);
    assert.equal(node.status().durableIndex, 2, 'only 1..2 still match');
    const second = node.ready();
    assert.equal(second.truncateFrom, 3);
    assert.deepEqual(second.entries.map((e) => [e.index, e.term]), [[3, 2]]);
    store.persist(second);
    node.advance(second);
    assert.deepEqual(store.log.map((e) => e.term), [1, 1, 2]);
    assert.equal(node.status().durableIndex, 3);
  });

  it('a conflict below the entries being written', () => {
    const store = new MemStore();
    const node = follower(store);
    node.step(append(1, 0, 0, [1, 1, 1]));
    const first = node.ready();
    store.persist(first);
    node.advance(first);
    node.step(append(1, 3, 1, [1, 1]));
    const second = node.ready();
    node.step(append(2, 1, 1, [2]));
    store.persist(second);
    node.advance(second);
    assert.equal(node.status().durableIndex, 1);
    const third = node.ready();
    assert.equal(third.truncateFrom, 2);
    store.persist(third);
    node.advance(third);
    assert.deepEqual(store.log.map((e) => e.term), [1, 2]);
  });

  it('random appends, conflicts and write timing leave the store equal to the log', () => {
    const step = fc.record({
      keep: fc.nat(8), count: fc.integer({ min: 1, max: 3 }), newTerm: fc.boolean(),
      flush: fc.boolean(),
    });
    fc.assert(fc.property(fc.array(step, { maxLength: 25 }), (steps) => {
      const store = new MemStore();
      const node = follower(store);
      let model: number[] = []; // terms of the follower's log
      let term = 1;
      let outstanding: ReturnType<RaftNode['ready']> | null = null;
      for (const s of steps) {
        if (s.newTerm) term += 1;
        const prevIndex = Math.min(s.keep, model.length);
        const prevTerm = prevIndex === 0 ? 0 : model[prevIndex - 1] ?? 0;
        const terms = Array.from({ length: s.count }, () => term);
        node.step(append(term, prevIndex, prevTerm, terms));
        // Raft §5.3: only a conflicting entry truncates; matching ones are kept as they are.
        terms.forEach((t, i) => {
          const at = prevIndex + i;
          if (model[at] !== t) model = [...model.slice(0, at), t];
        });
        if (outstanding === null && node.hasReady()) outstanding = node.ready();
        if (s.flush && outstanding !== null) {
          store.persist(outstanding);
          node.advance(outstanding);
          outstanding = null;
        }
      }
      if (outstanding !== null) {
        store.persist(outstanding);
        node.advance(outstanding);
      }
      while (node.hasReady()) {
        const ready = node.ready();
        store.persist(ready);
        node.advance(ready);
      }
      assert.deepEqual(store.log.map((e) => e.term), model);
      assert.equal(node.status().durableIndex, model.length);
    }), { numRuns: 300 });
  });
});
