/**
 * An exclusive lock on a directory for one process: the file `<dir>/.lock` holding its pid.
 * Two `npm start` in one directory both rewrote `conf/`, and the second's children ran on
 * whatever ports the first had written (it then failed with a false "timed out waiting for a
 * leader"); the second launcher now stops before touching anything.
 *
 * The file appears with its pid already in it: it is written under a name of its own, then
 * hard-linked to `.lock`, which fails if `.lock` exists (as an `O_EXCL` create does, without a
 * moment where the file exists empty). A lock whose pid no longer runs (the holder was killed
 * with -9) is stale and taken over.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RaftmqError } from '../common/errors';

/** Attempts to take the lock when stale ones keep being found (another process races us). */
const ACQUIRE_ATTEMPTS_MAX = 3;

/** The lock file's name inside the directory. */
export const DIR_LOCK_FILE = '.lock';

/** Whether a process with this pid runs (EPERM: it does, as another user's). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid a lock file holds; undefined when the file is gone or holds none. */
function readHolder(file: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** A held lock on a directory; see the file comment. */
export class DirLock {
  private released = false;

  private constructor(
    readonly file: string,
    readonly pid: number,
  ) {}

  /**
   * Takes the lock on `dir` (which must exist) for this process. Throws INVALID_ARGUMENT
   * `another <holderName> (pid N) runs in <dir>` while a live process holds it.
   */
  static acquire(dir: string, holderName: string): DirLock {
    const file = path.join(dir, DIR_LOCK_FILE);
    const own = path.join(dir, `${DIR_LOCK_FILE}.${process.pid}`);
    fs.writeFileSync(own, `${process.pid}\n`);
    try {
      for (let attempt = 0; attempt < ACQUIRE_ATTEMPTS_MAX; attempt++) {
        try {
          fs.linkSync(own, file);
          return new DirLock(file, process.pid);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        const holder = readHolder(file);
        if (holder !== undefined && holder !== process.pid && pidAlive(holder)) {
          throw new RaftmqError(
            'INVALID_ARGUMENT',
            `another ${holderName} (pid ${holder}) runs in ${dir}`,
            {
              details: { dir, pid: holder },
            },
          );
        }
        // Stale (or unreadable): move it aside under our name, so that of two processes taking
        // it over only one removes it; then try again.
        const aside = `${own}.stale`;
        try {
          fs.renameSync(file, aside);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          continue; // someone else moved it first
        }
        const moved = readHolder(aside);
        if (moved !== holder) {
          // Between our read and the move another process took the lock: give it back (if a
          // third took it meanwhile, that one holds it and this one's holder will see so).
          try {
            fs.linkSync(aside, file);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          }
        }
        fs.rmSync(aside, { force: true });
      }
      throw new RaftmqError('INVALID_ARGUMENT', `cannot take ${file}: others keep taking it`, {
        details: { dir },
      });
    } finally {
      fs.rmSync(own, { force: true });
    }
  }

  /** Removes the lock file if it still holds this process's pid. Idempotent; never throws. */
  release(): void {
    if (this.released) return;
    this.released = true;
    try {
      if (readHolder(this.file) === this.pid) fs.rmSync(this.file, { force: true });
    } catch {
      // Going on is safe: a lock left behind names a pid that no longer runs, and is taken over.
    }
  }
}
