/**
 * Makes sure a broker's data directory is usable before its stores open it: it exists as a
 * directory, or each missing level can be made one at a time. Node's recursive `mkdir` never
 * returns for some impossible paths (under `/proc`, it retries the parent forever), so the
 * stores' own recursive mkdir must only ever find the directory there.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RaftmqError } from '../common/errors';

/** Path levels looked at, at most (a deeper path is refused, not walked). */
const DATA_DIR_DEPTH_MAX = 64;

/**
 * Creates `dir` (and missing parents, one level at a time) unless it is a directory already,
 * and checks it can be written. Throws INVALID_OPTION naming `option` and the path at fault.
 */
export function prepareDataDir(dir: string, option: string): void {
  const fail = (message: string, cause?: unknown): never => {
    throw new RaftmqError('INVALID_OPTION', `${option}: ${message}`, {
      cause,
      details: { option, dir },
    });
  };
  const target = path.resolve(dir);
  const missing: string[] = [];
  let level = target;
  for (;;) {
    if (missing.length >= DATA_DIR_DEPTH_MAX) fail(`${target} is more than 64 levels deep`);
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(level);
    } catch (err) {
      // ENOTDIR: a level above is a file, which the walk up then names.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') {
        fail(`cannot examine ${level}: ${String(err)}`, err);
      }
    }
    if (stat !== undefined) {
      if (!stat.isDirectory()) fail(`${level} exists and is not a directory`);
      break;
    }
    missing.unshift(level);
    const parent = path.dirname(level);
    if (parent === level) fail(`no part of ${target} exists`);
    level = parent;
  }
  for (const sub of missing) {
    try {
      fs.mkdirSync(sub); // not recursive: see the file comment
    } catch (err) {
      fail(`cannot create ${sub}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err);
    }
  }
  try {
    fs.accessSync(target, fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    fail(`${target} is not writable: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err);
  }
}
