/*
 * A node whose stored vote names a node its `peers` no longer lists refuses to start with
 * INVALID_OPTION saying the peer set changed, not META_CORRUPT: the metadata is sound, the
 * configuration is not (membership changes are not supported).
 */
import { strict as assert } from 'node:assert';
import { hardStateCodec } from '../../src/broker/raft-hard-state';
import { loadRaftStorageState } from '../../src/broker/raft-storage-state';
import { isRaftmqError } from '../../src/common/errors';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import type { CommitLog } from '../../src/store/commit-log';
import { MemMetaStore } from '../../src/store/mem-meta-store';
import { MetaKeys, putOp } from '../../src/store/meta';

describe('loadRaftStorageState', () => {
  it('refuses a stored vote for a node peers no longer lists as a configuration error', async () => {
    const meta = new MemMetaStore();
    await meta.batch(
      [
        putOp(MetaKeys.raftHardState, hardStateCodec, {
          term: asTerm(3),
          vote: asNodeId('n2'),
          commit: asLogIndex(0),
        }),
      ],
      { sync: true },
    );
    // The vote is checked before the log is looked at.
    const log = {} as CommitLog;
    await assert.rejects(
      loadRaftStorageState(meta, log, [asNodeId('n1'), asNodeId('n3')], undefined),
      (err: unknown) =>
        isRaftmqError(err, 'INVALID_OPTION') &&
        /vote is for n2, which peers no longer lists/.test(err.message),
    );
  });
});
