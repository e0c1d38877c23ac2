// The log's hand-out and durability bookkeeping when a leader's entries conflict with ones the
// driver is writing right now (between ready() and advance()), checked on a follower driven by
// hand: only the prefix that still matches becomes durable, and the next Ready truncates the
// store at the right index. A fast-check property then drives random appends and conflicts
// with random Ready/advance timing and checks that the store always ends up equal to the log.
// A second property covers a leader's writes reported later (`durableLater`).
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { createPrng } from '../../src/common/prng';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import { RaftLog } from '../../src/raft/raft-log';
import { RaftNode } from '../../src/raft/raft-node';
import { fcParams } from '../fc-params';
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
        // Raft §5.3: only a conflicting entry truncates; matching ones are kept as they are. An
        // Append that would drop an entry of its own term is not from that term's leader, and
        // is dropped whole (step-follower.ts).
        const conflicts = terms.some((t, i) => prevIndex + i < model.length
          && model[prevIndex + i] !== t);
        if (!conflicts || model[model.length - 1] !== term) {
          terms.forEach((t, i) => {
            const at = prevIndex + i;
            if (model[at] !== t) model = [...model.slice(0, at), t];
          });
        }
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

// Leader writes reported later (`durableLater`): the log hands entries out without waiting, the
// store makes them durable in order, and reports come back late, repeated, or after the entries
// were replaced by a conflict. Whatever the order, the log's durable prefix is always a prefix
// of what the store holds durably, entry for entry (the very objects written).
describe('raft log with writes reported later', () => {
  type Step =
    | { kind: 'propose'; count: number }
    | { kind: 'conflict'; back: number; count: number }
    | { kind: 'handOut'; later: boolean }
    | { kind: 'advance' }
    | { kind: 'fsync' }
    | { kind: 'report'; pick: number; again: boolean };
  const stepArb: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ kind: fc.constant('propose' as const), count: fc.integer({ min: 1, max: 3 }) }),
    fc.record({
      kind: fc.constant('conflict' as const), back: fc.nat(6), count: fc.integer({ min: 1, max: 3 }),
    }),
    fc.record({ kind: fc.constant('handOut' as const), later: fc.boolean() }),
    fc.record({ kind: fc.constant('advance' as const) }),
    fc.record({ kind: fc.constant('fsync' as const) }),
    fc.record({ kind: fc.constant('report' as const), pick: fc.nat(), again: fc.boolean() }),
  );

  it('never counts an entry durable that the store does not hold durably', () => {
    fc.assert(fc.property(fc.array(stepArb, { maxLength: 60 }), (steps) => {
      /** What the store was given, in order (index i at [i - 1]); the first `durable` hold. */
      const written: Entry[] = [];
      let durable = 0;
      /** Later writes whose report may now be delivered (their entries reached the disk). */
      const resolved: (readonly Entry[])[] = [];
      let pending: (readonly Entry[])[] = [];
      const log = new RaftLog({
        hardState: { term: asTerm(0), vote: null, commit: asLogIndex(0) },
        firstIndex: asLogIndex(1), lastIndex: asLogIndex(0),
        termAt: (index) => (index === 0 ? asTerm(0) : written[index - 1]?.term),
        appliedIndex: asLogIndex(0),
      }, 1 << 30);
      let term = 1;
      let outstanding: readonly Entry[] | null = null;
      const fsync = (): void => {
        durable = written.length;
        resolved.push(...pending);
        pending = [];
      };
      /** Hands out what is unstable and gives it to the store (not durable yet). */
      const write = (): ReturnType<RaftLog['handOutUnstable']> => {
        const out = log.handOutUnstable();
        // The CommitLog finishes (and syncs) writes in flight before it truncates.
        if (out.truncateFrom !== undefined) {
          fsync();
          written.length = out.truncateFrom - 1;
          durable = Math.min(durable, written.length);
        }
        written.push(...out.entries);
        return out;
      };
      const check = (): void => {
        assert.ok(log.durableIndex <= durable, `durable ${log.durableIndex} > store's ${durable}`);
        const mine = log.slice(1, log.durableIndex, Infinity, Infinity) ?? [];
        assert.equal(mine.length, log.durableIndex);
        mine.forEach((e, i) => assert.equal(e, written[i], `entry ${i + 1} is not what was written`));
      };
      for (const step of steps) {
        if (step.kind === 'propose') {
          log.appendNew(term, 'normal', Array.from({ length: step.count }, () => new Uint8Array(1)));
        } else if (step.kind === 'conflict') {
          // A newer leader's entries from some index on (never below 1; nothing is committed).
          term += 1;
          const from = Math.max(1, log.lastIndex() + 1 - step.back);
          log.append(Array.from({ length: step.count }, (_, i): Entry => ({
            index: asLogIndex(from + i), term: asTerm(term), type: 'normal', data: new Uint8Array(1),
          })));
        } else if (step.kind === 'handOut') {
          // One Ready at a time; a waited-for one stays outstanding until 'advance', and reports
          // of earlier writes may arrive meanwhile (as while the driver truncates and writes).
          if (outstanding !== null || !log.hasUnstableToHandOut()) continue;
          const { entries, truncateFrom } = write();
          if (step.later && truncateFrom === undefined) {
            pending.push(entries);
            log.readyDone();
          } else {
            log.durableBefore(entries[entries.length - 1]?.index ?? 0);
            outstanding = entries;
          }
        } else if (step.kind === 'advance') {
          if (outstanding === null) continue;
          fsync();
          log.persisted(outstanding);
          assert.equal(log.handedOut, 0, 'a waited-for write leaves nothing handed out');
          log.readyDone();
          outstanding = null;
        } else if (step.kind === 'fsync') {
          fsync();
        } else if (resolved.length > 0) {
          const at = step.pick % resolved.length;
          const report = resolved[at] ?? assert.fail();
          if (!step.again) resolved.splice(at, 1);
          log.persisted(report);
        }
        check();
      }
      // Everything written and reported: the log is durable to its end, equal to the store.
      if (outstanding !== null) pending.push(outstanding);
      while (log.hasUnstableToHandOut()) {
        const { entries } = write(); // before `pending` is read: write() may fsync, replacing it
        pending.push(entries);
      }
      fsync();
      for (const report of resolved) log.persisted(report);
      check();
      assert.equal(log.durableIndex, log.lastIndex());
      assert.equal(written.length, log.lastIndex());
    }), fcParams(300));
  });
});
