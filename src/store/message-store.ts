/**
 * A broker node's storage: the CommitLog (the Raft log), the ConsumeQueues and the key index,
 * kept in step. The broker appends entries through `commitLog`; once entries are committed it
 * calls `dispatch()`, which files each message under its topic and queue (assigning the queue
 * offset, in log order, identically on every node) and queues its key-index puts.
 *
 * ConsumeQueue files are written without fsync and synced by `checkpointDispatch()`, which
 * records how far they are durable. On open, queues are cut back to the CommitLog's end and
 * `catchUp()` re-dispatches from that checkpoint; dispatch skips records a queue already has,
 * so replaying is harmless. If the queue files are missing altogether, they are rebuilt from
 * the CommitLog.
 *
 * The key index (key-index.ts, files under `keyindex/`) takes each dispatched message at once
 * in memory and is written behind the apply path, in large batches, with its own checkpoint
 * (the last entry whose messages are all durably indexed). On open, entries after that
 * checkpoint are indexed again from the CommitLog before anything else is dispatched, so the
 * key index never falls behind the queues for long and is complete again after a crash at any
 * point. A query sees every message dispatched before it began. The index hashes keys and ids,
 * so each candidate it returns is read and checked against the message before it is answered.
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import { type MetaStore, MetaKeys, getMeta, jsonCodec } from './meta';
import type { Clock, Scheduler } from '../common/clock';
import { assert } from '../common/assert';
import { RaftmqError, isRaftmqError } from '../common/errors';
import { type Logger, silentLogger } from '../common/logger';
import { CommitLog } from './commit-log';
import type { CommitLogOptions } from './commit-log-options';
import { ConsumeQueueSet, DISPATCH_LATER, DISPATCH_SKIPPED } from './consume-queue-set';
import type { ConsumeQueueOptions } from './consume-queue-options';
import {
  KeyIndex,
  type KeyIndexOptions,
  type KeyIndexRecovery,
  type MessageLocation,
} from './key-index';
import { EntryType, RECORD_HEADER_BYTES, type LogEntry } from './log-record';
import {
  MESSAGE_BATCH_HEADER_BYTES,
  isMessageBatch,
  readMessageBatchIndexFields,
} from './message-batch';
import {
  type DecodeContext,
  type StoredMessage,
  decodeMessage,
  peekMessageHeader,
  tagHashCode,
} from './message-codec';

export interface MessageStoreDeps {
  disk: Disk;
  meta: MetaStore;
  clock?: Clock;
  scheduler?: Scheduler;
  logger?: Logger;
}

export interface MessageStoreOptions {
  commitLog?: Partial<CommitLogOptions>;
  consumeQueue?: Partial<ConsumeQueueOptions>;
  keyIndex?: Partial<KeyIndexOptions>;
}

/** Where one dispatched message went. */
export interface DispatchedMessage {
  topic: string;
  queueId: number;
  /** Undefined when the queue already had it (a replay). */
  queueOffset: number | undefined;
  position: number;
  sizeBytes: number;
}

/**
 * Where the messages of one entry went, column by column: one object per entry rather than one
 * per message, since every node keeps recent outcomes for their proposers.
 */
export class DispatchedBatch {
  readonly topics: string[];
  readonly queueIds: Int32Array;
  /** -1 where the queue already had the message (a replay). */
  readonly queueOffsets: Float64Array;
  readonly positions: Float64Array;
  readonly sizes: Uint32Array;

  constructor(readonly count: number) {
    this.topics = new Array<string>(count);
    this.queueIds = new Int32Array(count);
    this.queueOffsets = new Float64Array(count);
    this.positions = new Float64Array(count);
    this.sizes = new Uint32Array(count);
  }

  /** The queue offset of message `i`; undefined when it was a replay. */
  queueOffsetAt(i: number): number | undefined {
    const offset = this.queueOffsets[i] ?? -1;
    return offset < 0 ? undefined : offset;
  }

  /** Message `i` as an object. */
  at(i: number): DispatchedMessage {
    assert(Number.isInteger(i) && i >= 0 && i < this.count, () => `dispatched: no message ${i}`);
    return {
      topic: this.topics[i] as string,
      queueId: this.queueIds[i] as number,
      queueOffset: this.queueOffsetAt(i),
      position: this.positions[i] as number,
      sizeBytes: this.sizes[i] as number,
    };
  }

  /** Messages `[from, to)` as objects. */
  toArray(from = 0, to = this.count): DispatchedMessage[] {
    const out: DispatchedMessage[] = [];
    for (let i = from; i < to; i++) out.push(this.at(i));
    return out;
  }
}

export interface DispatchResult {
  /** One per entry given, in order: where its messages went, or undefined (no messages). */
  batches: Array<DispatchedBatch | undefined>;
}

/** A stored record read back undecoded (for sending on as it is), with its tag. */
export interface QueueRecord {
  readonly queueOffset: number;
  /** Its CommitLog position. */
  readonly position: number;
  readonly sizeBytes: number;
  readonly tag: string | undefined;
  readonly messageGroup: string | undefined;
  /** The record's stored encoding (a view of the read buffer). */
  readonly bytes: Buffer;
}

/**
 * Where a record was read, for CORRUPT_RECORD errors: its segment file is worked out only when
 * an error names it (a getter on the prototype, so building one per record read stays cheap).
 */
class RecordContext implements DecodeContext {
  constructor(
    private readonly commitLog: CommitLog,
    readonly position: number,
    private readonly filePosition: number,
  ) {}

  get file(): string {
    const segmentSizeBytes = this.commitLog.options.segmentSizeBytes;
    const segmentStart = Math.floor(this.filePosition / segmentSizeBytes) * segmentSizeBytes;
    return this.commitLog.segmentPath(segmentStart);
  }
}

/** How many of `records` from the first fit in `bytesMax` (always at least one). */
function countWithin(records: readonly { readonly sizeBytes: number }[], bytesMax: number): number {
  let bytes = 0;
  let n = 0;
  while (n < records.length && (n === 0 || bytes + (records[n]?.sizeBytes ?? 0) <= bytesMax)) {
    bytes += records[n]?.sizeBytes ?? 0;
    n++;
  }
  return n;
}

/** A message read back, with where it lies. */
export interface LocatedMessage {
  queueOffset?: number;
  position: number;
  sizeBytes: number;
  message: StoredMessage;
}

interface DispatchCheckpoint {
  index: number;
  /** Number of queues that held records at the checkpoint (to notice deleted queue files). */
  queueCount: number;
}

const dispatchCheckpointCodec = jsonCodec<DispatchCheckpoint>((v) => {
  const o = v as Record<string, unknown>;
  const index = o.index;
  const queueCount = o.queueCount;
  if (typeof index !== 'number' || typeof queueCount !== 'number') throw new TypeError('shape');
  return { index, queueCount };
});

const CATCH_UP_BATCH_ENTRIES = 1024;
const CATCH_UP_BATCH_BYTES = 8 * 1024 * 1024;

export class MessageStore {
  private dispatched: number;

  private constructor(
    readonly commitLog: CommitLog,
    readonly consumeQueues: ConsumeQueueSet,
    private readonly keyIndex: KeyIndex,
    private readonly keyRecovery: KeyIndexRecovery,
    private readonly meta: MetaStore,
    private readonly log: Logger,
    dispatchedIndex: number,
  ) {
    this.dispatched = dispatchedIndex;
  }

  /**
   * Opens (recovering) the CommitLog, the queues and the key index under `dir`, and indexes
   * again the entries the key index had not written before a crash (up to `dispatchedIndex()`;
   * `catchUp()` does the rest).
   */
  static async open(
    dir: string,
    deps: MessageStoreDeps,
    options: MessageStoreOptions = {},
  ): Promise<MessageStore> {
    const log = deps.logger ?? silentLogger();
    const commitLog = await CommitLog.open(dir, deps, options.commitLog);
    const queues = await ConsumeQueueSet.open(
      { disk: deps.disk, logger: log },
      path.join(dir, 'consumequeue'),
      options.consumeQueue,
    );
    // The CommitLog's recovery may have cut its tail; no queue may point past it.
    await queues.truncateAfterPosition(commitLog.endPosition());
    // Queue records below the log's start point at removed segments; this also sets each
    // queue's first offset exactly, for queues opened later too.
    await queues.removeBefore(commitLog.firstPosition());
    const cp = await getMeta(deps.meta, MetaKeys.dispatchCheckpoint, dispatchCheckpointCodec);
    let dispatched = Math.min(cp?.index ?? 0, commitLog.lastIndex());
    if (cp && queues.listQueues().length < cp.queueCount) {
      log.warn(
        { expected: cp.queueCount, found: queues.listQueues().length },
        'consume queue files missing; rebuilding from the commit log',
      );
      await queues.deleteAll();
      dispatched = 0;
    }
    dispatched = Math.max(dispatched, commitLog.firstIndex() - 1);
    await dropLegacyKeyIndex(deps.meta, log);
    const { index: keyIndex, recovery: keyRecovery } = await KeyIndex.open(
      deps.disk,
      path.join(dir, 'keyindex'),
      deps.meta,
      log,
      options.keyIndex,
    );
    // Entries after the log's end (lost unsynced writes) or before its start (removed by
    // retention) need no indexing: the former are indexed again when they return.
    const keyIndexed = Math.max(
      Math.min(keyIndex.indexedIndex, commitLog.lastIndex()),
      commitLog.firstIndex() - 1,
    );
    if (keyIndexed < keyIndex.indexedIndex) await keyIndex.rewindTo(keyIndexed);
    else keyIndex.covered(keyIndexed);
    const store = new MessageStore(
      commitLog,
      queues,
      keyIndex,
      keyRecovery,
      deps.meta,
      log,
      dispatched,
    );
    if (keyIndexed < dispatched) await store.catchUpKeyIndex(dispatched);
    return store;
  }

  /** Last index whose messages are in the queues. */
  dispatchedIndex(): number {
    return this.dispatched;
  }

  /**
   * Moves the queues' cursor back to `index`, so entries after it are dispatched again (the
   * queues skip the records they have, the key index the entries it has). For a state machine
   * whose stored applied index trails the queue checkpoint.
   */
  rewindDispatch(index: number): void {
    assert(
      Number.isSafeInteger(index) &&
        index <= this.dispatched &&
        index >= this.commitLog.firstIndex() - 1,
      () =>
        `rewind dispatch to ${index}: outside [${this.commitLog.firstIndex() - 1}, ` +
        `${this.dispatched}]`,
    );
    this.dispatched = index;
  }

  /** Key-index entries not yet written, and how far the index is added and checkpointed. */
  keyIndexProgress(): {
    pendingEntries: number;
    indexedIndex: number;
    writtenIndex: number;
    files: number;
    /** The files did not agree with their checkpoint at open and were rebuilt. */
    rebuilt: boolean;
  } {
    const k = this.keyIndex;
    return {
      pendingEntries: k.pendingEntries,
      indexedIndex: k.indexedIndex,
      writtenIndex: k.writtenIndex,
      files: k.fileCount(),
      rebuilt: this.keyRecovery.rebuilt,
    };
  }

  /** Writes the key index's pending entries and its checkpoint; resolves once they landed. */
  writeKeyIndex(): Promise<void> {
    return this.keyIndex.flush();
  }

  /**
   * Files the messages of committed entries under their queues and queues their key-index
   * puts. Entries must continue from `dispatchedIndex()` and carry their `position` (entries
   * read from the CommitLog do; for others the position is looked up). Waits when the key
   * index has `pendingOpsMax` puts queued.
   */
  async dispatch(entries: readonly LogEntry[]): Promise<DispatchResult> {
    const result: DispatchResult = {
      batches: new Array<DispatchedBatch | undefined>(entries.length).fill(undefined),
    };
    if (entries.length === 0) return result;
    const first = entries[0]?.index ?? 0;
    if (first !== this.dispatched + 1) {
      throw new RaftmqError(
        'INVALID_ARGUMENT',
        `dispatch from ${first}, expected ${this.dispatched + 1}`,
      );
    }
    // open() and catchUp() index the entries before the queues' cursor first.
    assert(this.keyIndex.indexedIndex >= this.dispatched, 'key index behind the queues');
    const needPositions = entries.some((e) => e.position === undefined);
    const loc = needPositions ? await this.commitLog.positionsOf(first, entries.length) : undefined;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i] as LogEntry;
      if (e.index !== first + i)
        throw new RaftmqError('INVALID_ARGUMENT', 'entries not contiguous');
      const position = e.position ?? loc?.positions[i] ?? 0;
      const indexKeys = e.index > this.keyIndex.indexedIndex;
      if (e.type === EntryType.NORMAL && isMessageBatch(e.payload)) {
        result.batches[i] = await this.dispatchBatch(e, position, indexKeys);
      }
      this.dispatched = e.index;
      if (indexKeys) await this.keyIndexed(e.index);
    }
    this.keyIndex.kick();
    return result;
  }

  /** The entry's messages are all in the key index; waits while too many entries wait. */
  private async keyIndexed(index: number): Promise<void> {
    this.keyIndex.covered(index);
    if (this.keyIndex.pendingEntries >= this.keyIndex.options.pendingEntriesMax) {
      await this.keyIndex.room();
    }
  }

  /**
   * Where a decode error names the bytes at `position` (in the segment holding `filePosition`).
   * The file name is built only if an error asks for it: decoding runs per message read, errors
   * almost never.
   */
  private contextAt(position: number, filePosition = position): DecodeContext {
    return new RecordContext(this.commitLog, position, filePosition);
  }

  private async dispatchBatch(
    e: LogEntry,
    recordPosition: number,
    indexKeys: boolean,
  ): Promise<DispatchedBatch> {
    const payloadPosition = recordPosition + RECORD_HEADER_BYTES;
    const fields = readMessageBatchIndexFields(
      e.payload,
      this.contextAt(payloadPosition, recordPosition),
    );
    const out = new DispatchedBatch(fields.length);
    const queues = this.consumeQueues;
    let position = payloadPosition + MESSAGE_BATCH_HEADER_BYTES;
    for (let i = 0; i < fields.length; i++) {
      const m = fields[i] as (typeof fields)[number];
      const tagHash = tagHashCode(m.tag);
      let offset = queues.tryDispatch(m.topic, m.queueId, position, m.sizeBytes, tagHash);
      if (offset === DISPATCH_LATER) {
        offset =
          (await queues.dispatch(m.topic, m.queueId, position, m.sizeBytes, tagHash)) ??
          DISPATCH_SKIPPED;
      }
      out.topics[i] = m.topic;
      out.queueIds[i] = m.queueId;
      out.queueOffsets[i] = offset;
      out.positions[i] = position;
      out.sizes[i] = m.sizeBytes;
      if (indexKeys) {
        this.keyIndex.add(m.topic, m.keys, m.messageId, position, m.sizeBytes, m.storeTimestampMs);
      }
      position += m.sizeBytes;
    }
    return out;
  }

  /** Queues the key-index puts of the messages of one entry read from the CommitLog. */
  private indexEntryKeys(e: LogEntry): void {
    if (e.type !== EntryType.NORMAL || !isMessageBatch(e.payload)) return;
    assert(e.position !== undefined, 'entries read from the commit log carry positions');
    const payloadPosition = e.position + RECORD_HEADER_BYTES;
    const fields = readMessageBatchIndexFields(
      e.payload,
      this.contextAt(payloadPosition, e.position),
    );
    let position = payloadPosition + MESSAGE_BATCH_HEADER_BYTES;
    for (const m of fields) {
      this.keyIndex.add(m.topic, m.keys, m.messageId, position, m.sizeBytes, m.storeTimestampMs);
      position += m.sizeBytes;
    }
  }

  /** Indexes keys again from the CommitLog, from the key index's checkpoint to `upToIndex`. */
  private async catchUpKeyIndex(upToIndex: number): Promise<void> {
    const from = this.keyIndex.indexedIndex;
    const target = Math.min(upToIndex, this.commitLog.lastIndex());
    while (this.keyIndex.indexedIndex < target) {
      const next = this.keyIndex.indexedIndex + 1;
      const entries = await this.commitLog.readRange(
        next,
        Math.min(CATCH_UP_BATCH_ENTRIES, target - next + 1),
        CATCH_UP_BATCH_BYTES,
      );
      assert(entries.length > 0 && entries[0]?.index === next, 'key index catch-up: no entries');
      for (const e of entries) {
        this.indexEntryKeys(e);
        await this.keyIndexed(e.index);
      }
    }
    await this.keyIndex.flush();
    if (target > from) {
      this.log.info({ fromIndex: from + 1, toIndex: target }, 'key index caught up');
    }
  }

  /**
   * Re-dispatches from `dispatchedIndex()` up to `upToIndex` by reading the CommitLog (after
   * open, before the broker applies new entries), and writes the key index it queued.
   */
  async catchUp(upToIndex: number): Promise<number> {
    const target = Math.min(upToIndex, this.commitLog.lastIndex());
    let count = 0;
    while (this.dispatched < target) {
      const entries = await this.commitLog.readRange(
        this.dispatched + 1,
        Math.min(CATCH_UP_BATCH_ENTRIES, target - this.dispatched),
        CATCH_UP_BATCH_BYTES,
      );
      const r = await this.dispatch(entries);
      for (const b of r.batches) count += b?.count ?? 0;
    }
    await this.keyIndex.flush();
    if (count > 0) this.log.info({ dispatchedIndex: this.dispatched, count }, 'dispatch caught up');
    return count;
  }

  /**
   * Syncs the queues and records how far they are durable; starts writing the queued key-index
   * puts in the background (so its checkpoint trails by little).
   */
  async checkpointDispatch(): Promise<void> {
    const index = this.dispatched;
    this.keyIndex.kick(true);
    await this.consumeQueues.flushAll(true);
    const queueCount = this.consumeQueues.listQueues().length;
    await this.meta.batch(
      [
        {
          type: 'put',
          key: MetaKeys.dispatchCheckpoint,
          value: dispatchCheckpointCodec.encode({ index, queueCount }),
        },
      ],
      { sync: false },
    );
  }

  /**
   * Messages of one queue from `queueOffset`, at most `countMax`, and at most `bytesMax` of
   * stored messages (but always the first one): the ConsumeQueue gives each size, so what lies
   * beyond the bound is never read.
   */
  async readQueue(
    topic: string,
    queueId: number,
    queueOffset: number,
    countMax: number,
    bytesMax = Number.MAX_SAFE_INTEGER,
  ): Promise<LocatedMessage[]> {
    const all = await this.consumeQueues.readRange(topic, queueId, queueOffset, countMax);
    const n = countWithin(all, bytesMax);
    const records = n < all.length ? all.slice(0, n) : all;
    return this.readLocated(
      records.map((r) => ({ queueOffset: r.offset, position: r.position, sizeBytes: r.sizeBytes })),
    );
  }

  /**
   * The stored records of one queue from `queueOffset`, undecoded, with the same bounds as
   * {@link readQueue}. Each is checked (magic, length, and the CRC32C unless `verifyCrc` is
   * false: for a reader that checks it itself) and must name this topic and queue, else
   * CORRUPT_RECORD; each comes with its tag and message group, for filtering and FIFO order.
   */
  async readQueueRecords(
    topic: string,
    queueId: number,
    queueOffset: number,
    countMax: number,
    bytesMax = Number.MAX_SAFE_INTEGER,
    verifyCrc = true,
  ): Promise<QueueRecord[]> {
    const all = await this.consumeQueues.readRange(topic, queueId, queueOffset, countMax);
    const n = countWithin(all, bytesMax);
    if (n === 0) return [];
    const located = n < all.length ? all.slice(0, n) : all;
    const bytes = await this.commitLog.readSpans(located);
    const out: QueueRecord[] = new Array<QueueRecord>(n);
    for (let i = 0; i < n; i++) {
      const r = located[i] as (typeof located)[number];
      const record = bytes[i] as Buffer;
      const context = this.contextAt(r.position);
      const head = peekMessageHeader(record, context, verifyCrc);
      if (
        head.totalSizeBytes !== record.length ||
        head.topic !== topic ||
        head.queueId !== queueId
      ) {
        throw new RaftmqError(
          'CORRUPT_RECORD',
          `the ConsumeQueue of ${topic}:${queueId} at offset ${r.offset} points at a record of ` +
            `${head.topic}:${head.queueId} (${head.totalSizeBytes} of ${record.length} bytes) ` +
            `at position ${r.position}`,
          { details: { position: r.position } },
        );
      }
      out[i] = {
        queueOffset: r.offset,
        position: r.position,
        sizeBytes: r.sizeBytes,
        tag: head.tag,
        messageGroup: head.messageGroup,
        bytes: record,
      };
    }
    return out;
  }

  /** Reads and checks the messages at `locations` (with few reads), in their order. */
  private async readLocated<L extends { position: number; sizeBytes: number }>(
    locations: readonly L[],
  ): Promise<(L & { message: StoredMessage })[]> {
    if (locations.length === 0) return [];
    const bytes = await this.commitLog.readSpans(locations);
    return locations.map((l, i) => ({
      ...l,
      message: decodeMessage(bytes[i] as Buffer, this.contextAt(l.position)),
    }));
  }

  /**
   * The queue offset of the message at CommitLog `position` in queue `queueId` of `topic`, by
   * binary search over the queue's records (their positions rise with their offsets); undefined
   * when no record of the queue's range `[min, max)` points there.
   */
  async queueOffsetOf(
    topic: string,
    queueId: number,
    position: number,
    min: number,
    max: number,
  ): Promise<number | undefined> {
    let lo = min;
    let hi = max - 1;
    while (lo <= hi) {
      const mid = Math.floor((lo + hi) / 2);
      const [r] = await this.consumeQueues.readRange(topic, queueId, mid, 1);
      if (r === undefined) return undefined;
      if (r.position === position) return r.offset;
      if (r.position < position) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  /**
   * Messages with `key` on `topic` (oldest first), at most `limit`; every message dispatched
   * before the call is found (within the index's scan bound, `keyIndex.queryScanCountMax`).
   */
  async queryByKey(topic: string, key: string, limit: number): Promise<LocatedMessage[]> {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RaftmqError('INVALID_ARGUMENT', `limit: must be an integer >= 1, got ${limit}`, {
        details: { field: 'limit' },
      });
    }
    const candidates = await this.keyIndex.keyCandidates(topic, key, {
      fromPosition: this.commitLog.firstPosition(),
    });
    const out: LocatedMessage[] = [];
    // Read in pages of `limit`: most candidates match, and a page is one read of the log.
    for (let i = 0; i < candidates.length && out.length < limit; i += limit) {
      for (const m of await this.readCandidates(candidates.slice(i, i + limit))) {
        if (m.message.topic === topic && m.message.keys.includes(key)) out.push(m);
        if (out.length >= limit) break;
      }
    }
    return out;
  }

  /**
   * The message with producer id `messageId`, if the log still holds it; of several with one
   * id (a producer's retry), the one applied last. `sinceMs` skips messages stored before it
   * (and the index files holding only such), for callers that know when the message was sent:
   * without it, a query for an id the log does not hold reads every index file.
   */
  async queryById(messageId: string, sinceMs = 0): Promise<LocatedMessage | undefined> {
    return this.keyIndex.findId(
      messageId,
      { fromPosition: this.commitLog.firstPosition(), beginTimestampMs: sinceMs },
      async (l) => {
        const [m] = await this.readCandidates([l]);
        return m !== undefined && m.message.messageId === messageId ? m : undefined;
      },
    );
  }

  /**
   * The messages at key-index candidates still in the log. A candidate past the log's end (an
   * entry the log lost in a crash, indexed before it) is dropped; one whose bytes are not the
   * message it names (its position was written again since) fails to decode and is dropped too.
   */
  private async readCandidates(candidates: readonly MessageLocation[]): Promise<LocatedMessage[]> {
    const end = this.commitLog.endPosition();
    const inLog = candidates.filter((c) => c.sizeBytes > 0 && c.position + c.sizeBytes <= end);
    if (inLog.length === 0) return [];
    let bytes: (Buffer | undefined)[];
    try {
      bytes = await this.commitLog.readSpans(inLog);
    } catch (err) {
      if (!isStaleRead(err)) throw err;
      // A stale candidate may straddle a segment's end, or lie in a segment's unwritten tail
      // (a short read): read each alone, dropping those.
      bytes = await Promise.all(
        inLog.map((l) =>
          this.commitLog.readSpans([l]).then(
            ([b]) => b,
            (e: unknown) => {
              if (isStaleRead(e)) return undefined;
              throw e;
            },
          ),
        ),
      );
    }
    const out: LocatedMessage[] = [];
    for (let i = 0; i < inLog.length; i++) {
      const l = inLog[i] as MessageLocation;
      const b = bytes[i];
      if (b === undefined) continue;
      try {
        out.push({ ...l, message: decodeMessage(b, this.contextAt(l.position)) });
      } catch (err) {
        if (!isRaftmqError(err, 'CORRUPT_RECORD')) throw err;
      }
    }
    return out;
  }

  /**
   * Rebuilds the queues and the key index from the CommitLog up to the dispatched index. Only
   * possible while the log still starts at index 1: queue offsets are counted from the first
   * message, so a log trimmed by retention cannot renumber them.
   */
  async rebuildIndexes(): Promise<number> {
    if (this.commitLog.firstIndex() !== 1) {
      throw new RaftmqError(
        'INVALID_ARGUMENT',
        'cannot rebuild queues from a commit log whose start was removed by retention',
      );
    }
    const target = this.dispatched;
    await this.consumeQueues.deleteAll();
    // The key checkpoint goes to 0 before any file is deleted: a crash half-way re-indexes all.
    await this.keyIndex.resetTo0();
    this.dispatched = 0;
    const count = await this.catchUp(target);
    await this.checkpointDispatch();
    return count;
  }

  /**
   * Retention: removes CommitLog segments (see `CommitLog.applyRetention`), then the queue
   * files and key-index entries that pointed into them.
   */
  async applyRetention(keepFromIndexMax: number): Promise<number> {
    const point = await this.retentionPoint(keepFromIndexMax);
    return this.removeBefore(point);
  }

  /**
   * Retention's decision: the first index {@link applyRetention} would keep, within
   * `keepFromIndexMax` and what is dispatched. Removes nothing, so a Raft core can be compacted
   * to it first (see {@link removeBefore}).
   */
  retentionPoint(keepFromIndexMax: number): Promise<number> {
    return this.commitLog.retentionPoint(Math.min(keepFromIndexMax, this.dispatched + 1));
  }

  /**
   * Retention's action: removes the CommitLog segments below `index` (`removePrefix`), then the
   * queue files and key-index entries that pointed into them. Returns the new first index.
   */
  async removeBefore(index: number): Promise<number> {
    assert(index <= this.dispatched + 1, () =>
      `message store: removing ${index} beyond dispatched ${this.dispatched}`);
    const first = await this.commitLog.removePrefix(index);
    const minPosition = this.commitLog.firstPosition();
    await this.consumeQueues.removeBefore(minPosition);
    await this.keyIndex.removeBefore(minPosition);
    return first;
  }

  /** Writes the key index and the queues, checkpoints, and closes the CommitLog. */
  async close(): Promise<void> {
    try {
      await this.keyIndex.flush();
      await this.checkpointDispatch();
    } finally {
      // Its files are closed even after a failed write (the write is then not tried again).
      await this.keyIndex.close();
    }
    await this.consumeQueues.close();
    await this.commitLog.close();
  }
}

/** A read of a key-index candidate that points where no message of that size lies. */
function isStaleRead(err: unknown): boolean {
  return isRaftmqError(err, 'OUT_OF_RANGE') || isRaftmqError(err, 'CORRUPT_RECORD');
}

/**
 * Deletes the key index a store kept in LevelDB until 2026-12-03 (see `MetaKeys`), if any: its
 * entries first, then its checkpoint, so a crash half-way leaves the checkpoint to say there is
 * more to delete. The files of the new index are built from the CommitLog.
 */
async function dropLegacyKeyIndex(meta: MetaStore, log: Logger): Promise<void> {
  if ((await meta.get(MetaKeys.legacyKeyIndexCheckpoint)) === undefined) return;
  let deleted = 0;
  for (const prefix of [MetaKeys.legacyMessageKeyPrefix, MetaKeys.legacyMessageIdPrefix]) {
    for (let round = 0; round < 100_000_000; round++) {
      const rows = await meta.scan(prefix, { limit: 4096 });
      if (rows.length === 0) break;
      await meta.batch(rows.map(([key]) => ({ type: 'del' as const, key })), { sync: false });
      deleted += rows.length;
    }
  }
  await meta.batch([{ type: 'del', key: MetaKeys.legacyKeyIndexCheckpoint }], { sync: true });
  log.info({ deleted }, 'deleted the key index kept in the metadata store; indexing into files');
}
