/**
 * An in-memory {@link MetaStore} for the simulator and tests, with LevelDB's behaviour where it
 * matters: batches are atomic, keys are ordered by their UTF-8 bytes, and a power loss keeps
 * only what a `sync: true` batch made durable. LevelDB appends every batch to one log, so a
 * synced batch makes every earlier batch durable too; unsynced batches sit in the page cache and
 * a power loss keeps some prefix of them (a torn log record fails its CRC and ends replay).
 *
 * Like `abstract-level`, an empty batch is a no-op: it is not a sync barrier.
 *
 * Failures are injected with {@link MemMetaStore.setHook}: the hook runs before each operation
 * takes effect and whatever it throws rejects that operation (a non-RaftmqError is wrapped as
 * LevelMetaStore would: `STORE_FATAL` for a batch, `INTERNAL` for a read). As in
 * LevelMetaStore, after a fatal error the store refuses all work until {@link MemMetaStore.crash}
 * (a restart).
 */
import { assert, unreachable } from '../common/assert';
import { RaftmqError } from '../common/errors';
import type { Prng } from '../common/prng';
import type { MetaBatchBuilder, MetaBatchOp, MetaScanOptions, MetaStore } from './meta';

/** What survives {@link MemMetaStore.crash}. */
export type MemCrashMode =
  /** A process crash: the OS keeps every write. */
  | 'keep'
  /** A power loss that keeps exactly the state as of the last synced batch. */
  | 'lose'
  /** A power loss that keeps the synced state and a random prefix of the unsynced batches. */
  | 'tear';

/** The operations a hook sees. */
export type MemMetaOp = 'get' | 'batch' | 'scan';

/** Runs before each operation; throw to make that operation fail. */
export type MemMetaHook = (op: MemMetaOp) => void;

/** A batch op as stored: `value` undefined means delete. */
interface StoredOp {
  readonly key: string;
  readonly value: Uint8Array | undefined;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Keys must be well-formed UTF-16, as LevelDB would otherwise store U+FFFD for a lone half. */
function assertKey(key: string, what: string): void {
  assert(typeof key === 'string', `${what} must be a string`);
  assert(!LONE_SURROGATE.test(key), () => `${what} ${JSON.stringify(key)} has a lone surrogate`);
}

/**
 * Maps a UTF-16 code unit so that unit order equals code point order: surrogates (which encode
 * code points >= 0x10000) move above 0xE000..0xFFFF.
 */
function unitRank(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800;
}

/**
 * Compares two well-formed strings by their UTF-8 bytes, which is LevelDB's key order (and code
 * point order). JavaScript's `<` compares UTF-16 units and puts U+FFFF after U+1F600.
 * Returns a negative number, zero or a positive number.
 */
export function compareUtf8(a: string, b: string): number {
  const common = Math.min(a.length, b.length);
  for (let i = 0; i < common; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return unitRank(x) - unitRank(y);
  }
  return a.length - b.length;
}

/** An in-memory {@link MetaStore} with LevelDB's durability model. */
export class MemMetaStore implements MetaStore {
  /** The visible state. */
  private readonly values = new Map<string, Uint8Array>();
  /** The keys of `values` in {@link compareUtf8} order. */
  private sortedKeys: string[] = [];
  /** The state as of the last synced batch. */
  private readonly durable = new Map<string, Uint8Array>();
  /** Batches applied to `values` but not yet to `durable`, oldest first. */
  private unsynced: Array<readonly StoredOp[]> = [];
  private closed = false;
  private fatal: RaftmqError | undefined;
  private hook: MemMetaHook | undefined;

  /** Installs (or with undefined removes) the failure-injection hook. */
  setHook(hook: MemMetaHook | undefined): void {
    this.hook = hook;
  }

  /** How many batches a power loss could still lose. */
  get unsyncedBatchCount(): number {
    return this.unsynced.length;
  }

  get(key: string): Promise<Uint8Array | undefined> {
    assertKey(key, 'key');
    return this.run('get', () => {
      const value = this.values.get(key);
      return value === undefined ? undefined : Uint8Array.from(value);
    });
  }

  batch(ops: readonly MetaBatchOp[], options: { sync: boolean }): Promise<void> {
    assert(typeof options.sync === 'boolean', 'batch: options.sync must be a boolean');
    const stored = ops.map((op): StoredOp => {
      assertKey(op.key, 'batch key');
      if (op.type === 'put') {
        assert(op.value instanceof Uint8Array, () => `put of ${JSON.stringify(op.key)} needs a value`);
        return { key: op.key, value: Uint8Array.from(op.value) };
      }
      assert(op.type === 'del', () => `unknown batch op type ${String(op.type)}`);
      return { key: op.key, value: undefined };
    });
    return this.run('batch', () => {
      if (stored.length === 0) return;
      for (const op of stored) this.applyVisible(op);
      this.unsynced.push(stored);
      if (options.sync) this.syncAll();
    });
  }

  batchWith(build: (batch: MetaBatchBuilder) => void, options: { sync: boolean }): Promise<void> {
    const ops: MetaBatchOp[] = [];
    build({
      put: (key, value) => {
        assert(value instanceof Uint8Array, () => `put of ${JSON.stringify(key)} needs a value`);
        ops.push({ type: 'put', key, value: Uint8Array.from(value) });
      },
      del: (key) => {
        ops.push({ type: 'del', key });
      },
    });
    return this.batch(ops, options);
  }

  scan(prefix: string, options: MetaScanOptions = {}): Promise<Array<[string, Uint8Array]>> {
    assertKey(prefix, 'scan prefix');
    if (options.gte !== undefined) assertKey(options.gte, 'scan gte');
    const limit = options.limit;
    assert(limit === undefined || (Number.isSafeInteger(limit) && limit >= 0),
      () => `scan limit must be a non-negative integer, got ${String(limit)}`);
    return this.run('scan', () => {
      const gte = options.gte;
      const start = gte !== undefined && compareUtf8(gte, prefix) > 0 ? gte : prefix;
      const out: Array<[string, Uint8Array]> = [];
      const countMax = limit ?? this.sortedKeys.length;
      const end = this.sortedKeys.length;
      for (let i = this.lowerBound(start); i < end && out.length < countMax; i++) {
        const key = this.sortedKeys[i];
        assert(key !== undefined, 'index within bounds');
        // Keys with one prefix are contiguous in byte order, so the first miss ends the range.
        if (!key.startsWith(prefix)) break;
        const value = this.values.get(key);
        assert(value !== undefined, () => `sorted key ${JSON.stringify(key)} has a value`);
        out.push([key, Uint8Array.from(value)]);
      }
      return out;
    });
  }

  /** Marks the store closed; later calls reject with `STORE_CLOSED`. Loses nothing. */
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /**
   * Simulates a crash and restart: the state becomes what `mode` says survives, and the store is
   * open again (even if it was closed) with no fatal error. Everything that survived counts as
   * durable afterwards, as LevelDB's recovery writes the replayed log to a synced table file.
   * `prng` (required for 'tear') picks how many unsynced batches survive.
   */
  crash(mode: MemCrashMode, prng?: Prng): void {
    let surviving: number;
    switch (mode) {
      case 'keep':
        surviving = this.unsynced.length;
        break;
      case 'lose':
        surviving = 0;
        break;
      case 'tear':
        assert(prng !== undefined, "crash('tear') needs a prng");
        surviving = prng.nextInt(0, this.unsynced.length + 1);
        break;
      default:
        unreachable(mode, 'crash mode');
    }
    this.unsynced = this.unsynced.slice(0, surviving);
    this.syncAll();
    this.values.clear();
    for (const [key, value] of this.durable) this.values.set(key, value);
    this.sortedKeys = [...this.values.keys()].sort(compareUtf8);
    this.closed = false;
    this.fatal = undefined;
  }

  /** Runs an operation: refuses when closed or failed, runs the hook, maps its errors. */
  private run<T>(op: MemMetaOp, body: () => T): Promise<T> {
    if (this.closed) {
      return Promise.reject(new RaftmqError('STORE_CLOSED', `metadata store ${op} after close`, {
        details: { op },
      }));
    }
    if (this.fatal !== undefined) {
      return Promise.reject(new RaftmqError('STORE_FATAL',
        `metadata store ${op} refused: the store failed earlier`,
        { cause: this.fatal, details: { op } }));
    }
    try {
      this.hook?.(op);
    } catch (err) {
      const error = err instanceof RaftmqError ? err
        : new RaftmqError(op === 'batch' ? 'STORE_FATAL' : 'INTERNAL',
          `metadata store ${op} failed`, { cause: err, details: { op } });
      if (error.fatal) this.fatal = error;
      return Promise.reject(error);
    }
    return Promise.resolve(body());
  }

  /** Moves every unsynced batch into the durable state, in order. */
  private syncAll(): void {
    for (const batch of this.unsynced) {
      for (const op of batch) {
        if (op.value === undefined) this.durable.delete(op.key);
        else this.durable.set(op.key, op.value);
      }
    }
    this.unsynced = [];
  }

  private applyVisible(op: StoredOp): void {
    if (op.value === undefined) {
      if (this.values.delete(op.key)) this.sortedKeys.splice(this.lowerBound(op.key), 1);
      return;
    }
    if (!this.values.has(op.key)) this.sortedKeys.splice(this.lowerBound(op.key), 0, op.key);
    this.values.set(op.key, op.value);
  }

  /** The index of the first sorted key >= `key` (binary search, so bounded by log2 n). */
  private lowerBound(key: string): number {
    let lo = 0;
    let hi = this.sortedKeys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const probe = this.sortedKeys[mid];
      assert(probe !== undefined, 'index within bounds');
      if (compareUtf8(probe, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
