/*
 * Route entries as a NameServer gives them, for tests of how routes are merged and answered:
 * node `nX` at 127.0.0.1:910X, and one group's entry with queue 0.
 */
import type { GroupRoute, NodeRef } from '../../src/namesrv/route-types';

export function node(nodeId: string, term: number): NodeRef {
  return { nodeId, endpoint: `127.0.0.1:910${nodeId.slice(1)}`, term };
}

/** `group`'s entry: `leader` (if any) and `followers`, writable when it has a leader. */
export function entry(
  group: string,
  leader: NodeRef | undefined,
  followers: NodeRef[] = [],
): GroupRoute {
  return {
    cluster: 'c1',
    group,
    leader,
    writable: leader !== undefined,
    leaderless: leader === undefined,
    followers,
    queues: [{ queueId: 0, perm: 'READ_WRITE', messageTypes: ['NORMAL'] }],
  };
}
