/**
 * fast-check parameters shared by the property tests, so any run can be replayed or widened
 * from the command line:
 *   RAFTMQ_FC_RUNS=5000 npm test            more runs
 *   RAFTMQ_FC_SEED=123 RAFTMQ_FC_PATH=45:2  replay the counterexample fast-check printed
 *   RAFTMQ_FC_TIMEOUT_MS=60000              wall-clock limit per run, for every property
 */
import type fc from 'fast-check';

/** Options of {@link fcParams}. */
export interface FcParamsOptions {
  /**
   * Wall-clock limit per run (fast-check's `timeout`, for async properties): a run that hangs
   * fails with its counterexample instead of stalling the suite. `null` for none, for
   * properties bounded by a budget of their own (the simulation's ticks and events), whose
   * runs must not fail only because the machine is slow. Default 20 s.
   */
  readonly runTimeoutMs?: number | null;
}

export function fcParams<T>(defaultRuns: number, options: FcParamsOptions = {}): fc.Parameters<T> {
  const env = process.env;
  const params: fc.Parameters<T> = { numRuns: Number(env.RAFTMQ_FC_RUNS ?? defaultRuns) };
  const runTimeoutMs =
    env.RAFTMQ_FC_TIMEOUT_MS !== undefined
      ? Number(env.RAFTMQ_FC_TIMEOUT_MS)
      : options.runTimeoutMs === undefined
        ? 20_000
        : options.runTimeoutMs;
  if (runTimeoutMs !== null) params.timeout = runTimeoutMs;
  if (env.RAFTMQ_FC_SEED !== undefined) params.seed = Number(env.RAFTMQ_FC_SEED);
  if (env.RAFTMQ_FC_PATH !== undefined) params.path = env.RAFTMQ_FC_PATH;
  return params;
}
