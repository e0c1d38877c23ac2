/**
 * `npm run sim -- --seed N [--ticks N] [--nodes 3|5] [--trace]`: runs one seeded simulation
 * (faults, then healing), checks every property, prints a summary table and any violations with
 * the trace that led to the first one, and exits 1 on a violation. The same arguments replay the
 * same run exactly; `--trace` prints every event as it happens.
 */
import { createPrng } from '../common/prng';
import {
  DEFAULT_HEAL_TICKS_MAX,
  replayCommand,
  runScenario,
  type ScenarioResult,
} from './sim-scenario';

const USAGE = 'usage: npm run sim -- --seed N [--ticks N] [--nodes 3|5] [--trace]';

/** The parsed command line. */
export interface SimArgs {
  readonly seed: number;
  readonly faultTicks: number;
  readonly nodeCount: number;
  readonly trace: boolean;
}

function integerArg(name: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value);
  if (value === undefined || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new RangeError(`${name} needs an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return n;
}

/** Parses `argv` (without node and the script); throws RangeError with a readable message. */
export function parseSimArgs(argv: readonly string[]): SimArgs {
  let seed: number | undefined;
  let faultTicks = 2000;
  let nodeCount = 3;
  let trace = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case '--seed':
        seed = integerArg(arg, argv[++i], 0, 2 ** 32 - 1);
        break;
      case '--ticks':
        faultTicks = integerArg(arg, argv[++i], 0, 10_000_000);
        break;
      case '--nodes':
        nodeCount = integerArg(arg, argv[++i], 3, 5);
        if (nodeCount !== 3 && nodeCount !== 5) throw new RangeError('--nodes must be 3 or 5');
        break;
      case '--trace':
        trace = true;
        break;
      default:
        throw new RangeError(`unknown argument ${String(arg)}`);
    }
  }
  // Without a seed, pick one (and print it, so the run can be replayed).
  seed ??= createPrng(Date.now()).nextU32();
  return { seed, faultTicks, nodeCount, trace };
}

/** The summary table of a run. */
export function formatResult(result: ScenarioResult): string {
  const rows = Object.entries(result.stats);
  const width = Math.max(...rows.map(([key]) => key.length));
  const lines = rows.map(([key, value]) => `  ${key.padEnd(width)}  ${String(value)}`);
  lines.unshift(
    `seed ${result.seed}: ${result.ok ? 'ok' : `${result.violationCount} violation(s)`}` +
      `  trace ${result.traceDigest}`,
  );
  if (!result.ok) {
    lines.push('violations:', ...result.violations.map((v) => `  ${v}`));
    lines.push('trace before the first violation:', ...result.traceBeforeViolation);
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  let args: SimArgs;
  try {
    args = parseSimArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${USAGE}\n`);
    return 2;
  }
  const result = await runScenario({
    seed: args.seed,
    nodeCount: args.nodeCount,
    faultTicks: args.faultTicks,
    healTicksMax: DEFAULT_HEAL_TICKS_MAX,
    ...(args.trace ? { traceSink: (line: string) => process.stdout.write(`${line}\n`) } : {}),
  });
  process.stdout.write(`${formatResult(result)}\n`);
  if (!result.ok) {
    process.stdout.write(`replay: ${replayCommand(args.seed, args.nodeCount, args.faultTicks)}\n`);
  }
  return result.ok ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`sim crashed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = 3;
    },
  );
}
