/**
 * What the Raft core needs from disk at start, read and cross-checked: the hard state from the
 * metadata store, the log's bounds and terms from the CommitLog, and the state machine's applied
 * index. Contradictions between them are refused with a typed error rather than handed to the
 * core (whose own assertions would stop the process without naming the store at fault).
 */
import { RaftmqError } from '../common/errors';
import { asLogIndex, asTerm, type NodeId } from '../common/types';
import type { RaftStorageState } from '../raft/types';
import type { CommitLog } from '../store/commit-log';
import { getMeta, MetaKeys, type MetaStore } from '../store/meta';
import { hardStateCodec, INITIAL_HARD_STATE } from './raft-hard-state';

/**
 * Loads the core's start state. A hard state that fails to decode or votes for a non-voter is
 * META_CORRUPT, as is a log holding a term beyond the stored term (the term is always written
 * before entries of that term); a commit index beyond the log is CORRUPT_LOG.
 */
export async function loadRaftStorageState(
  meta: MetaStore,
  log: CommitLog,
  peers: readonly NodeId[],
  appliedIndexAtStart: number | undefined,
): Promise<RaftStorageState> {
  const key = MetaKeys.raftHardState;
  const stored = (await getMeta(meta, key, hardStateCodec)) ?? INITIAL_HARD_STATE;
  if (stored.vote !== null && !peers.includes(stored.vote)) {
    // The metadata is sound; the peer set changed under it (membership changes are not
    // supported: every node's `peers` must list the same nodes as when the group was made).
    throw new RaftmqError(
      'INVALID_OPTION',
      `this node's stored vote is for ${stored.vote}, which peers no longer lists: the group's ` +
        'members cannot be changed by editing peers',
      { details: { key, option: 'peers' } },
    );
  }
  const firstIndex = log.firstIndex();
  const lastIndex = log.lastIndex();
  const appliedIndex = appliedIndexAtStart ?? firstIndex - 1;
  if (!(appliedIndex >= firstIndex - 1 && appliedIndex <= lastIndex)) {
    throw new RaftmqError(
      'INVALID_ARGUMENT',
      `appliedIndex ${appliedIndex} outside [${firstIndex - 1}, ${lastIndex}]`,
    );
  }
  // Applied entries are committed, and the commit index is persisted lazily: take the larger.
  const commit = Math.max(stored.commit, appliedIndex);
  if (commit > lastIndex) {
    throw new RaftmqError(
      'CORRUPT_LOG',
      `commit index ${commit} is beyond the log's last index ${lastIndex}`,
    );
  }
  if (log.lastTerm() > stored.term) {
    throw new RaftmqError(
      'META_CORRUPT',
      `the log holds term ${log.lastTerm()} beyond the stored term ${stored.term}`,
      { details: { key } },
    );
  }
  return {
    hardState: { ...stored, commit: asLogIndex(commit) },
    firstIndex: asLogIndex(firstIndex),
    lastIndex: asLogIndex(lastIndex),
    termAt: (index) => {
      const term = log.termAt(index);
      return term === undefined ? undefined : asTerm(term);
    },
    appliedIndex: asLogIndex(appliedIndex),
  };
}
