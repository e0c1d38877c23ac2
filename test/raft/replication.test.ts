// Log replication scenarios over the cluster harness: proposals commit and apply everywhere; a
// follower's uncommitted suffix of an old term is truncated and replaced (Raft §5.3); entries a
// crashed leader left on a majority survive the leader change; rejections skip a whole term per
// round trip; Appends are batched and pipelined within the count and byte bounds; entries that
// are no longer in memory are loaded through the driver, for followers and for the applier.
import { strict as assert } from 'node:assert';
import { asNodeId } from '../../src/common/types';
import type { AppendMessage, Message } from '../../src/raft/types';
import { Cluster } from './harness';

function appendsTo(messages: readonly Message[], to: string): AppendMessage[] {
  return messages.filter((m): m is AppendMessage => m.type === 'Append' && m.to === to);
}

describe('raft replication', () => {
  it('commits and applies proposals on every node', () => {
    const c = new Cluster({ nodeCount: 3, seed: 1 });
    c.elect('n1');
    const result = c.propose('n1', 'a', 'b');
    assert.ok(result.ok);
    assert.equal(result.firstIndex, 2);
    assert.equal(result.lastIndex, 3);
    c.propose('n1', 'c');
    c.tick();
    for (const id of c.ids) assert.deepEqual(c.appliedTexts(id), ['a', 'b', 'c']);
  });

  it('refuses proposals on a follower, naming the leader', () => {
    const c = new Cluster({ nodeCount: 3, seed: 1 });
    c.elect('n1');
    const result = c.propose('n2', 'x');
    assert.ok(!result.ok);
    assert.equal(result.code, 'NOT_LEADER');
    assert.equal(result.leaderId, 'n1');
  });

  it('truncates a follower\'s uncommitted entries of an old term', () => {
    const c = new Cluster({ nodeCount: 3, seed: 2 });
    c.elect('n1');
    c.isolate('n1');
    c.propose('n1', 'lost1', 'lost2', 'lost3'); // term 1, only on n1
    const leader = c.electAmong(['n2', 'n3']);
    c.propose(leader, 'kept');
    c.tick();
    assert.deepEqual(c.logTerms('n1'), [1, 1, 1, 1]);
    c.heal();
    c.tick();
    c.tick();
    assert.equal(c.node('n1').status().role, 'follower');
    for (const id of c.ids) {
      assert.deepEqual(c.logTerms(id), [1, 2, 2]);
      assert.deepEqual(c.appliedTexts(id), ['kept']);
    }
  });

  it('keeps entries a crashed leader left on a majority', () => {
    const c = new Cluster({ nodeCount: 3, seed: 3 });
    c.elect('n1');
    // n2 stores 'p' but its acknowledgement never reaches n1, so n1 cannot commit it.
    c.filter = (m) => !(m.type === 'AppendResp' && m.from === 'n2') && m.to !== 'n3';
    c.propose('n1', 'p');
    assert.equal(c.node('n1').status().commitIndex, 1);
    assert.equal(c.store('n2').log.length, 2);
    c.crash('n1');
    c.filter = null;
    // n3's log is behind: n2 refuses it (Raft §5.4.1). n2's log is up to date: it wins.
    c.campaign('n3');
    assert.notEqual(c.node('n3').status().role, 'leader');
    c.elect('n2');
    c.tick();
    assert.deepEqual(c.appliedTexts('n2'), ['p']);
    assert.deepEqual(c.appliedTexts('n3'), ['p']);
    c.restart('n1');
    c.tick();
    c.tick();
    assert.deepEqual(c.appliedTexts('n1'), ['p']);
  });

  it('skips a whole conflicting term per rejection', () => {
    const c = new Cluster({ nodeCount: 3, seed: 4, config: { batchEntriesMax: 4 } });
    c.elect('n1');
    c.isolate('n1');
    for (let i = 0; i < 20; i++) c.propose('n1', `old${i}`);
    const leader = c.electAmong(['n2', 'n3']);
    for (let i = 0; i < 20; i++) c.propose(leader, `new${i}`);
    c.recordReadies = true;
    c.heal();
    c.tick();
    c.tick();
    const rejections = c.readies
      .flatMap((r) => r.ready.messagesAfterPersist)
      .filter((m) => m.type === 'AppendResp' && m.reject && m.from === 'n1');
    assert.ok(rejections.length <= 2, `${rejections.length} rejections for 20 conflicting entries`);
    assert.deepEqual(c.logTerms('n1'), c.logTerms(leader));
    assert.equal(c.appliedTexts('n1').length, 20);
  });

  it('batches entries per Append and bounds the in-flight window', () => {
    const c = new Cluster({
      nodeCount: 3,
      seed: 5,
      config: { batchEntriesMax: 3, inflightCountMax: 2, appendHoldBytes: 0 },
    });
    c.elect('n1');
    c.propose('n1', 'warm'); // n2 and n3 move to the replicate state
    c.recordReadies = true;
    // Acknowledgements from n2 are lost: at most 2 Appends with entries may be outstanding.
    c.filter = (m) => !(m.type === 'AppendResp' && m.from === 'n2');
    c.propose('n1', ...Array.from({ length: 20 }, (_, i) => `e${i}`).slice(0, 3));
    for (let i = 0; i < 5; i++) c.propose('n1', `x${i}`, `y${i}`, `z${i}`);
    const sent = c.readies.filter((r) => r.node === 'n1')
      .flatMap((r) => appendsTo(r.ready.messages, 'n2'))
      .filter((m) => m.entries.length > 0);
    assert.equal(sent.length, 2);
    for (const m of sent) assert.ok(m.entries.length <= 3);
    c.filter = null;
    c.tick();
    c.tick();
    assert.equal(c.appliedTexts('n2').length, 1 + 3 + 15);
  });

  it('bounds the in-flight window in bytes', () => {
    const big = 'x'.repeat(1000);
    const c = new Cluster({
      nodeCount: 3,
      seed: 6,
      config: { batchEntriesMax: 1, inflightBytesMax: 2500, appendHoldBytes: 0 },
    });
    c.elect('n1');
    c.propose('n1', 'warm');
    c.recordReadies = true;
    c.filter = (m) => !(m.type === 'AppendResp' && m.from === 'n2');
    for (let i = 0; i < 6; i++) c.propose('n1', big);
    const sent = c.readies.filter((r) => r.node === 'n1')
      .flatMap((r) => appendsTo(r.ready.messages, 'n2'))
      .filter((m) => m.entries.length > 0);
    assert.equal(sent.length, 3, 'three ~1 KiB entries fill a 2500-byte window');
  });

  it('loads entries a lagging follower needs when they left the cache', () => {
    const c = new Cluster({
      nodeCount: 3, seed: 7, delayLoads: true,
      config: { entryCacheBytesMax: 200, batchEntriesMax: 2 },
    });
    c.elect('n1');
    c.crash('n3');
    for (let i = 0; i < 10; i++) c.propose('n1', `v${i}`);
    c.recordReadies = true;
    c.restart('n3');
    for (let i = 0; i < 5; i++) c.tick();
    const loads = c.readies.filter((r) => r.node === 'n1').flatMap((r) => r.ready.loads);
    assert.ok(loads.some((l) => l.peer === 'n3'), 'the leader asked for entries of n3');
    assert.deepEqual(c.appliedTexts('n3'), Array.from({ length: 10 }, (_, i) => `v${i}`));
  });

  it('keeps in memory only the entries some node still needs', () => {
    const c = new Cluster({ nodeCount: 3, seed: 11, config: { entryCacheBytesMax: 1 << 20 } });
    c.elect('n1');
    c.crash('n3');
    for (let i = 0; i < 6; i++) c.propose('n1', `v${i}`);
    c.tick();
    const leader = c.node('n1').status();
    const lagging = leader.progress.get(asNodeId('n3'));
    assert.ok(lagging !== undefined && lagging.match < leader.appliedIndex);
    // What n3 lacks stays in the leader's memory; the rest is released on every node.
    assert.equal(leader.cachedFirstIndex, lagging.match + 1);
    assert.equal(c.node('n2').status().appliedIndex, leader.appliedIndex);
    assert.equal(c.node('n2').status().cachedFirstIndex, null);
    c.recordReadies = true;
    c.restart('n3');
    for (let i = 0; i < 3; i++) c.tick();
    const loads = c.readies.filter((r) => r.node === 'n1').flatMap((r) => r.ready.loads);
    assert.deepEqual(loads, [], 'n3 was served from memory');
    assert.deepEqual(c.appliedTexts('n3'), Array.from({ length: 6 }, (_, i) => `v${i}`));
    assert.equal(c.node('n1').status().cachedFirstIndex, null);
    assert.equal(c.node('n3').status().cachedFirstIndex, null);
  });

  it('loads committed entries for the applier after a restart', () => {
    const c = new Cluster({ nodeCount: 3, seed: 8, config: { entryCacheBytesMax: 0 } });
    c.elect('n1');
    for (let i = 0; i < 5; i++) c.propose('n1', `v${i}`);
    c.tick();
    // n2 loses its applied state (as if the state machine were rebuilt from scratch).
    c.crash('n2');
    c.store('n2').applied = [];
    c.appliedAt.clear();
    c.recordReadies = true;
    c.restart('n2');
    c.tick();
    const loads = c.readies.filter((r) => r.node === 'n2').flatMap((r) => r.ready.loads);
    assert.ok(loads.some((l) => l.peer === asNodeId('n2')), 'n2 asked to load for its applier');
    assert.deepEqual(c.appliedTexts('n2'), ['v0', 'v1', 'v2', 'v3', 'v4']);
  });

  it('refuses proposals with BUSY while too many bytes are uncommitted', () => {
    const c = new Cluster({ nodeCount: 3, seed: 9, config: { uncommittedBytesMax: 200 } });
    c.elect('n1');
    c.isolate('n1');
    const first = c.propose('n1', 'x'.repeat(100));
    assert.ok(first.ok);
    const second = c.propose('n1', 'x'.repeat(100));
    assert.ok(!second.ok);
    assert.equal(second.code, 'BUSY');
    assert.equal(second.leaderId, 'n1');
  });
});
