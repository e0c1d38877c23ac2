/**
 * fast-check parameters shared by the property tests, so any run can be replayed or widened
 * from the command line:
 *   RAFTMQ_FC_RUNS=5000 npm test            more runs
 *   RAFTMQ_FC_SEED=123 RAFTMQ_FC_PATH=45:2  replay the counterexample fast-check printed
 */
import type fc from 'fast-check';

export function fcParams<T>(defaultRuns: number): fc.Parameters<T> {
  const env = process.env;
  const params: fc.Parameters<T> = {
    numRuns: Number(env.RAFTMQ_FC_RUNS ?? defaultRuns),
    // A run that hangs fails with its counterexample instead of stalling the suite.
    timeout: Number(env.RAFTMQ_FC_TIMEOUT_MS ?? 20_000),
  };
  if (env.RAFTMQ_FC_SEED !== undefined) params.seed = Number(env.RAFTMQ_FC_SEED);
  if (env.RAFTMQ_FC_PATH !== undefined) params.path = env.RAFTMQ_FC_PATH;
  return params;
}
