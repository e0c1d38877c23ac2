/**
 * Pop consumption on the leader: ReceiveMessage, AckMessage, ChangeInvisibleDuration and
 * ForwardMessageToDeadLetterQueue over the replicated pop state (pop-state.ts).
 *
 * A receive plans, per queue of the topic, what to hand out: in-flight messages whose
 * invisibility ran out (oldest first), then fresh ones from the cursor that match the filter;
 * skipped non-matching ones are settled for the group. The plans of all queues become
 * `pop.receive` commands proposed together (command-batcher.ts), and only what the applied
 * commands granted is delivered, so a message is never handed to two consumers at once even
 * across a leader change. One plan per (group, topic, queue) is in progress at a time; a
 * receive that finds a queue busy tries the others and waits its turn.
 *
 * FIFO groups: a message of a message group is held back while an earlier message of the same
 * group is in flight (visible again or not), and a queue's fresh scan stops at such a message,
 * so each message group is delivered one message at a time, in order.
 *
 * Retries: a message comes back when its invisibility runs out (a client's nack is an
 * invisibility change with its backoff). Once it has been delivered `maxDeliveryAttempts`
 * times, it goes to `%DLQ%<group>` instead: the copy is stored first, then the original is
 * settled, so a crash in between never loses a message, and the next move finds the copy
 * already stored (broker.ts `storeDeadLetter`) rather than storing a second one.
 *
 * New groups start at the group's committed pull offset on the queue when it has one, else at
 * the queue's first message.
 */
import type { Clock } from '../common/clock';
import { crc32c } from '../common/crc32c';
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { decodeMessage } from '../store/message-codec';
import type { LocatedMessage, QueueRecord } from '../store/message-store';
import type { BrokerCommand, CommandResult } from './broker-command';
import type { BrokerState } from './broker-state';
import type { GroupConfig, TopicConfig } from './broker-types';
import type { PopChangeCommand, PopQueue, PopReceiveCommand, PopRecord } from './pop-state';
import { decodeReceiptHandle, encodeReceiptHandle, type HandleScope } from './receipt-handle';
import { RESOURCE_NAME_LENGTH_MAX } from './rmq-validate';

export interface PopServiceOptions {
  /** Messages one receive hands out, at most (larger requests are clamped). */
  batchSizeMax: number;
  /** Records one fresh scan of a queue reads, at most (filtered-out ones count). */
  scanCountMax: number;
  /** Expired messages dead-lettered by one receive, at most; and as many settled as filtered. */
  deadLettersPerReceiveMax: number;
  /**
   * Bytes of stored messages one receive hands out, at most (always at least one message):
   * 1024 messages near the 4 MiB body limit would otherwise hold gigabytes for one reply.
   */
  bytesMax: number;
}

/** What one receive may still hand out, shared by the queues it visits. */
interface Budget {
  count: number;
  bytes: number;
  /** The bytes it started with: while `bytes` is still that, nothing was taken. */
  readonly bytesMax: number;
}

/**
 * Takes `sizeBytes` from `budget` if it allows (the first message whatever its size); false
 * when it does not.
 */
function take(budget: Budget, sizeBytes: number): boolean {
  const first = budget.bytes === budget.bytesMax;
  if (budget.count <= 0 || (!first && sizeBytes > budget.bytes)) return false;
  budget.count -= 1;
  budget.bytes -= sizeBytes;
  return true;
}

export const POP_SERVICE_DEFAULTS: Readonly<PopServiceOptions> = Object.freeze({
  batchSizeMax: 1024,
  scanCountMax: 1024,
  deadLettersPerReceiveMax: 32,
  bytesMax: 4 * 1024 * 1024,
});

export interface PopServiceDeps {
  readonly state: BrokerState;
  readonly clock: Clock;
  readonly log: Logger;
  readonly brokerGroup: string;
  /** Throws NOT_LEADER unless this node is a ready leader. */
  requireLeader(): void;
  submit(command: BrokerCommand, deadlineMs: number): Promise<CommandResult>;
  /** Submits commands together; their results in order (command-batcher.ts `submitAll`). */
  submitAll(commands: readonly BrokerCommand[], deadlineMs: number): Promise<CommandResult[]>;
  /** Checked stored records of a queue (see `MessagingBackend.readQueueRecords`). */
  readQueueRecords(
    topic: string,
    queueId: number,
    offset: number,
    count: number,
    bytesMax?: number,
  ): Promise<QueueRecord[]>;
  /** The group, created with defaults when allowed; throws GROUP_NOT_FOUND otherwise. */
  ensureGroup(name: string, deadlineMs: number): Promise<GroupConfig>;
  /** Stores a copy of `message` in `dlqTopic` (created when missing). */
  storeDeadLetter(
    message: LocatedMessage,
    dlqTopic: string,
    attempt: number,
    deadlineMs: number,
  ): Promise<void>;
  /** Resolves once the queue holds `offset`, or after `timeoutMs`, or on abort. */
  waitForMessages(
    topic: string,
    queueId: number,
    offset: number,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<boolean>;
}

export interface PopReceiveRequest {
  /** The stored consumer group name. */
  readonly group: string;
  /** The stored topic name. */
  readonly topic: string;
  readonly filter: (tag: string | undefined) => boolean;
  readonly batchSize: number;
  readonly invisibleMs: number;
  /** When to stop waiting for messages (epoch ms). */
  readonly pollUntilMs: number;
  readonly signal?: AbortSignal;
  /** Bytes of stored messages to hand out at most (capped by the service's `bytesMax`). */
  readonly bytesMax?: number;
}

/** A message handed out by a receive. */
export interface PoppedMessage {
  /** The stored record, sent on as it is (rmq-stored-frame.ts). */
  readonly record: QueueRecord;
  readonly attempt: number;
  readonly receiptHandle: string;
  readonly invisibleMs: number;
  readonly queueId: number;
  /** Its queue offset (the record's). */
  readonly offset: number;
  /** The delivery's handle id in the pop state (what `receiptHandle` names). */
  readonly handleId: number;
  /** Wall-clock ms its invisibility ends. */
  readonly visibleAtMs: number;
}

/** One group's consumption of one queue, for the admin protocol. */
export interface ConsumerProgress {
  readonly group: string;
  readonly topic: string;
  readonly queueId: number;
  /** The offset the next message stored in the queue will get. */
  readonly brokerOffset: number;
  /** Every message below it is settled for the group. */
  readonly ackedFrontier: number;
  /** The next offset never handed out. */
  readonly cursor: number;
  readonly inflightCount: number;
  /** Messages stored and not settled for the group. */
  readonly lag: number;
}

interface Plan {
  readonly command: PopReceiveCommand;
  readonly messages: Map<number, QueueRecord>;
}

/** Where to wake a long poll: a queue's end, or the next time a message becomes visible. */
interface WakeUp {
  readonly queueEnds: Map<number, number>;
  nextVisibleAtMs: number;
}

export class PopService {
  private readonly busy = new Set<string>();
  private readonly changeListeners = new Set<() => void>();
  private roundRobin = 0;

  constructor(
    private readonly deps: PopServiceDeps,
    readonly options: Readonly<PopServiceOptions> = POP_SERVICE_DEFAULTS,
  ) {}

  /** Hands out up to `batchSize` messages, waiting until `pollUntilMs` when none is ready. */
  async receive(req: PopReceiveRequest, deadlineMs: number): Promise<PoppedMessage[]> {
    this.deps.requireLeader();
    const topic = this.readableTopic(req.topic);
    const group = await this.deps.ensureGroup(req.group, deadlineMs);
    const batchSize = Math.max(1, Math.min(req.batchSize, this.options.batchSizeMax));
    for (;;) {
      this.deps.requireLeader();
      const wake: WakeUp = { queueEnds: new Map(), nextVisibleAtMs: Infinity };
      const got = await this.receiveOnce(req, topic, group, batchSize, wake, deadlineMs);
      if (got.length > 0) return got;
      const untilMs = Math.min(req.pollUntilMs, deadlineMs);
      if (this.deps.clock.nowMs() >= untilMs || req.signal?.aborted === true) return [];
      await this.waitForWork(topic, wake, untilMs, req.signal);
    }
  }

  private readableTopic(name: string): TopicConfig {
    const topic = this.deps.state.getTopic(name);
    if (topic === undefined) {
      throw new RaftmqError('TOPIC_NOT_FOUND', `topic ${name} does not exist`, {
        details: { topic: name },
      });
    }
    if (topic.perm === 'WRITE') {
      throw new RaftmqError('PERMISSION_DENIED', `topic ${name} is not readable`);
    }
    return topic;
  }

  private async receiveOnce(
    req: PopReceiveRequest,
    topic: TopicConfig,
    group: GroupConfig,
    batchSize: number,
    wake: WakeUp,
    deadlineMs: number,
  ): Promise<PoppedMessage[]> {
    const start = this.roundRobin++ % topic.queueCount;
    const locked: string[] = [];
    const plans: Plan[] = [];
    try {
      const bytesMax = Math.min(req.bytesMax ?? Infinity, this.options.bytesMax);
      const budget: Budget = { count: batchSize, bytes: bytesMax, bytesMax };
      for (let i = 0; i < topic.queueCount && budget.count > 0 && budget.bytes > 0; i++) {
        const queueId = (start + i) % topic.queueCount;
        const key = `${req.group}\0${topic.name}\0${queueId}`;
        if (this.busy.has(key)) continue;
        this.busy.add(key);
        locked.push(key);
        const plan = await this.plan(req, topic, group, queueId, budget, wake, deadlineMs);
        if (plan === undefined) continue;
        plans.push(plan);
      }
      const results = await Promise.all(plans.map((p) => this.deps.submit(p.command, deadlineMs)));
      const out: PoppedMessage[] = [];
      const scope = {
        brokerGroup: this.deps.brokerGroup,
        topic: topic.name,
        consumerGroup: req.group,
      };
      results.forEach((result, i) => {
        const plan = plans[i] as Plan;
        if (!result.ok) {
          this.deps.log.warn({ code: result.code, why: result.message }, 'pop receive refused');
          return;
        }
        for (const g of result.grants ?? []) {
          const record = plan.messages.get(g.offset);
          if (record === undefined) continue;
          const handle = { queueId: plan.command.queueId, offset: g.offset, handleId: g.handle };
          out.push({
            record,
            attempt: g.attempt,
            receiptHandle: encodeReceiptHandle(scope, handle),
            invisibleMs: req.invisibleMs,
            queueId: plan.command.queueId,
            offset: g.offset,
            handleId: g.handle,
            visibleAtMs: g.visibleAtMs,
          });
        }
      });
      return out;
    } finally {
      for (const key of locked) this.busy.delete(key);
      // Wakes receives that skipped these queues. Only after a change: two idle pollers
      // waking each other would spin.
      if (plans.length > 0) this.notifyChange();
    }
  }

  /** What to hand out from one queue, or undefined when nothing changes there. */
  private async plan(
    req: PopReceiveRequest,
    topic: TopicConfig,
    group: GroupConfig,
    queueId: number,
    budget: Budget,
    wake: WakeUp,
    deadlineMs: number,
  ): Promise<Plan | undefined> {
    const { state, clock } = this.deps;
    const nowMs = clock.nowMs();
    const q = state.pop.queue(req.group, topic.name, queueId);
    const range = state.queueRange(topic.name, queueId);
    const messages = new Map<number, QueueRecord>();
    const again = await this.expired(
      req,
      topic,
      group,
      queueId,
      q,
      nowMs,
      budget,
      wake,
      messages,
      deadlineMs,
    );
    const from = q?.cursor ?? this.initialOffset(req.group, topic.name, queueId, range.min);
    const frontier = q?.frontier ?? from;
    const windowEnd = frontier + state.pop.limits.windowMax;
    const start = Math.max(from, Math.min(range.min, windowEnd));
    const scanMax = Math.min(this.options.scanCountMax, windowEnd - start, range.max - start);
    const { fresh, to } = await this.scanFresh(
      req,
      group,
      q,
      { topic: topic.name, queueId, start, scanMax },
      budget,
      messages,
    );
    wake.queueEnds.set(queueId, Math.max(to, range.max));
    if (again.length === 0 && to === from) return undefined;
    const command: PopReceiveCommand = {
      op: 'pop.receive',
      group: req.group,
      topic: topic.name,
      queueId,
      nowMs,
      invisibleMs: req.invisibleMs,
      from,
      to,
      fresh,
      again,
    };
    return { command, messages };
  }

  /**
   * The fresh messages of one queue to hand out: from `start`, those that match the filter (and,
   * in a FIFO group, whose message group is not held back), as many as `budget` allows (which
   * they are taken from), scanning at most `scanMax` records. It reads what is still wanted,
   * and more only when the filter skipped some (each further read as large as all before it),
   * so a small receive reads little. Returns them and the offset after the last record scanned.
   */
  private async scanFresh(
    req: PopReceiveRequest,
    group: GroupConfig,
    q: Readonly<PopQueue> | undefined,
    scan: { topic: string; queueId: number; start: number; scanMax: number },
    budget: Budget,
    messages: Map<number, QueueRecord>,
  ): Promise<{ fresh: { offset: number; messageGroup: string }[]; to: number }> {
    // A message's group is recorded whether or not the consumer group is FIFO now, so that a
    // group switched to FIFO holds back the message groups of what it already has in flight.
    // (Recorded only for FIFO groups until 2026-12-04: after the switch, a second message of a
    // message group could be handed out while the first was still in flight.)
    const blocked = new Set<string>();
    if (group.fifo && q !== undefined) {
      for (const r of q.inflight.values()) if (r.messageGroup !== '') blocked.add(r.messageGroup);
    }
    const fresh: { offset: number; messageGroup: string }[] = [];
    let to = scan.start;
    let scanned = 0;
    let stopped = false;
    while (!stopped && budget.count > 0 && scanned < scan.scanMax) {
      const count = Math.min(scan.scanMax - scanned, Math.max(budget.count, scanned));
      const read = await this.deps.readQueueRecords(
        scan.topic,
        scan.queueId,
        to,
        count,
        budget.bytes,
      );
      scanned += count;
      // A short read reached the queue's end (or the byte budget).
      stopped = read.length < count;
      for (const record of read) {
        const offset = record.queueOffset;
        if (budget.count <= 0 || offset !== to) {
          stopped = true;
          break;
        }
        if (req.filter(record.tag)) {
          const messageGroup = record.messageGroup ?? '';
          const ordered = group.fifo && messageGroup !== '';
          if ((ordered && blocked.has(messageGroup)) || !take(budget, record.sizeBytes)) {
            stopped = true;
            break;
          }
          if (ordered) blocked.add(messageGroup);
          fresh.push({ offset, messageGroup });
          messages.set(offset, record);
        }
        to = offset + 1;
      }
    }
    return { fresh, to };
  }

  private initialOffset(group: string, topic: string, queueId: number, min: number): number {
    const committed = this.deps.state.getOffset(group, topic, queueId);
    return committed === undefined ? min : Math.max(committed, min);
  }

  /** In-flight messages of one queue whose invisibility ran out, oldest first. */
  private async expired(
    req: PopReceiveRequest,
    topic: TopicConfig,
    group: GroupConfig,
    queueId: number,
    q: Readonly<PopQueue> | undefined,
    nowMs: number,
    budget: Budget,
    wake: WakeUp,
    messages: Map<number, QueueRecord>,
    deadlineMs: number,
  ): Promise<{ offset: number; attempt: number }[]> {
    if (q === undefined) return [];
    const due: [number, number, number][] = [];
    for (const [offset, r] of q.inflight) {
      if (r.visibleAtMs <= nowMs) due.push([offset, r.attempt, r.renewHandle]);
      else wake.nextVisibleAtMs = Math.min(wake.nextVisibleAtMs, r.visibleAtMs);
    }
    due.sort((a, b) => a[0] - b[0]);
    const again: { offset: number; attempt: number }[] = [];
    let deadLetters = 0;
    let settledAside = 0;
    for (const [offset, attempt, renewHandle] of due) {
      if (budget.count <= 0) break;
      const [record] = await this.deps
        .readQueueRecords(topic.name, queueId, offset, 1)
        .catch((err: unknown) => {
          // Below the queue's first offset: retention removed it; settled as gone below.
          if (err instanceof RaftmqError && err.code === 'OUT_OF_RANGE') return [];
          throw err;
        });
      const ref = { group: req.group, topic: topic.name, queueId, offset, attempt, renewHandle };
      if (record === undefined || record.queueOffset !== offset) {
        await this.deps.submit({ op: 'pop.settle', ...ref, reason: 'gone' }, deadlineMs);
        continue;
      }
      if (!req.filter(record.tag)) {
        // The group's filter no longer takes it (its subscription changed while the message
        // was in flight): passed over as a fresh message the filter rejects is, instead of
        // staying in flight for good, holding the queue's frontier (and in a FIFO group the
        // queue's later messages) back. A Raft round each, so as many per receive as
        // dead-letter moves; later receives settle the rest.
        if (settledAside >= this.options.deadLettersPerReceiveMax) continue;
        settledAside += 1;
        await this.deps.submit({ op: 'pop.settle', ...ref, reason: 'filtered' }, deadlineMs);
        continue;
      }
      if (attempt >= group.maxDeliveryAttempts) {
        if (deadLetters >= this.options.deadLettersPerReceiveMax) continue;
        deadLetters += 1;
        await this.deadLetter(ref, record, deadlineMs);
        continue;
      }
      if (!take(budget, record.sizeBytes)) break;
      again.push({ offset, attempt });
      messages.set(offset, record);
    }
    return again;
  }

  /**
   * Stores the dead-letter copy, then settles the original; false when the settle was refused
   * (the message was acknowledged, delivered again or given a new lease meanwhile: the copy is a
   * spare, and the message stays with whoever has it).
   */
  private async deadLetter(
    ref: {
      group: string;
      topic: string;
      queueId: number;
      offset: number;
      attempt: number;
      renewHandle: number;
    },
    record: QueueRecord,
    deadlineMs: number,
  ): Promise<boolean> {
    const located: LocatedMessage = {
      queueOffset: record.queueOffset,
      position: record.position,
      sizeBytes: record.sizeBytes,
      message: decodeMessage(record.bytes, { position: record.position }),
    };
    await this.deps.storeDeadLetter(located, dlqTopicOf(ref.group), ref.attempt, deadlineMs);
    const result = await this.deps.submit({ op: 'pop.settle', ...ref, reason: 'dlq' }, deadlineMs);
    this.deps.log.info(
      {
        group: ref.group,
        topic: ref.topic,
        queueId: ref.queueId,
        offset: ref.offset,
        ok: result.ok,
      },
      'message moved to the dead-letter queue',
    );
    return result.ok;
  }

  private async waitForWork(
    topic: TopicConfig,
    wake: WakeUp,
    untilMs: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const nowMs = this.deps.clock.nowMs();
    const waitMs = Math.max(0, Math.min(untilMs, wake.nextVisibleAtMs) - nowMs);
    if (waitMs === 0) return;
    const abort = new AbortController();
    const onAbort = (): void => abort.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const waits: Promise<unknown>[] = [];
      for (let queueId = 0; queueId < topic.queueCount; queueId++) {
        const end =
          wake.queueEnds.get(queueId) ?? this.deps.state.queueRange(topic.name, queueId).max;
        waits.push(this.deps.waitForMessages(topic.name, queueId, end, waitMs, abort.signal));
      }
      waits.push(
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, waitMs);
          timer.unref();
          const listener = (): void => {
            clearTimeout(timer);
            this.changeListeners.delete(listener);
            resolve();
          };
          this.changeListeners.add(listener);
          abort.signal.addEventListener('abort', listener, { once: true });
        }),
      );
      await Promise.race(waits);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      abort.abort();
    }
  }

  private notifyChange(): void {
    for (const l of [...this.changeListeners]) l();
  }

  // ---- settling ----

  /** Acknowledges a delivered message (see {@link ackAll}). */
  async ack(
    group: string,
    topic: string,
    receiptHandle: string,
    deadlineMs: number,
  ): Promise<void> {
    const [err] = await this.ackAll(group, topic, [receiptHandle], deadlineMs);
    if (err !== undefined) throw err;
  }

  /**
   * Acknowledges many delivered messages of one group and topic (AckMessage) as one
   * submission: the outcome of each, undefined when settled, else its error (a malformed or
   * stale handle). Rejects as a whole when the commands could not be committed (NOT_LEADER, a
   * timeout): none of the outcomes is known then.
   */
  async ackAll(
    group: string,
    topic: string,
    receiptHandles: readonly string[],
    deadlineMs: number,
  ): Promise<(RaftmqError | undefined)[]> {
    this.deps.requireLeader();
    const scope = this.scope(group, topic);
    const outcomes = new Array<RaftmqError | undefined>(receiptHandles.length);
    const commands: BrokerCommand[] = [];
    const at: number[] = [];
    receiptHandles.forEach((handle, i) => {
      try {
        const h = decodeReceiptHandle(scope, handle);
        commands.push({
          op: 'pop.ack',
          group,
          topic,
          queueId: h.queueId,
          offset: h.offset,
          handle: h.handleId,
        });
        at.push(i);
      } catch (err) {
        if (!(err instanceof RaftmqError)) throw err;
        outcomes[i] = err;
      }
    });
    const results = await this.deps.submitAll(commands, deadlineMs);
    if (commands.length > 0) this.notifyChange();
    results.forEach((result, k) => {
      if (!result.ok) outcomes[at[k] as number] = new RaftmqError(result.code, result.message);
    });
    return outcomes;
  }

  /** Changes when a delivered message may be handed out again; returns the new handle. */
  async changeInvisible(
    group: string,
    topic: string,
    receiptHandle: string,
    invisibleMs: number,
    deadlineMs: number,
  ): Promise<string> {
    this.deps.requireLeader();
    const scope = this.scope(group, topic);
    const h = decodeReceiptHandle(scope, receiptHandle);
    const command: BrokerCommand = {
      op: 'pop.change',
      group,
      topic,
      queueId: h.queueId,
      offset: h.offset,
      handle: h.handleId,
      nowMs: this.deps.clock.nowMs(),
      invisibleMs,
    };
    const result = await this.deps.submit(command, deadlineMs);
    this.notifyChange();
    if (!result.ok) throw new RaftmqError(result.code, result.message);
    if (result.handle === undefined) throw new RaftmqError('INTERNAL', 'no new receipt handle');
    return encodeReceiptHandle(scope, { ...h, handleId: result.handle });
  }

  /**
   * Proposes invisibility changes together (the leader's renewals of auto-renewing deliveries,
   * pop-renewer.ts) and resolves with their results in order; `wakeReceives` when they make
   * messages visible sooner, so long polls look again.
   */
  async changeInvisibleAll(
    commands: readonly PopChangeCommand[],
    deadlineMs: number,
    wakeReceives: boolean,
  ): Promise<CommandResult[]> {
    this.deps.requireLeader();
    const results = await this.deps.submitAll(commands, deadlineMs);
    if (wakeReceives) this.notifyChange();
    return results;
  }

  /** Moves a delivered message to the group's dead-letter queue at once (FIFO consumers). */
  async forwardToDeadLetter(
    group: string,
    topic: string,
    receiptHandle: string,
    deadlineMs: number,
  ): Promise<void> {
    this.deps.requireLeader();
    const h = decodeReceiptHandle(this.scope(group, topic), receiptHandle);
    const r = this.deps.state.pop.currentRecord(group, topic, h.queueId, h.offset, h.handleId);
    if (r === undefined) {
      throw new RaftmqError('INVALID_RECEIPT_HANDLE', 'the delivery is settled or not current');
    }
    const [record] = await this.deps.readQueueRecords(topic, h.queueId, h.offset, 1);
    const ref = {
      group,
      topic,
      queueId: h.queueId,
      offset: h.offset,
      attempt: r.attempt,
      renewHandle: r.renewHandle,
    };
    if (record === undefined) {
      await this.deps.submit({ op: 'pop.settle', ...ref, reason: 'gone' }, deadlineMs);
      return;
    }
    const settled = await this.deadLetter(ref, record, deadlineMs);
    this.notifyChange();
    if (!settled) {
      throw new RaftmqError(
        'INVALID_RECEIPT_HANDLE',
        'the delivery changed (acknowledged, delivered again or renewed) while it was being ' +
          'dead-lettered; it was not taken out of circulation',
      );
    }
  }

  private scope(group: string, topic: string): HandleScope {
    return { brokerGroup: this.deps.brokerGroup, topic, consumerGroup: group };
  }

  // ---- progress ----

  /** Consumption progress of every group (or one) on every queue it has received from. */
  /** The applied in-flight record `handle` may act on (PopState `currentRecord`). */
  currentRecord(
    group: string,
    topic: string,
    queueId: number,
    offset: number,
    handle: number,
  ): Readonly<PopRecord> | undefined {
    return this.deps.state.pop.currentRecord(group, topic, queueId, offset, handle);
  }

  progress(group?: string): ConsumerProgress[] {
    const out: ConsumerProgress[] = [];
    for (const [g, topic, queueId, q] of this.deps.state.pop.entries()) {
      if (group !== undefined && g !== group) continue;
      const brokerOffset = this.deps.state.queueRange(topic, queueId).max;
      out.push({
        group: g,
        topic,
        queueId,
        brokerOffset,
        ackedFrontier: q.frontier,
        cursor: q.cursor,
        inflightCount: q.inflight.size,
        lag: Math.max(0, brokerOffset - q.frontier - q.settled.size),
      });
    }
    return out.sort((a, b) =>
      a.group !== b.group
        ? a.group < b.group
          ? -1
          : 1
        : a.topic !== b.topic
          ? a.topic < b.topic
            ? -1
            : 1
          : a.queueId - b.queueId,
    );
  }
}

/**
 * The dead-letter topic of a consumer group: RocketMQ's `%DLQ%<group>`. A group name may be
 * 127 characters and a topic name too, so for a group of over 122 the name is cut to fit, with
 * the CRC32C of the whole group name in hex so that groups sharing a long prefix do not share a
 * dead-letter topic: `%DLQ%<first 113 characters>_<8 hex digits>`. (Until 2026-12-04 such a
 * group's dead-letter copy was refused as an illegal topic, and every receive that reached a
 * message past its last attempt failed.)
 */
export function dlqTopicOf(group: string): string {
  const topic = `${DLQ_PREFIX}${group}`;
  if (topic.length <= RESOURCE_NAME_LENGTH_MAX) return topic;
  const hash = (crc32c(Buffer.from(group, 'utf8')) >>> 0).toString(16).padStart(8, '0');
  const keep = RESOURCE_NAME_LENGTH_MAX - DLQ_PREFIX.length - 1 - hash.length;
  return `${DLQ_PREFIX}${group.slice(0, keep)}_${hash}`;
}

const DLQ_PREFIX = '%DLQ%';
