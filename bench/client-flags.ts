/**
 * The load-generating process of a benchmark runs with the V8 flags of the servers
 * (`SERVER_NODE_FLAGS`, src/cli/node-flags.ts), for the same reason: it moves tens of MB of
 * Buffers a second, which V8 counts against the old generation's limit, and with its small heap
 * the batched producer ran a full mark-compact about eight times a second (92 in a run,
 * `--trace-gc`), a third of its CPU. docs/client-protocol.md recommends the flag to any
 * application that sends or receives at such rates. A V8 heap flag must be given on the command
 * line, so the benchmark starts itself again with it when it is missing.
 */
import { spawn } from 'node:child_process';
import { SERVER_NODE_FLAGS } from '../src/cli/node-flags';

/** Signals passed on to the child: it owns the servers it started and must stop them. */
const FORWARDED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Resolves true when this process already has the flags: the caller then runs the benchmark.
 * Otherwise runs this script again as a child with them (same arguments, output and
 * environment; an inspector flag is not passed on, as the child could not bind the parent's
 * port), passes it the signals this process gets, and ends this process the way the child ended:
 * with its exit status, or by the signal that ended it. That promise never resolves.
 */
export function ensureClientFlags(): Promise<true> {
  const missing = SERVER_NODE_FLAGS.filter((flag) => !process.execArgv.includes(flag));
  if (missing.length === 0) return Promise.resolve(true);
  const script = process.argv[1];
  if (script === undefined) throw new Error('ensureClientFlags: no script path in argv');
  const inherited = process.execArgv.filter((flag) => !flag.startsWith('--inspect'));
  const child = spawn(
    process.execPath,
    [...inherited, ...missing, script, ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  for (const signal of FORWARDED) process.on(signal, forward);
  return new Promise<true>(() => {
    child.once('error', (err) => {
      console.error(`could not start the benchmark with ${missing.join(' ')}: ${err.message}`);
      process.exit(1);
    });
    child.once('exit', (code, signal) => {
      for (const s of FORWARDED) process.off(s, forward);
      if (signal === null) process.exit(code ?? 1);
      // Ends this process by the same signal (its default action), or, if that does not end
      // it, with a failure status once nothing is left to run.
      process.exitCode = 1;
      process.kill(process.pid, signal);
    });
  });
}

/**
 * Runs a benchmark's `main` in a process with the flags ({@link ensureClientFlags}), then ends
 * the process: 0 when `main` resolved, 1 (the error printed) when it failed. The benchmarks end
 * by `process.exit` because clients they used can leave handles open (see each caller); stdout to
 * a file or pipe is written synchronously on Linux, so nothing printed is lost.
 */
export function runWithClientFlags(main: () => Promise<unknown>): void {
  void ensureClientFlags()
    .then(main)
    .then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
}
