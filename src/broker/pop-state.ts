/**
 * Pop consumption state: for each consumer group and queue, which messages are handed out and
 * not yet settled, when each may be handed out again, how often each was delivered, and the
 * acknowledged frontier. RocketMQ keeps this on one broker (checkpoint and ack files) and can
 * lose or replay it on failover; raftmq changes it only through commands in the Raft log, so
 * every node holds the same state and a new leader redelivers exactly what was not settled.
 *
 * Pure and deterministic: no IO, no clock. Time comes in the commands (`nowMs`, the proposing
 * leader's wall clock), so applying the same commands gives the same state everywhere.
 *
 * A queue's offsets fall in three ranges:
 * - below `frontier`: settled (acknowledged, filtered out, dead-lettered or gone);
 * - `[frontier, cursor)`: each either in flight (a {@link PopRecord}) or settled out of order;
 * - from `cursor`: never handed out.
 *
 * Receipt handles are numbers from one counter (`handleNext`), so each delivery and each
 * invisibility change gets a handle no other has had. A record accepts the handle of its latest
 * delivery and the one of its latest invisibility change (contract §5.7): a push consumer acks
 * with the original handle after the server renewed it, a simple consumer with the newest.
 */
import { assert } from '../common/assert';
import { MetaKeys, type MetaBatchOp } from '../store/meta';

/** A message handed out and not settled. */
export interface PopRecord {
  /** Deliveries so far: 1 after the first. */
  attempt: number;
  /** Wall-clock ms (the proposer's clock) from which it may be handed out again. */
  visibleAtMs: number;
  /** Handle of the latest delivery. */
  deliveryHandle: number;
  /** Handle of the latest invisibility change since that delivery, 0 when none. */
  renewHandle: number;
  /** The message's group (FIFO order key), '' when it has none. */
  messageGroup: string;
}

/** One consumer group's state on one queue. */
export interface PopQueue {
  frontier: number;
  cursor: number;
  readonly inflight: Map<number, PopRecord>;
  /** Offsets in (frontier, cursor) settled while an earlier one is still in flight. */
  readonly settled: Set<number>;
}

interface QueueRef {
  readonly group: string;
  readonly topic: string;
  readonly queueId: number;
}

/** Hands out messages: fresh ones from the cursor, and in-flight ones whose time ran out. */
export interface PopReceiveCommand extends QueueRef {
  readonly op: 'pop.receive';
  readonly nowMs: number;
  readonly invisibleMs: number;
  /**
   * Fresh deliveries: the cursor the proposer saw, where it stopped, and the offsets of
   * `[from, to)` it hands out (ascending). The other offsets of that range did not match the
   * group's filter (or are gone) and are settled. Refused whole unless `from` is the cursor.
   */
  readonly from: number;
  readonly to: number;
  readonly fresh: readonly { readonly offset: number; readonly messageGroup: string }[];
  /** Redeliveries: in-flight offsets, with the attempt count the proposer saw. */
  readonly again: readonly { readonly offset: number; readonly attempt: number }[];
}

/** Settles a message (AckMessage). */
export interface PopAckCommand extends QueueRef {
  readonly op: 'pop.ack';
  readonly offset: number;
  readonly handle: number;
}

/**
 * Changes when a message may be handed out again (ChangeInvisibleDuration, and the leader's
 * renewal of auto-renewed deliveries, pop-renewer.ts).
 */
export interface PopChangeCommand extends QueueRef {
  readonly op: 'pop.change';
  readonly offset: number;
  readonly handle: number;
  readonly nowMs: number;
  readonly invisibleMs: number;
  /**
   * When present, the change applies only if the delivery's latest invisibility change is
   * still this one (0: none since the delivery). The leader's renewals carry the handle of
   * their own last renewal: a consumer's nack or change that came in between wins over a
   * renewal proposed before it was applied, instead of being overwritten by it. (Absent in
   * every command written before 2026-12-04, and in those of ChangeInvisibleDuration.)
   */
  readonly renewHandle?: number;
}

/**
 * Settles a message without an ack: moved to the dead-letter queue (`dlq`), its message is no
 * longer stored (`gone`), or its invisibility ran out and the group's filter no longer takes it
 * (`filtered`: its subscription changed while the message was in flight). Applies only if its
 * attempt count is still `attempt`.
 */
export interface PopSettleCommand extends QueueRef {
  readonly op: 'pop.settle';
  readonly offset: number;
  readonly attempt: number;
  readonly reason: 'dlq' | 'gone' | 'filtered';
  /**
   * The delivery's invisibility-change handle when the leader decided (absent in commands
   * written before 2026-12-04): the settle applies only if no change came since. A consumer
   * that renewed its lease while the dead-letter copy was being stored keeps the message; the
   * copy is then a spare, never a message taken from under a lease (in a FIFO group that let
   * the next message of its message group go out).
   */
  readonly renewHandle?: number;
}

export type PopCommand = PopReceiveCommand | PopAckCommand | PopChangeCommand | PopSettleCommand;

/** One message a receive handed out. */
export interface PopGrant {
  readonly offset: number;
  readonly attempt: number;
  readonly handle: number;
  readonly visibleAtMs: number;
}

/** What applying a pop command produced (the same on every node). */
export type PopResult =
  | { readonly ok: true; readonly grants?: readonly PopGrant[]; readonly handle?: number }
  | {
      readonly ok: false;
      readonly code: 'INVALID_RECEIPT_HANDLE' | 'INVALID_ARGUMENT';
      readonly message: string;
    };

/** Bounds of the pop state. */
export interface PopLimits {
  /** `cursor - frontier` of one queue, at most: how far handing out may run ahead of acks. */
  windowMax: number;
  /** Invisibility of one delivery or change, at most (RocketMQ's proxy: 12 h). */
  invisibleMsMax: number;
}

export const POP_LIMITS_DEFAULTS: Readonly<PopLimits> = Object.freeze({
  windowMax: 65_536,
  invisibleMsMax: 12 * 3600 * 1000,
});

/** A pending write of one record: the record (written as it is at flush), settled, or gone. */
type RecordWrite = PopRecord | 'settled' | null;

interface QueueWrites {
  readonly ref: QueueRef;
  readonly q: PopQueue;
  readonly records: Map<number, RecordWrite>;
  /** The queue's row is to be written, or deleted (the queue was dropped). */
  row: boolean | 'delete';
}

/**
 * The metadata writes of applied pop commands, last write of a key wins, until `flushTo` turns
 * them into batch operations. Nothing is encoded before that: records and queue rows are
 * written as they are at flush, keys are built then, and a record put and deleted in between
 * costs a map entry, not a string and a JSON document (the broker flushes once a second, and
 * most records live shorter than that). A record that is gone is deleted only if it was ever
 * written: most never were, and building their keys to find that out cost a follower a tenth
 * of its CPU in batched receive+ack.
 */
export class PopWrites {
  private readonly queues = new Map<PopQueue, QueueWrites>();
  /** Offsets whose record the metadata store holds (written, not deleted since), by queue. */
  private readonly stored = new Map<string, Set<number>>();
  private handleNext: number | undefined;
  private waiting = 0;

  /** Keys waiting to be written. */
  get size(): number {
    return this.waiting + (this.handleNext === undefined ? 0 : 1);
  }

  private of(ref: QueueRef, q: PopQueue): QueueWrites {
    let w = this.queues.get(q);
    if (w === undefined) {
      const copy = { group: ref.group, topic: ref.topic, queueId: ref.queueId };
      w = { ref: copy, q, records: new Map(), row: false };
      this.queues.set(q, w);
    }
    return w;
  }

  /** `offset` of `q` is now `value`: a record in flight, settled out of order, or gone. */
  record(ref: QueueRef, q: PopQueue, offset: number, value: RecordWrite): void {
    const records = this.of(ref, q).records;
    if (!records.has(offset)) this.waiting += 1;
    records.set(offset, value);
  }

  /** The frontier or cursor of `q` moved. */
  queueRow(ref: QueueRef, q: PopQueue): void {
    const w = this.of(ref, q);
    if (!w.row) this.waiting += 1;
    w.row = true;
  }

  handle(next: number): void {
    this.handleNext = next;
  }

  /** `q` was dropped with its group: its records and its row are deleted. */
  dropQueue(ref: QueueRef, q: PopQueue): void {
    for (const offset of q.inflight.keys()) this.record(ref, q, offset, null);
    for (const offset of q.settled) this.record(ref, q, offset, null);
    const w = this.of(ref, q);
    if (w.row === false) this.waiting += 1;
    w.row = 'delete';
  }

  /** Notes a record the metadata store holds (found at start-up). */
  markStored(group: string, topic: string, queueId: number, offset: number): void {
    const key = queueKey(group, topic, queueId);
    let offsets = this.stored.get(key);
    if (offsets === undefined) this.stored.set(key, (offsets = new Set()));
    offsets.add(offset);
  }

  /**
   * Appends the writes to `ops`, encoded as the state is now, and forgets them. The caller
   * writes `ops` in one batch; a batch that fails stops the node (STORE_FATAL), so what this
   * notes as stored is what the store holds.
   */
  flushTo(ops: MetaBatchOp[]): void {
    for (const { ref, q, records, row } of this.queues.values()) {
      const qk = queueKey(ref.group, ref.topic, ref.queueId);
      let stored = this.stored.get(qk);
      for (const [offset, value] of records) {
        if (value === null) {
          if (stored === undefined || !stored.delete(offset)) continue;
          const key = MetaKeys.popRecord(ref.group, ref.topic, ref.queueId, offset);
          ops.push({ type: 'del', key });
          continue;
        }
        if (stored === undefined) this.stored.set(qk, (stored = new Set()));
        stored.add(offset);
        const key = MetaKeys.popRecord(ref.group, ref.topic, ref.queueId, offset);
        ops.push({ type: 'put', key, value: value === 'settled' ? SETTLED_VALUE : json(value) });
      }
      if (stored !== undefined && stored.size === 0) this.stored.delete(qk);
      if (row === 'delete') {
        ops.push({ type: 'del', key: MetaKeys.popQueue(ref.group, ref.topic, ref.queueId) });
      } else if (row) {
        ops.push({
          type: 'put',
          key: MetaKeys.popQueue(ref.group, ref.topic, ref.queueId),
          value: json({ frontier: q.frontier, cursor: q.cursor }),
        });
      }
    }
    if (this.handleNext !== undefined) {
      ops.push({ type: 'put', key: KEY_HANDLE_NEXT, value: json(this.handleNext) });
    }
    this.queues.clear();
    this.handleNext = undefined;
    this.waiting = 0;
  }
}

function queueKey(group: string, topic: string, queueId: number): string {
  return `${group}\0${topic}\0${queueId}`;
}

const SETTLED_VALUE = Buffer.from('{"settled":true}', 'utf8');

function json(value: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

function fail(code: 'INVALID_RECEIPT_HANDLE' | 'INVALID_ARGUMENT', message: string): PopResult {
  return { ok: false, code, message };
}

/** The pop state of every consumer group and queue of one broker group. */
export class PopState {
  private readonly queues = new Map<string, PopQueue>();
  private handleNext = 1;

  constructor(readonly limits: Readonly<PopLimits> = POP_LIMITS_DEFAULTS) {}

  /** The next handle id (persisted). */
  get nextHandle(): number {
    return this.handleNext;
  }

  /** One queue's state, undefined until a receive created it. */
  queue(group: string, topic: string, queueId: number): Readonly<PopQueue> | undefined {
    return this.queues.get(queueKey(group, topic, queueId));
  }

  /**
   * The in-flight record `handle` may act on: its latest delivery's or latest renewal's.
   * Undefined when the offset is settled, not handed out, or the handle is stale.
   */
  currentRecord(
    group: string,
    topic: string,
    queueId: number,
    offset: number,
    handle: number,
  ): Readonly<PopRecord> | undefined {
    const r = this.queues.get(queueKey(group, topic, queueId))?.inflight.get(offset);
    return r !== undefined && isCurrent(r, handle) ? r : undefined;
  }

  /** Every queue with state, as `[group, topic, queueId, state]`. */
  *entries(): IterableIterator<[string, string, number, Readonly<PopQueue>]> {
    for (const [key, q] of this.queues) {
      const [group, topic, queueId] = key.split('\0') as [string, string, string];
      yield [group, topic, Number(queueId), q];
    }
  }

  /**
   * Forgets every queue of `group` (the group was deleted): its in-flight and settled records
   * and its rows go, in memory and in the metadata, and its handles no longer act. A group made
   * again under the name starts afresh (from its committed offsets, as a new group does).
   */
  dropGroup(group: string, writes: PopWrites): void {
    for (const [g, topic, queueId, q] of [...this.entries()]) {
      if (g !== group) continue;
      writes.dropQueue({ group, topic, queueId }, q);
      this.queues.delete(queueKey(group, topic, queueId));
    }
  }

  /**
   * Forgets every group's queues of `topic` (the topic was deleted), as {@link dropGroup} does
   * for a group: a topic made again under the name is consumed afresh from its queues' floors.
   */
  dropTopic(topic: string, writes: PopWrites): void {
    for (const [group, t, queueId, q] of [...this.entries()]) {
      if (t !== topic) continue;
      writes.dropQueue({ group, topic, queueId }, q);
      this.queues.delete(queueKey(group, topic, queueId));
    }
  }

  /** Applies one command; records its metadata writes in `writes`. Never throws for input. */
  apply(c: PopCommand, writes: PopWrites): PopResult {
    switch (c.op) {
      case 'pop.receive':
        return this.receive(c, writes);
      case 'pop.ack': {
        const found = this.findValid(c, c.offset, c.handle);
        if (!found.ok) return found.result;
        if (found.record !== undefined) this.settle(c, found.q, c.offset, writes);
        return { ok: true };
      }
      case 'pop.change':
        return this.change(c, writes);
      case 'pop.settle': {
        const q = this.queues.get(queueKey(c.group, c.topic, c.queueId));
        const r = q?.inflight.get(c.offset);
        if (
          q === undefined ||
          r === undefined ||
          r.attempt !== c.attempt ||
          (c.renewHandle !== undefined && r.renewHandle !== c.renewHandle)
        ) {
          return fail(
            'INVALID_RECEIPT_HANDLE',
            `offset ${c.offset} was settled, delivered again or given a new lease`,
          );
        }
        this.settle(c, q, c.offset, writes);
        return { ok: true };
      }
    }
  }

  private receive(c: PopReceiveCommand, writes: PopWrites): PopResult {
    if (!(c.invisibleMs >= 0 && c.invisibleMs <= this.limits.invisibleMsMax)) {
      return fail('INVALID_ARGUMENT', `invisible duration ${c.invisibleMs} ms is out of range`);
    }
    const key = queueKey(c.group, c.topic, c.queueId);
    let q = this.queues.get(key);
    if (q === undefined) {
      q = { frontier: c.from, cursor: c.from, inflight: new Map(), settled: new Set() };
      this.queues.set(key, q);
    }
    const visibleAtMs = c.nowMs + c.invisibleMs;
    const grants: PopGrant[] = [];
    for (const a of c.again) {
      const r = q.inflight.get(a.offset);
      if (r === undefined || r.attempt !== a.attempt || r.visibleAtMs > c.nowMs) continue;
      r.attempt += 1;
      r.visibleAtMs = visibleAtMs;
      r.deliveryHandle = this.takeHandle();
      r.renewHandle = 0;
      writes.record(c, q, a.offset, r);
      grants.push({ offset: a.offset, attempt: r.attempt, handle: r.deliveryHandle, visibleAtMs });
    }
    if (c.from === q.cursor && this.freshIsValid(c, q)) {
      let next = 0;
      for (let offset = c.from; offset < c.to; offset++) {
        const fresh = c.fresh[next];
        if (fresh?.offset === offset) {
          next += 1;
          const r: PopRecord = {
            attempt: 1,
            visibleAtMs,
            deliveryHandle: this.takeHandle(),
            renewHandle: 0,
            messageGroup: fresh.messageGroup,
          };
          q.inflight.set(offset, r);
          writes.record(c, q, offset, r);
          grants.push({ offset, attempt: 1, handle: r.deliveryHandle, visibleAtMs });
        } else if (offset === q.frontier) {
          q.frontier += 1;
        } else {
          q.settled.add(offset);
          writes.record(c, q, offset, 'settled');
        }
      }
      q.cursor = c.to;
      this.advance(c, q, writes);
    }
    writes.handle(this.handleNext);
    writes.queueRow(c, q);
    return { ok: true, grants };
  }

  private freshIsValid(c: PopReceiveCommand, q: PopQueue): boolean {
    if (!(c.to >= c.from && c.to - q.frontier <= this.limits.windowMax)) return false;
    let last = c.from - 1;
    for (const f of c.fresh) {
      if (!(f.offset > last && f.offset < c.to)) return false;
      last = f.offset;
    }
    return true;
  }

  private change(c: PopChangeCommand, writes: PopWrites): PopResult {
    if (!(c.invisibleMs >= 0 && c.invisibleMs <= this.limits.invisibleMsMax)) {
      return fail('INVALID_ARGUMENT', `invisible duration ${c.invisibleMs} ms is out of range`);
    }
    const found = this.findValid(c, c.offset, c.handle);
    if (!found.ok) return found.result;
    const r = found.record;
    if (r === undefined) {
      return fail('INVALID_RECEIPT_HANDLE', `offset ${c.offset} is already settled`);
    }
    if (c.renewHandle !== undefined && r.renewHandle !== c.renewHandle) {
      return fail('INVALID_RECEIPT_HANDLE', `offset ${c.offset} was given another lease since`);
    }
    r.visibleAtMs = c.nowMs + c.invisibleMs;
    r.renewHandle = this.takeHandle();
    writes.record(c, found.q, c.offset, r);
    writes.handle(this.handleNext);
    return { ok: true, handle: r.renewHandle };
  }

  /**
   * The record `handle` may act on. `record` is undefined when the offset is already settled
   * (an ack then succeeds again: acks are retried, and a settled message stays settled).
   */
  private findValid(
    ref: QueueRef,
    offset: number,
    handle: number,
  ): { ok: true; q: PopQueue; record: PopRecord | undefined } | { ok: false; result: PopResult } {
    const q = this.queues.get(queueKey(ref.group, ref.topic, ref.queueId));
    if (q === undefined || offset >= q.cursor || handle <= 0 || handle >= this.handleNext) {
      return { ok: false, result: fail('INVALID_RECEIPT_HANDLE', 'no such delivery') };
    }
    if (offset < q.frontier || q.settled.has(offset)) return { ok: true, q, record: undefined };
    const r = q.inflight.get(offset);
    assert(r !== undefined, () => `pop state: offset ${offset} in window but not in flight`);
    if (!isCurrent(r, handle)) {
      const why = `the receipt handle of offset ${offset} is stale: it was delivered again`;
      return { ok: false, result: fail('INVALID_RECEIPT_HANDLE', why) };
    }
    return { ok: true, q, record: r };
  }

  private settle(ref: QueueRef, q: PopQueue, offset: number, writes: PopWrites): void {
    q.inflight.delete(offset);
    q.settled.add(offset);
    writes.record(ref, q, offset, 'settled');
    this.advance(ref, q, writes);
    writes.queueRow(ref, q);
  }

  private advance(ref: QueueRef, q: PopQueue, writes: PopWrites): void {
    while (q.settled.delete(q.frontier)) {
      writes.record(ref, q, q.frontier, null);
      q.frontier += 1;
    }
    assert(q.frontier <= q.cursor, 'pop state: frontier passed the cursor');
  }

  private takeHandle(): number {
    const handle = this.handleNext;
    this.handleNext += 1;
    return handle;
  }

  // ---- loading from the metadata store ----

  /** Restores the handle counter (on open). */
  loadHandleNext(value: unknown): void {
    if (!Number.isSafeInteger(value) || (value as number) < 1) {
      throw new TypeError('pop handle counter must be a positive integer');
    }
    this.handleNext = value as number;
  }

  /** Restores one queue's frontier and cursor (on open, before its records). */
  loadQueue(group: string, topic: string, queueId: number, value: unknown): void {
    const v = value as { frontier?: unknown; cursor?: unknown } | null;
    const frontier = v?.frontier;
    const cursor = v?.cursor;
    if (!isOffset(frontier) || !isOffset(cursor) || frontier > cursor) {
      throw new TypeError('pop queue must have offsets frontier <= cursor');
    }
    const q: PopQueue = { frontier, cursor, inflight: new Map(), settled: new Set() };
    this.queues.set(queueKey(group, topic, queueId), q);
  }

  /** Restores one record (on open). Records at or below the frontier are stale and skipped. */
  loadRecord(group: string, topic: string, queueId: number, offset: number, value: unknown): void {
    const q = this.queues.get(queueKey(group, topic, queueId));
    if (q === undefined || offset < q.frontier || offset >= q.cursor) return;
    const v = value as Record<string, unknown> | null;
    if (v?.settled === true) {
      q.settled.add(offset);
      return;
    }
    const { attempt, visibleAtMs, deliveryHandle, renewHandle, messageGroup } = v ?? {};
    if (
      !isOffset(attempt) ||
      attempt < 1 ||
      !Number.isSafeInteger(visibleAtMs) ||
      !isOffset(deliveryHandle) ||
      !isOffset(renewHandle) ||
      typeof messageGroup !== 'string'
    ) {
      throw new TypeError('pop record is malformed');
    }
    q.inflight.set(offset, {
      attempt,
      visibleAtMs: visibleAtMs as number,
      deliveryHandle,
      renewHandle,
      messageGroup,
    });
  }

  /** Checks, after loading, that every offset of every window is accounted for. */
  checkLoaded(): void {
    for (const [group, topic, queueId, q] of this.entries()) {
      for (let offset = q.frontier; offset < q.cursor; offset++) {
        if (!q.inflight.has(offset) && !q.settled.has(offset)) {
          throw new TypeError(`pop state ${group}/${topic}/${queueId}: offset ${offset} missing`);
        }
      }
    }
  }
}

const KEY_HANDLE_NEXT = MetaKeys.popHandleNext;

/** True when `handle` is the record's latest delivery or latest renewal (contract §5.7). */
function isCurrent(r: PopRecord, handle: number): boolean {
  return handle > 0 && (handle === r.deliveryHandle || handle === r.renewHandle);
}

function isOffset(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}
