/**
 * {@link MetaStore} over LevelDB (the `level` package). One store batch is one LevelDB write
 * batch, so it is atomic; `sync: true` makes LevelDB fsync its log before the promise resolves,
 * which is how Raft's term and vote become durable before a vote reply depends on them.
 *
 * Failures: opening (a locked directory, an IO error, corruption) and every failed write become
 * `STORE_FATAL`; a failed read becomes `META_CORRUPT` (LevelDB found corruption) or `INTERNAL`.
 * After any fatal error the store refuses all further work: a metadata write that failed may
 * have left LevelDB in its own error state, and acting on a vote that was not saved is a safety
 * bug. Calls after `close()` reject with `STORE_CLOSED`; `close()` first lets the operations
 * already in flight finish.
 */
import { Level } from 'level';
import { assert } from '../common/assert';
import { ErrorCode, RaftmqError } from '../common/errors';
import { isWellFormed } from '../common/text';
import type { MetaBatchBuilder, MetaBatchOp, MetaScanOptions, MetaStore } from './meta';

/** How deep to follow `cause` chains when looking for LevelDB's error code. */
const CAUSE_DEPTH_MAX = 8;

/**
 * Keys must be well-formed UTF-16: a lone surrogate would be stored as U+FFFD and two different
 * keys would collide.
 */
function assertKey(key: string, what: string): void {
  assert(typeof key === 'string', `${what} must be a string`);
  assert(isWellFormed(key), () => `${what} ${JSON.stringify(key)} has a lone surrogate`);
}

/**
 * The smallest byte string greater than every byte string that starts with `prefix`, or
 * undefined when there is none (empty prefix, or all bytes 0xff). LevelDB orders keys by their
 * bytes, so `prefix + '\uffff'` would be wrong: astral characters encode as F0.. and sort after
 * EF BF BF.
 */
export function prefixUpperBound(prefix: Uint8Array): Buffer | undefined {
  for (let i = prefix.byteLength - 1; i >= 0; i--) {
    const byte = prefix[i];
    assert(byte !== undefined, 'index within bounds');
    if (byte !== 0xff) {
      const bound = Buffer.from(prefix.subarray(0, i + 1));
      bound[i] = byte + 1;
      return bound;
    }
  }
  return undefined;
}

/** The `code` fields along an error's cause chain (LevelDB nests LEVEL_LOCKED in a cause). */
function levelCodes(err: unknown): string[] {
  const codes: string[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < CAUSE_DEPTH_MAX && current instanceof Error; depth++) {
    const code = (current as Error & { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    current = current.cause;
  }
  return codes;
}

/** A LevelDB-backed {@link MetaStore}. Create with {@link LevelMetaStore.open}. */
export class LevelMetaStore implements MetaStore {
  private closed = false;
  /** The first fatal error; once set, every call rejects. */
  private fatal: RaftmqError | undefined;
  private readonly inflight = new Set<Promise<unknown>>();

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    /** The directory holding the database. */
    readonly dir: string,
  ) {}

  /**
   * Opens (creating if missing) the database in `dir`. Rejects with `STORE_FATAL` when the
   * directory is locked by another process or instance, corrupt or unreadable.
   */
  static async open(dir: string): Promise<LevelMetaStore> {
    const db = new Level<string, Uint8Array>(dir, {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
      createIfMissing: true,
      // The store is mostly the key index: small values under hex or name keys, written at
      // message rate. Snappy compression of its tables cost a third of LevelDB's CPU per put
      // (measured) and saves little on such data; files written before stay readable.
      compression: false,
    });
    try {
      await db.open();
    } catch (err) {
      const codes = levelCodes(err);
      const why = codes.includes('LEVEL_LOCKED') ? 'is locked by another process or instance'
        : 'could not be opened';
      throw new RaftmqError('STORE_FATAL', `metadata store in ${dir} ${why}`, {
        cause: err,
        details: { dir, levelCodes: codes },
      });
    }
    return new LevelMetaStore(db, dir);
  }

  get(key: string): Promise<Uint8Array | undefined> {
    assertKey(key, 'key');
    // abstract-level 2+ resolves undefined for a missing key.
    return this.track('get', { key }, (): Promise<Uint8Array | undefined> => this.db.get(key));
  }

  batch(ops: readonly MetaBatchOp[], options: { sync: boolean }): Promise<void> {
    assert(typeof options.sync === 'boolean', 'batch: options.sync must be a boolean');
    // Every op is checked before anything is handed to LevelDB, so a bad op writes nothing.
    for (const op of ops) {
      assertKey(op.key, 'batch key');
      if (op.type === 'put') {
        assert(op.value instanceof Uint8Array, () => `put of ${JSON.stringify(op.key)} needs a value`);
      } else {
        assert(op.type === 'del', () => `unknown batch op type ${String(op.type)}`);
      }
    }
    const details = { opCount: ops.length, sync: options.sync };
    return this.track('batch', details, () => this.writeBatch(ops, options.sync));
  }

  /**
   * One atomic LevelDB write through a chained batch. Measured (Node 20, 21-byte values): an
   * array batch costs 11-14 us of CPU per op, a chained batch 2-3 us, because abstract-level
   * clones every op of an array batch and the native side reads each op's properties through
   * N-API; a chained put hands key and value to the native WriteBatch at once (copying them,
   * so later changes to a value do not reach the store). Async, so a throw becomes a rejection.
   */
  private async writeBatch(ops: readonly MetaBatchOp[], sync: boolean): Promise<void> {
    if (ops.length === 0) return;
    const chain = this.db.batch();
    try {
      for (const op of ops) {
        if (op.type === 'put') chain.put(op.key, op.value as Uint8Array);
        else chain.del(op.key);
      }
    } catch (err) {
      // Nothing was written; the native batch is dropped and the caller gets the failure.
      await chain.close();
      throw err;
    }
    await chain.write({ sync });
  }

  batchWith(build: (batch: MetaBatchBuilder) => void, options: { sync: boolean }): Promise<void> {
    assert(typeof options.sync === 'boolean', 'batch: options.sync must be a boolean');
    const details = { sync: options.sync };
    if (this.closed || this.fatal !== undefined) return this.track('batch', details, async () => {});
    let chain: ReturnType<typeof this.db.batch>;
    try {
      chain = this.db.batch();
    } catch (err) {
      // LevelDB closed underneath (it failed): reported as a failed write, like `batch`.
      const error = err instanceof Error ? err : new Error(String(err));
      return this.track('batch', details, () => Promise.reject(error));
    }
    let opCount = 0;
    try {
      build({
        put(key, value) {
          assertKey(key, 'batch key');
          assert(value instanceof Uint8Array, () => `put of ${JSON.stringify(key)} needs a value`);
          chain.put(key, value);
          opCount++;
        },
        del(key) {
          assertKey(key, 'batch key');
          chain.del(key);
          opCount++;
        },
      });
    } catch (err) {
      // Nothing was written. Closing an unwritten batch only frees it, and the build error is
      // what the caller must see, so a failure to close is not reported over it.
      chain.close().catch(() => undefined);
      throw err;
    }
    const write = async (): Promise<void> => {
      if (opCount === 0) await chain.close();
      else await chain.write({ sync: options.sync });
    };
    return this.track('batch', { ...details, opCount }, write);
  }

  scan(prefix: string, options: MetaScanOptions = {}): Promise<Array<[string, Uint8Array]>> {
    assertKey(prefix, 'scan prefix');
    if (options.gte !== undefined) assertKey(options.gte, 'scan gte');
    const limit = options.limit;
    assert(limit === undefined || (Number.isSafeInteger(limit) && limit >= 0),
      () => `scan limit must be a non-negative integer, got ${String(limit)}`);
    return this.track('scan', { prefix }, async () => {
      if (limit === 0) return [];
      const prefixBytes = Buffer.from(prefix, 'utf8');
      let lower = prefixBytes;
      if (options.gte !== undefined) {
        const gteBytes = Buffer.from(options.gte, 'utf8');
        if (Buffer.compare(gteBytes, lower) > 0) lower = gteBytes;
      }
      const upper = prefixUpperBound(prefixBytes);
      if (upper !== undefined && Buffer.compare(lower, upper) >= 0) return [];
      const iterator = this.db.iterator<Buffer, Uint8Array>({
        keyEncoding: 'buffer',
        valueEncoding: 'view',
        ...(lower.byteLength > 0 ? { gte: lower } : {}),
        ...(upper !== undefined ? { lt: upper } : {}),
        limit: limit ?? -1,
      });
      // all() reads to the end of the bounded range and closes the iterator, also on failure.
      const entries = await iterator.all();
      return entries.map(([k, v]): [string, Uint8Array] => [k.toString('utf8'), v]);
    });
  }

  /** Waits for operations in flight, then closes LevelDB. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Each in-flight operation reports its own outcome to its caller; here we only wait.
    await Promise.allSettled([...this.inflight]);
    try {
      await this.db.close();
    } catch (err) {
      throw new RaftmqError('STORE_FATAL', `metadata store in ${this.dir} failed to close`, {
        cause: err,
        details: { dir: this.dir, levelCodes: levelCodes(err) },
      });
    }
  }

  /** Runs one LevelDB call: refuses when closed or failed, maps errors, tracks it for close. */
  private track<T>(
    op: 'get' | 'batch' | 'scan',
    details: Record<string, unknown>,
    run: () => Promise<T>,
  ): Promise<T> {
    if (this.closed) {
      return Promise.reject(new RaftmqError('STORE_CLOSED', `metadata store ${op} after close`, {
        details: { dir: this.dir, op },
      }));
    }
    if (this.fatal !== undefined) {
      return Promise.reject(new RaftmqError('STORE_FATAL',
        `metadata store ${op} refused: the store failed earlier`,
        { cause: this.fatal, details: { dir: this.dir, op } }));
    }
    const promise = run().catch((err: unknown) => {
      throw this.mapError(op, details, err);
    });
    this.inflight.add(promise);
    const forget = (): void => {
      this.inflight.delete(promise);
    };
    // The caller gets `promise` itself; this branch only does bookkeeping and swallows nothing.
    void promise.then(forget, forget);
    return promise;
  }

  private mapError(
    op: 'get' | 'batch' | 'scan',
    details: Record<string, unknown>,
    err: unknown,
  ): RaftmqError {
    const codes = levelCodes(err);
    const all = { ...details, dir: this.dir, op, levelCodes: codes };
    if (this.closed && codes.some((c) => c.endsWith('NOT_OPEN'))) {
      return new RaftmqError('STORE_CLOSED', `metadata store closed during ${op}`, {
        cause: err,
        details: all,
      });
    }
    let code: ErrorCode;
    if (op === 'batch') code = 'STORE_FATAL';
    else if (codes.includes('LEVEL_CORRUPTION')) code = 'META_CORRUPT';
    else code = 'INTERNAL';
    const error = new RaftmqError(code, `metadata store ${op} failed`, { cause: err, details: all });
    if (error.fatal && this.fatal === undefined) this.fatal = error;
    return error;
  }
}
