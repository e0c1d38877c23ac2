/*
 * Properties of whole simulated groups. fast-check draws a fresh seed per run; the seed alone
 * decides the Raft settings, the disk's sync latency, the fault rates, every fault (delay, loss,
 * duplication, reordering, partitions, one-way cuts, crashes losing unsynced writes, some aimed
 * right after a promise or a truncation, pauses) and the client load (sim-draws.ts). During the
 * faults the cluster checks at most one leader per term, Log Matching and Leader Completeness on
 * entry contents (record checksums, against every entry known committed), that no two nodes
 * apply different entries at one index, that every acknowledged proposal is the entry applied
 * at its index, that reads cover acknowledged writes, and rules whose breaking those checks see
 * only by luck: what a crashed node promised (votes, acknowledged entries) survived, committed
 * entries are durable on a majority, leaders commit only their own term's entries, one vote per
 * term, no same-term suffix cut, no term rise and no leader left on a minority side. After
 * healing, a leader must commit a fresh proposal and every node must apply every acknowledged
 * proposal within a bound, and the leader must then keep its term.
 *
 * A run is bounded by simulated ticks and events (a message storm is a violation), not by wall
 * time: fast-check gets no timeout, and mocha's is generous per run. Any failure, a violation,
 * an exception or mocha's timeout, prints the seed and the command that replays the run. Across
 * the runs of a property, crashes, partitions, pauses, network changes and acknowledged
 * proposals must all have happened, so a fault injector or a client that silently does nothing
 * fails it. Widen with RAFTMQ_FC_RUNS.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { formatResult } from '../../src/sim/sim-cli';
import {
  DEFAULT_HEAL_TICKS_MAX,
  replayCommand,
  runScenario,
  type ScenarioOptions,
  type ScenarioResult,
} from '../../src/sim/sim-scenario';
import { fcParams } from '../fc-params';

const FAULT_TICKS = 1500;
/**
 * Wall-clock milliseconds a run may take before mocha gives up, by group size: about ten times
 * what a run takes on a loaded 2-core machine (3 nodes: 0.6 to 1.5 s; 5 nodes: 1.5 to 4 s).
 */
const RUN_MS_MAX: Readonly<Record<number, number>> = { 3: 15_000, 5: 40_000 };

/**
 * What must have happened across a property's runs, each with the fewest runs for which an
 * injector that works misses it with a chance below 1e-5 (from the rates in sim-draws.ts, a
 * run has no pause with a chance of about 7%, no crash 2%, no partition 0.4%, no network
 * change 0.03%). Acknowledged proposals: every run acknowledges hundreds.
 */
const REQUIRED_ACROSS_RUNS: ReadonlyArray<readonly [stat: string, runsMin: number]> = [
  ['crashes', 3],
  ['partitions', 3],
  ['pauses', 5],
  ['networkChanges', 2],
  ['acked', 1],
  ['reads', 1],
];

/** The run in progress, named when mocha times the test out. */
let running: ScenarioOptions | undefined;

function replayOf(options: ScenarioOptions): string {
  return replayCommand(options.seed, options.nodeCount, options.faultTicks);
}

/**
 * Runs one scenario; a violation or an exception fails with the seed and the replay command
 * (printed as well, since fast-check reports only its own seed).
 */
async function runChecked(options: ScenarioOptions): Promise<ScenarioResult> {
  running = options;
  let result: ScenarioResult;
  try {
    result = await runScenario(options);
  } catch (err) {
    const replay = replayOf(options);
    console.error(`simulation seed ${options.seed} threw: ${String(err)}\nreplay: ${replay}`);
    throw new Error(`simulation seed ${options.seed} threw; replay: ${replay}`, { cause: err });
  } finally {
    running = undefined;
  }
  if (!result.ok) {
    const replay = replayOf(options);
    console.error(`${formatResult(result)}\nreplay: ${replay}`);
    assert.fail(`simulation seed ${options.seed} violated a property; replay: ${replay}`);
  }
  return result;
}

function stat(result: ScenarioResult, name: string): number {
  const value = result.stats[name];
  assert.equal(typeof value, 'number', `stat ${name}`);
  return value as number;
}

const seeds = fc.noShrink(fc.integer({ min: 0, max: 2 ** 32 - 1 }));

describe('simulation properties', () => {
  afterEach(function () {
    if (this.currentTest?.state === 'failed' && running !== undefined) {
      console.error(`the run in progress had seed ${running.seed}; replay: ${replayOf(running)}`);
    }
    running = undefined;
  });

  for (const [nodeCount, defaultRuns] of [
    [3, 10],
    [5, 3],
  ] as const) {
    const params = fcParams<[number]>(defaultRuns, { runTimeoutMs: null });
    const runs = params.numRuns ?? defaultRuns;
    const runMsMax = RUN_MS_MAX[nodeCount] ?? 40_000;

    it(`${nodeCount} nodes: safe under faults, live after healing`, async function () {
      this.timeout(runs * runMsMax);
      const totals = new Map<string, number>();
      let runsDone = 0;
      await fc.assert(
        fc.asyncProperty(seeds, async (seed) => {
          const result = await runChecked({
            seed,
            nodeCount,
            faultTicks: FAULT_TICKS,
            healTicksMax: DEFAULT_HEAL_TICKS_MAX,
          });
          runsDone += 1;
          for (const [name] of REQUIRED_ACROSS_RUNS) {
            totals.set(name, (totals.get(name) ?? 0) + stat(result, name));
          }
        }),
        params,
      );
      // A replayed counterexample (RAFTMQ_FC_PATH) is one run: too few to expect every fault.
      for (const [name, runsMin] of REQUIRED_ACROSS_RUNS) {
        if (params.path !== undefined || runsDone < runsMin) continue;
        assert.ok((totals.get(name) ?? 0) > 0, `no ${name} in ${runsDone} runs`);
      }
    });
  }
});

describe('simulation determinism', () => {
  afterEach(function () {
    if (this.currentTest?.state === 'failed' && running !== undefined) {
      console.error(`the run in progress had seed ${running.seed}; replay: ${replayOf(running)}`);
    }
    running = undefined;
  });

  const params = fcParams<[number]>(2, { runTimeoutMs: null });

  it('replays a seed exactly: same trace, same outcome', async function () {
    // Three runs of 600 ticks per seed: under a third of a 1500-tick run each.
    this.timeout((params.numRuns ?? 2) * (RUN_MS_MAX[3] ?? 15_000));
    await fc.assert(
      fc.asyncProperty(seeds, async (seed) => {
        const options = {
          seed,
          nodeCount: 3,
          faultTicks: 600,
          healTicksMax: DEFAULT_HEAL_TICKS_MAX,
        };
        const first = await runChecked(options);
        const second = await runChecked(options);
        const replay = replayOf(options);
        assert.equal(
          second.traceDigest,
          first.traceDigest,
          `seed ${seed} did not replay: ${replay}`,
        );
        assert.deepEqual({ ...second.stats, wallMs: 0 }, { ...first.stats, wallMs: 0 }, replay);
        const other = await runChecked({ ...options, seed: (seed + 1) % 2 ** 32 });
        assert.notEqual(other.traceDigest, first.traceDigest, 'different seeds, same trace');
      }),
      params,
    );
  });
});
