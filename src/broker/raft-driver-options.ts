/**
 * Options of the Raft driver (the Raft tunables themselves are resolved by the core), with
 * frozen defaults and a resolver that names the offending field.
 */
import { intInRange, resolveOptions, type OptionSpec } from '../common/options';

/** The driver's own tunables. */
export interface RaftDriverOptions {
  /** Real milliseconds per Raft tick (election timeout and heartbeats are counted in ticks). */
  readonly tickIntervalMs: number;
  /** A proposal not committed and applied within this long is failed with TIMEOUT. */
  readonly proposeTimeoutMs: number;
  /** A read not served within this long is failed with TIMEOUT. */
  readonly readIndexTimeoutMs: number;
  /** Proposals waiting for commit, at most; more are refused with BUSY. */
  readonly proposeWaitersMax: number;
  /** Reads waiting for confirmation or apply, at most; more are refused with BUSY. */
  readonly readWaitersMax: number;
}

/** Defaults for every driver option. */
export const RAFT_DRIVER_DEFAULTS: Readonly<RaftDriverOptions> = Object.freeze({
  tickIntervalMs: 50,
  proposeTimeoutMs: 10_000,
  readIndexTimeoutMs: 10_000,
  proposeWaitersMax: 100_000,
  readWaitersMax: 4096,
});

const SPEC: OptionSpec<RaftDriverOptions> = {
  tickIntervalMs: intInRange(1, 60_000),
  proposeTimeoutMs: intInRange(1, 3_600_000),
  readIndexTimeoutMs: intInRange(1, 3_600_000),
  proposeWaitersMax: intInRange(1, 10_000_000),
  readWaitersMax: intInRange(1, 10_000_000),
};

/** Checks and freezes driver options; throws INVALID_OPTION naming the field. */
export function resolveRaftDriverOptions(
  input?: Partial<RaftDriverOptions>,
): Readonly<RaftDriverOptions> {
  return resolveOptions('raftDriver', RAFT_DRIVER_DEFAULTS, SPEC, input);
}
