/**
 * Pop consumption over the RocketMQ 5 protocol (contract §5.5–5.9): QueryAssignment,
 * ReceiveMessage, AckMessage, ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue,
 * over the leader's PopService (pop-service.ts).
 *
 * - ReceiveMessage answers `{status OK}`, one `{message}` per message, `{delivery_timestamp}`,
 *   or `{status MESSAGE_NOT_FOUND}` after the long poll, or one error status; never messages
 *   with an error status (the Node client would drop them, leaving them invisible). The queue
 *   id of the request is ignored: a receive pops from every queue of the topic on this group.
 *   It answers before the call's deadline: the long poll ends `forwardReserveMs` earlier.
 * - Pop state lives on the leader; a follower forwards every one of these RPCs to it (a
 *   Simple consumer receives from any queue of the route, followers' included).
 * - QueryAssignment answers for the whole topic across all broker groups: one assignment per
 *   group that has a leader, naming the leader (queue id -1, as RocketMQ's proxy does).
 * - Auto-renewal (push consumers: `auto_renew=true`, contract §5.6): the leader renews what such
 *   a receive hands out while its client is alive (pop-renewer.ts), from the moment the answer
 *   is written (a receive whose caller went away renews nothing). The lease is the request's
 *   invisible duration, else the renewer's `invisibleMs` (60 s). Ack, ChangeInvisibleDuration
 *   and ForwardMessageToDeadLetterQueue end the renewal of the handle they name.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../common/logger';
import { isRaftmqError, RaftmqError, RmqCode } from '../common/errors';
import type { TopicRoute } from '../namesrv/route-types';
import { type HostPort, parseHostPort } from '../namesrv/rmq-route';
import type { AnswerHold } from './call-admission';
import { admitRead, framesBytes, writeFrames } from './call-watch';
import {
  callDeadlineMs,
  namespaceHeader,
  requireClientId,
  requireDecoded,
  type ServiceContext,
} from './messaging-call';
import { runOrForward, runOrForwardStream } from './messaging-forward';
import { refuseStream, tagFilter } from './messaging-pull';
import { MULTIPLE_RESULTS_CODE } from './messaging-send';
import type { PopService } from './pop-service';
import type { RenewableDelivery, RenewReservation } from './pop-renewer';
import { POP_RENEWER_DEFAULTS } from './pop-renewer-options';
import { okStatus, toStatus } from './rmq-convert';
import { encodeAckAnswer } from './rmq-message-encode';
import { encodeStoredFrame } from './rmq-stored-frame';
import { checkGroup, checkTopic, effectiveNamespace } from './rmq-validate';
import { ACK_ENTRIES_MAX } from './send-request-decode';
import {
  durationToMs,
  msToTimestamp,
  type WireFilterExpression,
  type WireMessageQueue,
  type WireResource,
  type WireSecondsNanos,
  type WireStatus,
} from './rmq-wire';

/** Invisibility of a receive that names none (the Simple consumer's default, 15 s). */
export const DEFAULT_INVISIBLE_MS = 15_000;
/** The longest invisibility a client may ask for (the proxy's 12 h). */
export const INVISIBLE_MS_MAX = 12 * 3600 * 1000;
/** Messages one receive hands out by default (a push consumer may send 0). */
export const RECEIVE_BATCH_DEFAULT = 32;

interface GroupTopicRequest {
  readonly group: WireResource | null;
  readonly topic: WireResource | null;
}

interface Names {
  readonly ns: string;
  readonly group: string;
  readonly topic: string;
}

/** The leader's pop service; UNSUPPORTED on a broker that serves no pop consumption. */
export function popOf(ctx: ServiceContext): PopService {
  const pop = ctx.backend.pop;
  if (pop === undefined) {
    throw new RaftmqError('UNSUPPORTED', 'this broker does not serve pop consumption');
  }
  return pop;
}

function namesOf(
  call: { metadata: grpc.Metadata },
  group: WireResource | null,
  topic: WireResource | null,
): Names {
  if (group === null) {
    throw new RaftmqError('ILLEGAL_CONSUMER_GROUP', 'group is missing', {
      details: { field: 'group' },
    });
  }
  if (topic === null) {
    throw new RaftmqError('ILLEGAL_TOPIC', 'topic is missing', { details: { field: 'topic' } });
  }
  const header = namespaceHeader(call.metadata);
  const ns = effectiveNamespace(header, topic.resourceNamespace);
  return {
    ns,
    group: checkGroup(
      group.name,
      effectiveNamespace(header, group.resourceNamespace),
      'group.name',
    ),
    topic: checkTopic(topic.name, ns, 'topic.name', true),
  };
}

/** `ms` as an invisibility a receive may ask for; ILLEGAL_INVISIBLE_TIME naming `field`. */
export function checkInvisibleMs(ms: number, field: string): number {
  if (!Number.isFinite(ms) || ms < 0 || ms > INVISIBLE_MS_MAX) {
    throw new RaftmqError(
      'ILLEGAL_INVISIBLE_TIME',
      `${field} ${ms} ms must be in [0, ${INVISIBLE_MS_MAX}]`,
      { details: { field } },
    );
  }
  return Math.floor(ms);
}

function invisibleMsOf(d: WireSecondsNanos | null | undefined, fallbackMs: number): number {
  if (d === null || d === undefined) return fallbackMs;
  return checkInvisibleMs(durationToMs(d, 'invisible_duration'), 'invisible_duration');
}

/**
 * When a receive stops waiting for messages: after `waitMs` (capped by the service's longest
 * long poll), and early enough to answer before the call's deadline.
 */
export function receivePollUntilMs(ctx: ServiceContext, waitMs: number, deadlineMs: number) {
  return Math.min(
    ctx.clock.nowMs() + Math.min(Math.max(0, waitMs), ctx.options.longPollingTimeoutMsMax),
    deadlineMs - ctx.options.forwardReserveMs,
  );
}

/** The answer of a receive that found nothing ready. */
export function nothingReady(topic: string, group: string): { code: number; message: string } {
  const message = `no message of ${topic} is ready for group ${group}`;
  return { code: RmqCode.MESSAGE_NOT_FOUND, message };
}

// ---- ReceiveMessage ----

interface ReceiveRequest {
  readonly group: WireResource | null;
  readonly messageQueue: WireMessageQueue | null;
  readonly filterExpression: WireFilterExpression | null;
  readonly batchSize: number;
  readonly invisibleDuration?: WireSecondsNanos | null;
  readonly autoRenew: boolean;
  readonly longPollingTimeout?: WireSecondsNanos | null;
}

/**
 * The auto-renewal of one receive's deliveries: the room it reserved, then what it handed out;
 * started once the answer is written, cancelled when it is not.
 */
class PendingRenewal {
  private reservation: RenewReservation | undefined;
  private handedOut:
    { group: string; topic: string; popped: readonly RenewableDelivery[] } | undefined;

  /** Holds `reservation` (a previous attempt's is cancelled). */
  hold(reservation: RenewReservation | undefined): void {
    this.cancel();
    this.reservation = reservation;
  }

  handOut(group: string, topic: string, popped: readonly RenewableDelivery[]): void {
    this.handedOut = { group, topic, popped };
  }

  /** The answer was written: renews what it handed out. */
  start(): void {
    const out = this.handedOut;
    if (this.reservation !== undefined && out !== undefined) {
      this.reservation.track(out.group, out.topic, out.popped);
    }
    this.cancel();
  }

  cancel(): void {
    this.reservation?.cancel();
    this.reservation = undefined;
    this.handedOut = undefined;
  }
}

async function receiveFrames(
  ctx: ServiceContext,
  call: grpc.ServerWritableStream<unknown, unknown>,
  signal: AbortSignal,
  renewal: PendingRenewal,
  deadlineMs: number,
  hold: AnswerHold,
): Promise<object[]> {
  const clientId = requireClientId(call.metadata);
  requireDecoded(call.request);
  const request = call.request as ReceiveRequest;
  const names = namesOf(call, request.group, request.messageQueue?.topic ?? null);
  const filter = tagFilter(request.filterExpression);
  const renewer = request.autoRenew ? ctx.renewer : undefined;
  const invisibleMs = invisibleMsOf(
    request.invisibleDuration,
    request.autoRenew
      ? (ctx.renewer?.options.invisibleMs ?? POP_RENEWER_DEFAULTS.invisibleMs)
      : DEFAULT_INVISIBLE_MS,
  );
  const batchSize = request.batchSize > 0 ? request.batchSize : RECEIVE_BATCH_DEFAULT;
  const asked = request.longPollingTimeout;
  const pollMs =
    asked === null || asked === undefined
      ? ctx.options.longPollingTimeoutMs
      : durationToMs(asked, 'long_polling_timeout');
  const pollUntilMs = receivePollUntilMs(ctx, pollMs, deadlineMs);
  return runOrForwardStream(ctx, call, 'ReceiveMessage', deadlineMs, async () => {
    const pop = popOf(ctx);
    // Before the store is read: refused (BUSY) while the answers held are at their bound. What
    // a receive hands out is bounded by the pop service (4 MiB), so nothing more is reserved.
    hold.reserve(1);
    // On the leader only: a follower forwards the receive, and the leader renews.
    const reservation = renewer?.reserve(clientId, batchSize);
    renewal.hold(reservation);
    const popped = await pop.receive(
      {
        ...names,
        filter,
        batchSize: reservation?.count ?? batchSize,
        invisibleMs,
        pollUntilMs,
        signal,
      },
      deadlineMs - ctx.options.forwardReserveMs,
    );
    renewal.handOut(names.group, names.topic, popped);
    if (popped.length === 0) return [{ status: nothingReady(names.topic, names.group) }];
    const frames = [
      { status: okStatus() },
      ...popped.map((p) =>
        encodeStoredFrame(p.record.bytes, p.record.queueOffset, {
          namespace: names.ns,
          deliveryAttempt: p.attempt,
          receiptHandle: p.receiptHandle,
          invisibleDurationMs: p.invisibleMs,
        }),
      ),
      { deliveryTimestamp: msToTimestamp(ctx.clock.nowMs()) },
    ];
    hold.set(framesBytes(frames));
    return frames;
  });
}

/**
 * The ReceiveMessage handler. Frames are written as the client takes them ('drain'); the call
 * holds a place among the long-polling reads, and its answer's bytes, until its HTTP/2 stream
 * closes, and is reset at its deadline if its client has not taken the answer by then
 * (call-watch.ts). Handles it was given are then not renewed, and come back when their
 * invisibility ends.
 */
export function receiveMessageHandler(
  ctx: ServiceContext,
): grpc.handleServerStreamingCall<unknown, unknown> {
  return (call) => {
    const admitted = admitRead(ctx, call);
    if (admitted instanceof RaftmqError) {
      refuseStream(call, admitted);
      return;
    }
    const { hold, deadlineMs, watch } = admitted;
    // `stop` ends the long poll (the client left, or the service closes); `cancelled` stops
    // writing (only the client leaving, or the reset at the deadline).
    const stop = new AbortController();
    const cancelled = new AbortController();
    const onCancel = (): void => {
      cancelled.abort();
      stop.abort();
    };
    const onClosing = (): void => stop.abort();
    call.on('cancelled', onCancel);
    ctx.closing.addEventListener('abort', onClosing);
    if (ctx.closing.aborted) stop.abort();
    const renewal = new PendingRenewal();
    void receiveFrames(ctx, call, stop.signal, renewal, deadlineMs, hold)
      .catch((err: unknown) => [{ status: toStatus(err, ctx.log) }])
      .then(async (frames) => {
        if (call.cancelled) return;
        await writeFrames(call, frames, cancelled.signal);
        if (cancelled.signal.aborted) return;
        call.end();
        renewal.start();
      })
      .catch((err: unknown) => ctx.log.error({ err }, 'ReceiveMessage failed while writing'))
      .finally(() => {
        renewal.cancel();
        call.off('cancelled', onCancel);
        ctx.closing.removeEventListener('abort', onClosing);
        watch.handlerDone();
      });
  };
}

// ---- AckMessage ----

interface AckEntryRequest {
  readonly messageId: string;
  readonly receiptHandle: string;
}

interface AckRequest extends GroupTopicRequest {
  readonly entries: readonly AckEntryRequest[];
}

/** AckMessage: settles each entry; per-entry statuses, MULTIPLE_RESULTS when they differ. */
export async function ackMessage(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as AckRequest;
  const names = namesOf(call, request.group, request.topic);
  if (request.entries.length === 0 || request.entries.length > ACK_ENTRIES_MAX) {
    throw new RaftmqError('INVALID_ARGUMENT', `entries must hold 1..${ACK_ENTRIES_MAX} acks`, {
      details: { field: 'entries' },
    });
  }
  const deadlineMs = callDeadlineMs(call, ctx);
  return runOrForward(ctx, call, 'AckMessage', deadlineMs, async () => {
    // Loops, not callbacks made per request: V8 compiles a hot closure again for each instance
    // (docs/performance.md, "What V8 costs"), and these run once per entry.
    const count = request.entries.length;
    const handles = new Array<string>(count);
    for (let i = 0; i < count; i++)
      handles[i] = (request.entries[i] as AckEntryRequest).receiptHandle;
    const outcomes = await popOf(ctx).ackAll(names.group, names.topic, handles, deadlineMs);
    // Settled, or stale (the delivery it named is over): renewing it has ended either way.
    for (const handle of handles) ctx.renewer?.release(names.group, names.topic, handle);
    if (outcomes.length !== count) {
      throw new RaftmqError('INTERNAL', `${outcomes.length} ack outcomes for ${count} entries`);
    }
    const ok = okStatus();
    const entries = new Array<{ messageId: string; receiptHandle: string; status: WireStatus }>(
      count,
    );
    const codes = new Set<number | string>();
    for (let i = 0; i < count; i++) {
      const err = outcomes[i];
      const status = err === undefined ? ok : toStatus(err, ctx.log);
      codes.add(status.code);
      const e = request.entries[i] as AckEntryRequest;
      entries[i] = { messageId: e.messageId, receiptHandle: e.receiptHandle, status };
    }
    const first = entries[0]?.status ?? ok;
    const status =
      codes.size <= 1
        ? first
        : { code: MULTIPLE_RESULTS_CODE, message: 'the entries have different results' };
    return encodeAckAnswer(status, entries);
  });
}

// ---- ChangeInvisibleDuration ----

interface ChangeRequest extends GroupTopicRequest {
  readonly receiptHandle: string;
  readonly invisibleDuration: WireSecondsNanos | null;
  readonly messageId: string;
}

/** ChangeInvisibleDuration: a new deadline and a new receipt handle (0 ms: visible now). */
export async function changeInvisibleDuration(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as ChangeRequest;
  const names = namesOf(call, request.group, request.topic);
  if (request.invisibleDuration === null) {
    throw new RaftmqError('ILLEGAL_INVISIBLE_TIME', 'invisible_duration is missing', {
      details: { field: 'invisible_duration' },
    });
  }
  const invisibleMs = invisibleMsOf(request.invisibleDuration, 0);
  const deadlineMs = callDeadlineMs(call, ctx);
  return runOrForward(ctx, call, 'ChangeInvisibleDuration', deadlineMs, async () => {
    // The client's change (a push consumer's nack) ends the server's renewal of the delivery.
    // A renewal proposed before this change is refused when applied after it (its guard).
    const release = (): void =>
      ctx.renewer?.release(names.group, names.topic, request.receiptHandle);
    try {
      const handle = await popOf(ctx).changeInvisible(
        names.group,
        names.topic,
        request.receiptHandle,
        invisibleMs,
        deadlineMs,
      );
      release();
      return { status: okStatus(), receiptHandle: handle };
    } catch (err) {
      if (isRaftmqError(err, 'INVALID_RECEIPT_HANDLE')) release();
      throw err;
    }
  });
}

// ---- ForwardMessageToDeadLetterQueue ----

interface DeadLetterRequest extends GroupTopicRequest {
  readonly receiptHandle: string;
  readonly messageId: string;
}

/** ForwardMessageToDeadLetterQueue: copies the message to `%DLQ%<group>`, then settles it. */
export async function forwardToDeadLetterQueue(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as DeadLetterRequest;
  const names = namesOf(call, request.group, request.topic);
  const deadlineMs = callDeadlineMs(call, ctx);
  return runOrForward(ctx, call, 'ForwardMessageToDeadLetterQueue', deadlineMs, async () => {
    // Renewal ends first, and a round in progress is let finish: the move settles the delivery
    // only if its lease is still the one it saw, and a renewal in between would refuse it.
    ctx.renewer?.release(names.group, names.topic, request.receiptHandle);
    await ctx.renewer?.roundDone();
    await popOf(ctx).forwardToDeadLetter(
      names.group,
      names.topic,
      request.receiptHandle,
      deadlineMs,
    );
    return { status: okStatus() };
  });
}

// ---- QueryAssignment ----

/**
 * The assignments of `route`: each group's leader, queue id -1 (the whole group). A leader
 * whose registered endpoint a client could not use (QueryRoute skips those too) is left out
 * and logged, so that one bad registration does not fail the topic's every consumer.
 */
function assignmentsOf(route: TopicRoute, topic: WireResource, log: Logger): object[] {
  const out: object[] = [];
  for (const group of route.groups) {
    if (group.leader === undefined) continue;
    const queue = group.queues[0];
    if (queue === undefined || queue.perm === 'WRITE') continue;
    let at: HostPort;
    try {
      at = parseHostPort(group.leader.endpoint);
    } catch (err) {
      log.warn(
        { group: group.group, endpoint: group.leader.endpoint, reason: String(err) },
        'leader endpoint unusable; group left out of the assignment',
      );
      continue;
    }
    out.push({
      messageQueue: {
        topic,
        id: -1,
        permission: queue.perm,
        broker: {
          name: group.group,
          id: 0,
          endpoints: { scheme: at.scheme, addresses: [{ host: at.host, port: at.port }] },
        },
        acceptMessageTypes: [...queue.messageTypes],
      },
    });
  }
  return out;
}

/**
 * QueryAssignment: where a push consumer should receive from. A topic with no leader anywhere
 * gets an error status, not an empty list: the Node client drops every receive loop on an
 * empty answer (contract §5.5).
 */
export async function queryAssignment(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as GroupTopicRequest;
  const names = namesOf(call, request.group, request.topic);
  const route = await ctx.backend.route(names.topic);
  if (route === undefined) {
    throw new RaftmqError('TOPIC_NOT_FOUND', `topic ${names.topic} does not exist`, {
      details: { topic: names.topic },
    });
  }
  const topic = { resourceNamespace: names.ns, name: request.topic?.name ?? '' };
  const assignments = assignmentsOf(route, topic, ctx.log);
  if (assignments.length === 0 && route.groups.every((g) => g.queues[0]?.perm === 'WRITE')) {
    // As RocketMQ's proxy answers it: a write-only topic has nothing to consume, and no
    // election will change that (NOT_LEADER would have the client retry it every few seconds).
    throw new RaftmqError('PERMISSION_DENIED', `topic ${names.topic} is not readable`, {
      details: { topic: names.topic },
    });
  }
  if (assignments.length === 0) {
    throw new RaftmqError(
      'NOT_LEADER',
      `no broker group hosting ${names.topic} has a leader with a usable endpoint now`,
    );
  }
  return { status: okStatus(), assignments };
}
