/**
 * Merges routes of one topic from several sources, group by group. NameServers never talk to
 * each other, so one may have missed a failover (the new leader's Register to it failed) or,
 * restarted a moment ago, have heard from only some groups; and a broker knows its own group
 * from its Raft state better than a NameServer that has not heard of its newest term. Pure.
 *
 * Per group, the newest entry wins: the one whose nodes report the highest term (its
 * {@link groupTerm}). That is the route table's own rule (route-table.ts): a group's leader is
 * a node claiming leadership in the highest term any of its nodes reports, so an entry with a
 * leader has the leader's term, and a leaderless entry with a higher term knows of an election
 * the other has not seen. On a tie the entry with a leader wins, then the earlier source. The
 * merged route has every group any source has, sorted by group name.
 */
import type { GroupRoute, TopicRoute } from './route-types';

/** The highest term of any node of `group`'s entry; -1 when it names no node. */
export function groupTerm(group: GroupRoute): number {
  let term = group.leader?.term ?? -1;
  for (const follower of group.followers) if (follower.term > term) term = follower.term;
  return term;
}

/** The newer of two entries of one group (see the file comment); `a` on a full tie. */
export function newerGroupRoute(a: GroupRoute, b: GroupRoute): GroupRoute {
  const termA = groupTerm(a);
  const termB = groupTerm(b);
  if (termA !== termB) return termA > termB ? a : b;
  if (a.leader === undefined && b.leader !== undefined) return b;
  return a;
}

/**
 * The route of `topic` over every group any of `routes` has, each group's newest entry; earlier
 * routes win full ties. Undefined when none of `routes` is defined or has a group.
 */
export function mergeRoutes(
  topic: string,
  routes: readonly (TopicRoute | undefined)[],
): TopicRoute | undefined {
  const byGroup = new Map<string, GroupRoute>();
  for (const route of routes) {
    for (const group of route?.groups ?? []) {
      const seen = byGroup.get(group.group);
      byGroup.set(group.group, seen === undefined ? group : newerGroupRoute(seen, group));
    }
  }
  if (byGroup.size === 0) return undefined;
  const groups = [...byGroup.values()].sort((x, y) =>
    x.group < y.group ? -1 : x.group > y.group ? 1 : 0,
  );
  return { topic, groups };
}
