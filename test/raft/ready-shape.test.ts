// Every Ready has the same fields, present even when absent (undefined), and every Append and
// every AppendResp (accepting or rejecting) has one set of fields. This is for speed (the
// driver's reads of a Ready stay monomorphic in V8; docs/performance.md, "What V8 costs"), so
// nothing else would notice a regression: an optional Ready field spread in again (as before
// 2026-12-03) fails here. Keys cannot tell a literal from a spread of the same fields; that
// part is kept by `RaftCore.appendResp` being the one place an AppendResp is made.
import { strict as assert } from 'node:assert';
import { Cluster } from './harness';

describe('raft Ready shape', () => {
  it('gives every Ready and every Append and AppendResp one set of keys in one order', () => {
    const c = new Cluster({ nodeCount: 3, seed: 51 });
    c.recordReadies = true;
    c.elect('n1');
    for (let i = 0; i < 5; i++) c.propose('n1', `p${i}`);
    c.tick();
    c.stabilize();
    assert.ok(c.readies.length > 10);
    const keysOf = (o: object): string => Object.keys(o).join(',');
    assert.deepEqual(new Set(c.readies.map((r) => keysOf(r.ready))).size, 1);
    for (const type of ['Append', 'AppendResp']) {
      const shapes = new Set(c.readies.flatMap((r) =>
        [...r.ready.messages, ...r.ready.messagesAfterPersist]
          .filter((m) => m.type === type).map(keysOf)));
      assert.ok(shapes.size > 0, `no ${type} recorded`);
      assert.equal(shapes.size, 1, `${type} shapes: ${[...shapes].join(' | ')}`);
    }
  });
});
