/**
 * What one run's seed decides before the run starts (swarm testing: each run gets its own mix,
 * so across seeds some runs are crash-heavy, some have slow disks, some send one entry per
 * Append):
 *
 * - the Raft settings: production defaults, or small windows (1 to 4 entries per Append, 1 to 4
 *   Appends in flight, small byte limits, no holding back), a longer or shorter election
 *   timeout, and leader writes overlapping replication (`leaderWritesAsync`). With the defaults
 *   a new leader's no-op travels with every older entry at once, and the window in which an
 *   older-term entry sits replicated but uncommitted (Raft §5.4.2, Figure 8) is rarely open;
 * - the disk: how long each fsync takes (0, up to 5 or up to 40 ms, against 1 to 3 ms for a
 *   message), and in some runs rare stalls of 50 to 200 ms. A leader whose own write is still
 *   unsynced when a follower's acknowledgement arrives, or a vote that is sent before it is
 *   stored, only shows when a sync can take longer than a round trip;
 * - how often each fault strikes, how soon a crashed node restarts (some runs restart within a
 *   tick or two, so a crash that lost a promise meets the group again at once), and how many
 *   crashes are aimed at a moment that matters (right after a node promised something).
 */
import type { Prng } from '../common/prng';
import type { RaftTunables } from '../raft/config';
import { RAFT_TUNABLE_DEFAULTS } from '../raft/config';
import { CALM_NETWORK, type SimNetworkConditions } from './sim-network';

export function pick<T>(prng: Prng, items: readonly T[]): T {
  const item = items[prng.nextInt(0, items.length)];
  if (item === undefined) throw new RangeError('pick from an empty list');
  return item;
}

/** How often each fault strikes in one run. */
export interface FaultRates {
  readonly crashPerTick: number;
  /** Restart delays: at least this many ticks, below `restartTicksMax`. */
  readonly restartTicksMin: number;
  readonly restartTicksMax: number;
  /**
   * Of the crashes, the share aimed at a moment: right after the node next grants a vote or
   * acknowledges entries, or next truncates or removes a file (before any sync covers it).
   */
  readonly aimedCrashShare: number;
  readonly partitionPerTick: number;
  readonly pausePerTick: number;
  readonly networkChangePerTick: number;
}

/** The simulated disk's sync latency for one run. */
export interface SyncProfile {
  /** Each fsync (and synced metadata batch) takes [0, this] ms... */
  readonly syncMsMax: number;
  /** ...plus, with this chance, a stall of [50, `stallMsMax`] ms. */
  readonly stallProbability: number;
  readonly stallMsMax: number;
}

/** Everything a run draws up front; see the file comment. */
export interface RunProfile {
  readonly rates: FaultRates;
  readonly sync: SyncProfile;
  /** Raft tunables (empty: production defaults). */
  readonly raft: Partial<RaftTunables>;
  /** The election timeout the run uses, in ticks (for the checks' time bounds). */
  readonly electionTimeoutTicks: number;
}

function drawFaultRates(prng: Prng): FaultRates {
  const fastRestart = prng.chance(0.4);
  return {
    crashPerTick: pick(prng, [0.002, 0.01, 0.03, 0.06]),
    restartTicksMin: fastRestart ? 1 : 5,
    restartTicksMax: fastRestart ? pick(prng, [3, 30]) : pick(prng, [30, 150]),
    aimedCrashShare: pick(prng, [0, 0.5, 0.9]),
    partitionPerTick: pick(prng, [0.003, 0.01, 0.03]),
    pausePerTick: pick(prng, [0.001, 0.005, 0.02]),
    networkChangePerTick: pick(prng, [0.005, 0.02]),
  };
}

function drawSync(prng: Prng): SyncProfile {
  const syncMsMax = pick(prng, [0, 5, 5, 40]);
  const stalls = prng.chance(0.25);
  return { syncMsMax, stallProbability: stalls ? 0.02 : 0, stallMsMax: 200 };
}

function drawRaft(prng: Prng): Partial<RaftTunables> {
  const leaderWritesAsync = prng.chance(0.5);
  const electionTimeoutTicks = pick(prng, [10, 10, 6, 20]);
  if (prng.chance(0.4)) {
    return electionTimeoutTicks === 10 && !leaderWritesAsync
      ? {}
      : { electionTimeoutTicks, leaderWritesAsync };
  }
  return {
    electionTimeoutTicks,
    leaderWritesAsync,
    batchEntriesMax: pick(prng, [1, 2, 4]),
    batchBytesMax: pick(prng, [64, 512, 64 * 1024]),
    inflightCountMax: pick(prng, [1, 2, 4]),
    inflightBytesMax: pick(prng, [64, 1024, 64 * 1024]),
    appendHoldBytes: pick(prng, [0, 0, 64]),
  };
}

/** Draws a run's profile; the caller gives it a PRNG of its own, forked from the seed. */
export function drawRunProfile(prng: Prng): RunProfile {
  const rates = drawFaultRates(prng);
  const sync = drawSync(prng);
  const raft = drawRaft(prng);
  return {
    rates,
    sync,
    raft,
    electionTimeoutTicks: raft.electionTimeoutTicks ?? RAFT_TUNABLE_DEFAULTS.electionTimeoutTicks,
  };
}

/** One line for the trace: everything the profile decided. */
export function describeProfile(p: RunProfile): string {
  const r = p.rates;
  const raft = Object.entries(p.raft)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
  return (
    `rates crash ${r.crashPerTick} restart ${r.restartTicksMin}-${r.restartTicksMax} aimed ` +
    `${r.aimedCrashShare} partition ${r.partitionPerTick} pause ${r.pausePerTick} network ` +
    `${r.networkChangePerTick}; sync 0-${p.sync.syncMsMax}ms stall ${p.sync.stallProbability}; ` +
    `raft ${raft === '' ? 'defaults' : raft}`
  );
}

/** Network conditions for a change of weather during the faults. */
export function networkProfile(prng: Prng): SimNetworkConditions {
  switch (prng.nextInt(0, 5)) {
    case 0:
      return CALM_NETWORK;
    case 1:
      return { ...CALM_NETWORK, lossProbability: pick(prng, [0.02, 0.1, 0.3]) };
    case 2:
      return { ...CALM_NETWORK, duplicateProbability: 0.05, lossProbability: 0.02 };
    case 3:
      return { ...CALM_NETWORK, reorderProbability: 0.2, reorderDelayMsMax: 60 };
    default:
      return { ...CALM_NETWORK, delayMsMin: 2, delayMsMax: pick(prng, [15, 40]) };
  }
}
