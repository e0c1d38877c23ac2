/**
 * The Raft core's configuration: three required fields (who we are, who the voters are, the
 * randomness) and tunables with frozen defaults, checked by a pure resolver that throws an
 * INVALID_OPTION error naming the field.
 */
import {
  checkOption, intInRange, isBoolean, resolveOptions, type OptionSpec,
} from '../common/options';
import type { Prng } from '../common/prng';
import type { NodeId } from '../common/types';

/** The tunables; each has a default. */
export interface RaftTunables {
  /** Followers wait a random [this, 2 * this) ticks without a leader before campaigning. */
  readonly electionTimeoutTicks: number;
  /** A leader sends heartbeats every this many ticks; must be below the election timeout. */
  readonly heartbeatIntervalTicks: number;
  /** Run a PreVote round before bumping the term (thesis §9.6). */
  readonly preVote: boolean;
  /** Leaders step down without a live majority; followers keep a leader lease (§4.2.3, §6.2). */
  readonly checkQuorum: boolean;
  /** When set, a leader hands leadership to this voter once it has caught up (DLedger). */
  readonly preferredLeaderId: NodeId | null;
  /** Append messages in flight to one follower, at most. */
  readonly inflightCountMax: number;
  /** Entry bytes in flight to one follower; a window at or above this is full. */
  readonly inflightBytesMax: number;
  /**
   * Newly proposed entries below this many bytes wait, for a follower with Appends in flight,
   * until its next acknowledgement (or until this many gathered) and then go together, in as
   * few Appends as `batchEntriesMax` and `batchBytesMax` allow; 0 sends every proposal at once.
   * The default is `batchBytesMax`. See `sendProposed` in replicator.ts.
   */
  readonly appendHoldBytes: number;
  /** Entries per Append message (and per apply batch), at most. */
  readonly batchEntriesMax: number;
  /** Entry bytes per Append message (and per apply batch); one larger entry is still sent. */
  readonly batchBytesMax: number;
  /** Bytes of recent durable entries kept in memory to replicate and apply without loads. */
  readonly entryCacheBytesMax: number;
  /** A leader refuses proposals with BUSY while this many entry bytes are uncommitted. */
  readonly uncommittedBytesMax: number;
  /** ReadIndex requests waiting for confirmation, at most (more are refused with BUSY). */
  readonly readIndexPendingMax: number;
  /**
   * A leader's Readys may hand new entries to the store without the driver waiting for them
   * to be durable (`Ready.durableLater`): the leader counts itself toward commitment only for
   * entries reported durable either way (thesis §10.2.1), so commitment stays safe while the
   * leader's fsync overlaps the next round of replication.
   */
  readonly leaderWritesAsync: boolean;
}

/** What a caller passes: the required fields and any tunables. */
export interface RaftConfigInput extends Partial<RaftTunables> {
  readonly id: NodeId;
  /** Every voter of the group, this node included. */
  readonly peers: readonly NodeId[];
  readonly prng: Prng;
}

/** The resolved, frozen configuration. */
export interface RaftConfig extends RaftTunables {
  readonly id: NodeId;
  readonly peers: readonly NodeId[];
  readonly prng: Prng;
}

const MIB = 1024 * 1024;

/** Defaults for every tunable. */
export const RAFT_TUNABLE_DEFAULTS: Readonly<RaftTunables> = Object.freeze({
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  preVote: true,
  checkQuorum: true,
  preferredLeaderId: null,
  inflightCountMax: 256,
  inflightBytesMax: 16 * MIB,
  appendHoldBytes: MIB,
  batchEntriesMax: 256,
  batchBytesMax: MIB,
  entryCacheBytesMax: 64 * MIB,
  uncommittedBytesMax: 64 * MIB,
  readIndexPendingMax: 4096,
  leaderWritesAsync: false,
});

const SPEC: OptionSpec<RaftTunables> = {
  electionTimeoutTicks: intInRange(2, 1_000_000),
  heartbeatIntervalTicks: intInRange(1, 1_000_000),
  preVote: isBoolean,
  checkQuorum: isBoolean,
  preferredLeaderId: (value, path) => {
    checkOption(value === null || (typeof value === 'string' && value.length > 0), path,
      'must be null or a voter id');
  },
  inflightCountMax: intInRange(1, 1_000_000),
  inflightBytesMax: intInRange(1, 1 << 30),
  appendHoldBytes: intInRange(0, 1 << 30),
  batchEntriesMax: intInRange(1, 1_000_000),
  batchBytesMax: intInRange(1, 1 << 30),
  entryCacheBytesMax: intInRange(0, 2 ** 40),
  uncommittedBytesMax: intInRange(1, 2 ** 40),
  readIndexPendingMax: intInRange(1, 1_000_000),
  leaderWritesAsync: isBoolean,
};

/** Checks `input` and fills in defaults; throws INVALID_OPTION naming the offending field. */
export function resolveRaftConfig(input: RaftConfigInput): RaftConfig {
  checkOption(typeof input === 'object' && input !== null, 'raft', 'config must be an object');
  const { id, peers, prng, ...tunableInput } = input;
  checkOption(typeof id === 'string' && id.length > 0, 'raft.id', 'must be a non-empty string');
  checkOption(Array.isArray(peers) && peers.length > 0, 'raft.peers',
    'must be a non-empty array of voter ids');
  for (const peer of peers) {
    checkOption(typeof peer === 'string' && peer.length > 0, 'raft.peers',
      'every voter id must be a non-empty string');
  }
  checkOption(new Set(peers).size === peers.length, 'raft.peers', 'must not repeat an id');
  checkOption(peers.includes(id), 'raft.peers', `must include this node's id ${id}`);
  checkOption(typeof prng === 'object' && prng !== null && typeof prng.nextInt === 'function',
    'raft.prng', 'must be a Prng');
  const tunables = resolveOptions('raft', RAFT_TUNABLE_DEFAULTS, SPEC, tunableInput);
  checkOption(tunables.heartbeatIntervalTicks < tunables.electionTimeoutTicks,
    'raft.heartbeatIntervalTicks', 'must be below raft.electionTimeoutTicks');
  const preferred = tunables.preferredLeaderId;
  checkOption(preferred === null || peers.includes(preferred), 'raft.preferredLeaderId',
    'must be one of raft.peers');
  return Object.freeze({ ...tunables, id, peers: Object.freeze([...peers]), prng });
}
