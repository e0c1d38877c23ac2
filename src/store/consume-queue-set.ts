/**
 * All ConsumeQueues under one root (`<root>/<topic>/<queueId>/`). Queues found on disk at open
 * and created since are "known"; a known queue is opened (recovered) on first use and closed
 * again when more than `queuesOpenMax` are open and it is idle, so memory and descriptors stay
 * bounded however many queues there are. One FileCache of `openFilesMax` serves them all.
 *
 * Dispatches are applied in call order: the fast path appends synchronously to an open queue,
 * and once one dispatch has to wait for a queue to open, later ones queue up behind it.
 *
 * The set remembers the highest retention position given to `removeBefore` and applies it to
 * every queue it opens later, so minOffset is the same whether a queue stayed open or not. After
 * a restart the owner calls `removeBefore(commitLog first position)` once to restore it.
 *
 * A queue returned by `queue()` may be closed by a later open that needs its slot; the set's
 * own methods (`readRange`, `dispatch`, ...) pin the queue for the duration of the call.
 */
import * as path from 'node:path';
import type { Disk } from './disk';
import { FileCache } from './file-cache';
import { ConsumeQueue } from './consume-queue';
import { RaftmqError, errnoCode } from '../common/errors';
import { assert } from '../common/assert';
import { type Logger, silentLogger } from '../common/logger';
import type { CqRecord } from './consume-queue-record';
import {
  type ConsumeQueueOptions, assertQueueName, resolveConsumeQueueOptions,
} from './consume-queue-options';

/** Concurrent flushes in `flushAll`. */
const FLUSH_PARALLEL_MAX = 16;
/** Dispatches queued behind a queue that is opening; beyond it `dispatch` refuses with BUSY. */
const DISPATCH_WAITING_MAX = 65_536;

/** {@link ConsumeQueueSet.tryDispatch}: the queue already had the record (a replay). */
export const DISPATCH_SKIPPED = -1;
/**
 * Dispatches into `q`, first writing out its buffered records when they fill its buffer (a
 * burst to one queue between two checkpoints), instead of refusing the record: a refused
 * dispatch fails the apply of a committed entry, which stops the node. A throw (a failed queue)
 * becomes the rejection.
 */
async function dispatchInto(q: ConsumeQueue, position: number, sizeBytes: number,
  tagHash: number): Promise<number | undefined> {
  if (q.bufferFull) await q.flush(false);
  return q.dispatch(position, sizeBytes, tagHash);
}

/** {@link ConsumeQueueSet.tryDispatch}: not done; the caller must use `dispatch`. */
export const DISPATCH_LATER = -2;

export interface ConsumeQueueSetDeps {
  disk: Disk;
  logger?: Logger;
}

/** A queue's name. */
export interface QueueId {
  topic: string;
  queueId: number;
}

interface Entry {
  topic: string;
  queueId: number;
  queue: ConsumeQueue | undefined;
  opening: Promise<ConsumeQueue>;
  /** Calls in progress holding this queue; a pinned queue is never closed by eviction. */
  users: number;
  /** When it was last used (a counter): eviction takes the least recently used first. */
  lastUse: number;
}

const QUEUE_DIR = /^(0|[1-9][0-9]{0,15})$/;
/** Queue ids below this are remembered by {@link ConsumeQueueSet} lookups (array slots). */
const MEMO_QUEUE_IDS = 1024;

function keyOf(topic: string, queueId: number): string {
  return `${topic}\0${queueId}`;
}

export class ConsumeQueueSet {
  readonly options: Readonly<ConsumeQueueOptions>;
  private readonly disk: Disk;
  private readonly log: Logger;
  private readonly files: FileCache;
  private readonly known = new Map<string, QueueId>();
  /** Open or opening queues, with when each was last used. */
  private readonly entries = new Map<string, Entry>();
  /** {@link lookup}'s memo: `entries` by topic, then by queue id; dropped when they change. */
  private readonly memo = new Map<string, (Entry | undefined)[]>();
  private memoTopic: string | undefined;
  private memoQueues: (Entry | undefined)[] = [];
  private useCount = 0;
  private retainFromPosition = 0;
  private dispatchTail: Promise<unknown> = Promise.resolve();
  private dispatchesWaiting = 0;
  private closed = false;

  private constructor(deps: ConsumeQueueSetDeps, readonly root: string,
    options: Readonly<ConsumeQueueOptions>) {
    this.disk = deps.disk;
    this.log = deps.logger ?? silentLogger();
    this.options = options;
    this.files = new FileCache(deps.disk, options.openFilesMax);
  }

  /** Opens the set under `root`, finding the queues on disk (none is opened yet). */
  static async open(deps: ConsumeQueueSetDeps, root: string,
    options?: Partial<ConsumeQueueOptions>): Promise<ConsumeQueueSet> {
    const set = new ConsumeQueueSet(deps, root, resolveConsumeQueueOptions(options));
    await set.disk.mkdirp(root);
    for (const topic of await set.disk.list(root)) {
      for (const name of await set.listTopicDir(path.join(root, topic))) {
        const queueId = Number(name);
        if (!QUEUE_DIR.test(name) || !Number.isSafeInteger(queueId)) {
          set.log.warn({ root, topic, name }, 'ignoring a foreign entry in the consume queue root');
          continue;
        }
        set.known.set(keyOf(topic, queueId), { topic, queueId });
      }
    }
    return set;
  }

  /** The entries of a topic directory; a plain file where one was expected holds no queues. */
  private async listTopicDir(dir: string): Promise<string[]> {
    try {
      return await this.disk.list(dir);
    } catch (err) {
      if (errnoCode(err) !== 'ENOTDIR') throw err;
      // Not ours and not a queue: nothing to discover there, and opening must not fail for it.
      this.log.warn({ path: dir }, 'ignoring a foreign file in the consume queue root');
      return [];
    }
  }

  /** Queues open or opening now (at most `queuesOpenMax` unless all are in use). */
  openCount(): number {
    return this.entries.size;
  }

  private usable(): void {
    if (this.closed) {
      throw new RaftmqError('STORE_CLOSED', `consume queue set ${this.root} is closed`);
    }
  }

  /** Every known queue, sorted by topic then queue id. */
  listQueues(): QueueId[] {
    return [...this.known.values()].map((q) => ({ ...q })).sort((a, b) =>
      (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.queueId - b.queueId));
  }

  /** The queue, opened (and created if new). See the file comment about holding it. */
  async queue(topic: string, queueId: number): Promise<ConsumeQueue> {
    return this.withQueue(topic, queueId, (q) => Promise.resolve(q));
  }

  /** The queue if it exists (on disk or created since open), else undefined. */
  async existing(topic: string, queueId: number): Promise<ConsumeQueue | undefined> {
    this.usable();
    if (!this.known.has(keyOf(topic, queueId))) return undefined;
    return this.queue(topic, queueId);
  }

  /** Reads records of one queue (see ConsumeQueue.readRange). */
  async readRange(topic: string, queueId: number, offset: number, countMax: number):
    Promise<CqRecord[]> {
    return this.withQueue(topic, queueId, (q) => q.readRange(offset, countMax));
  }

  /**
   * The synchronous fast path of {@link dispatch}, for the apply loop: when the queue is open and
   * no dispatch is waiting ahead, appends (unless the queue already covers `position`) and
   * returns the offset, or {@link DISPATCH_SKIPPED}; otherwise does nothing and returns
   * {@link DISPATCH_LATER}, and the caller uses `dispatch`. Throws as `dispatch` rejects.
   */
  tryDispatch(topic: string, queueId: number, position: number, sizeBytes: number,
    tagHash: number): number {
    this.usable();
    if (this.dispatchesWaiting !== 0) return DISPATCH_LATER;
    const entry = this.lookup(topic, queueId);
    const q = entry?.queue;
    if (entry === undefined || q === undefined || q.bufferFull) return DISPATCH_LATER;
    entry.lastUse = ++this.useCount;
    return q.dispatch(position, sizeBytes, tagHash) ?? DISPATCH_SKIPPED;
  }

  /**
   * Appends a record unless the queue already covers `position`; resolves to its offset, or
   * undefined when skipped. Applied in call order.
   */
  dispatch(topic: string, queueId: number, position: number, sizeBytes: number,
    tagHash: number): Promise<number | undefined> {
    this.usable();
    if (this.dispatchesWaiting === 0) {
      const entry = this.lookup(topic, queueId);
      const q = entry?.queue;
      if (entry && q) {
        entry.lastUse = ++this.useCount;
        return dispatchInto(q, position, sizeBytes, tagHash);
      }
    }
    if (this.dispatchesWaiting >= DISPATCH_WAITING_MAX) {
      return Promise.reject(new RaftmqError('BUSY',
        `consume queue set: ${this.dispatchesWaiting} dispatches waiting for queues to open`));
    }
    this.dispatchesWaiting++;
    const run = this.dispatchTail.then(() => this.withQueue(topic, queueId,
      (q) => dispatchInto(q, position, sizeBytes, tagHash)));
    const settle = (): void => { this.dispatchesWaiting--; };
    // The caller gets `run` with its outcome; the chain only orders later dispatches after it.
    this.dispatchTail = run.then(settle, settle);
    return run;
  }

  /** Flushes every open queue (closed ones hold nothing unsynced). */
  async flushAll(sync: boolean): Promise<void> {
    this.usable();
    const pinned = [...this.entries.values()].filter((e) => e.queue !== undefined);
    for (const e of pinned) e.users++;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < pinned.length) {
        const e = pinned[next++] as Entry;
        try {
          await (e.queue as ConsumeQueue).flush(sync);
        } finally {
          e.users--;
        }
      }
    };
    const workers = Array.from({ length: Math.min(FLUSH_PARALLEL_MAX, pinned.length) }, worker);
    throwAll(await Promise.allSettled(workers), 'flush');
  }

  /** Retention over every known queue; remembered for queues opened later. */
  async removeBefore(commitLogMinPosition: number): Promise<void> {
    this.usable();
    this.retainFromPosition = Math.max(this.retainFromPosition, commitLogMinPosition);
    for (const q of this.listQueues()) {
      await this.withQueue(q.topic, q.queueId, (cq) => cq.removeBefore(commitLogMinPosition));
    }
  }

  /** Drops, in every known queue, the records pointing at or beyond `commitLogPosition`. */
  async truncateAfterPosition(commitLogPosition: number): Promise<void> {
    this.usable();
    for (const q of this.listQueues()) {
      await this.withQueue(q.topic, q.queueId, (cq) => cq.truncateAfterPosition(commitLogPosition));
    }
  }

  /**
   * Closes every queue and removes all their files, for a rebuild from the CommitLog. Not
   * atomic: the owner records that a rebuild is under way and starts it again after a crash.
   */
  async deleteAll(): Promise<void> {
    this.usable();
    assert(this.dispatchesWaiting === 0 && [...this.entries.values()].every((e) => e.users === 0),
      'consume queue set: deleteAll while calls are in progress');
    await this.closeQueues();
    this.known.clear();
    await this.disk.removeTree(this.root);
    await this.disk.mkdirp(this.root);
    await this.disk.syncDir(path.dirname(this.root));
    this.log.info({ root: this.root }, 'consume queues deleted for a rebuild');
  }

  /** Flushes and closes every queue; later calls throw STORE_CLOSED. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.closeQueues();
    } finally {
      await this.files.closeAll();
    }
  }

  private async closeQueues(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    this.forgetLookups();
    const results: PromiseSettledResult<void>[] = [];
    for (const e of all) {
      // A queue that failed to open has nothing to close; that failure went to its opener.
      const closing = e.opening.then((q) => q.close(), () => undefined);
      results.push(...await Promise.allSettled([closing]));
    }
    throwAll(results, 'close');
  }

  /**
   * The entry of an open or opening queue, as `entries.get(keyOf(topic, queueId))`. The apply
   * loop asks once per message; a key string built and hashed for each was 2 to 3% of a
   * follower's CPU (docs/performance.md), so found entries are remembered by topic and queue id
   * until `entries` changes ({@link forgetLookups}).
   */
  private lookup(topic: string, queueId: number): Entry | undefined {
    let queues = this.memoQueues;
    if (topic !== this.memoTopic) {
      // The last topic is checked first: a batch usually holds one, and a Map lookup would hash
      // the topic string, decoded afresh for every message.
      queues = this.memo.get(topic) ?? [];
      this.memo.set(topic, queues);
      this.memoTopic = topic;
      this.memoQueues = queues;
    }
    const small = queueId < MEMO_QUEUE_IDS;
    let entry = small ? queues[queueId] : undefined;
    if (entry === undefined) {
      entry = this.entries.get(keyOf(topic, queueId));
      if (entry !== undefined && small) queues[queueId] = entry;
    }
    return entry;
  }

  /** Drops {@link lookup}'s memo; called on every change of `entries`. */
  private forgetLookups(): void {
    this.memo.clear();
    this.memoTopic = undefined;
    this.memoQueues = [];
  }

  /** Runs `fn` with the queue opened and pinned. */
  private async withQueue<T>(topic: string, queueId: number,
    fn: (q: ConsumeQueue) => Promise<T>): Promise<T> {
    this.usable();
    assertQueueName(topic, queueId);
    const key = keyOf(topic, queueId);
    let entry = this.entries.get(key);
    if (!entry) {
      entry = this.startOpen(key, topic, queueId);
      this.entries.set(key, entry);
      this.forgetLookups();
    }
    entry.lastUse = ++this.useCount;
    entry.users++;
    try {
      return await fn(await entry.opening);
    } finally {
      entry.users--;
    }
  }

  private startOpen(key: string, topic: string, queueId: number): Entry {
    const entry = {
      topic,
      queueId,
      queue: undefined as ConsumeQueue | undefined,
      users: 0,
      lastUse: ++this.useCount,
    };
    const opening = (async () => {
      try {
        await this.evict(key);
        const q = await ConsumeQueue.open({ disk: this.disk, files: this.files, logger: this.log },
          this.root, topic, queueId, this.options);
        if (this.retainFromPosition > 0) await q.removeBefore(this.retainFromPosition);
        this.known.set(key, { topic, queueId });
        entry.queue = q;
        return q;
      } catch (err) {
        if (this.entries.get(key) === entry) {
          this.entries.delete(key);
          this.forgetLookups();
        }
        throw err;
      }
    })();
    return Object.assign(entry, { opening });
  }

  /**
   * Closes least recently used idle queues until `opening` (about to be added, or just added)
   * fits within `queuesOpenMax`; clean queues go first, a dirty one is synced before it goes.
   * BUSY when every other open queue is in use.
   */
  private async evict(opening: string): Promise<void> {
    const over = (): number => this.entries.size + (this.entries.has(opening) ? 0 : 1)
      - this.options.queuesOpenMax;
    const roundsMax = 2 * this.entries.size + 2;
    for (let round = 0; round < roundsMax && over() > 0; round++) {
      let victim: [string, ConsumeQueue] | undefined;
      let dirty: Entry | undefined;
      // Least recently used first. (Uses bump a counter rather than reorder the map: a reorder
      // per message applied was most of the dispatch fast path's cost, and eviction is rare.)
      const byUse = [...this.entries].sort((a, b) => a[1].lastUse - b[1].lastUse);
      for (const [key, e] of byUse) {
        if (e.users > 0 || e.queue === undefined) continue;
        if (e.queue.isClean()) {
          victim = [key, e.queue];
          break;
        }
        dirty ??= e;
      }
      if (victim) {
        this.entries.delete(victim[0]);
        this.forgetLookups();
        await victim[1].close();
      } else if (dirty) {
        dirty.users++;
        try {
          await (dirty.queue as ConsumeQueue).flush(true);
        } finally {
          dirty.users--;
        }
      } else {
        break;
      }
    }
    if (over() > 0) {
      throw new RaftmqError('BUSY',
        `consume queue set: ${this.entries.size} queues open and in use`,
        { details: { queuesOpenMax: this.options.queuesOpenMax } });
    }
  }
}

/** Throws the only failure, or one naming them all. */
function throwAll(results: readonly PromiseSettledResult<unknown>[], what: string): void {
  const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    .map((r) => r.reason as unknown);
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) {
    throw new RaftmqError('STORE_FATAL', `consume queue ${what} failed for ${errors.length} queues`,
      { cause: new AggregateError(errors) });
  }
}
