/**
 * Pull by offset: PullMessage, GetOffset, UpdateOffset and QueryOffset (contract §5.14–5.17;
 * the official clients do not call them, raftmq's SDK does). Pulls and QueryOffset are served by
 * any node from what it has applied; UpdateOffset (a write) and GetOffset are forwarded to the
 * leader by a follower.
 *
 * PullMessage answers with a stream of `{status}`, then `{message}` for each message, then
 * `{next_offset}`. When the queue holds nothing at the offset it long-polls (the request's
 * `long_polling_timeout`, else the service default, capped by the option and the call's
 * deadline) and answers MESSAGE_NOT_FOUND if nothing came. An offset below the queue's first
 * is moved up to it (messages carry their offsets, so the jump is visible); one beyond its end
 * gets ILLEGAL_OFFSET with `next_offset` = the end from the ready leader after a read point, and
 * "nothing yet" at that offset from a node that has not applied so far (see `pullQueue`).
 * GetOffset is answered by the leader after a read point (a follower forwards it), so a
 * consumer resuming sees the offset it committed through any node. A TAG filter (`*`, or tags
 * joined by `||`) skips other messages, reading at most `pullScanCountMax` records; SQL filters
 * are UNSUPPORTED.
 */
import type * as grpc from '@grpc/grpc-js';
import { RaftmqError, RmqCode } from '../common/errors';
import type { QueueRecord } from '../store/message-store';
import type { TopicConfig } from './broker-types';
import type { AnswerHold } from './call-admission';
import { admitRead, framesBytes, writeFrames } from './call-watch';
import {
  callDeadlineMs,
  namespaceHeader,
  requireClientId,
  requireDecoded,
  type ServiceContext,
} from './messaging-call';
import { runOrForward } from './messaging-forward';
import { instantMs, okStatus, toStatus } from './rmq-convert';
import { encodeStoredFrame } from './rmq-stored-frame';
import { groupLookupOf } from './messaging-options';
import { checkGroup, checkTopic, effectiveNamespace } from './rmq-validate';
import {
  durationToMs,
  type WireFilterExpression,
  type WireMessageQueue,
  type WireResource,
  type WireSecondsNanos,
} from './rmq-wire';

/** RocketMQ `Code.OFFSET_NOT_FOUND`: the group has committed no offset on the queue. */
export const OFFSET_NOT_FOUND_CODE = 40_404;

interface QueueRequest {
  readonly group?: WireResource | null;
  readonly messageQueue: WireMessageQueue | null;
}

interface PullRequest extends QueueRequest {
  readonly offset: number;
  readonly batchSize: number;
  readonly filterExpression: WireFilterExpression | null;
  readonly longPollingTimeout: WireSecondsNanos | null;
}

/** One queue a request names, checked. */
export interface QueueRef {
  readonly ns: string;
  /** The broker's topic name. */
  readonly topic: string;
  readonly queueId: number;
  readonly config: TopicConfig;
}

/**
 * Checks that topic `name` (in namespace `ns`) exists and has queue `queueId`; `fields` names
 * the request's topic and queue id fields in errors.
 */
export function checkQueue(
  ctx: ServiceContext,
  ns: string,
  name: string,
  queueId: number,
  fields: { readonly topic: string; readonly queueId: string },
): QueueRef {
  const topic = checkTopic(name, ns, fields.topic, true);
  const config = ctx.backend.getTopic(topic);
  if (config === undefined) {
    throw new RaftmqError('TOPIC_NOT_FOUND', `topic ${topic} does not exist`, {
      details: { topic },
    });
  }
  if (!Number.isInteger(queueId) || queueId < 0 || queueId >= config.queueCount) {
    throw new RaftmqError(
      'INVALID_ARGUMENT',
      `${fields.queueId} ${queueId} is not a queue of ${topic} (0..${config.queueCount - 1})`,
      { details: { field: fields.queueId } },
    );
  }
  return { ns, topic, queueId, config };
}

function queueOf(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  request: QueueRequest,
): QueueRef {
  const mq = request.messageQueue;
  if (mq === null || mq.topic === null) {
    throw new RaftmqError('INVALID_ARGUMENT', 'message_queue.topic is missing', {
      details: { field: 'message_queue' },
    });
  }
  const ns = effectiveNamespace(namespaceHeader(call.metadata), mq.topic.resourceNamespace);
  return checkQueue(ctx, ns, mq.topic.name, mq.id, {
    topic: 'message_queue.topic.name',
    queueId: 'message_queue.id',
  });
}

function groupOf(call: { metadata: grpc.Metadata }, request: QueueRequest): string {
  const group = request.group;
  if (group === null || group === undefined) {
    throw new RaftmqError('ILLEGAL_CONSUMER_GROUP', 'group is missing', {
      details: { field: 'group' },
    });
  }
  const ns = effectiveNamespace(namespaceHeader(call.metadata), group.resourceNamespace);
  return checkGroup(group.name, ns, 'group.name');
}

/**
 * Throws GROUP_NOT_FOUND for a consumer group this node does not know while groups are not
 * created on first use (as RocketMQ refuses a pull for an unknown subscription group): reads
 * under any name would otherwise go on, and UpdateOffset would keep offsets for groups nobody
 * created. With auto-creation on, reads of an unknown group go on (UpdateOffset creates it).
 */
export function requireKnownGroup(ctx: ServiceContext, group: string): void {
  if (ctx.backend.autoCreateGroups || groupLookupOf(ctx.backend)(group) !== undefined) return;
  throw new RaftmqError('GROUP_NOT_FOUND', `consumer group ${group} does not exist`, {
    details: { group },
  });
}

/** Throws PERMISSION_DENIED for a topic that may only be written. */
export function checkReadable(q: QueueRef): void {
  if (q.config.perm === 'WRITE') {
    throw new RaftmqError('PERMISSION_DENIED', `topic ${q.topic} is not readable`);
  }
}

/** The tags a TAG expression names, or undefined when it matches every message (`*`). */
export function tagsOf(expression: string): ReadonlySet<string> | undefined {
  const tags = expression
    .split('||')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  return tags.length === 0 || tags.includes('*') ? undefined : new Set(tags);
}

/** The test of a message's tag against `tags` (undefined: every message matches). */
export function tagMatcher(tags: ReadonlySet<string> | undefined): (tag?: string) => boolean {
  if (tags === undefined) return () => true;
  return (tag) => tag !== undefined && tags.has(tag);
}

/** Throws OUT_OF_RANGE unless `offset` can be a queue offset. */
export function checkOffset(offset: number, field: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RaftmqError('OUT_OF_RANGE', `${field} ${offset} is not a queue offset`, {
      details: { field },
    });
  }
}

/** The tag test of a filter expression; throws UNSUPPORTED for SQL. */
export function tagFilter(expr: WireFilterExpression | null): (tag: string | undefined) => boolean {
  if (expr === null) return () => true;
  if (expr.type === 'SQL') {
    throw new RaftmqError('UNSUPPORTED', 'SQL filter expressions are not supported', {
      details: { field: 'filter_expression.type' },
    });
  }
  return tagMatcher(tagsOf(expr.expression));
}

/**
 * Reads up to `plan.batch` matching records from `offset`, at most `plan.bytesMax` of them
 * (but always one); returns them and the offset after.
 */
async function readMatching(
  ctx: ServiceContext,
  plan: PullPlan,
  offset: number,
): Promise<{ items: QueueRecord[]; nextOffset: number }> {
  const { q, batch, matches, verifyCrc } = plan;
  // Before the store is read: refused (BUSY) when the answers held would pass their bound.
  plan.hold?.reserve(plan.bytesMax);
  const items: QueueRecord[] = [];
  let cursor = offset;
  let scanned = 0;
  const scanMax = ctx.options.pullScanCountMax;
  let bytesLeft = plan.bytesMax;
  let full = false;
  while (!full && items.length < batch && scanned < scanMax) {
    const countMax = Math.min(batch, scanMax - scanned);
    const got = await ctx.backend.readQueueRecords(
      q.topic,
      q.queueId,
      cursor,
      countMax,
      bytesLeft,
      verifyCrc,
    );
    if (got.length === 0) break;
    for (const item of got) {
      if (items.length > 0 && item.sizeBytes > bytesLeft) {
        full = true;
        break;
      }
      scanned++;
      cursor = item.queueOffset + 1;
      if (matches(item.tag)) {
        items.push(item);
        bytesLeft -= item.sizeBytes;
      }
      if (items.length >= batch) break;
    }
    if (bytesLeft <= 0) full = true;
  }
  return { items, nextOffset: cursor };
}

/** What a pull found: the records, nothing yet, or an offset beyond the queue's end. */
export type PullOutcome =
  | { readonly kind: 'found'; readonly items: QueueRecord[]; readonly nextOffset: number }
  | { readonly kind: 'none'; readonly message: string; readonly nextOffset: number }
  | { readonly kind: 'illegal'; readonly message: string; readonly nextOffset: number };

/** One checked pull: where, how much, and how long it may wait. */
export interface PullPlan {
  readonly q: QueueRef;
  readonly offset: number;
  readonly batch: number;
  readonly bytesMax: number;
  readonly matches: (tag: string | undefined) => boolean;
  /**
   * Check each record's CRC32C here; false leaves it to the client (Fetch without a tag
   * filter, see fetch-service.ts).
   */
  readonly verifyCrc: boolean;
  /** How long to wait when the queue holds nothing at the offset (capped further below). */
  readonly waitMs: number;
  /** The call's deadline (epoch ms). */
  readonly deadlineMs: number;
  /** The call's share of the service's answer bytes: `bytesMax` is reserved before a read. */
  readonly hold?: AnswerHold;
}

/**
 * The pull both protocols share: refuses an unreadable topic, moves an offset below the first
 * up to it, long-polls at the end (within the option's cap and the call's deadline), then reads
 * matching stored records.
 *
 * An offset beyond this node's end may be one it has not applied yet (a client that read from
 * a node further ahead, or a follower behind): only the ready leader, after a read point, can
 * tell it is beyond the queue (ILLEGAL_OFFSET, `next_offset` = the end). Any other node waits
 * for its apply to reach the offset, as a long poll waits, and then answers as usual, or
 * "nothing yet" with `next_offset` = the offset asked: never an earlier offset, which would send
 * the client back over messages it has had.
 */
export async function pullQueue(
  ctx: ServiceContext,
  plan: PullPlan,
  signal: AbortSignal,
): Promise<PullOutcome> {
  const { q } = plan;
  checkReadable(q);
  const leftMs = plan.deadlineMs - ctx.clock.nowMs() - ctx.options.forwardReserveMs;
  const pollUntilMs =
    ctx.clock.nowMs() + Math.min(plan.waitMs, ctx.options.longPollingTimeoutMsMax, leftMs);
  let range = ctx.backend.queueRange(q.topic, q.queueId);
  if (plan.offset > range.max) {
    const beyond = await beyondEnd(ctx, plan, pollUntilMs, signal);
    if (beyond !== undefined) return beyond;
    range = ctx.backend.queueRange(q.topic, q.queueId);
  }
  const offset = Math.max(plan.offset, range.min);
  let from = offset;
  if (from >= range.max) await waitUntil(ctx, plan, from, pollUntilMs, signal);
  for (;;) {
    const { items, nextOffset } = await readMatching(ctx, plan, from);
    if (items.length > 0) return { kind: 'found', items, nextOffset };
    if (nextOffset === from) {
      // Nothing at `from`: none came during the poll (or records were passed over before).
      if (from > offset) return { kind: 'found', items, nextOffset };
      const message = `no message at offset ${from} of ${q.topic} queue ${q.queueId}`;
      return { kind: 'none', message, nextOffset };
    }
    // Records came but the filter took none. Caught up with the queue and with time left, the
    // poll goes on for the next ones (else a filtered consumer of a busy queue would poll as
    // fast as messages it does not want arrive); otherwise it answers where to go on from.
    const caughtUp = nextOffset >= ctx.backend.queueRange(q.topic, q.queueId).max;
    if (!caughtUp || ctx.clock.nowMs() >= pollUntilMs || signal.aborted) {
      return { kind: 'found', items, nextOffset };
    }
    from = nextOffset;
    await waitUntil(ctx, plan, from, pollUntilMs, signal);
  }
}

/** Waits, until `pollUntilMs` at most, for the queue to hold a message at `offset`. */
async function waitUntil(
  ctx: ServiceContext,
  plan: PullPlan,
  offset: number,
  pollUntilMs: number,
  signal: AbortSignal,
): Promise<void> {
  const waitMs = pollUntilMs - ctx.clock.nowMs();
  if (waitMs > 0) {
    await ctx.backend.waitForMessages(plan.q.topic, plan.q.queueId, offset, waitMs, signal);
  }
}

/**
 * An offset beyond this node's applied end (see {@link pullQueue}): ILLEGAL_OFFSET when the
 * ready leader, after a read point, still ends before it; "nothing yet" at the offset asked when
 * this node cannot tell and its apply did not reach the offset by `pollUntilMs`; undefined once
 * the queue reaches the offset here (the pull goes on as usual).
 */
async function beyondEnd(
  ctx: ServiceContext,
  plan: PullPlan,
  pollUntilMs: number,
  signal: AbortSignal,
): Promise<PullOutcome | undefined> {
  const { q, offset } = plan;
  const leader = await ctx.backend.readPoint(plan.deadlineMs - ctx.options.forwardReserveMs).then(
    () => true,
    () => false, // not the ready leader, or no read point in time: this node cannot tell
  );
  let end = ctx.backend.queueRange(q.topic, q.queueId).max;
  if (offset <= end) return undefined;
  if (leader) {
    const message = `offset ${offset} is beyond the end of the queue (${end})`;
    return { kind: 'illegal', message, nextOffset: end };
  }
  // A message at offset - 1 means the queue's end has reached the offset.
  await waitUntil(ctx, plan, offset - 1, pollUntilMs, signal);
  end = ctx.backend.queueRange(q.topic, q.queueId).max;
  if (offset <= end) return undefined;
  const message =
    `offset ${offset} is beyond what this node has applied of ${q.topic} queue ${q.queueId} ` +
    `(${end}); the leader can tell whether it exists`;
  return { kind: 'none', message, nextOffset: offset };
}

/** The frames answering one PullMessage request. */
async function pullFrames(
  ctx: ServiceContext,
  call: grpc.ServerWritableStream<unknown, unknown>,
  signal: AbortSignal,
  deadlineMs: number,
  hold: AnswerHold,
): Promise<object[]> {
  requireClientId(call.metadata);
  requireDecoded(call.request);
  const request = call.request as PullRequest;
  requireKnownGroup(ctx, groupOf(call, request));
  const q = queueOf(ctx, call, request);
  checkReadable(q);
  checkOffset(request.offset, 'offset');
  const { pullBatchSizeMax } = ctx.options;
  const asked = request.longPollingTimeout;
  const plan: PullPlan = {
    q,
    offset: request.offset,
    batch:
      request.batchSize <= 0 ? pullBatchSizeMax : Math.min(request.batchSize, pullBatchSizeMax),
    bytesMax: ctx.options.pullBytesMax,
    matches: tagFilter(request.filterExpression),
    verifyCrc: true,
    waitMs:
      asked === null
        ? ctx.options.longPollingTimeoutMs
        : durationToMs(asked, 'long_polling_timeout'),
    deadlineMs,
    hold,
  };
  const outcome = await pullQueue(ctx, plan, signal);
  switch (outcome.kind) {
    case 'illegal':
      return [
        { status: { code: RmqCode.ILLEGAL_OFFSET, message: outcome.message } },
        { nextOffset: outcome.nextOffset },
      ];
    case 'none':
      return [
        { status: { code: RmqCode.MESSAGE_NOT_FOUND, message: outcome.message } },
        { nextOffset: outcome.nextOffset },
      ];
    case 'found': {
      const frames = [
        { status: okStatus() },
        ...outcome.items.map((r) => encodeStoredFrame(r.bytes, r.queueOffset, { namespace: q.ns })),
        { nextOffset: outcome.nextOffset },
      ];
      hold.set(framesBytes(frames));
      return frames;
    }
  }
}

/**
 * The PullMessage handler. The call holds a place among the long-polling reads, and its
 * answer's bytes, until its HTTP/2 stream closes, and is reset at its deadline if its client
 * has not taken the answer by then (call-watch.ts).
 */
export function pullMessageHandler(
  ctx: ServiceContext,
): grpc.handleServerStreamingCall<unknown, unknown> {
  return (call) => {
    const admitted = admitRead(ctx, call);
    if (admitted instanceof RaftmqError) {
      refuseStream(call, admitted);
      return;
    }
    const { hold, deadlineMs, watch } = admitted;
    // `stopWaiting` ends a long poll (the client left or the service closes); `cancelled` stops
    // writing (only the client leaving, or the reset at the deadline: a closing service still
    // answers what it has).
    const stopWaiting = new AbortController();
    const cancelled = new AbortController();
    const onCancel = (): void => {
      cancelled.abort();
      stopWaiting.abort();
    };
    const onClosing = (): void => stopWaiting.abort();
    call.on('cancelled', onCancel);
    ctx.closing.addEventListener('abort', onClosing);
    if (ctx.closing.aborted) stopWaiting.abort();
    void pullFrames(ctx, call, stopWaiting.signal, deadlineMs, hold)
      .catch((err: unknown) => [{ status: toStatus(err, ctx.log) }])
      .then((frames) => writeFrames(call, frames, cancelled.signal))
      .catch((err: unknown) => {
        // writeFrames does not throw; if it ever does, the call still ends.
        ctx.log.error({ err }, 'PullMessage failed while writing');
      })
      .finally(() => {
        call.off('cancelled', onCancel);
        ctx.closing.removeEventListener('abort', onClosing);
        if (!cancelled.signal.aborted) call.end();
        watch.handlerDone();
      });
  };
}

/** Answers a server-streaming call with one status frame (a refusal), then ends it. */
export function refuseStream(
  call: grpc.ServerWritableStream<unknown, unknown>,
  err: RaftmqError,
): void {
  call.write({ status: toStatus(err) });
  call.end();
}

/**
 * GetOffset: the group's committed offset on the queue, read by the ready leader after a read
 * point (a follower forwards it): a follower's own copy may miss a commit the client just made
 * through it, and a consumer resuming from it would take messages again.
 */
export async function getOffset(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as QueueRequest;
  const group = groupOf(call, request);
  const q = queueOf(ctx, call, request);
  const deadlineMs = callDeadlineMs(call, ctx);
  return runOrForward(ctx, call, 'GetOffset', deadlineMs, async () => {
    await ctx.backend.readPoint(deadlineMs);
    // On the leader, after the read point: a follower may not have applied a new group yet.
    requireKnownGroup(ctx, group);
    const offset = ctx.backend.getOffset(group, q.topic, q.queueId);
    if (offset === undefined) {
      const message = `group ${group} has no offset on ${q.topic} queue ${q.queueId}`;
      return { status: { code: OFFSET_NOT_FOUND_CODE, message }, offset: 0 };
    }
    return { status: okStatus(), offset };
  });
}

/** UpdateOffset: commits the group's offset through the log (forwarded by a follower). */
export async function updateOffset(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as QueueRequest & { readonly offset: number };
  const group = groupOf(call, request);
  const q = queueOf(ctx, call, request);
  checkOffset(request.offset, 'offset');
  const deadlineMs = callDeadlineMs(call, ctx);
  return runOrForward(ctx, call, 'UpdateOffset', deadlineMs, async () => {
    await ctx.backend.ensureGroup(group, deadlineMs);
    await ctx.backend.updateOffset(group, q.topic, q.queueId, request.offset, deadlineMs);
    return { status: okStatus() };
  });
}

interface QueryOffsetRequest extends QueueRequest {
  readonly queryOffsetPolicy: string;
  readonly timestamp?: WireSecondsNanos | undefined;
}

/** QueryOffset: the queue's first offset (BEGINNING), its end (END) or the offset at a time. */
export async function queryOffset(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as QueryOffsetRequest;
  const q = queueOf(ctx, call, request);
  switch (request.queryOffsetPolicy) {
    case 'BEGINNING':
      return { status: okStatus(), offset: ctx.backend.queueRange(q.topic, q.queueId).min };
    case 'END':
      return { status: okStatus(), offset: ctx.backend.queueRange(q.topic, q.queueId).max };
    case 'TIMESTAMP': {
      if (request.timestamp === undefined) {
        throw new RaftmqError('INVALID_ARGUMENT', 'timestamp is required with policy TIMESTAMP', {
          details: { field: 'timestamp' },
        });
      }
      const ms = instantMs(request.timestamp, 'timestamp');
      return { status: okStatus(), offset: await ctx.backend.searchOffset(q.topic, q.queueId, ms) };
    }
    default:
      throw new RaftmqError(
        'INVALID_ARGUMENT',
        `query_offset_policy ${String(request.queryOffsetPolicy)} is unknown`,
        { details: { field: 'query_offset_policy' } },
      );
  }
}
