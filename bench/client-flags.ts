/**
 * The load-generating process of a benchmark runs with the V8 flags of the servers
 * (`SERVER_NODE_FLAGS`, src/cli/node-flags.ts), for the same reason: it moves tens of MB of
 * Buffers a second, which V8 counts against the old generation's limit, and with its small heap
 * the batched producer ran a full mark-compact about eight times a second (92 in a run,
 * `--trace-gc`), a third of its CPU. docs/client.md recommends the flag to any application
 * that sends or receives at such rates. A V8 heap flag must be given on the command line, so
 * the benchmark starts itself again with it when it is missing.
 */
import { spawnSync } from 'node:child_process';
import { SERVER_NODE_FLAGS } from '../src/cli/node-flags';

/**
 * True when this process already has the flags. Otherwise runs this script again as a child
 * with them (same arguments, output and environment), ends this process with the child's exit
 * status, and does not return.
 */
export function ensureClientFlags(): true {
  const missing = SERVER_NODE_FLAGS.filter((flag) => !process.execArgv.includes(flag));
  if (missing.length === 0) return true;
  const script = process.argv[1];
  if (script === undefined) throw new Error('ensureClientFlags: no script path in argv');
  const child = spawnSync(
    process.execPath,
    [...process.execArgv, ...missing, script, ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  if (child.error !== undefined) throw child.error;
  process.exit(child.status ?? 1);
}
