/**
 * The message key index (RocketMQ's IndexFile, kept in the {@link MetaStore}): message key and
 * message id -> where the message is in the CommitLog, for "query message by key / by id".
 *
 * Layout:
 * - `MetaKeys.messageKey(topic, key, position)` per key of each message. Entries of one
 *   (topic, key) sort by position, so stale entries (before the CommitLog's first position after
 *   retention) always form the front of a key's range. Such an entry is written once, when its
 *   message is applied, and never rewritten; deleting a stale one can therefore never race with
 *   a write.
 * - `MetaKeys.messageId(messageId)` per message. Several messages may carry one id (a producer
 *   retried a send that had in fact succeeded); the entry is a blind put, so the one applied last
 *   wins. A query by id therefore finds the latest of them.
 *
 * Values are {@link messageLocationCodec}: 21 bytes, version | position | size | store time.
 *
 * {@link KeyIndex.writeAddOps} (and {@link KeyIndex.addOps}) only build puts: the store's
 * KeyIndexWriter (key-index-writer.ts) writes them behind the apply path, in large batches with
 * their own checkpoint, and the entries after that checkpoint are indexed again on open.
 */
import { assert } from '../common/assert';
import { writeU32BE, writeU64BE } from '../common/bytes';
import { RaftmqError } from '../common/errors';
import { intInRange, resolveOptions } from '../common/options';
import {
  decodeMeta,
  keyNumber,
  type MetaBatchBuilder,
  MetaBatchOp,
  MetaCodec,
  MetaKeys,
  MetaStore,
} from './meta';

/** Where a message is in the CommitLog. */
export interface MessageLocation {
  /** Byte position of the message's entry in the CommitLog. */
  position: number;
  sizeBytes: number;
  /** When the broker stored the message (its wall clock). */
  storeTimestampMs: number;
}

/** What {@link KeyIndex.addOps} indexes for one applied message. */
export interface KeyIndexEntry extends MessageLocation {
  topic: string;
  keys: readonly string[];
  messageId: string;
}

/** Options of {@link KeyIndex.queryByKey}. */
export interface KeyQueryOptions {
  /** At most this many results (RocketMQ's maxNum); at least 1. */
  limit: number;
  /** Only messages stored at or after this time (inclusive, as RocketMQ). */
  beginTimestampMs?: number;
  /** Only messages stored at or before this time (inclusive, as RocketMQ). */
  endTimestampMs?: number;
  /**
   * The CommitLog's first position: entries before it point at removed segments; they are
   * skipped and (up to `staleDeleteCountMax` per query) deleted.
   */
  minPosition?: number;
  /** Only positions at or after this one: to page, pass the last result's position + 1. */
  fromPosition?: number;
}

/** Options of {@link KeyIndex.sweepBefore}. */
export interface KeySweepOptions {
  /** At most this many deletions in this call; at least 1. */
  batchLimit: number;
  /** At most this many entries examined in this call (default `sweepScanCountMax`). */
  scanLimit?: number;
}

/** What one {@link KeyIndex.sweepBefore} call did. */
export interface KeySweepResult {
  /** Deletions issued (an entry also deleted by a query may be counted again). */
  removed: number;
  /** A whole pass finished with a `minPosition` at least the one given. */
  done: boolean;
}

/** Options of a {@link KeyIndex}. */
export interface KeyIndexOptions {
  /** Entries fetched per store scan. */
  scanPageCountMax: number;
  /** Entries one query examines at most, stale and out-of-time-range ones included. */
  queryScanCountMax: number;
  /** Stale entries one query deletes at most. */
  staleDeleteCountMax: number;
  /** Entries one sweep call examines at most, unless the call says otherwise. */
  sweepScanCountMax: number;
}

/** The defaults of {@link KeyIndexOptions}. */
export const KEY_INDEX_DEFAULTS: Readonly<KeyIndexOptions> = Object.freeze({
  scanPageCountMax: 256,
  queryScanCountMax: 4096,
  staleDeleteCountMax: 256,
  sweepScanCountMax: 4096,
});

/** Checks and completes {@link KeyIndexOptions}; throws INVALID_OPTION naming the field. */
export function resolveKeyIndexOptions(
  input?: Partial<KeyIndexOptions>,
): Readonly<KeyIndexOptions> {
  return resolveOptions('keyIndex', KEY_INDEX_DEFAULTS, {
    scanPageCountMax: intInRange(1, 65_536),
    queryScanCountMax: intInRange(1, 1_048_576),
    staleDeleteCountMax: intInRange(1, 65_536),
    sweepScanCountMax: intInRange(1, 1_048_576),
  }, input);
}

const LOCATION_FORMAT_V1 = 1;
const LOCATION_SIZE_BYTES = 21;
const U32_LIMIT = 0x1_0000_0000;
/** Width of `keyNumber(position)` at the end of a message-key entry's key. */
const POSITION_KEY_CHARS = keyNumber(0).length;
const POSITION_KEY_PATTERN = /^[0-9a-f]+$/;

/**
 * A {@link MessageLocation} as 21 bytes: format version 1 (u8) | position (u64 BE) |
 * sizeBytes (u32 BE) | storeTimestampMs (u64 BE). Decoding checks length, version and ranges.
 */
export const messageLocationCodec: MetaCodec<MessageLocation> = Object.freeze({
  encode(location: MessageLocation): Uint8Array {
    const b = Buffer.allocUnsafe(LOCATION_SIZE_BYTES);
    encodeLocationInto(b, location.position, location.sizeBytes, location.storeTimestampMs);
    return b;
  },
  decode(bytes: Uint8Array): MessageLocation {
    if (bytes.byteLength !== LOCATION_SIZE_BYTES) {
      throw new RangeError(`location needs ${LOCATION_SIZE_BYTES} bytes, got ${bytes.byteLength}`);
    }
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = b.readUInt8(0);
    if (version !== LOCATION_FORMAT_V1) throw new RangeError(`unknown location format ${version}`);
    const position = b.readBigUInt64BE(1);
    const storeTimestampMs = b.readBigUInt64BE(13);
    const safe = BigInt(Number.MAX_SAFE_INTEGER);
    if (position > safe || storeTimestampMs > safe) throw new RangeError('u64 beyond safe integer');
    return {
      position: Number(position),
      sizeBytes: b.readUInt32BE(9),
      storeTimestampMs: Number(storeTimestampMs),
    };
  },
});

/** {@link messageLocationCodec}'s encoding into the first 21 bytes of `b`. */
function encodeLocationInto(
  b: Buffer,
  position: number,
  sizeBytes: number,
  storeTimestampMs: number,
): void {
  assertLocation(position, sizeBytes, storeTimestampMs);
  assert(b.length === LOCATION_SIZE_BYTES, 'a location buffer holds exactly one location');
  // u64 fields as two u32 words: a BigInt write costs several times more, per message applied.
  b[0] = LOCATION_FORMAT_V1;
  writeU64BE(b, 1, position);
  writeU32BE(b, 9, sizeBytes);
  writeU64BE(b, 13, storeTimestampMs);
}

/** Bytes of one stored location. */
export const MESSAGE_LOCATION_BYTES = LOCATION_SIZE_BYTES;

function assertLocation(position: number, sizeBytes: number, storeTimestampMs: number): void {
  assert(Number.isSafeInteger(position) && position >= 0, () => `bad position ${position}`);
  assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0 && sizeBytes < U32_LIMIT,
    () => `bad sizeBytes ${sizeBytes}`);
  assert(Number.isSafeInteger(storeTimestampMs) && storeTimestampMs >= 0,
    () => `bad storeTimestampMs ${storeTimestampMs}`);
}

/** Names reach the index validated; NUL would break the key layout, so it is an invariant. */
function assertPart(value: string, what: string, nonEmpty: boolean): void {
  assert(typeof value === 'string' && !value.includes('\0'),
    () => `${what} ${JSON.stringify(value)} contains NUL`);
  assert(!nonEmpty || value.length > 0, `${what} is empty`);
}

function assertPosition(value: number, what: string): void {
  assert(Number.isSafeInteger(value) && value >= 0, () => `${what} must be a position: ${value}`);
}

function invalid(field: string, message: string): RaftmqError {
  return new RaftmqError('INVALID_ARGUMENT', `${field}: ${message}`, { details: { field } });
}

function corrupt(key: string, message: string): RaftmqError {
  return new RaftmqError('META_CORRUPT', `key index entry ${JSON.stringify(key)}: ${message}`, {
    details: { key },
  });
}

/** The position written at the end of a message-key entry's key. */
function keyPosition(key: string): number {
  const hex = key.slice(key.length - POSITION_KEY_CHARS);
  const sep = key.charAt(key.length - POSITION_KEY_CHARS - 1);
  if (sep !== '\0' || !POSITION_KEY_PATTERN.test(hex)) throw corrupt(key, 'malformed key');
  const position = parseInt(hex, 16);
  if (!Number.isSafeInteger(position)) throw corrupt(key, 'position beyond safe integer');
  return position;
}

/** Decodes a message-key entry and checks its value against the position in its key. */
function decodeKeyEntry(key: string, value: Uint8Array): MessageLocation {
  const position = keyPosition(key);
  const location = decodeMeta(messageLocationCodec, key, value);
  if (location.position !== position) {
    throw corrupt(key, `value says position ${location.position}`);
  }
  return location;
}

/** The prefix of all message-key entries; meta.ts names only per-(topic, key) prefixes. */
const MESSAGE_KEY_SPACE = 'k\0';
assert(MetaKeys.messageKeyPrefix('t', 'k').startsWith(MESSAGE_KEY_SPACE), 'message key space');

function spacePrefix(space: 'key' | 'id'): string {
  return space === 'key' ? MESSAGE_KEY_SPACE : MetaKeys.messageIdPrefix;
}

/** Where an incremental sweep continues. */
interface SweepCursor {
  space: 'key' | 'id';
  /** The next key to look at (inclusive). */
  gte: string;
  /** The smallest minPosition any call of this pass used. */
  coveredMinPosition: number;
}

/** The message key and id index over a {@link MetaStore}. */
export class KeyIndex {
  private readonly options: Readonly<KeyIndexOptions>;
  private cursor: SweepCursor | undefined;
  private sweeping = false;

  constructor(private readonly store: MetaStore, options?: Partial<KeyIndexOptions>) {
    this.options = resolveKeyIndexOptions(options);
  }

  /**
   * The puts that index one applied message, for the caller's atomic batch with its apply
   * checkpoint. Duplicate keys of one message are indexed once.
   */
  addOps(entry: KeyIndexEntry): MetaBatchOp[] {
    this.checkAddOps(entry.topic, entry.keys, entry.messageId);
    const ops: MetaBatchOp[] = [];
    const batch: MetaBatchBuilder = {
      put: (key, value) => ops.push({ type: 'put', key, value: Uint8Array.from(value) }),
      del: (key) => ops.push({ type: 'del', key }),
    };
    this.writeAddOps(batch, Buffer.allocUnsafe(LOCATION_SIZE_BYTES), entry.topic, entry.keys,
      entry.messageId, entry.position, entry.sizeBytes, entry.storeTimestampMs);
    return ops;
  }

  /**
   * Checks what {@link writeAddOps} will be given for one message (a programmer error, as names
   * reach the index validated), so that a bad message fails when queued, not when written.
   */
  checkAddOps(topic: string, keys: readonly string[], messageId: string): void {
    assertPart(topic, 'topic', true);
    assertPart(messageId, 'messageId', true);
    for (const key of keys) assertPart(key, 'message key', false);
  }

  /**
   * Hands the puts that index one message to `batch` ({@link MetaStore.batchWith}), encoding the
   * value into `scratch` (21 bytes, reused: the store copies each value). Returns the puts made.
   */
  writeAddOps(
    batch: MetaBatchBuilder,
    scratch: Buffer,
    topic: string,
    keys: readonly string[],
    messageId: string,
    position: number,
    sizeBytes: number,
    storeTimestampMs: number,
  ): number {
    encodeLocationInto(scratch, position, sizeBytes, storeTimestampMs);
    let puts = 0;
    const distinct = keys.length <= 1 ? keys : new Set(keys);
    for (const key of distinct) {
      batch.put(MetaKeys.messageKey(topic, key, position), scratch);
      puts++;
    }
    batch.put(MetaKeys.messageId(messageId), scratch);
    return puts + 1;
  }

  /**
   * Messages of `topic` carrying `key`, **oldest first** (ascending position: the store scans
   * forward only, and this order pages cheaply with `fromPosition`). Examines at most
   * `queryScanCountMax` entries, so a narrow time range over a busy key may return fewer than
   * `limit` although more exist. Stale entries found (position < `minPosition`) are deleted,
   * at most `staleDeleteCountMax`, before this resolves; a failed deletion rejects the query.
   */
  async queryByKey(
    topic: string,
    key: string,
    options: KeyQueryOptions,
  ): Promise<MessageLocation[]> {
    assertPart(topic, 'topic', true);
    assertPart(key, 'message key', false);
    const { limit } = options;
    if (!Number.isSafeInteger(limit) || limit < 1) throw invalid('limit', `must be >= 1: ${limit}`);
    const beginMs = options.beginTimestampMs ?? 0;
    const endMs = options.endTimestampMs ?? Number.MAX_SAFE_INTEGER;
    if (!Number.isFinite(beginMs) || !Number.isFinite(endMs) || beginMs > endMs) {
      throw invalid('beginTimestampMs', `time range [${beginMs}, ${endMs}] is empty or not finite`);
    }
    const minPosition = options.minPosition ?? 0;
    assertPosition(minPosition, 'minPosition');
    const fromPosition = Math.max(minPosition, options.fromPosition ?? 0);
    assertPosition(fromPosition, 'fromPosition');

    const prefix = MetaKeys.messageKeyPrefix(topic, key);
    const cleaning = minPosition > 0 && fromPosition === minPosition;
    let gte = cleaning ? prefix : MetaKeys.messageKey(topic, key, fromPosition);
    const stale: MetaBatchOp[] = [];
    const found: MessageLocation[] = [];
    let scanned = 0;
    const { queryScanCountMax, scanPageCountMax, staleDeleteCountMax } = this.options;
    for (let round = 0; round < queryScanCountMax; round++) {
      const want = Math.min(scanPageCountMax, queryScanCountMax - scanned);
      if (want <= 0 || found.length >= limit) break;
      const page = await this.store.scan(prefix, { gte, limit: want });
      let lastPosition = -1;
      for (const [entryKey, value] of page) {
        scanned++;
        lastPosition = keyPosition(entryKey);
        if (lastPosition < fromPosition) {
          // Only a cleaning scan starts before fromPosition, and then fromPosition = minPosition.
          assert(cleaning, 'entries before fromPosition appear only when cleaning');
          if (stale.length < staleDeleteCountMax) stale.push({ type: 'del', key: entryKey });
          continue;
        }
        const location = decodeKeyEntry(entryKey, value);
        const t = location.storeTimestampMs;
        if (t >= beginMs && t <= endMs) found.push(location);
        if (found.length >= limit) break;
      }
      const last = page[page.length - 1];
      if (page.length < want || last === undefined) break;
      // Past the deletion budget, jump over the rest of the stale front.
      const skipStale = lastPosition < fromPosition && stale.length >= staleDeleteCountMax;
      gte = skipStale ? MetaKeys.messageKey(topic, key, fromPosition) : `${last[0]}\0`;
    }
    // Stale key entries are never rewritten (see the file comment), so this delete is safe
    // even while the broker applies new entries. No sync: a lost delete is redone later.
    if (stale.length > 0) await this.store.batch(stale, { sync: false });
    return found;
  }

  /**
   * The message with this id, or undefined. With several (producer retries), the one applied
   * last. A stale entry (position < `minPosition`) reads as undefined but is not deleted here:
   * the id key may be rewritten by a concurrent apply, so only {@link sweepBefore}, which runs
   * in the apply sequence, deletes id entries.
   */
  async queryById(messageId: string, minPosition = 0): Promise<MessageLocation | undefined> {
    assertPart(messageId, 'messageId', true);
    assertPosition(minPosition, 'minPosition');
    const idKey = MetaKeys.messageId(messageId);
    const bytes = await this.store.get(idKey);
    if (bytes === undefined) return undefined;
    const location = decodeMeta(messageLocationCodec, idKey, bytes);
    return location.position < minPosition ? undefined : location;
  }

  /**
   * One bounded step of the retention sweep: deletes up to `batchLimit` entries (keys and ids)
   * pointing before `minPosition`, examining at most `scanLimit` entries, and remembers where to
   * go on. `done` is true when a whole pass over the index finished and every call of that pass
   * used a `minPosition` at least this one; the next call starts a new pass. `removed` counts
   * deletions issued.
   *
   * Must run in the broker's apply sequence, never concurrently with a batch holding
   * {@link addOps} ops: deleting a stale id entry is a blind delete, and a concurrent apply may
   * have just rewritten that id (a producer retry). Not reentrant.
   */
  async sweepBefore(minPosition: number, options: KeySweepOptions): Promise<KeySweepResult> {
    assertPosition(minPosition, 'minPosition');
    const { batchLimit } = options;
    const scanLimit = options.scanLimit ?? this.options.sweepScanCountMax;
    assert(Number.isSafeInteger(batchLimit) && batchLimit >= 1, `bad batchLimit ${batchLimit}`);
    assert(Number.isSafeInteger(scanLimit) && scanLimit >= 1, `bad scanLimit ${scanLimit}`);
    assert(!this.sweeping, 'sweepBefore is not reentrant');
    this.sweeping = true;
    try {
      return await this.sweepStep(minPosition, batchLimit, scanLimit);
    } finally {
      this.sweeping = false;
    }
  }

  private async sweepStep(
    minPosition: number,
    batchLimit: number,
    scanLimit: number,
  ): Promise<KeySweepResult> {
    const start: SweepCursor = this.cursor
      ?? { space: 'key', gte: spacePrefix('key'), coveredMinPosition: minPosition };
    const cursor: SweepCursor = {
      ...start,
      coveredMinPosition: Math.min(start.coveredMinPosition, minPosition),
    };
    const dels: MetaBatchOp[] = [];
    let scanned = 0;
    let passDone = false;
    // Each round scans at least one entry or changes space or ends the pass.
    for (let round = 0; round < scanLimit + 2; round++) {
      const want = Math.min(this.options.scanPageCountMax, scanLimit - scanned);
      if (want <= 0 || dels.length >= batchLimit) break;
      const prefix = spacePrefix(cursor.space);
      const page = await this.store.scan(prefix, { gte: cursor.gte, limit: want });
      let taken = 0;
      for (const [key, value] of page) {
        if (dels.length >= batchLimit) break;
        taken++;
        cursor.gte = this.sweepEntry(cursor.space, key, value, minPosition, dels);
      }
      scanned += taken;
      if (taken < page.length || page.length === want) continue;
      if (cursor.space === 'key') {
        cursor.space = 'id';
        cursor.gte = spacePrefix('id');
      } else {
        passDone = true;
        break;
      }
    }
    if (dels.length > 0) await this.store.batch(dels, { sync: false });
    // Advance only once the deletions are written, so a failure repeats this step.
    this.cursor = passDone ? undefined : cursor;
    return { removed: dels.length, done: passDone && cursor.coveredMinPosition >= minPosition };
  }

  /** Checks one entry, queues its deletion when stale, and returns the key to go on from. */
  private sweepEntry(
    space: 'key' | 'id',
    key: string,
    value: Uint8Array,
    minPosition: number,
    dels: MetaBatchOp[],
  ): string {
    if (space === 'id') {
      const location = decodeMeta(messageLocationCodec, key, value);
      if (location.position < minPosition) dels.push({ type: 'del', key });
      return `${key}\0`;
    }
    if (keyPosition(key) < minPosition) {
      dels.push({ type: 'del', key });
      return `${key}\0`;
    }
    // Entries of one (topic, key) ascend by position: the rest of this group is live. Its keys
    // all start with the group prefix, which ends in NUL; prefix-with-\x01 is just past them.
    const group = key.slice(0, key.length - POSITION_KEY_CHARS - 1);
    return `${group}\x01`;
  }
}
