/**
 * Majority arithmetic for a fixed voter set: the index a majority has matched, and the outcome
 * of a vote. Pure functions, property-tested in test/raft/quorum.test.ts.
 */
import { assert } from '../common/assert';
import type { NodeId } from '../common/types';

/** Votes needed to win among `voterCount` voters. */
export function majoritySize(voterCount: number): number {
  assert(Number.isSafeInteger(voterCount) && voterCount > 0, 'quorum: no voters');
  return Math.floor(voterCount / 2) + 1;
}

/** The largest index that at least a majority of `matchIndexes` (one per voter) have reached. */
export function majorityMatchIndex(matchIndexes: readonly number[]): number {
  const sorted = [...matchIndexes].sort((a, b) => b - a);
  const index = sorted[majoritySize(sorted.length) - 1];
  assert(index !== undefined, 'quorum: empty match list');
  return index;
}

/** Where an election stands. */
export type VoteOutcome = 'won' | 'lost' | 'pending';

/** Tallies `votes` (granted or not, by voter) over `voters`; votes of non-voters are ignored. */
export function voteOutcome(voters: readonly NodeId[], votes: ReadonlyMap<NodeId, boolean>):
VoteOutcome {
  const needed = majoritySize(voters.length);
  let granted = 0;
  let rejected = 0;
  for (const voter of voters) {
    const vote = votes.get(voter);
    if (vote === true) granted += 1;
    else if (vote === false) rejected += 1;
  }
  if (granted >= needed) return 'won';
  if (rejected > voters.length - needed) return 'lost';
  return 'pending';
}

/** True when the voters for which `active` holds form a majority of `voters`. */
export function hasQuorum(voters: readonly NodeId[], active: (id: NodeId) => boolean): boolean {
  let count = 0;
  for (const voter of voters) if (active(voter)) count += 1;
  return count >= majoritySize(voters.length);
}
