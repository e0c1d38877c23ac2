/**
 * A broker node's storage: the CommitLog (the Raft log), the ConsumeQueues and the key index,
 * kept in step. The broker appends entries through `commitLog`; once entries are committed it
 * calls `dispatch()`, which files each message under its topic and queue (assigning the queue
 * offset, in log order, identically on every node) and returns the key-index writes for the
 * caller's own atomic batch.
 *
 * ConsumeQueue files are written without fsync and synced by `checkpointDispatch()`, which
 * records how far they are durable. On open, queues are cut back to the CommitLog's end and
 * `catchUp()` re-dispatches from that checkpoint; dispatch skips records a queue already has,
 * so replaying is harmless. If the queue files are missing altogether, they are rebuilt from
 * the CommitLog.
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import { type MetaBatchOp, type MetaStore, MetaKeys, getMeta, jsonCodec } from './meta';
import type { Clock, Scheduler } from '../common/clock';
import { RaftmqError } from '../common/errors';
import { type Logger, silentLogger } from '../common/logger';
import { CommitLog } from './commit-log';
import type { CommitLogOptions } from './commit-log-options';
import { ConsumeQueueSet } from './consume-queue-set';
import type { ConsumeQueueOptions } from './consume-queue';
import { KeyIndex, type KeyIndexOptions } from './key-index';
import { EntryType, RECORD_HEADER_BYTES, type LogEntry } from './log-record';
import { decodeMessageBatch, isMessageBatch } from './message-batch';
import { type StoredMessage, decodeMessage, tagHashCode } from './message-codec';

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

export interface DispatchResult {
  messages: DispatchedMessage[];
  /** Key-index writes to put in the same atomic batch as the caller's apply checkpoint. */
  metaOps: MetaBatchOp[];
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
    readonly keyIndex: KeyIndex,
    private readonly meta: MetaStore,
    private readonly log: Logger,
    dispatchedIndex: number,
  ) {
    this.dispatched = dispatchedIndex;
  }

  /** Opens (recovering) the CommitLog, the queues and the key index under `dir`. */
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
    const keyIndex = new KeyIndex(deps.meta, options.keyIndex);
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
    return new MessageStore(commitLog, queues, keyIndex, deps.meta, log, dispatched);
  }

  /** Last index whose messages are in the queues. */
  dispatchedIndex(): number {
    return this.dispatched;
  }

  /**
   * Files the messages of committed entries under their queues. Entries must continue from
   * `dispatchedIndex()` and carry their `position` (entries read from the CommitLog do; for
   * others the position is looked up).
   */
  async dispatch(entries: readonly LogEntry[]): Promise<DispatchResult> {
    const result: DispatchResult = { messages: [], metaOps: [] };
    if (entries.length === 0) return result;
    const first = entries[0]?.index ?? 0;
    if (first !== this.dispatched + 1) {
      throw new RaftmqError(
        'INVALID_ARGUMENT',
        `dispatch from ${first}, expected ${this.dispatched + 1}`,
      );
    }
    const needPositions = entries.some((e) => e.position === undefined);
    const loc = needPositions ? await this.commitLog.positionsOf(first, entries.length) : undefined;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i] as LogEntry;
      if (e.index !== first + i)
        throw new RaftmqError('INVALID_ARGUMENT', 'entries not contiguous');
      const position = e.position ?? loc?.positions[i] ?? 0;
      if (e.type === EntryType.NORMAL && isMessageBatch(e.payload)) {
        await this.dispatchBatch(e, position, result);
      }
      this.dispatched = e.index;
    }
    return result;
  }

  private async dispatchBatch(e: LogEntry, recordPosition: number, out: DispatchResult) {
    const payloadPosition = recordPosition + RECORD_HEADER_BYTES;
    const file = this.commitLog.segmentPath(
      Math.floor(recordPosition / this.commitLog.options.segmentSizeBytes) *
        this.commitLog.options.segmentSizeBytes,
    );
    for (const { offset, sizeBytes, message: msg } of decodeMessageBatch(e.payload, {
      file,
      position: payloadPosition,
    })) {
      const position = payloadPosition + offset;
      const queueOffset = await this.consumeQueues.dispatch(
        msg.topic,
        msg.queueId,
        position,
        sizeBytes,
        tagHashCode(msg.tag),
      );
      out.messages.push({
        topic: msg.topic,
        queueId: msg.queueId,
        queueOffset,
        position,
        sizeBytes,
      });
      out.metaOps.push(
        ...this.keyIndex.addOps({
          topic: msg.topic,
          keys: msg.keys,
          messageId: msg.messageId,
          position,
          sizeBytes,
          storeTimestampMs: msg.storeTimestampMs,
        }),
      );
    }
  }

  /**
   * Re-dispatches from `dispatchedIndex()` up to `upToIndex` by reading the CommitLog (after
   * open, before the broker applies new entries), writing the key index itself.
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
      if (r.metaOps.length > 0) await this.meta.batch(r.metaOps, { sync: false });
      count += r.messages.length;
    }
    if (count > 0) this.log.info({ dispatchedIndex: this.dispatched, count }, 'dispatch caught up');
    return count;
  }

  /** Syncs the queues and records how far they are durable. */
  async checkpointDispatch(): Promise<void> {
    const index = this.dispatched;
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

  /** Reads and checks the message at a CommitLog position. */
  async readMessage(position: number, sizeBytes: number): Promise<StoredMessage> {
    const bytes = await this.commitLog.readBytes(position, sizeBytes);
    const file = this.commitLog.segmentPath(
      Math.floor(position / this.commitLog.options.segmentSizeBytes) *
        this.commitLog.options.segmentSizeBytes,
    );
    return decodeMessage(bytes, { file, position });
  }

  /** Messages of one queue from `queueOffset`, at most `countMax`. */
  async readQueue(
    topic: string,
    queueId: number,
    queueOffset: number,
    countMax: number,
  ): Promise<LocatedMessage[]> {
    const records = await this.consumeQueues.readRange(topic, queueId, queueOffset, countMax);
    const out: LocatedMessage[] = [];
    for (const r of records) {
      out.push({
        queueOffset: r.offset,
        position: r.position,
        sizeBytes: r.sizeBytes,
        message: await this.readMessage(r.position, r.sizeBytes),
      });
    }
    return out;
  }

  /** Messages with `key` on `topic` (oldest first), at most `limit`. */
  async queryByKey(topic: string, key: string, limit: number): Promise<LocatedMessage[]> {
    const locations = await this.keyIndex.queryByKey(topic, key, {
      limit,
      minPosition: this.commitLog.firstPosition(),
    });
    const out: LocatedMessage[] = [];
    for (const l of locations) {
      out.push({ ...l, message: await this.readMessage(l.position, l.sizeBytes) });
    }
    return out;
  }

  /** The message with producer id `messageId`, if the log still holds it. */
  async queryById(messageId: string): Promise<LocatedMessage | undefined> {
    const l = await this.keyIndex.queryById(messageId, this.commitLog.firstPosition());
    return l && { ...l, message: await this.readMessage(l.position, l.sizeBytes) };
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
    for (const prefix of [MetaKeys.messageKeySpacePrefix, MetaKeys.messageIdPrefix]) {
      for (;;) {
        const rows = await this.meta.scan(prefix, { limit: 1024 });
        if (rows.length === 0) break;
        await this.meta.batch(
          rows.map(([key]) => ({ type: 'del' as const, key })),
          { sync: false },
        );
      }
    }
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
    const first = await this.commitLog.applyRetention(
      Math.min(keepFromIndexMax, this.dispatched + 1),
    );
    const minPosition = this.commitLog.firstPosition();
    await this.consumeQueues.removeBefore(minPosition);
    for (let round = 0; round < 1_000_000; round++) {
      const r = await this.keyIndex.sweepBefore(minPosition, { batchLimit: 1024 });
      if (r.done) break;
    }
    return first;
  }

  async close(): Promise<void> {
    await this.checkpointDispatch();
    await this.consumeQueues.close();
    await this.commitLog.close();
  }
}
