// Small proposals wait for a follower with Appends in flight and go in one Append with its next
// acknowledgement (`appendHoldBytes`); a proposal that brings the held bytes to the bound goes at
// once; a follower with nothing in flight gets every proposal at once; a lost acknowledgement
// does not strand held entries (the heartbeat answer sends them); and a follower whose answers
// never arrive still gets entries and the commit index at every heartbeat.
import { strict as assert } from 'node:assert';
import { asNodeId } from '../../src/common/types';
import { RAFT_TUNABLE_DEFAULTS } from '../../src/raft/config';
import type { AppendMessage, Message } from '../../src/raft/types';
import { Cluster } from './harness';

const encoder = new TextEncoder();

function appendsWithEntries(messages: readonly Message[], to: string): AppendMessage[] {
  return messages.filter(
    (m): m is AppendMessage => m.type === 'Append' && m.to === to && m.entries.length > 0,
  );
}

/** Appends with entries that `from` sent to `to` in the Readies recorded so far. */
function sent(c: Cluster, from: string, to: string): AppendMessage[] {
  return c.readies.filter((r) => r.node === from)
    .flatMap((r) => appendsWithEntries(r.ready.messages, to));
}

/** Proposes on n1 without settling, and runs its Ready (what is sent leaves). */
function proposeOnly(c: Cluster, payload: string): void {
  assert.ok(c.node('n1').propose([encoder.encode(payload)]).ok);
  assert.ok(c.processReady(asNodeId('n1')));
}

describe('raft append hold', () => {
  it('holds small proposals while an Append is in flight and sends them on its answer', () => {
    const c = new Cluster({ nodeCount: 3, seed: 31, config: { appendHoldBytes: 64 * 1024 } });
    c.elect('n1');
    c.propose('n1', 'warm');
    c.recordReadies = true;
    proposeOnly(c, 'a'); // nothing in flight: goes at once
    proposeOnly(c, 'b'); // a is in flight: b waits
    proposeOnly(c, 'c'); // and so does c
    assert.deepEqual(sent(c, 'n1', 'n2').map((m) => m.entries.length), [1]);
    c.stabilize(); // the answer to a brings b and c together
    assert.deepEqual(sent(c, 'n1', 'n2').map((m) => m.entries.length), [1, 2]);
    for (const id of c.ids) assert.deepEqual(c.appliedTexts(id), ['warm', 'a', 'b', 'c']);
  });

  it('by default holds up to 1 MiB, the most one Append carries by bytes', () => {
    assert.equal(RAFT_TUNABLE_DEFAULTS.appendHoldBytes, RAFT_TUNABLE_DEFAULTS.batchBytesMax);
    const c = new Cluster({ nodeCount: 3, seed: 34 });
    c.elect('n1');
    c.propose('n1', 'warm');
    c.recordReadies = true;
    proposeOnly(c, 'a'); // nothing in flight: goes at once
    proposeOnly(c, 'x'.repeat(600 * 1024)); // held: below 1 MiB (64 KiB used to send it)
    proposeOnly(c, 'y'.repeat(300 * 1024)); // still below: held
    assert.deepEqual(sent(c, 'n1', 'n2').map((m) => m.entries.length), [1]);
    proposeOnly(c, 'z'.repeat(200 * 1024)); // past 1 MiB held: what fits goes now
    assert.ok(sent(c, 'n1', 'n2').length > 1);
    c.stabilize();
    for (const id of c.ids) assert.equal(c.appliedTexts(id).length, 5);
  });

  it('sends at once when the held bytes reach the bound', () => {
    const c = new Cluster({ nodeCount: 3, seed: 32, config: { appendHoldBytes: 150 } });
    c.elect('n1');
    c.propose('n1', 'warm');
    c.recordReadies = true;
    proposeOnly(c, 'a');
    proposeOnly(c, 'x'.repeat(50)); // about 80 bytes counted: held
    assert.equal(sent(c, 'n1', 'n2').length, 1);
    proposeOnly(c, 'y'.repeat(50)); // about 160 bytes held: past the bound, both go now
    assert.deepEqual(sent(c, 'n1', 'n2').map((m) => m.entries.length), [1, 2]);
    c.stabilize();
    for (const id of c.ids) assert.equal(c.appliedTexts(id).length, 4);
  });

  it('keeps a follower whose answers are lost learning entries and the commit index', () => {
    const c = new Cluster({ nodeCount: 3, seed: 41, config: { checkQuorum: false } });
    c.elect('n1');
    c.propose('n1', 'warm');
    c.filter = (m) => !(m.from === 'n3' && m.to === 'n1'); // n3 hears n1, n1 never hears n3
    for (let i = 0; i < 10; i++) {
      c.propose('n1', `p${i}`);
      c.tick(); // a heartbeat sends n3 what was held back from it
    }
    const leader = c.node('n1').status();
    const cut = c.node('n3').status();
    assert.equal(cut.lastIndex, leader.lastIndex);
    assert.equal(cut.commitIndex, leader.commitIndex);
    assert.equal(c.appliedTexts('n3').length, 11);
  });

  it('does not strand held entries when the acknowledgement is lost', () => {
    const c = new Cluster({ nodeCount: 3, seed: 33, config: { appendHoldBytes: 64 * 1024 } });
    c.elect('n1');
    c.propose('n1', 'warm');
    c.filter = (m) => !(m.type === 'AppendResp' && m.from !== 'n1');
    proposeOnly(c, 'a');
    proposeOnly(c, 'b');
    c.stabilize(); // a arrives everywhere; every answer is lost, so b is still held
    assert.equal(c.node('n1').status().commitIndex, 2);
    c.filter = null;
    c.tickUntil(() => c.ids.every((id) => c.appliedTexts(id).length === 3), 10);
    for (const id of c.ids) assert.deepEqual(c.appliedTexts(id), ['warm', 'a', 'b']);
  });
});
