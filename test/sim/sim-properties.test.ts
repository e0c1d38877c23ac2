/*
 * Properties of whole simulated groups. fast-check draws a fresh seed per run; the seed alone
 * decides the fault rates, every fault (delay, loss, duplication, reordering, partitions, one-way
 * cuts, crashes losing unsynced writes, pauses) and the client load. During the faults the
 * cluster checks at most one leader per term, Log Matching, Leader Completeness, that no two
 * nodes apply different entries at one index, that every acknowledged proposal is the entry
 * applied at its index, and that reads cover acknowledged writes. After healing, a leader must
 * commit a fresh proposal and every node must apply every acknowledged proposal within a bound.
 * A failure prints the seed and the command that replays the run. Widen with RAFTMQ_FC_RUNS.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { formatResult } from '../../src/sim/sim-cli';
import {
  DEFAULT_HEAL_TICKS_MAX,
  replayCommand,
  runScenario,
  type ScenarioResult,
} from '../../src/sim/sim-scenario';
import { fcParams } from '../fc-params';

const FAULT_TICKS = 1500;

/** Asserts a run was clean; otherwise prints its report and the replay command. */
function expectClean(result: ScenarioResult, nodeCount: number): void {
  if (result.ok) return;
  const replay = replayCommand(result.seed, nodeCount, FAULT_TICKS);
  console.error(`${formatResult(result)}\nreplay: ${replay}`);
  assert.fail(`simulation seed ${result.seed} violated a property; replay: ${replay}`);
}

const seeds = fc.noShrink(fc.integer({ min: 0, max: 2 ** 32 - 1 }));

describe('simulation properties', () => {
  for (const [nodeCount, runs] of [
    [3, 10],
    [5, 3],
  ] as const) {
    it(`${nodeCount} nodes: safe under faults, live after healing`, async () => {
      await fc.assert(
        fc.asyncProperty(seeds, async (seed) => {
          const result = await runScenario({
            seed,
            nodeCount,
            faultTicks: FAULT_TICKS,
            healTicksMax: DEFAULT_HEAL_TICKS_MAX,
          });
          expectClean(result, nodeCount);
          // The bound is the property; this keeps the run honest about having done work.
          assert.ok(result.healTicks !== null && result.healTicks <= DEFAULT_HEAL_TICKS_MAX);
        }),
        fcParams(runs),
      );
    });
  }
});

describe('simulation determinism', () => {
  it('replays a seed exactly: same trace, same outcome', async () => {
    await fc.assert(
      fc.asyncProperty(seeds, async (seed) => {
        const options = {
          seed,
          nodeCount: 3,
          faultTicks: 600,
          healTicksMax: DEFAULT_HEAL_TICKS_MAX,
        };
        const first = await runScenario(options);
        const second = await runScenario(options);
        assert.equal(second.traceDigest, first.traceDigest, `seed ${seed} did not replay`);
        assert.deepEqual({ ...second.stats, wallMs: 0 }, { ...first.stats, wallMs: 0 });
        const other = await runScenario({ ...options, seed: (seed + 1) % 2 ** 32 });
        assert.notEqual(other.traceDigest, first.traceDigest, 'different seeds, same trace');
      }),
      fcParams(2),
    );
  });
});
