/**
 * The broker's replicated state machine. The Raft driver hands it committed entries in order;
 * it files messages under their queues (MessageStore.dispatch assigns queue offsets in log
 * order, identically on every node), applies configuration, offset and pop commands, and writes
 * the resulting metadata and its applied index in one atomic LevelDB batch, so a restart resumes
 * from a consistent point and re-applying is harmless.
 *
 * Metadata writes are deferred and coalesced: the state in memory runs ahead, and what changed
 * is written (last value per key, with the applied index it matches) once a checkpoint interval
 * has passed, when `pendingOpsMax` keys wait, and on close. A crash loses only the unwritten
 * tail, which the driver applies again from the log (it resumes after the stored applied
 * index). Most pop records live shorter than the interval (received, then acknowledged), so
 * their put and delete cancel out and never reach LevelDB: a delete is written only for a key
 * the store holds.
 *
 * Ordering that keeps restarts consistent: the dispatch checkpoint (how far the queue files are
 * durable) is written only after the apply batch that covers it, so it never runs ahead of the
 * applied index; on open the queues are caught up from it to the applied index.
 *
 * Apply never throws for bad commands: a command that cannot apply records a failed
 * CommandResult (the same on every node) for whoever proposed it. Only IO failures throw, and
 * those stop the driver for good.
 */
import { assert } from '../common/assert';
import type { Clock } from '../common/clock';
import { RaftmqError, isRaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { EntryType, type LogEntry } from '../store/log-record';
import { isMessageBatch } from '../store/message-batch';
import type { DispatchedBatch, MessageStore } from '../store/message-store';
import {
  type MetaBatchOp,
  type MetaStore,
  MetaKeys,
  getMeta,
  jsonCodec,
  decodeMeta,
} from '../store/meta';
import {
  type BrokerCommand,
  type CommandResult,
  type PutMode,
  checkGroupConfig,
  checkTopicConfig,
  decodeCommands,
  isCommandPayload,
} from './broker-command';
import type { GroupConfig, QueueRange, TopicConfig } from './broker-types';
import { PopState, PopWrites } from './pop-state';
import { QueueWaiters } from './queue-waiters';

/** What applying one entry produced, kept for the proposer on this node. */
export interface EntryOutcome {
  readonly messages?: DispatchedBatch;
  readonly results?: readonly CommandResult[];
}

export interface BrokerStateOptions {
  /** Outcomes of this many recent entries are kept for their proposers. */
  outcomesKeptMax: number;
  /** Deferred metadata and the dispatch checkpoint are written at most this often. */
  checkpointIntervalMs: number;
  /** Deferred metadata keys waiting, at most: more write them before the interval ends. */
  pendingOpsMax: number;
  /** Long-poll waiters, at most. */
  waitersMax: number;
}

export const BROKER_STATE_DEFAULTS: Readonly<BrokerStateOptions> = Object.freeze({
  outcomesKeptMax: 65_536,
  checkpointIntervalMs: 1_000,
  pendingOpsMax: 65_536,
  waitersMax: 100_000,
});

const appliedCodec = jsonCodec<number>((v) => {
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new TypeError('applied index');
  return v as number;
});
const topicCodec = jsonCodec<TopicConfig>((v) => {
  checkTopicConfig(v, true);
  return v;
});
const groupCodec = jsonCodec<GroupConfig>((v) => {
  checkGroupConfig(v);
  return v;
});
const rawJsonCodec = jsonCodec<unknown>((v) => v);
const offsetCodec = jsonCodec<number>((v) => {
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new TypeError('offset');
  return v as number;
});

/** The offsets a queue holds: [min, max). */
interface QueueBounds {
  min: number;
  max: number;
}

function offsetKey(group: string, topic: string, queueId: number): string {
  return `${group}\0${topic}\0${queueId}`;
}

/** The group, topic and queue id of an {@link offsetKey} (names never hold NUL). */
function offsetKeyParts(key: string): [group: string, topic: string, queueId: number] {
  const [group, topic, queueId] = key.split('\0') as [string, string, string];
  return [group, topic, Number(queueId)];
}

export class BrokerState {
  private applied: number;
  /**
   * The applied index as last written to the metadata store (at most `applied`). Entries after
   * it are the tail a crash applies again: retention (MessageStore.applyRetention) must never
   * remove them.
   */
  private appliedStored: number;
  private readonly topics = new Map<string, TopicConfig>();
  private readonly groups = new Map<string, GroupConfig>();
  private readonly offsets = new Map<string, number>();
  /** Queue bounds by topic, then queue id (no key string built per message applied). */
  private readonly ranges = new Map<string, Map<number, QueueBounds>>();
  private readonly outcomes = new Map<number, EntryOutcome>();
  private lastCheckpointMs = 0;
  /** Pop consumption state (receive, ack, invisibility) of every group and queue. */
  readonly pop = new PopState();
  private readonly popWrites = new PopWrites();
  /** Metadata changed since the last write, by key (the latest op of each). */
  private readonly pendingOps = new Map<string, MetaBatchOp>();
  /** Called after entries applied that changed topics (for NameServer registration). */
  onTopicsChanged: (() => void) | undefined;
  readonly waiters: QueueWaiters;

  private constructor(
    readonly store: MessageStore,
    private readonly meta: MetaStore,
    private readonly clock: Clock,
    private readonly log: Logger,
    readonly options: Readonly<BrokerStateOptions>,
    applied: number,
  ) {
    this.applied = applied;
    this.appliedStored = applied;
    this.waiters = new QueueWaiters(options.waitersMax);
  }

  /**
   * Loads topics, groups, offsets and the applied index, then catches the queues up to the
   * applied index (they may lag after a crash).
   */
  static async open(
    store: MessageStore,
    meta: MetaStore,
    clock: Clock,
    log: Logger,
    options: Partial<BrokerStateOptions> = {},
  ): Promise<BrokerState> {
    const resolved = Object.freeze({ ...BROKER_STATE_DEFAULTS, ...options });
    let applied = (await getMeta(meta, MetaKeys.applyIndex, appliedCodec)) ?? 0;
    const log0 = store.commitLog;
    if (applied > log0.lastIndex()) {
      // Possible only after losing unsynced log writes (ASYNC flush): the entries are committed
      // and come back from the leader; re-applying them is harmless.
      log.warn({ applied, lastIndex: log0.lastIndex() }, 'applied index beyond the log');
      applied = log0.lastIndex();
    }
    applied = Math.max(applied, log0.firstIndex() - 1);
    const state = new BrokerState(store, meta, clock, log, resolved, applied);
    if (store.dispatchedIndex() > applied) {
      // The store was closed without the state (a failed start): its queue checkpoint may be
      // ahead of the stored applied index. Those entries are applied again; the queues skip
      // the records they have.
      log.warn(
        { applied, dispatched: store.dispatchedIndex() },
        'queue checkpoint ahead of the applied index; applying those entries again',
      );
      store.rewindDispatch(applied);
    }
    await state.load();
    if (store.dispatchedIndex() < applied) await store.catchUp(applied);
    assert(
      store.dispatchedIndex() >= applied,
      () => `broker state: dispatched ${store.dispatchedIndex()} < applied ${applied}`,
    );
    await state.loadRanges();
    return state;
  }

  private async load(): Promise<void> {
    for (const [key, value] of await this.meta.scan(MetaKeys.topicPrefix)) {
      const t = decodeMeta(topicCodec, key, value);
      this.topics.set(t.name, t);
    }
    for (const [key, value] of await this.meta.scan(MetaKeys.groupPrefix)) {
      const g = decodeMeta(groupCodec, key, value);
      this.groups.set(g.name, g);
    }
    for (const [key, value] of await this.meta.scan('o\0')) {
      const parts = key.split('\0');
      const [, group, topic, queueHex] = parts;
      if (parts.length !== 4 || group === undefined || topic === undefined || !queueHex) {
        throw new RaftmqError('META_CORRUPT', `bad consumer offset key ${JSON.stringify(key)}`);
      }
      this.offsets.set(
        offsetKey(group, topic, parseInt(queueHex, 16)),
        decodeMeta(offsetCodec, key, value),
      );
    }
    await this.loadPop();
  }

  private async loadPop(): Promise<void> {
    const parse = (key: string, value: Uint8Array): unknown => decodeMeta(rawJsonCodec, key, value);
    const corrupt = (key: string, err?: unknown): RaftmqError =>
      new RaftmqError('META_CORRUPT', `bad pop state under ${JSON.stringify(key)}`, {
        cause: err,
      });
    const handleBytes = await this.meta.get(MetaKeys.popHandleNext);
    if (handleBytes !== undefined) {
      try {
        this.pop.loadHandleNext(parse(MetaKeys.popHandleNext, handleBytes));
      } catch (err) {
        throw corrupt(MetaKeys.popHandleNext, err);
      }
    }
    for (const [key, value] of await this.meta.scan(MetaKeys.popQueuePrefix)) {
      const [, group, topic, queueHex, extra] = key.split('\0');
      if (group === undefined || topic === undefined || !queueHex || extra !== undefined) {
        throw corrupt(key);
      }
      try {
        this.pop.loadQueue(group, topic, parseInt(queueHex, 16), parse(key, value));
      } catch (err) {
        throw corrupt(key, err);
      }
    }
    for (const [key, value] of await this.meta.scan(MetaKeys.popRecordPrefix)) {
      const [, group, topic, queueHex, offsetHex, extra] = key.split('\0');
      if (!group || topic === undefined || !queueHex || !offsetHex || extra !== undefined) {
        throw corrupt(key);
      }
      const queueId = parseInt(queueHex, 16);
      const offset = parseInt(offsetHex, 16);
      this.popWrites.markStored(group, topic, queueId, offset);
      try {
        this.pop.loadRecord(group, topic, queueId, offset, parse(key, value));
      } catch (err) {
        throw corrupt(key, err);
      }
    }
    try {
      this.pop.checkLoaded();
    } catch (err) {
      throw corrupt(MetaKeys.popQueuePrefix, err);
    }
  }

  private async loadRanges(): Promise<void> {
    for (const { topic, queueId } of this.store.consumeQueues.listQueues()) {
      const q = await this.store.consumeQueues.existing(topic, queueId);
      if (q) this.boundsOf(topic, queueId, q.minOffset).max = q.maxOffset;
    }
    // Floors of queues whose topic was deleted (forgetTopicData): nothing below is served.
    for (const [key, value] of await this.meta.scan(MetaKeys.queueFloorPrefix)) {
      const [, topic, queueHex] = key.split('\0');
      if (topic === undefined || !queueHex) {
        throw new RaftmqError('META_CORRUPT', `bad queue floor key ${JSON.stringify(key)}`);
      }
      const floor = decodeMeta(offsetCodec, key, value);
      const r = this.boundsOf(topic, parseInt(queueHex, 16), floor);
      r.min = Math.max(r.min, Math.min(floor, r.max));
    }
  }

  get appliedIndex(): number {
    return this.applied;
  }

  getTopic(name: string): TopicConfig | undefined {
    return this.topics.get(name);
  }

  listTopics(): TopicConfig[] {
    return [...this.topics.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** Topics applied, without copying them (auto-creation checks `topicsMax` against it). */
  get topicCount(): number {
    return this.topics.size;
  }

  getGroup(name: string): GroupConfig | undefined {
    return this.groups.get(name);
  }

  /** Consumer groups applied (auto-creation checks `groupsMax` against it). */
  get groupCount(): number {
    return this.groups.size;
  }

  listGroups(): GroupConfig[] {
    return [...this.groups.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  getOffset(group: string, topic: string, queueId: number): number | undefined {
    return this.offsets.get(offsetKey(group, topic, queueId));
  }

  /**
   * The first index retention may keep at most: entries after the applied index as last
   * written to the metadata store are applied again after a crash, so they must stay.
   */
  get retainFromIndexMax(): number {
    return this.appliedStored + 1;
  }

  /**
   * After retention removed a prefix (MessageStore.removeBefore): each queue's first offset
   * moves up to its ConsumeQueue's new first offset, and never below the floor a deleted topic
   * left (`forgetTopicData`), as `loadRanges` computes it at open. Reads below it are moved up
   * or refused as for any offset below a queue's first.
   */
  async raiseQueueMins(): Promise<void> {
    for (const { topic, queueId } of this.store.consumeQueues.listQueues()) {
      const r = this.ranges.get(topic)?.get(queueId);
      if (r === undefined) continue;
      const q = await this.store.consumeQueues.existing(topic, queueId);
      if (q !== undefined) r.min = Math.max(r.min, Math.min(q.minOffset, r.max));
    }
  }

  queueRange(topic: string, queueId: number): QueueRange {
    const r = this.ranges.get(topic)?.get(queueId);
    return r ? { min: r.min, max: r.max } : { min: 0, max: 0 };
  }

  /** Takes (and forgets) the outcome of entry `index`, if still kept. */
  takeOutcome(index: number): EntryOutcome | undefined {
    const o = this.outcomes.get(index);
    this.outcomes.delete(index);
    return o;
  }

  /** The driver's apply callback. */
  async apply(entries: readonly LogEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const dispatched = await this.store.dispatch(entries);
    const ops: MetaBatchOp[] = [];
    let topicsChanged = false;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i] as LogEntry;
      if (e.type !== EntryType.NORMAL) continue;
      const messages = dispatched.batches[i];
      if (messages !== undefined) {
        this.noteDispatched(messages);
        this.keepOutcome(e.index, { messages });
      } else if (isCommandPayload(e.payload)) {
        const results = this.applyCommands(e, ops);
        if (results.changedTopics) topicsChanged = true;
        this.keepOutcome(e.index, { results: results.results });
      } else {
        assert(!isMessageBatch(e.payload), 'broker state: a message entry was not dispatched');
        this.log.warn({ index: e.index }, 'ignoring an entry of unknown payload kind');
      }
    }
    for (const op of ops) this.pendingOps.set(op.key, op);
    const last = entries[entries.length - 1] as LogEntry;
    const nowMs = this.clock.monotonicMs();
    const checkpointDue = nowMs - this.lastCheckpointMs >= this.options.checkpointIntervalMs;
    // Deferred (see the file comment): entries that only carry messages change no metadata at
    // all (their effects are in the queues and the key index, which skip what they already
    // have when entries are applied again), and commands' metadata waits for the checkpoint.
    // The dispatch checkpoint is written only after the applied index, so it never runs ahead.
    if (checkpointDue || this.pendingOps.size + this.popWrites.size >= this.options.pendingOpsMax) {
      await this.writeApplied(last.index);
    }
    this.applied = last.index;
    this.waiters.notifyAll((topic, queueId) => this.queueRange(topic, queueId).max);
    if (topicsChanged) this.onTopicsChanged?.();
    if (checkpointDue) {
      this.lastCheckpointMs = nowMs;
      await this.store.checkpointDispatch();
    }
  }

  /**
   * Writes the pending metadata and the applied index `index` in one batch; what this node
   * knows of the store changes only once the batch landed.
   */
  private async writeApplied(index: number): Promise<void> {
    const ops: MetaBatchOp[] = [...this.pendingOps.values()];
    this.popWrites.flushTo(ops);
    ops.push({ type: 'put', key: MetaKeys.applyIndex, value: appliedCodec.encode(index) });
    await this.meta.batch(ops, { sync: false });
    this.pendingOps.clear();
    this.appliedStored = index;
  }

  /** The bounds of a queue, created (from `min`) when new. */
  private boundsOf(topic: string, queueId: number, min: number): QueueBounds {
    let byId = this.ranges.get(topic);
    if (byId === undefined) {
      byId = new Map();
      this.ranges.set(topic, byId);
    }
    let r = byId.get(queueId);
    if (r === undefined) {
      r = { min, max: min };
      byId.set(queueId, r);
    }
    return r;
  }

  private noteDispatched(d: DispatchedBatch): void {
    // Consecutive messages often share a queue: look its bounds up once per run.
    let topic: string | undefined;
    let queueId = -1;
    let r: QueueBounds | undefined;
    for (let i = 0; i < d.count; i++) {
      const offset = d.queueOffsets[i] ?? -1;
      if (offset < 0) continue;
      const t = d.topics[i] as string;
      const q = d.queueIds[i] as number;
      if (r === undefined || t !== topic || q !== queueId) {
        topic = t;
        queueId = q;
        r = this.boundsOf(t, q, 0);
        this.waiters.touched(t, q);
      }
      if (offset + 1 > r.max) r.max = offset + 1;
    }
  }

  private keepOutcome(index: number, outcome: EntryOutcome): void {
    this.outcomes.set(index, outcome);
    if (this.outcomes.size > this.options.outcomesKeptMax) {
      const oldest = this.outcomes.keys().next();
      if (oldest.done !== true) this.outcomes.delete(oldest.value);
    }
  }

  private applyCommands(
    e: LogEntry,
    ops: MetaBatchOp[],
  ): { results: CommandResult[]; changedTopics: boolean } {
    let commands: BrokerCommand[];
    try {
      commands = decodeCommands(e.payload);
    } catch (err) {
      // Every node decodes the same bytes and skips them alike; the proposer learns why.
      this.log.error({ err, index: e.index }, 'skipping an undecodable command entry');
      return { results: [fail('INVALID_ARGUMENT', String(err))], changedTopics: false };
    }
    let changedTopics = false;
    // A loop, not a callback made per call: V8 compiles a hot closure again for each instance.
    const results = new Array<CommandResult>(commands.length);
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i] as BrokerCommand;
      const r = this.applyCommand(c, ops);
      if (r.ok && (c.op === 'topic.put' || c.op === 'topic.delete')) changedTopics = true;
      results[i] = r;
    }
    return { results, changedTopics };
  }

  private applyCommand(c: BrokerCommand, ops: MetaBatchOp[]): CommandResult {
    try {
      switch (c.op) {
        case 'topic.put':
          return this.putTopic(c.topic, c.mode, ops);
        case 'topic.delete':
          if (!this.topics.delete(c.name)) return fail('TOPIC_NOT_FOUND', `no topic ${c.name}`);
          ops.push({ type: 'del', key: MetaKeys.topic(c.name) });
          this.forgetTopicData(c.name, ops);
          return { ok: true };
        case 'group.put':
          return this.putGroup(c.group, c.mode, ops);
        case 'group.delete':
          if (!this.groups.delete(c.name)) return fail('GROUP_NOT_FOUND', `no group ${c.name}`);
          ops.push({ type: 'del', key: MetaKeys.group(c.name) });
          // Its pop state goes with it (consumer offsets stay, as in RocketMQ by default).
          this.pop.dropGroup(c.name, this.popWrites);
          return { ok: true };
        case 'pop.receive':
        case 'pop.ack':
        case 'pop.change':
        case 'pop.settle':
          return this.pop.apply(c, this.popWrites);
        case 'offset.commit': {
          if (c.offset < 0 || c.queueId < 0) return fail('INVALID_ARGUMENT', 'negative offset');
          this.offsets.set(offsetKey(c.group, c.topic, c.queueId), c.offset);
          ops.push({
            type: 'put',
            key: MetaKeys.consumerOffset(c.group, c.topic, c.queueId),
            value: offsetCodec.encode(c.offset),
          });
          return { ok: true };
        }
      }
    } catch (err) {
      if (isRaftmqError(err)) return fail('INVALID_ARGUMENT', err.message);
      throw err;
    }
  }

  /**
   * What a deleted topic leaves behind goes with it, as RocketMQ's deletion removes a topic's
   * queues and consumer offsets: each queue's first offset moves to its end (kept as the queue's
   * floor, so a topic made again under the name starts there, with none of the old messages),
   * and every group's consumer offsets and pop state on it are dropped. The records stay in the
   * files until retention removes them; nothing is served below a floor. Runs in log order
   * (the queue ends are those of the messages applied before the deletion), alike on every node.
   */
  private forgetTopicData(topic: string, ops: MetaBatchOp[]): void {
    for (const [queueId, r] of this.ranges.get(topic) ?? []) {
      r.min = r.max;
      ops.push({
        type: 'put',
        key: MetaKeys.queueFloor(topic, queueId),
        value: offsetCodec.encode(r.max),
      });
    }
    for (const key of [...this.offsets.keys()]) {
      const [group, t, queueId] = offsetKeyParts(key);
      if (t !== topic) continue;
      this.offsets.delete(key);
      ops.push({ type: 'del', key: MetaKeys.consumerOffset(group, topic, queueId) });
    }
    this.pop.dropTopic(topic, this.popWrites);
  }

  private putTopic(t: TopicConfig, mode: PutMode, ops: MetaBatchOp[]): CommandResult {
    checkTopicConfig(t, true);
    const existing = this.topics.get(t.name);
    if (mode === 'create' && existing) return fail('TOPIC_EXISTS', `topic ${t.name} exists`);
    if (mode === 'update' && !existing) return fail('TOPIC_NOT_FOUND', `no topic ${t.name}`);
    if (mode === 'ensure' && existing) return { ok: true };
    if (existing && t.queueCount < existing.queueCount) {
      return fail(
        'INVALID_ARGUMENT',
        `topic ${t.name}: queue count may only grow (${existing.queueCount} -> ${t.queueCount})`,
      );
    }
    const topic: TopicConfig = {
      name: t.name,
      queueCount: t.queueCount,
      perm: t.perm,
      messageTypes: [...t.messageTypes],
    };
    this.topics.set(t.name, topic);
    ops.push({ type: 'put', key: MetaKeys.topic(t.name), value: topicCodec.encode(topic) });
    return { ok: true };
  }

  private putGroup(g: GroupConfig, mode: PutMode, ops: MetaBatchOp[]): CommandResult {
    checkGroupConfig(g);
    const existing = this.groups.get(g.name);
    if (mode === 'create' && existing) {
      return fail('INVALID_ARGUMENT', `consumer group ${g.name} exists`);
    }
    if (mode === 'update' && !existing) return fail('GROUP_NOT_FOUND', `no group ${g.name}`);
    if (mode === 'ensure' && existing) return { ok: true };
    const group: GroupConfig = {
      name: g.name,
      maxDeliveryAttempts: g.maxDeliveryAttempts,
      fifo: g.fifo,
    };
    this.groups.set(g.name, group);
    ops.push({ type: 'put', key: MetaKeys.group(g.name), value: groupCodec.encode(group) });
    return { ok: true };
  }

  /** Writes the applied index, syncs queue files and records the checkpoint (on close). */
  async close(): Promise<void> {
    this.waiters.closeAll();
    if (this.appliedStored < this.applied || this.pendingOps.size + this.popWrites.size > 0) {
      await this.writeApplied(this.applied);
    }
    await this.store.checkpointDispatch();
  }
}

function fail(code: Exclude<CommandResult, { ok: true }>['code'], message: string): CommandResult {
  return { ok: false, code, message };
}
