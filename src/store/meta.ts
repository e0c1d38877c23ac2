/**
 * The metadata store: a small ordered key-value store (LevelDB in production, an in-memory model
 * in the simulator) holding Raft's hard state, checkpoints, the log's start, cluster
 * configuration and the broker's key spaces. Writes go in atomic batches; a batch with
 * `sync: true` is durable when its promise resolves.
 *
 * Keys are strings built only by the helpers below, so the spaces never collide; values are
 * bytes, turned into typed values by a {@link MetaCodec} whose decode failures name the key.
 */
import { RaftmqError } from '../common/errors';

export interface MetaBatchOp {
  type: 'put' | 'del';
  key: string;
  /** Required for `put`. */
  value?: Uint8Array;
}

export interface MetaScanOptions {
  /** Start at this key (inclusive) instead of the first key with the prefix. */
  gte?: string;
  /** At most this many entries. */
  limit?: number;
}

/** Receives the ops of a batch built by {@link MetaStore.batchWith}, in order. */
export interface MetaBatchBuilder {
  /** A put; `value` is copied before this returns, so the caller may reuse its buffer. */
  put(key: string, value: Uint8Array): void;
  del(key: string): void;
}

export interface MetaStore {
  get(key: string): Promise<Uint8Array | undefined>;
  /** Applies all `ops` atomically; durable on resolve when `sync` is set. */
  batch(ops: readonly MetaBatchOp[], options: { sync: boolean }): Promise<void>;
  /**
   * Optional: one atomic batch like `batch`, whose ops `build` hands over one at a time, during
   * this call. No op objects are made and one value buffer may serve every put: for batches of
   * many thousands of small puts (the key index). A throw in `build` writes nothing.
   */
  batchWith?(build: (batch: MetaBatchBuilder) => void, options: { sync: boolean }): Promise<void>;
  /** Entries whose keys start with `prefix`, in key order. */
  scan(prefix: string, options?: MetaScanOptions): Promise<Array<[string, Uint8Array]>>;
  close(): Promise<void>;
}

/** Encodes and decodes one kind of value. `decode` throws on bad bytes (any error). */
export interface MetaCodec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

/** Decodes `bytes` stored under `key`, turning any failure into META_CORRUPT naming the key. */
export function decodeMeta<T>(codec: MetaCodec<T>, key: string, bytes: Uint8Array): T {
  try {
    return codec.decode(bytes);
  } catch (err) {
    throw new RaftmqError(
      'META_CORRUPT',
      `metadata value under ${JSON.stringify(key)} is corrupt`,
      {
        cause: err,
        details: { key },
      },
    );
  }
}

/** Reads and decodes one key; undefined when absent. */
export async function getMeta<T>(
  store: MetaStore,
  key: string,
  codec: MetaCodec<T>,
): Promise<T | undefined> {
  const bytes = await store.get(key);
  return bytes === undefined ? undefined : decodeMeta(codec, key, bytes);
}

/** A put of an encoded value, for a batch. */
export function putOp<T>(key: string, codec: MetaCodec<T>, value: T): MetaBatchOp {
  return { type: 'put', key, value: codec.encode(value) };
}

/** JSON values checked by `validate` (which throws on a wrong shape). */
export function jsonCodec<T>(validate: (value: unknown) => T): MetaCodec<T> {
  return {
    encode: (value) => Buffer.from(JSON.stringify(value), 'utf8'),
    decode: (bytes) => validate(JSON.parse(Buffer.from(bytes).toString('utf8'))),
  };
}

/** A non-negative safe integer as 8 bytes big-endian (so byte order is numeric order). */
export const u64Codec: MetaCodec<number> = {
  encode(value) {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a u64: ${value}`);
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(value));
    return b;
  },
  decode(bytes) {
    if (bytes.byteLength !== 8) throw new RangeError(`u64 needs 8 bytes, got ${bytes.byteLength}`);
    const v = Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigUInt64BE();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('u64 beyond safe integer');
    return Number(v);
  },
};

/** A number as a fixed-width, order-preserving key part. */
export function keyNumber(n: number): string {
  return n.toString(16).padStart(14, '0');
}

/**
 * The key spaces. One-letter prefixes keep keys short; the separator is NUL, which no topic,
 * group or key name may contain (names are validated before they reach the store).
 */
export const MetaKeys = Object.freeze({
  /** Raft hard state: current term and vote. Written with sync before replies depend on it. */
  raftHardState: 'r\0hard',
  /** Last index known committed (a hint; Raft re-learns it). */
  raftCommitIndex: 'r\0commit',
  /** Cluster membership configuration. */
  clusterConfig: 'r\0conf',
  /** Which member wrote this data: its group, node id and the group's voters. */
  nodeIdentity: 'r\0identity',
  /** The CommitLog's first index, its position and the term before it. */
  logStart: 'l\0start',
  /** The CommitLog recovery checkpoint. */
  logCheckpoint: 'l\0ckpt',
  /** A suffix truncation in progress (redone on open). */
  logTruncation: 'l\0trunc',
  /** The state machine's applied index, written in the same batch as the state it covers. */
  applyIndex: 's\0apply',
  /** ConsumeQueue durable dispatch checkpoint. */
  dispatchCheckpoint: 's\0dispatch',
  /** The key index files' checkpoint: Raft index, durable entry count, first entry held. */
  keyIndexFiles: 's\0keyFiles',
  /**
   * The key index kept in LevelDB until 2026-12-03: its checkpoint, and the message-key and
   * message-id entries under the two prefixes below. A store that finds them deletes them on
   * open and indexes its CommitLog into the key index files.
   */
  legacyKeyIndexCheckpoint: 's\0keyIndex',
  legacyMessageKeyPrefix: 'k\0',
  legacyMessageIdPrefix: 'i\0',
  topic: (name: string) => `t\0${name}`,
  topicPrefix: 't\0',
  group: (name: string) => `g\0${name}`,
  groupPrefix: 'g\0',
  consumerOffset: (group: string, topic: string, queueId: number) =>
    `o\0${group}\0${topic}\0${keyNumber(queueId)}`,
  consumerOffsetPrefix: (group: string) => `o\0${group}\0`,
  /**
   * A queue's floor: its end when its topic was deleted. A topic made again under the name
   * starts each queue there (none of the old messages is served).
   */
  queueFloor: (topic: string, queueId: number) => `f\0${topic}\0${keyNumber(queueId)}`,
  queueFloorPrefix: 'f\0',
  /** Pop consumption: one queue's frontier and cursor for one consumer group. */
  popQueue: (group: string, topic: string, queueId: number) =>
    `p\0${group}\0${topic}\0${keyNumber(queueId)}`,
  popQueuePrefix: 'p\0',
  /** Pop consumption: one delivered, unsettled (or settled out of order) message. */
  popRecord: (group: string, topic: string, queueId: number, offset: number) =>
    `q\0${group}\0${topic}\0${keyNumber(queueId)}\0${keyNumber(offset)}`,
  popRecordPrefix: 'q\0',
  /** Pop consumption: the next receipt handle id. */
  popHandleNext: 's\0popHandle',
});
