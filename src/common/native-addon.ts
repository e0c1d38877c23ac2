/**
 * Loads one of raftmq's native addons (`native/*.c`, which native/build.js compiles into
 * `dist/native/`), checking that it exports the functions its caller needs. Every addon is
 * optional: without a C compiler at build time, off Linux or with `RAFTMQ_NATIVE=off` it is not
 * there, and its caller falls back (to an npm package, to `node:fs`, or to doing without) and
 * can say why from `reason`.
 */
import * as path from 'node:path';

export interface LoadedAddon<T> {
  /** The addon, when it loaded and exports every function asked for. */
  readonly addon?: T;
  /** Why it is not there, otherwise. */
  readonly reason?: string;
}

/** Loads `dist/native/<name>.node`, which must export each of `functions`. */
export function loadNativeAddon<T>(name: string, functions: readonly string[]): LoadedAddon<T> {
  // Relative to this module in dist/src/common/.
  const file = path.join(__dirname, '..', '..', 'native', `${name}.node`);
  try {
    // A native addon can only be loaded by require.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const exported = require(file) as Record<string, unknown>;
    const missing = functions.filter((f) => typeof exported[f] !== 'function');
    if (missing.length === 0) return { addon: exported as T };
    return { reason: `${file} exports no ${missing.join(', ')}` };
  } catch (err) {
    return { reason: err instanceof Error ? err.message : String(err) };
  }
}
