/**
 * The message key index (RocketMQ's IndexFile): message key and message id -> where the message
 * is in the CommitLog, for "query message by key / by id", in files of its own under
 * `<dataDir>/keyindex/`. Until 2026-12-03 it was kept in LevelDB, one put per key and id; under
 * a steady produce load LevelDB's puts and its compactions (every table of fresh ids overlapped
 * the one holding the checkpoints, so each compaction rewrote it) cost each node about a tenth
 * of its CPU (docs/storage.md, docs/performance.md).
 *
 * **Files.** Each holds `entriesPerFile` entries, numbered by a global sequence: its name is the
 * sequence number of its first entry (20 digits). Layout: a 64-byte header written once at
 * creation, the entries (32 bytes each, in the order messages were applied), and, once the file
 * is full ("sealed"), its hash-slot table (`slotCount` u32) and a 32-byte trailer (largest
 * position and store time, with its own checksum). An entry is: hash u32 | previous entry of its
 * slot u32 (1-based within the file, 0 for none) | position u64 | store time u64 | size u32 |
 * kind u32 (key or id). A key's entries are chained newest first through their slot; a query
 * walks the chain of each file, newest file first. Hashes collide, so a match is only a
 * candidate: the store reads the message and checks its topic and key, or its id
 * (message-store.ts).
 *
 * **Writing.** `add` puts an entry in the newest file's in-memory image (entries and slots),
 * where queries see it at once. A background write, once `flushEntriesMin` entries wait (or
 * when asked), appends them to the file, writes a full file's slot table and trailer,
 * fdatasyncs, and only then stores the checkpoint in the metadata store: the last Raft index
 * whose messages are all indexed, the count of entries the write left durable, and the first
 * entry the files hold. The checkpoint therefore never claims an entry the files do not hold
 * durably.
 *
 * **Recovery.** `open` drops every entry past the checkpoint's count (the files may hold more,
 * or torn ones, or a seal that may not have landed whole) and rebuilds the newest file's slots
 * from its entries; the owner (MessageStore) indexes again the Raft entries after the
 * checkpoint's index, from the CommitLog. Files that do not agree with the checkpoint (missing,
 * short, a bad header) are deleted, the checkpoint is reset to zero (durably, before any new
 * file is written), and everything still in the CommitLog is indexed again.
 *
 * **Retention.** `removeBefore(position)` stores the new first entry, then deletes the oldest
 * sealed files whose entries all point before the CommitLog's first position; entries of
 * removed segments in newer files are skipped by queries (and their messages would not match).
 */
import * as path from 'node:path';
import { AssertionFailure, assert } from '../common/assert';
import { readU32BE, readU64BE, writeU32BE, writeU64BE } from '../common/bytes';
import { crc32c } from '../common/crc32c';
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { Mutex } from '../common/mutex';
import { intInRange, resolveOptions } from '../common/options';
import { toStoreError } from './commit-log-state';
import type { Disk, DiskFile } from './disk';
import { fileName20, parseFileName20 } from './entry-index';
import { getMeta, type MetaCodec, MetaKeys, type MetaStore } from './meta';

/** Where a message is in the CommitLog. */
export interface MessageLocation {
  /** Byte position of the message in the CommitLog. */
  position: number;
  sizeBytes: number;
  /** When the broker stored the message (its wall clock). */
  storeTimestampMs: number;
}

/** Options of {@link KeyIndex.keyCandidates}. */
export interface KeyQueryOptions {
  /** Only positions at or after this one (the CommitLog's first position, or a page's start). */
  fromPosition?: number;
  /** Only messages stored at or after this time (inclusive, as RocketMQ). */
  beginTimestampMs?: number;
  /** Only messages stored at or before this time (inclusive, as RocketMQ). */
  endTimestampMs?: number;
}

/** Options of a {@link KeyIndex}. */
export interface KeyIndexOptions {
  /** Hash slots per file (a power of two). */
  slotCount: number;
  /** Entries per file; a full file is sealed and the next one started. */
  entriesPerFile: number;
  /** A background write starts once this many entries wait to be written. */
  flushEntriesMin: number;
  /** Entries waiting at most; beyond it the apply loop waits for the writes (`room()`). */
  pendingEntriesMax: number;
  /** Entries one query examines at most, over all files (its chains, collisions included). */
  queryScanCountMax: number;
  /** Candidates (hash matches) a query by id checks against their messages, at most. */
  idCandidatesMax: number;
}

/**
 * The defaults: a file of 1,048,576 entries is 32 MiB of entries and 1 MiB of slots (4 entries
 * per slot on average); the newest file's image is in memory.
 */
export const KEY_INDEX_DEFAULTS: Readonly<KeyIndexOptions> = Object.freeze({
  slotCount: 262_144,
  entriesPerFile: 1_048_576,
  flushEntriesMin: 4096,
  pendingEntriesMax: 65_536,
  queryScanCountMax: 65_536,
  idCandidatesMax: 32,
});

/** Checks and completes {@link KeyIndexOptions}; throws INVALID_OPTION naming the field. */
export function resolveKeyIndexOptions(
  input?: Partial<KeyIndexOptions>,
): Readonly<KeyIndexOptions> {
  const o = resolveOptions('keyIndex', KEY_INDEX_DEFAULTS, {
    slotCount: intInRange(1, 1 << 26),
    entriesPerFile: intInRange(1, 1 << 26),
    flushEntriesMin: intInRange(1, 1 << 24),
    pendingEntriesMax: intInRange(1, 1 << 26),
    queryScanCountMax: intInRange(1, 1 << 26),
    idCandidatesMax: intInRange(1, 1 << 16),
  }, input);
  const fail = (field: keyof KeyIndexOptions, message: string): never => {
    const option = `keyIndex.${field}`;
    throw new RaftmqError('INVALID_OPTION', `${option}: ${message}`, { details: { option } });
  };
  if ((o.slotCount & (o.slotCount - 1)) !== 0) {
    fail('slotCount', `must be a power of two, got ${o.slotCount}`);
  }
  if (o.pendingEntriesMax < o.flushEntriesMin) {
    fail('pendingEntriesMax', `must be at least flushEntriesMin (${o.flushEntriesMin})`);
  }
  return o;
}

/**
 * The stored checkpoint: Raft entries up to `index` are indexed by the entries numbered below
 * `count`, which the files hold from entry `first` on (retention removed the older ones).
 */
export interface KeyIndexCheckpoint {
  index: number;
  count: number;
  first: number;
}

export const keyIndexCheckpointCodec: MetaCodec<KeyIndexCheckpoint> = Object.freeze({
  encode(cp: KeyIndexCheckpoint): Uint8Array {
    const b = Buffer.alloc(24);
    writeU64BE(b, 0, cp.index);
    writeU64BE(b, 8, cp.count);
    writeU64BE(b, 16, cp.first);
    return b;
  },
  decode(bytes: Uint8Array): KeyIndexCheckpoint {
    if (bytes.byteLength !== 24) throw new RangeError(`needs 24 bytes, got ${bytes.byteLength}`);
    const index = readU64BE(bytes, 0);
    const count = readU64BE(bytes, 8);
    const first = readU64BE(bytes, 16);
    if (![index, count, first].every(Number.isSafeInteger) || first > count) {
      throw new RangeError('not a key index checkpoint');
    }
    return { index, count, first };
  },
});

const MAGIC = 0x524d4b49; // "RMKI"
const VERSION = 1;
export const KEY_INDEX_HEADER_BYTES = 64;
export const KEY_INDEX_TRAILER_BYTES = 32;
const TRAILER_MAGIC = 0x524d4b53; // "RMKS"
export const KEY_INDEX_ENTRY_BYTES = 32;
const KIND_KEY = 1;
const KIND_ID = 2;
/** The first in-memory entries buffer of a file; it doubles as it fills. */
const IMAGE_INITIAL_ENTRIES = 1024;

/** FNV-1a over UTF-16 code units, continued from `h`. */
function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h;
}

/** A final mix (MurmurHash3's), so the low bits that pick a slot depend on every input bit. */
function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The hash of message key `key` of `topic` (a NUL, which no name may hold, between them). */
export function keyHash(topic: string, key: string): number {
  // The separator is hashed as a code unit 0 (x ^ 0 = x, then the multiply).
  return mix(fnv(Math.imul(fnv(0x811c9dc5 ^ KIND_KEY, topic), 0x01000193), key));
}

/** The hash of message id `messageId`. */
export function idHash(messageId: string): number {
  return mix(fnv(0x811c9dc5 ^ KIND_ID, messageId));
}

/** What a file's header says; written once, when the file is created. */
interface Header {
  slotCount: number;
  entriesPerFile: number;
  firstSeq: number;
}

/** What a full file's trailer says; written after its slot table, when it is sealed. */
interface Trailer {
  maxPosition: number;
  maxTimestampMs: number;
}

/** Writes the CRC32C of all but the last four bytes of `b` into them; returns `b`. */
function stampCrc(b: Buffer): Buffer {
  writeU32BE(b, b.length - 4, crc32c(b.subarray(0, b.length - 4)));
  return b;
}

/** True when the last four bytes of `b` are the CRC32C of the rest. */
function crcHolds(b: Buffer): boolean {
  return readU32BE(b, b.length - 4) === crc32c(b.subarray(0, b.length - 4));
}

function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(KEY_INDEX_HEADER_BYTES);
  writeU32BE(b, 0, MAGIC);
  writeU32BE(b, 4, VERSION);
  writeU32BE(b, 8, h.slotCount);
  writeU32BE(b, 12, h.entriesPerFile);
  writeU64BE(b, 16, h.firstSeq);
  return stampCrc(b);
}

/** The header, or a reason it is not one. */
function decodeHeader(b: Buffer): Header | string {
  if (b.length !== KEY_INDEX_HEADER_BYTES) return 'short header';
  if (readU32BE(b, 0) !== MAGIC) return 'bad magic';
  if (!crcHolds(b)) return 'bad header checksum';
  if (readU32BE(b, 4) !== VERSION) return `unknown version ${readU32BE(b, 4)}`;
  const h: Header = {
    slotCount: readU32BE(b, 8),
    entriesPerFile: readU32BE(b, 12),
    firstSeq: readU64BE(b, 16),
  };
  if (h.slotCount < 1 || (h.slotCount & (h.slotCount - 1)) !== 0) return 'bad slot count';
  if (h.entriesPerFile < 1) return 'bad entry count';
  return h;
}

function encodeTrailer(t: Trailer): Buffer {
  const b = Buffer.alloc(KEY_INDEX_TRAILER_BYTES);
  writeU32BE(b, 0, TRAILER_MAGIC);
  writeU64BE(b, 4, t.maxPosition);
  writeU64BE(b, 12, t.maxTimestampMs);
  return stampCrc(b);
}

/** The trailer, or undefined when these bytes are not a whole one (a seal that did not land). */
function decodeTrailer(b: Buffer): Trailer | undefined {
  if (b.length !== KEY_INDEX_TRAILER_BYTES || readU32BE(b, 0) !== TRAILER_MAGIC) return undefined;
  if (!crcHolds(b)) return undefined;
  return { maxPosition: readU64BE(b, 4), maxTimestampMs: readU64BE(b, 12) };
}

/** Where a file's slot table starts. */
function slotsOffset(h: Header): number {
  return KEY_INDEX_HEADER_BYTES + h.entriesPerFile * KEY_INDEX_ENTRY_BYTES;
}

/** A file's bytes when sealed. */
function sealedSize(h: Header): number {
  return slotsOffset(h) + 4 * h.slotCount + KEY_INDEX_TRAILER_BYTES;
}

/** The file being filled (or full and not yet written), in memory. */
class Image {
  readonly slots: Uint32Array;
  entries: Buffer;
  /** Entries in the image. */
  count = 0;
  /** Entries written to the file (not necessarily synced). */
  written = 0;
  file: DiskFile | undefined;
  /** The largest position and store time among the entries (-1 and 0 while it has none). */
  maxPosition = -1;
  maxTimestampMs = 0;

  constructor(
    readonly firstSeq: number,
    readonly slotCount: number,
    readonly entriesPerFile: number,
    initialEntries = IMAGE_INITIAL_ENTRIES,
  ) {
    this.slots = new Uint32Array(slotCount);
    this.entries = Buffer.alloc(Math.min(entriesPerFile, initialEntries) * KEY_INDEX_ENTRY_BYTES);
  }

  get full(): boolean {
    return this.count >= this.entriesPerFile;
  }

  add(hash: number, kind: number, position: number, sizeBytes: number, storeMs: number): void {
    const n = this.count;
    if ((n + 1) * KEY_INDEX_ENTRY_BYTES > this.entries.length) {
      const bytes = Math.min(2 * this.entries.length, this.entriesPerFile * KEY_INDEX_ENTRY_BYTES);
      const grown = Buffer.alloc(bytes);
      this.entries.copy(grown, 0, 0, n * KEY_INDEX_ENTRY_BYTES);
      this.entries = grown;
    }
    const slot = hash & (this.slotCount - 1);
    const b = this.entries;
    const o = n * KEY_INDEX_ENTRY_BYTES;
    writeU32BE(b, o, hash);
    writeU32BE(b, o + 4, this.slots[slot] as number);
    writeU64BE(b, o + 8, position);
    writeU64BE(b, o + 16, storeMs);
    writeU32BE(b, o + 24, sizeBytes);
    writeU32BE(b, o + 28, kind);
    this.slots[slot] = n + 1;
    this.count = n + 1;
    this.note(position, storeMs);
  }

  note(position: number, storeMs: number): void {
    if (position > this.maxPosition) this.maxPosition = position;
    if (storeMs > this.maxTimestampMs) this.maxTimestampMs = storeMs;
  }

  header(): Header {
    return { slotCount: this.slotCount, entriesPerFile: this.entriesPerFile,
      firstSeq: this.firstSeq };
  }

  trailer(): Trailer {
    return { maxPosition: Math.max(0, this.maxPosition), maxTimestampMs: this.maxTimestampMs };
  }

  /** The slot table as stored (u32 big-endian). */
  slotBytes(): Buffer {
    const b = Buffer.allocUnsafe(4 * this.slotCount);
    for (let i = 0; i < this.slotCount; i++) writeU32BE(b, 4 * i, this.slots[i] as number);
    return b;
  }
}

/** A sealed file on disk. */
interface Sealed {
  readonly path: string;
  readonly header: Header;
  readonly trailer: Trailer;
}

/** Reads the slots and entries of an in-memory image or a sealed file, for a query. */
interface EntrySource {
  slot(hash: number): Promise<number> | number;
  /** Entry `n` (1-based) into `out` (32 bytes). */
  entry(n: number, out: Buffer): Promise<void> | void;
  close(): Promise<void> | void;
}

function imageSource(img: Image): EntrySource {
  return {
    slot: (hash) => img.slots[hash & (img.slotCount - 1)] as number,
    entry: (n, out) => {
      img.entries.copy(out, 0, (n - 1) * KEY_INDEX_ENTRY_BYTES, n * KEY_INDEX_ENTRY_BYTES);
    },
    close: () => undefined,
  };
}

async function readFully(f: DiskFile, out: Buffer, position: number): Promise<void> {
  let n: number;
  try {
    n = await f.read(out, 0, out.length, position);
  } catch (err) {
    throw toStoreError(err, `reading key index file ${f.path}`);
  }
  if (n !== out.length) {
    throw new RaftmqError('META_CORRUPT', `key index file ${f.path} is short at ${position}`);
  }
}

async function sealedSource(disk: Disk, s: Sealed): Promise<EntrySource> {
  let f: DiskFile;
  try {
    f = await disk.open(s.path, false);
  } catch (err) {
    throw new RaftmqError('META_CORRUPT', `key index file ${s.path} cannot be opened`,
      { cause: err });
  }
  const h = s.header;
  const slotsAt = slotsOffset(h);
  const word = Buffer.alloc(4);
  return {
    slot: async (hash) => {
      await readFully(f, word, slotsAt + 4 * (hash & (h.slotCount - 1)));
      return readU32BE(word, 0);
    },
    entry: (n, out) => readFully(f, out, KEY_INDEX_HEADER_BYTES + (n - 1) * KEY_INDEX_ENTRY_BYTES),
    close: () => f.close(),
  };
}

/** How `open` found the files. */
export interface KeyIndexRecovery {
  /** The files did not agree with the checkpoint (or there was none while files existed). */
  rebuilt: boolean;
  /** Why, when rebuilt. */
  reason?: string;
}

/** The message key and id index in its own files; see the file comment. */
export class KeyIndex {
  readonly options: Readonly<KeyIndexOptions>;
  private active: Image;
  /** Full images not yet written, oldest first. */
  private sealing: Image[] = [];
  /** Sealed files on disk, oldest first. */
  private sealed: Sealed[] = [];
  /** Entries ever added (the next entry's sequence number). */
  private seq: number;
  /** Entries written to the files (not necessarily synced). */
  private writtenSeq: number;
  /** The last Raft entry whose messages are all added. */
  private queued: number;
  /** The checkpoint last stored (its index is `writtenIndex`). */
  private stored: KeyIndexCheckpoint;
  private dirDirty = false;
  /** Writes, retention and resets run one at a time; queries do not take it. */
  private readonly mutex = new Mutex();
  /** Queries in progress: retention and resets wait for those that began before them. */
  private readonly walks = new Set<Promise<void>>();
  private fatal: Error | undefined;

  private constructor(
    private readonly disk: Disk,
    private readonly dir: string,
    private readonly meta: MetaStore,
    options: Readonly<KeyIndexOptions>,
    active: Image,
    sealed: Sealed[],
    checkpoint: KeyIndexCheckpoint,
  ) {
    this.options = options;
    this.active = active;
    this.sealed = sealed;
    this.seq = checkpoint.count;
    this.writtenSeq = checkpoint.count;
    this.queued = checkpoint.index;
    this.stored = checkpoint;
  }

  /**
   * Opens the index in `dir` (see the file comment on recovery). `indexedIndex` of the result
   * is the stored checkpoint's index: entries after it must be indexed again. Files that do not
   * agree with the checkpoint are replaced by a rebuild; an I/O error rejects.
   */
  static async open(
    disk: Disk,
    dir: string,
    meta: MetaStore,
    log: Logger,
    input?: Partial<KeyIndexOptions>,
  ): Promise<{ index: KeyIndex; recovery: KeyIndexRecovery }> {
    const options = resolveKeyIndexOptions(input);
    const existed = (await disk.stat(dir)) !== undefined;
    await disk.mkdirp(dir);
    // A new directory's own entry is durable only once its parent is synced.
    if (!existed) await disk.syncDir(path.dirname(dir));
    const stored = await getMeta(meta, MetaKeys.keyIndexFiles, keyIndexCheckpointCodec);
    const names = (await disk.list(dir)).filter((n) => parseFileName20(n) !== undefined).sort();
    let why: string | undefined;
    if (stored !== undefined) {
      const loaded = await loadFiles(disk, dir, names, stored, options);
      if (typeof loaded !== 'string') {
        const index = new KeyIndex(disk, dir, meta, options, loaded.active, loaded.sealed,
          stored);
        return { index, recovery: { rebuilt: false } };
      }
      why = loaded;
    } else if (names.length > 0) {
      why = 'no checkpoint';
    }
    // Start over: the zero checkpoint is durable before any file is written again, so a crash
    // after this never pairs the old checkpoint with new files.
    const zero: KeyIndexCheckpoint = { index: 0, count: 0, first: 0 };
    await meta.batch([{ type: 'put', key: MetaKeys.keyIndexFiles,
      value: keyIndexCheckpointCodec.encode(zero) }], { sync: true });
    const left = (await disk.list(dir)).filter((n) => parseFileName20(n) !== undefined);
    for (const n of left) await disk.remove(path.join(dir, n));
    if (left.length > 0) await disk.syncDir(dir);
    if (why !== undefined) {
      log.warn({ dir, reason: why }, 'key index files do not match their checkpoint; rebuilding');
    }
    const active = new Image(0, options.slotCount, options.entriesPerFile);
    const index = new KeyIndex(disk, dir, meta, options, active, [], zero);
    const recovery = why === undefined ? { rebuilt: false } : { rebuilt: true, reason: why };
    return { index, recovery };
  }

  /** The last Raft entry whose messages are all added: later entries still need indexing. */
  get indexedIndex(): number {
    return this.queued;
  }

  /** The last Raft entry the stored checkpoint covers. */
  get writtenIndex(): number {
    return this.stored.index;
  }

  /** Entries added and not yet written. */
  get pendingEntries(): number {
    return this.seq - this.writtenSeq;
  }

  /** Files on disk or being filled (for tests and metrics). */
  fileCount(): number {
    return this.sealed.length + this.sealing.length + 1;
  }

  /**
   * Indexes one message (of an entry after `indexedIndex`): each distinct key of `topic`, and
   * its id. Names reach the index validated; an empty topic or id is a programmer error.
   */
  add(
    topic: string,
    keys: readonly string[],
    messageId: string,
    position: number,
    sizeBytes: number,
    storeTimestampMs: number,
  ): void {
    if (this.fatal !== undefined) throw this.fatal;
    // Plain checks, no message closures: this runs for every message on every node.
    if (topic.length === 0 || messageId.length === 0 || !Number.isSafeInteger(position)
      || position < 0 || !Number.isSafeInteger(sizeBytes) || sizeBytes < 0
      || sizeBytes > 0xffffffff || !Number.isSafeInteger(storeTimestampMs)
      || storeTimestampMs < 0) {
      throw new AssertionFailure(`key index: bad message ${JSON.stringify(
        { topic, messageId, position, sizeBytes, storeTimestampMs })}`);
    }
    for (let k = 0; k < keys.length; k++) {
      const key = keys[k] as string;
      if (k > 0 && keys.indexOf(key) !== k) continue; // a repeated key is indexed once
      this.put(keyHash(topic, key), KIND_KEY, position, sizeBytes, storeTimestampMs);
    }
    this.put(idHash(messageId), KIND_ID, position, sizeBytes, storeTimestampMs);
  }

  private put(hash: number, kind: number, position: number, size: number, ms: number): void {
    if (this.active.full) {
      this.sealing.push(this.active);
      this.active = new Image(this.seq, this.options.slotCount, this.options.entriesPerFile);
    }
    this.active.add(hash, kind, position, size, ms);
    this.seq++;
  }

  /**
   * Moves the indexed cursor back to `index`, durably (at open, when the CommitLog lost entries
   * the checkpoint covered: they are indexed again when they return, and the stored checkpoint
   * must not claim them if they return different; queries check every candidate against its
   * message, so a stale entry matches nothing).
   */
  rewindTo(index: number): Promise<void> {
    assert(Number.isSafeInteger(index) && index >= 0 && index <= this.queued,
      () => `key index: rewind to ${index} from ${this.queued}`);
    return this.mutex.run(async () => {
      this.throwIfFailed();
      this.queued = index;
      await this.storeCheckpoint({ ...this.stored, index: Math.min(this.stored.index, index) },
        true);
    });
  }

  /** Every message of entries up to `index` is added: the next checkpoint covers them. */
  covered(index: number): void {
    assert(index >= this.queued, () => `key index: covered ${index} after ${this.queued}`);
    this.queued = index;
  }

  /**
   * Starts a background write when `flushEntriesMin` entries wait (or `force` and anything
   * does), unless one is in flight. Its failure is kept and rethrown by the next call.
   */
  kick(force = false): void {
    this.throwIfFailed();
    if (this.mutex.isBusy()) return;
    const due = this.pendingEntries >= this.options.flushEntriesMin;
    if (!due && !(force && (this.pendingEntries > 0 || this.queued !== this.stored.index))) {
      return;
    }
    // `write` records a failure in `fatal` before rejecting; every later call rethrows it.
    this.flush().catch(() => undefined);
  }

  /** Resolves once fewer than `pendingEntriesMax` entries wait (writing them if need be). */
  async room(): Promise<void> {
    for (let rounds = 0; this.pendingEntries >= this.options.pendingEntriesMax; rounds++) {
      assert(rounds < 1_000_000, 'key index: no room after many writes');
      await this.flush();
    }
    this.kick();
  }

  /** Writes everything added so far and stores the checkpoint; resolves once it landed. */
  flush(): Promise<void> {
    return this.mutex.run(() => this.write());
  }

  /**
   * Forgets every entry and stores a zero checkpoint (durably, before removing the files), for
   * a rebuild from the CommitLog. Waits for a write in flight, and for queries that began before
   * it (later ones find nothing) before it deletes the files.
   */
  resetTo0(): Promise<void> {
    return this.mutex.run(async () => {
      this.throwIfFailed();
      try {
        await this.storeCheckpoint({ index: 0, count: 0, first: 0 }, true);
        const images = [...this.sealing, this.active];
        this.sealed = [];
        this.sealing = [];
        this.active = new Image(0, this.options.slotCount, this.options.entriesPerFile);
        this.seq = 0;
        this.writtenSeq = 0;
        this.queued = 0;
        for (const img of images) {
          const f = img.file;
          img.file = undefined;
          await f?.close();
        }
        await this.earlierWalks();
        const names = (await this.disk.list(this.dir))
          .filter((n) => parseFileName20(n) !== undefined);
        for (const n of names) await this.disk.remove(path.join(this.dir, n));
        await this.disk.syncDir(this.dir);
      } catch (err) {
        this.failed(err);
      }
    });
  }

  /**
   * Deletes the oldest sealed files whose entries all point before `minPosition` (retention);
   * returns how many. The checkpoint names the new first entry (durably) before any file goes,
   * so open can tell files retention removed from files that were lost. Newer files keep their
   * stale entries, which queries skip.
   */
  removeBefore(minPosition: number): Promise<number> {
    return this.mutex.run(async () => {
      this.throwIfFailed();
      let n = 0;
      const sealed = this.sealed;
      while (n < sealed.length && (sealed[n] as Sealed).trailer.maxPosition < minPosition) n++;
      if (n === 0) return 0;
      const gone = this.sealed.slice(0, n);
      const next = this.sealed[n]?.header.firstSeq
        ?? this.sealing[0]?.firstSeq ?? this.active.firstSeq;
      // No write is in flight (the mutex), and each stored the count of what it left durable,
      // sealed files included.
      assert(next <= this.stored.count, () => `key index: first ${next} past ${this.stored.count}`);
      try {
        await this.storeCheckpoint({ ...this.stored, first: next }, true);
        // Queries that begin from here on do not see the files; those before may read them.
        this.sealed = this.sealed.slice(n);
        await this.earlierWalks();
        for (const s of gone) await this.disk.remove(s.path);
        await this.disk.syncDir(this.dir);
      } catch (err) {
        this.failed(err);
      }
      return n;
    });
  }

  /**
   * Candidates for messages of `topic` with `key`, oldest first, without duplicates: each must
   * still be checked against the message (hashes collide). Examines at most
   * `queryScanCountMax` entries, newest first, so on a very busy key the oldest may be missed.
   */
  async keyCandidates(
    topic: string,
    key: string,
    options: KeyQueryOptions = {},
  ): Promise<MessageLocation[]> {
    const endMs = options.endTimestampMs ?? Number.MAX_SAFE_INTEGER;
    const found = new Map<number, MessageLocation>();
    await this.walk(keyHash(topic, key), KIND_KEY, options, (l) => {
      if (l.storeTimestampMs <= endMs && !found.has(l.position)) found.set(l.position, l);
      return Promise.resolve(false);
    });
    return [...found.values()].sort((a, b) => a.position - b.position);
  }

  /**
   * The newest entry for id `messageId` (at or after `fromPosition`, stored at or after
   * `beginTimestampMs`) that `matches` accepts: `matches` reads the message and checks its id
   * (hashes collide). Walks newest first, so of several holders of a reused id the last
   * applied comes first; stops at the first accepted, after `idCandidatesMax` candidates, or
   * after `queryScanCountMax` entries.
   */
  async findId<T>(
    messageId: string,
    options: KeyQueryOptions,
    matches: (l: MessageLocation) => Promise<T | undefined>,
  ): Promise<T | undefined> {
    let result: T | undefined;
    let candidates = 0;
    const seen = new Set<number>();
    await this.walk(idHash(messageId), KIND_ID, options, async (l) => {
      if (seen.has(l.position)) return false;
      seen.add(l.position);
      result = await matches(l);
      candidates++;
      return result !== undefined || candidates >= this.options.idCandidatesMax;
    });
    return result;
  }

  /**
   * Walks the chains of `hash`, newest file first, handing `visit` each entry of `kind` at or
   * after `fromPosition` and stored at or after `beginTimestampMs`, until `visit` resolves
   * true or `queryScanCountMax` entries were examined. Files whose bounds exclude the query are
   * not opened. Takes no lock: images are only appended to (chains only grow at their head), a
   * sealed file never changes, and retention and resets drop files from the lists first and
   * then wait for the walks that began before that, so no walk reads a deleted file.
   */
  private walk(
    hash: number,
    kind: number,
    options: KeyQueryOptions,
    visit: (l: MessageLocation) => Promise<boolean>,
  ): Promise<void> {
    // walkFiles takes its view of the files before its first await, so a walk registered here
    // sees exactly the files that were listed when it began.
    const walk = this.walkFiles(hash, kind, options, visit);
    this.walks.add(walk);
    const done = (): void => {
      this.walks.delete(walk);
    };
    walk.then(done, done);
    return walk;
  }

  private async walkFiles(
    hash: number,
    kind: number,
    options: KeyQueryOptions,
    visit: (l: MessageLocation) => Promise<boolean>,
  ): Promise<void> {
    this.throwIfFailed();
    const fromPosition = options.fromPosition ?? 0;
    const beginMs = options.beginTimestampMs ?? 0;
    // Newest first: the file being filled, then full ones not yet written, then sealed ones.
    const images = [this.active, ...[...this.sealing].reverse()];
    const sealed = [...this.sealed].reverse();
    const e = Buffer.alloc(KEY_INDEX_ENTRY_BYTES);
    let budget = this.options.queryScanCountMax;
    for (let i = 0; i < images.length + sealed.length; i++) {
      const img = images[i];
      if (img !== undefined && img.count === 0) continue;
      const bounds: Trailer = img ?? (sealed[i - images.length] as Sealed).trailer;
      // Files hold positions in apply order: an older file can only hold older ones.
      if (bounds.maxPosition < fromPosition) return;
      if (bounds.maxTimestampMs < beginMs) continue;
      const src = img !== undefined ? imageSource(img)
        : await sealedSource(this.disk, sealed[i - images.length] as Sealed);
      try {
        let n = await src.slot(hash);
        while (n !== 0) {
          if (budget-- <= 0) return;
          await src.entry(n, e);
          const position = readU64BE(e, 8);
          const storeTimestampMs = readU64BE(e, 16);
          if (readU32BE(e, 0) === hash && readU32BE(e, 28) === kind
            && position >= fromPosition && storeTimestampMs >= beginMs) {
            const l = { position, sizeBytes: readU32BE(e, 24), storeTimestampMs };
            if (await visit(l)) return;
          }
          const prev = readU32BE(e, 4);
          if (prev >= n) throw new RaftmqError('META_CORRUPT', `key index chain loops at ${n}`);
          n = prev;
        }
      } finally {
        await src.close();
      }
    }
  }

  /** Resolves once every query that began before this call has ended (however it ended). */
  private async earlierWalks(): Promise<void> {
    await Promise.allSettled([...this.walks]);
  }

  /** Writes what is pending and stores the checkpoint, if it can; closes the files. */
  close(): Promise<void> {
    return this.mutex.run(async () => {
      try {
        if (this.fatal === undefined) await this.write();
      } finally {
        for (const img of [...this.sealing, this.active]) {
          const f = img.file;
          img.file = undefined;
          await f?.close();
        }
      }
    });
  }

  private pathOf(img: Image): string {
    return path.join(this.dir, fileName20(img.firstSeq));
  }

  private async write(): Promise<void> {
    this.throwIfFailed();
    // Every entry of Raft entries up to `index` is added by now; the count stored with it is
    // what is durable at the end, which may include entries added during the write.
    const index = this.queued;
    if (this.seq === this.writtenSeq && index === this.stored.index) return;
    try {
      while (this.sealing.length > 0) {
        const img = this.sealing[0] as Image;
        await this.append(img);
        const f = img.file as DiskFile;
        // The slot table, then the trailer that says the file is whole; the header is never
        // written again, so a torn seal leaves a file of entries that open still reads.
        const at = slotsOffset(img.header());
        await f.writev([img.slotBytes(), encodeTrailer(img.trailer())], at);
        await f.sync();
        img.file = undefined;
        await f.close();
        this.sealing.shift();
        this.sealed.push({ path: this.pathOf(img), header: img.header(), trailer: img.trailer() });
      }
      // The file being filled; every file before it is sealed and synced. (If it fills up
      // meanwhile it joins `sealing`, and the next write seals it.)
      const img = this.active;
      if (img.count > img.written || img.file === undefined) {
        await this.append(img);
        await img.file?.sync();
      }
      const count = img.firstSeq + img.written;
      if (this.dirDirty) {
        this.dirDirty = false;
        await this.disk.syncDir(this.dir);
      }
      this.writtenSeq = Math.max(this.writtenSeq, count);
      // Every entry below `count` is durable now, so the checkpoint may say so.
      await this.storeCheckpoint({ index, count, first: this.stored.first }, false);
    } catch (err) {
      this.failed(err);
    }
  }

  /** Creates the image's file if need be and appends its unwritten entries. */
  private async append(img: Image): Promise<void> {
    if (img.file === undefined) {
      const f = await this.disk.open(this.pathOf(img), true);
      img.file = f;
      if (img.written === 0) {
        await f.writev([encodeHeader(img.header())], 0);
        this.dirDirty = true;
      }
    }
    const upTo = img.count;
    if (upTo > img.written) {
      const bytes = img.entries.subarray(img.written * KEY_INDEX_ENTRY_BYTES,
        upTo * KEY_INDEX_ENTRY_BYTES);
      await img.file.writev([bytes], KEY_INDEX_HEADER_BYTES + img.written * KEY_INDEX_ENTRY_BYTES);
      img.written = upTo;
    }
  }

  private async storeCheckpoint(cp: KeyIndexCheckpoint, sync: boolean): Promise<void> {
    await this.meta.batch([{ type: 'put', key: MetaKeys.keyIndexFiles,
      value: keyIndexCheckpointCodec.encode(cp) }], { sync });
    this.stored = cp;
  }

  /** Records the first failure, typed (STORE_FATAL, or DISK_FULL), and throws it. */
  private failed(err: unknown): never {
    this.fatal ??= toStoreError(err, 'key index write failed');
    throw this.fatal;
  }

  private throwIfFailed(): void {
    if (this.fatal !== undefined) throw this.fatal;
  }
}

/**
 * Reads the files as the checkpoint says they must be: returns the sealed files and the image
 * of the file being filled, or why they do not agree with the checkpoint. Deletes files wholly
 * past the checkpoint's count or before its first entry (a removal retention had begun), and
 * cuts the newest file to the count. I/O errors reject.
 */
async function loadFiles(
  disk: Disk,
  dir: string,
  names: readonly string[],
  cp: KeyIndexCheckpoint,
  options: Readonly<KeyIndexOptions>,
): Promise<{ active: Image; sealed: Sealed[] } | string> {
  const sealed: Sealed[] = [];
  let removed = false;
  let active: Image | undefined;
  let expectSeq = cp.first;
  for (const name of names) {
    const p = path.join(dir, name);
    const firstSeq = parseFileName20(name) as number; // `names` holds only such names
    if (firstSeq >= cp.count) {
      // Written after the checkpoint (or before a crash cut it): indexed again from the log.
      await disk.remove(p);
      removed = true;
      continue;
    }
    if (firstSeq < cp.first) {
      // Retention stored the new first entry and then crashed before deleting this file.
      await disk.remove(p);
      removed = true;
      continue;
    }
    if (active !== undefined) return `${name} follows a file that is not full`;
    if (firstSeq !== expectSeq) return `${name} is not where entry ${expectSeq} starts`;
    const f = await disk.open(p, false);
    try {
      const head = Buffer.alloc(KEY_INDEX_HEADER_BYTES);
      const got = await f.read(head, 0, head.length, 0);
      const h = decodeHeader(head.subarray(0, got));
      if (typeof h === 'string') return `${name}: ${h}`;
      if (h.firstSeq !== firstSeq) return `${name}: header names entry ${h.firstSeq}`;
      const size = await f.size();
      const needed = cp.count - firstSeq;
      if (needed > h.entriesPerFile) {
        // The checkpoint reaches past this file: it was stored after the file's seal was
        // synced, so the seal must be whole.
        if (size !== sealedSize(h)) return `${name}: sealed file of ${size} bytes`;
        const tail = Buffer.alloc(KEY_INDEX_TRAILER_BYTES);
        await readFully(f, tail, size - KEY_INDEX_TRAILER_BYTES);
        const trailer = decodeTrailer(tail);
        if (trailer === undefined) return `${name}: bad trailer`;
        sealed.push({ path: p, header: h, trailer });
        expectSeq = firstSeq + h.entriesPerFile;
        continue;
      }
      // The file the checkpoint ends in: load its first `needed` entries and rebuild its slots.
      // A seal found here is not trusted (the checkpoint may have been stored before it was
      // synced, and a power loss can keep its trailer and lose pages of its slot table); the
      // file is cut back to its entries, and sealed again once the index moves on.
      const bytes = needed * KEY_INDEX_ENTRY_BYTES;
      if (size < KEY_INDEX_HEADER_BYTES + bytes) return `${name}: holds fewer entries than ${needed}`;
      const img = new Image(firstSeq, h.slotCount, h.entriesPerFile, Math.max(needed, 1));
      if (bytes > 0) {
        const got2 = await f.read(img.entries, 0, bytes, KEY_INDEX_HEADER_BYTES);
        if (got2 !== bytes) return `${name}: short read`;
      }
      for (let n = 1; n <= needed; n++) {
        const o = (n - 1) * KEY_INDEX_ENTRY_BYTES;
        const hash = readU32BE(img.entries, o);
        const slot = hash & (h.slotCount - 1);
        if (readU32BE(img.entries, o + 4) !== img.slots[slot]) return `${name}: entry ${n} chain`;
        img.slots[slot] = n;
        img.note(readU64BE(img.entries, o + 8), readU64BE(img.entries, o + 16));
      }
      img.count = needed;
      img.written = needed;
      // Cut what the checkpoint does not cover (unsynced or torn entries, a slot table, a
      // trailer), so the file is again one being filled.
      if (size !== KEY_INDEX_HEADER_BYTES + bytes) {
        await f.truncate(KEY_INDEX_HEADER_BYTES + bytes);
        await f.sync();
      }
      active = img;
    } finally {
      await f.close();
    }
  }
  if (removed) await disk.syncDir(dir);
  if (active === undefined) {
    if (expectSeq !== cp.count) {
      return `files end at entry ${expectSeq}, the checkpoint at ${cp.count}`;
    }
    active = new Image(cp.count, options.slotCount, options.entriesPerFile);
  }
  return { active, sealed };
}
