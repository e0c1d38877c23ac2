/*
 * FollowerLiveness over sampled Raft progress: a new leader counts every follower live, one not
 * heard from for the window drops out (the core's CheckQuorum clearing of `recentActive` in
 * between never drops one that answers), it comes back when heard again, and nothing is
 * reported while this node does not lead; each change is reported once.
 */
import { strict as assert } from 'node:assert';
import { FollowerLiveness } from '../../src/broker/follower-liveness';
import type { FollowerProgress } from '../../src/raft/raft-node';

function progress(active: Record<string, boolean>): ReadonlyMap<string, FollowerProgress> {
  return new Map(
    Object.entries(active).map(([id, recentActive]) => [
      id,
      { match: 0, next: 1, state: 'replicate', recentActive },
    ]),
  );
}

describe('follower liveness', () => {
  it('drops a follower not heard from for the window, and takes it back', () => {
    const l = new FollowerLiveness(2_000);
    assert.equal(l.sample(undefined, progress({}), 0), false, 'nothing reported, nothing changed');
    assert.equal(l.liveFollowers, undefined);
    // Leading from t=100: both live at once, though neither answered yet.
    assert.equal(l.sample(5, progress({ n2: false, n3: false }), 100), true);
    assert.deepEqual(l.liveFollowers, ['n2', 'n3']);
    // n2 answers every round (cleared in between); n3 is silent.
    let changes = 0;
    for (let t = 200; t <= 2_100; t += 100) {
      if (l.sample(5, progress({ n2: t % 1_000 !== 0, n3: false }), t)) changes++;
    }
    assert.equal(changes, 0);
    assert.deepEqual(l.liveFollowers, ['n2', 'n3'], 'within the window');
    assert.equal(l.sample(5, progress({ n2: true, n3: false }), 2_200), true);
    assert.deepEqual(l.liveFollowers, ['n2']);
    assert.equal(l.sample(5, progress({ n2: true, n3: true }), 2_300), true);
    assert.deepEqual(l.liveFollowers, ['n2', 'n3']);
    // Steps down: nothing reported; leads again in a new term: everyone live again.
    assert.equal(l.sample(undefined, progress({}), 2_400), true);
    assert.equal(l.liveFollowers, undefined);
    assert.equal(l.sample(7, progress({ n2: false, n3: false }), 9_000), true);
    assert.deepEqual(l.liveFollowers, ['n2', 'n3']);
  });
});
