/**
 * Command-line flags shared by the benchmarks: `--quick`, `--dir PATH` and `--flag VALUE`
 * options read from this process's arguments.
 */
import * as path from 'node:path';

const args = process.argv.slice(2);

/** True when `flag` was given. */
export function hasFlag(flag: string): boolean {
  return args.includes(flag);
}

/** The value after `flag`, or undefined when the flag is absent (or last). */
export function argAfter(flag: string): string | undefined {
  return args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined;
}

/** A whole number after `flag` in [min, max]; the default when the flag is absent. */
export function intArg(flag: string, fallback: number, min: number, max: number): number {
  if (!args.includes(flag)) return fallback;
  const text = argAfter(flag);
  const n = Number(text);
  if (text === undefined || text === '' || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(
      `${flag} takes a whole number from ${min} to ${max} (got ${text ?? 'nothing'})`,
    );
  }
  return n;
}

/**
 * `--page-cache-keep-bytes N`: the nodes' CommitLog `pageCacheKeepBytes` (-1 releases nothing,
 * to compare with the default); undefined when absent (the nodes' default).
 */
export function pageCacheKeepArg(): number | undefined {
  const flag = '--page-cache-keep-bytes';
  return hasFlag(flag) ? intArg(flag, -1, -1, Number.MAX_SAFE_INTEGER) : undefined;
}

/** Where a benchmark keeps its data: `<--dir or ./.bench-tmp>/<name>`. */
export function benchRoot(name: string): string {
  return path.join(argAfter('--dir') ?? path.join(process.cwd(), '.bench-tmp'), name);
}
