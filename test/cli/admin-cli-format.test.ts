/**
 * The `raftmq status` table: the fdatasync columns of a node that times its calls (the
 * timed-sync addon) and of one that does not, and an unreachable node's row of dashes.
 */
import { strict as assert } from 'node:assert';
import type { ClusterStatus } from '../../src/broker/admin-client';
import type { NodeStatus } from '../../src/broker/broker-types';
import { formatClusterStatus } from '../../src/cli/admin-cli-format';

function node(id: string, sync: Partial<NodeStatus>): NodeStatus {
  return {
    cluster: 'c1',
    group: 'broker-a',
    nodeId: id,
    role: id === 'n1' ? 'leader' : 'follower',
    term: 3,
    leaderId: 'n1',
    clientEndpoint: `127.0.0.1:1000${id.slice(1)}`,
    raftEndpoint: `127.0.0.1:2000${id.slice(1)}`,
    lastIndex: 9,
    commitIndex: 9,
    appliedIndex: 8,
    topicCount: 1,
    fatal: null,
    syncCount: 0,
    syncMsTotal: 0,
    syncMsMax: 0,
    slowSyncs: 0,
    timedSyncs: 0,
    syncCallMsTotal: 0,
    syncCallMsMax: 0,
    slowSyncCalls: 0,
    ...sync,
  };
}

describe('raftmq status table', () => {
  it('shows rounds and calls as mean/longest, and slow rounds / slow calls where timed', () => {
    const timed = node('n1', {
      syncCount: 4,
      syncMsTotal: 30,
      syncMsMax: 14,
      slowSyncs: 2,
      timedSyncs: 4,
      syncCallMsTotal: 2,
      syncCallMsMax: 1.5,
      slowSyncCalls: 1,
    });
    const untimed = node('n2', { syncCount: 2, syncMsTotal: 25, syncMsMax: 20, slowSyncs: 1 });
    const status: ClusterStatus = {
      group: 'broker-a',
      answeredBy: 'n1',
      leaderId: 'n1',
      term: 3,
      members: [
        { ...member(timed), status: timed },
        { ...member(untimed), status: untimed },
        { ...member(node('n3', {})), reachable: false, error: 'deadline exceeded', status: null },
      ],
    };
    const rows = formatClusterStatus(status, '127.0.0.1:10001').split('\n');
    const cells = (id: string): string[] =>
      (rows.find((r) => r.startsWith(`${id} `)) ?? '').trim().split(/ +/);
    assert.match(rows.join('\n'), / FSYNC-MS +DISK-MS +SLOW /);
    // n1: 4 rounds of 7.5 ms on average, 14 the longest; calls 0.5 and 1.5; 2 slow, 1 in a call.
    assert.deepEqual(cells('n1').slice(8, 11), ['7.50/14.00', '0.50/1.50', '2/1']);
    // n2 does not time its calls: no call column, a plain count; a mean of 10 ms or more.
    assert.deepEqual(cells('n2').slice(8, 11), ['12.5/20.0', '-', '1']);
    assert.deepEqual(
      cells('n3').slice(1, 11),
      Array<string>(10).fill('-').fill('unreachable', 0, 1),
    );
    assert.ok(
      rows.some((r) => r.startsWith('n3: unreachable')),
      'a note for n3',
    );
  });
});

function member(s: NodeStatus): ClusterStatus['members'][number] {
  return {
    nodeId: s.nodeId,
    clientEndpoint: s.clientEndpoint,
    raftEndpoint: s.raftEndpoint,
    reachable: true,
    error: null,
    status: s,
  };
}
