/**
 * Writes the key index (key-index.ts) behind the apply path, in large batches, with its own
 * checkpoint. Applying an entry only queues its key-index puts here; a background write takes
 * everything queued once `flushOpsMin` ops are waiting (or when asked: a checkpoint, a query,
 * close) and writes it in one metadata batch together with the checkpoint: the index of the
 * last entry whose puts are all in that batch or an earlier one. So the stored checkpoint never
 * claims an entry whose puts did not land, and after a crash at any point the owner
 * (MessageStore) re-indexes the entries after it from the CommitLog.
 *
 * Re-indexing an entry is harmless: a message-key entry is keyed by its position and written
 * with the same value, and message-id puts are redone in log order, so the last one applied
 * still wins.
 *
 * One write is in flight at most and writes land in queue order. `exclusive(fn)` runs `fn`
 * after writing everything queued and with no write in flight meanwhile (the retention sweep
 * needs that: its blind deletes of id entries must not race a put of the same id).
 *
 * Bounded: at most `pendingOpsMax` ops wait; beyond that `room()` makes the apply loop wait for
 * the writes. A failed write is fatal: it is rethrown by every later call, and the metadata
 * store itself refuses further work, so the Raft driver stops.
 */
import { assert } from '../common/assert';
import { RaftmqError } from '../common/errors';
import { Mutex } from '../common/mutex';
import { intInRange, resolveOptions } from '../common/options';
import { type KeyIndex, MESSAGE_LOCATION_BYTES } from './key-index';
import {
  type MetaBatchBuilder,
  type MetaBatchOp,
  type MetaStore,
  MetaKeys,
  getMeta,
  u64Codec,
} from './meta';

/** Options of a {@link KeyIndexWriter}. */
export interface KeyIndexWriterOptions {
  /** A background write starts once this many puts are queued. */
  flushOpsMin: number;
  /** Puts queued at most; beyond it the apply loop waits for the writes (`room()`). */
  pendingOpsMax: number;
}

/** The defaults of {@link KeyIndexWriterOptions}. */
export const KEY_INDEX_WRITER_DEFAULTS: Readonly<KeyIndexWriterOptions> = Object.freeze({
  flushOpsMin: 4096,
  pendingOpsMax: 65_536,
});

/** Checks and completes {@link KeyIndexWriterOptions}; throws INVALID_OPTION naming the field. */
export function resolveKeyIndexWriterOptions(
  input?: Partial<KeyIndexWriterOptions>,
): Readonly<KeyIndexWriterOptions> {
  const o = resolveOptions('keyIndexWriter', KEY_INDEX_WRITER_DEFAULTS, {
    flushOpsMin: intInRange(1, 1_048_576),
    pendingOpsMax: intInRange(1, 16_777_216),
  }, input);
  if (o.pendingOpsMax < o.flushOpsMin) {
    const option = 'keyIndexWriter.pendingOpsMax';
    throw new RaftmqError('INVALID_OPTION',
      `${option}: must be at least flushOpsMin (${o.flushOpsMin}), got ${o.pendingOpsMax}`,
      { details: { option } });
  }
  return o;
}

/**
 * Queued messages, column by column: the strings the reader already made and three numbers
 * each, so that thousands of queued messages cost the garbage collector next to nothing (an op
 * object, key string and value buffer per message, held for a second, were promoted and then
 * swept: measured at a third of the key index's CPU).
 */
class PendingMessages {
  topics: string[] = [];
  ids: string[] = [];
  keys: (readonly string[])[] = [];
  /** position, sizeBytes, storeTimestampMs per message. */
  numbers = new Float64Array(3 * 1024);
  count = 0;
  /** Puts the messages will make (one per id, one per key). */
  puts = 0;

  push(
    topic: string,
    keys: readonly string[],
    messageId: string,
    position: number,
    sizeBytes: number,
    storeTimestampMs: number,
  ): void {
    const i = this.count;
    if (3 * (i + 1) > this.numbers.length) {
      const grown = new Float64Array(this.numbers.length * 2);
      grown.set(this.numbers);
      this.numbers = grown;
    }
    this.topics[i] = topic;
    this.ids[i] = messageId;
    this.keys[i] = keys;
    this.numbers[3 * i] = position;
    this.numbers[3 * i + 1] = sizeBytes;
    this.numbers[3 * i + 2] = storeTimestampMs;
    this.count = i + 1;
    this.puts += 1 + keys.length;
  }

  /** Forgets every message (keeping the arrays for the next ones). */
  clear(): void {
    this.topics.length = 0;
    this.ids.length = 0;
    this.keys.length = 0;
    this.count = 0;
    this.puts = 0;
  }
}

/** The stored key-index checkpoint; 0 when there is none (every entry is indexed again). */
export async function loadKeyIndexCheckpoint(meta: MetaStore): Promise<number> {
  return (await getMeta(meta, MetaKeys.keyIndexCheckpoint, u64Codec)) ?? 0;
}

/** Queues key-index puts and writes them in the background; see the file comment. */
export class KeyIndexWriter {
  readonly options: Readonly<KeyIndexWriterOptions>;
  private pending = new PendingMessages();
  /** The other set of columns, while `pending` fills (one write in flight at most). */
  private spare: PendingMessages | undefined = new PendingMessages();
  private readonly scratch = Buffer.alloc(MESSAGE_LOCATION_BYTES);
  /** The last entry whose puts are all queued or written. */
  private queued: number;
  /** The last entry whose puts are all written (the stored checkpoint). */
  private written: number;
  private readonly mutex = new Mutex();
  private fatal: Error | undefined;

  constructor(
    private readonly meta: MetaStore,
    private readonly keyIndex: KeyIndex,
    indexedIndex: number,
    options?: Partial<KeyIndexWriterOptions>,
  ) {
    this.options = resolveKeyIndexWriterOptions(options);
    assert(Number.isSafeInteger(indexedIndex) && indexedIndex >= 0, 'bad key index checkpoint');
    this.queued = indexedIndex;
    this.written = indexedIndex;
  }

  /** The last entry whose puts are all queued or written: later entries still need indexing. */
  get indexedIndex(): number {
    return this.queued;
  }

  /** The last entry whose puts are all written, as the stored checkpoint says. */
  get writtenIndex(): number {
    return this.written;
  }

  /** Puts queued and not yet handed to a write. */
  get pendingOps(): number {
    return this.pending.puts;
  }

  /** Queues the puts of one message of an entry after `indexedIndex` (see `covered`). */
  add(
    topic: string,
    keys: readonly string[],
    messageId: string,
    position: number,
    sizeBytes: number,
    storeTimestampMs: number,
  ): void {
    this.throwIfFailed();
    this.keyIndex.checkAddOps(topic, keys, messageId);
    this.pending.push(topic, keys, messageId, position, sizeBytes, storeTimestampMs);
  }

  /** Every message of entries up to `index` is queued: the next write's checkpoint covers them. */
  covered(index: number): void {
    assert(index >= this.queued, () => `key index: covered ${index} after ${this.queued}`);
    this.queued = index;
  }

  /**
   * Drops nothing but moves both cursors to `index` and stores that checkpoint: for a rebuild
   * that deleted the index (then 0). Everything queued is written first.
   */
  resetTo(index: number): Promise<void> {
    assert(Number.isSafeInteger(index) && index >= 0, () => `key index: bad reset ${index}`);
    return this.mutex.run(async () => {
      await this.write();
      this.throwIfFailed();
      assert(this.pending.count === 0, 'key index: reset with puts queued');
      const op = { type: 'put' as const, key: MetaKeys.keyIndexCheckpoint,
        value: u64Codec.encode(index) };
      await this.meta.batch([op], { sync: false }).catch((err: unknown) => this.failed(err));
      this.queued = index;
      this.written = index;
    });
  }

  /**
   * Starts a background write when `flushOpsMin` puts are queued (or `force` and anything is),
   * unless one is in flight. Its failure is kept and rethrown by the next call.
   */
  kick(force = false): void {
    this.throwIfFailed();
    if (this.mutex.isBusy()) return;
    const due = this.pending.puts >= this.options.flushOpsMin;
    if (!due && !(force && (this.pending.count > 0 || this.queued !== this.written))) return;
    // `write` records a failure in `fatal` before rejecting; every later call rethrows it, so
    // nothing is lost by not handling it here.
    this.flush().catch(() => undefined);
  }

  /** Resolves once fewer than `pendingOpsMax` puts are queued (writing them if need be). */
  async room(): Promise<void> {
    for (let rounds = 0; this.pending.puts >= this.options.pendingOpsMax; rounds++) {
      assert(rounds < 1_000_000, 'key index: no room after many writes');
      await this.flush();
    }
    this.kick();
  }

  /** Writes everything queued so far; resolves once it landed. */
  flush(): Promise<void> {
    return this.mutex.run(() => this.write());
  }

  /** Runs `fn` once everything queued is written, with no write in flight until it settles. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      await this.write();
      return fn();
    });
  }

  private async write(): Promise<void> {
    this.throwIfFailed();
    const index = this.queued;
    const taken = this.pending;
    if (taken.count === 0 && index === this.written) return;
    this.pending = this.spare ?? new PendingMessages();
    this.spare = undefined;
    const checkpoint = u64Codec.encode(index);
    // The loop is a method: a closure holding it, made per write, was compiled anew by V8
    // each time it got hot (an optimized copy per closure instance).
    const written = this.meta.batchWith
      ? this.meta.batchWith((batch) => this.writeAll(batch, taken, checkpoint), { sync: false })
      : this.meta.batch(this.opsOf(taken, checkpoint), { sync: false });
    await written.catch((err: unknown) => this.failed(err));
    this.written = Math.max(this.written, index);
    taken.clear();
    this.spare = taken;
  }

  private writeAll(batch: MetaBatchBuilder, taken: PendingMessages, checkpoint: Uint8Array): void {
    for (let i = 0; i < taken.count; i++) this.writeMessage(batch, taken, i);
    batch.put(MetaKeys.keyIndexCheckpoint, checkpoint);
  }

  private writeMessage(batch: MetaBatchBuilder, taken: PendingMessages, i: number): void {
    const n = taken.numbers;
    this.keyIndex.writeAddOps(batch, this.scratch, taken.topics[i] as string,
      taken.keys[i] as readonly string[], taken.ids[i] as string, n[3 * i] as number,
      n[3 * i + 1] as number, n[3 * i + 2] as number);
  }

  /** The ops of `taken` as objects, for a store without `batchWith`. */
  private opsOf(taken: PendingMessages, checkpoint: Uint8Array): MetaBatchOp[] {
    const ops: MetaBatchOp[] = [];
    const batch: MetaBatchBuilder = {
      put: (key, value) => ops.push({ type: 'put', key, value: Uint8Array.from(value) }),
      del: (key) => ops.push({ type: 'del', key }),
    };
    this.writeAll(batch, taken, checkpoint);
    return ops;
  }

  private failed(err: unknown): never {
    this.fatal ??= err instanceof Error ? err : new Error(String(err));
    throw this.fatal;
  }

  private throwIfFailed(): void {
    if (this.fatal !== undefined) throw this.fatal;
  }
}
