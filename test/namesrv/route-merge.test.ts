/*
 * Merging routes of one topic group by group (src/namesrv/route-merge.ts): each group's entry
 * of the highest term wins, one with a leader on a tie, then the earlier source; the result
 * has every group of every source, sorted by name. Checked on chosen cases and, with
 * fast-check, on random sources against a direct statement of the rule.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { groupTerm, mergeRoutes, newerGroupRoute } from '../../src/namesrv/route-merge';
import type { TopicRoute } from '../../src/namesrv/route-types';
import { entry, node } from './route-entries';
import { fcParams } from '../fc-params';

describe('route merge', () => {
  it('takes the entry of the highest term, then one with a leader, then the first', () => {
    const old = entry('g1', node('n1', 5), [node('n2', 5)]);
    const current = entry('g1', node('n2', 6), [node('n1', 5)]);
    const electing = entry('g1', undefined, [node('n1', 5), node('n2', 7)]);
    assert.equal(groupTerm(old), 5);
    assert.equal(groupTerm(electing), 7);
    assert.equal(groupTerm(entry('g1', undefined)), -1);
    assert.equal(newerGroupRoute(old, current), current);
    assert.equal(newerGroupRoute(current, old), current);
    assert.equal(newerGroupRoute(current, electing), electing);
    const leaderless6 = entry('g1', undefined, [node('n2', 6)]);
    assert.equal(newerGroupRoute(leaderless6, current), current);
    const twin = entry('g1', node('n2', 6), []);
    assert.equal(newerGroupRoute(current, twin), current);
    assert.equal(newerGroupRoute(twin, current), twin);
  });

  it('has every group of every source, sorted by name', () => {
    const a = { topic: 't', groups: [entry('g2', node('n1', 1)), entry('g3', node('n1', 4))] };
    const b = { topic: 't', groups: [entry('g1', node('n1', 2)), entry('g3', node('n2', 5))] };
    const merged = mergeRoutes('t', [a, undefined, b]);
    assert.deepEqual(
      merged?.groups.map((g) => `${g.group}:${g.leader?.nodeId}`),
      ['g1:n1', 'g2:n1', 'g3:n2'],
    );
    assert.equal(mergeRoutes('t', [undefined, { topic: 't', groups: [] }]), undefined);
  });

  it('picks per group what the rule picks, from any sources', () => {
    const ref = fc.record({ nodeId: fc.constantFrom('n1', 'n2', 'n3'), term: fc.nat(4) });
    const groupEntry = fc
      .record({
        group: fc.constantFrom('g1', 'g2', 'g3'),
        leader: fc.option(ref, { nil: undefined }),
        followers: fc.array(ref, { maxLength: 2 }),
      })
      .map((g) =>
        entry(
          g.group,
          g.leader && node(g.leader.nodeId, g.leader.term),
          g.followers.map((f) => node(f.nodeId, f.term)),
        ),
      );
    const route = fc.option(
      fc.array(groupEntry, { maxLength: 3 }).map((groups): TopicRoute => ({ topic: 't', groups })),
      { nil: undefined },
    );
    fc.assert(
      fc.property(fc.array(route, { maxLength: 4 }), (routes) => {
        const merged = mergeRoutes('t', routes);
        const all = routes.flatMap((r) => r?.groups ?? []);
        const names = [...new Set(all.map((g) => g.group))].sort();
        assert.deepEqual(
          merged?.groups.map((g) => g.group),
          names.length === 0 ? undefined : names,
        );
        for (const got of merged?.groups ?? []) {
          const candidates = all.filter((g) => g.group === got.group);
          const termMax = Math.max(...candidates.map(groupTerm));
          const newest = candidates.filter((g) => groupTerm(g) === termMax);
          const withLeader = newest.filter((g) => g.leader !== undefined);
          assert.equal(got, (withLeader.length > 0 ? withLeader : newest)[0]);
        }
      }),
      fcParams(300),
    );
  });
});
