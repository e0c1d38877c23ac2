// How the leader's commit index reaches the followers without a message round per commit: it
// rides on the next Append carrying entries; an empty Append carries it only to a follower with
// nothing in flight. And a follower answers the Appends of one Ready with one acknowledgement.
import { strict as assert } from 'node:assert';
import { asNodeId } from '../../src/common/types';
import type { AppendMessage, AppendRespMessage, Message } from '../../src/raft/types';
import { Cluster } from './harness';

const encoder = new TextEncoder();
/** Every proposal goes out at once (no holding back: see append-hold.test.ts). */
const SEND_AT_ONCE = { appendHoldBytes: 0 };

function appends(messages: readonly Message[], to: string): AppendMessage[] {
  return messages.filter((m): m is AppendMessage => m.type === 'Append' && m.to === to);
}

function acks(messages: readonly Message[], from: string): AppendRespMessage[] {
  return messages.filter((m): m is AppendRespMessage => m.type === 'AppendResp' && m.from === from);
}

/** Runs one Ready of `id`, which must have one. */
function run(c: Cluster, id: string): void {
  assert.ok(c.processReady(asNodeId(id)), `${id} had no Ready`);
}

/** Proposes on `id` without settling the cluster, and runs its Ready (the Appends leave). */
function proposeOnly(c: Cluster, id: string, payload: string): number {
  const result = c.node(id).propose([encoder.encode(payload)]);
  assert.ok(result.ok);
  run(c, id);
  return result.lastIndex;
}

describe('raft commit propagation', () => {
  it('sends no empty Append for a new commit while entries are in flight to the follower', () => {
    const c = new Cluster({ nodeCount: 3, seed: 21, config: SEND_AT_ONCE });
    c.elect('n1');
    c.propose('n1', 'warm'); // both followers replicate
    const a = proposeOnly(c, 'n1', 'a');
    c.deliverRound(); // Append(a) reaches n2 and n3
    for (const id of ['n2', 'n3']) run(c, id);
    const b = proposeOnly(c, 'n1', 'b'); // Append(b) is in flight with the acks of a
    c.recordReadies = true;
    c.deliverRound(); // n1 learns a is on a majority; n2 and n3 receive Append(b)
    run(c, 'n1');
    assert.equal(c.node('n1').status().commitIndex, a);
    const afterCommit = c.readies.filter((r) => r.node === 'n1').flatMap((r) => r.ready.messages);
    for (const to of ['n2', 'n3']) {
      assert.deepEqual(appends(afterCommit, to), [], `no Append to ${to} while b is in flight`);
    }

    // Once b is acknowledged there is nothing in flight: the new commit index goes at once.
    c.stabilize();
    const lateAppends = c.readies.filter((r) => r.node === 'n1')
      .flatMap((r) => appends(r.ready.messages, 'n2'));
    assert.deepEqual(lateAppends.map((m) => [m.entries.length, m.commit]), [[0, b]]);
    for (const id of c.ids) {
      assert.equal(c.node(id).status().commitIndex, b);
      assert.deepEqual(c.appliedTexts(id), ['warm', 'a', 'b']);
    }
  });

  it('carries the commit index on the next Append with entries', () => {
    const c = new Cluster({ nodeCount: 3, seed: 22, config: SEND_AT_ONCE });
    c.elect('n1');
    c.propose('n1', 'warm');
    const a = proposeOnly(c, 'n1', 'a');
    c.deliverRound();
    for (const id of ['n2', 'n3']) run(c, id);
    proposeOnly(c, 'n1', 'b');
    c.deliverRound(); // commit moves to a; b is in flight, so nothing more goes now
    run(c, 'n1');
    c.recordReadies = true;
    proposeOnly(c, 'n1', 'c');
    const carried = c.readies.filter((r) => r.node === 'n1')
      .flatMap((r) => appends(r.ready.messages, 'n2'));
    assert.equal(carried.length, 1);
    assert.equal(carried[0]?.entries.length, 1);
    assert.equal(carried[0]?.commit, a);
  });

  it('answers the Appends handled in one Ready with one acknowledgement', () => {
    const c = new Cluster({ nodeCount: 3, seed: 23, config: SEND_AT_ONCE });
    c.elect('n1');
    c.propose('n1', 'warm');
    proposeOnly(c, 'n1', 'a');
    proposeOnly(c, 'n1', 'b');
    const last = proposeOnly(c, 'n1', 'c');
    c.recordReadies = true;
    c.deliverRound(); // three Appends reach n2 before it runs a Ready
    run(c, 'n2');
    const answers = c.readies.filter((r) => r.node === 'n2')
      .flatMap((r) => acks(r.ready.messagesAfterPersist, 'n2'));
    assert.deepEqual(answers.map((m) => [m.reject, m.matchIndex]), [[false, last]]);
    c.stabilize();
    for (const id of c.ids) assert.deepEqual(c.appliedTexts(id), ['warm', 'a', 'b', 'c']);
  });

  it('keeps a rejection and the acknowledgement after it', () => {
    const c = new Cluster({ nodeCount: 3, seed: 24, config: SEND_AT_ONCE });
    c.elect('n1');
    c.propose('n1', 'warm');
    // n2 misses Append(a): it rejects the next Append (a gap), the leader probes and repairs it.
    c.filter = (m) => !(m.type === 'Append' && m.to === 'n2' && m.entries.length > 0
      && new TextDecoder().decode(m.entries[0]?.data) === 'a');
    c.recordReadies = true;
    c.propose('n1', 'a');
    c.filter = null;
    c.propose('n1', 'b');
    const fromN2 = c.readies.filter((r) => r.node === 'n2')
      .flatMap((r) => acks(r.ready.messagesAfterPersist, 'n2'));
    assert.ok(fromN2.some((m) => m.reject), 'n2 rejected the Append after its gap');
    assert.ok(fromN2.some((m) => !m.reject), 'and acknowledged once repaired');
    for (const id of c.ids) assert.deepEqual(c.appliedTexts(id), ['warm', 'a', 'b']);
  });
});
