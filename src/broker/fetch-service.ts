/**
 * raftmq's Fetch protocol (`proto/fetch.proto`, `raftmq.fetch.v1.Fetch`): reads with the
 * messages sent as the CommitLog stores them, all in one frame.
 *
 * - FetchQueue reads by offset. It makes the checks PullMessage makes and shares its pull
 *   (messaging-pull.ts `pullQueue`: long polling, tag filter, paging, the same statuses); only
 *   the answer differs: the records go as they are stored, their CRC32C left to the client
 *   unless a tag filter reads their tags.
 * - ReceiveStored pops for a consumer group through the leader's PopService, as ReceiveMessage
 *   does (messaging-pop.ts), with the same checks and statuses; the answer carries the stored
 *   records with a receipt handle and delivery attempt each, instead of a frame per message
 *   with its MD5 digest. A follower answers HA_NOT_AVAILABLE (it does not forward: the SDK
 *   sends receives to the leader its route names).
 *
 * docs/client-protocol.md says when to use which.
 *
 * Served on every broker node next to the MessagingService, with the same context: it stops
 * long polls when the service closes, and answers every failure as a status in the reply.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
import { RaftmqError, RmqCode } from '../common/errors';
import type { AnswerHold } from './call-admission';
import { admitRead } from './call-watch';
import {
  type Admit,
  namespaceHeader,
  requireClientId,
  callDeadlineMs,
  type ServiceContext,
  unaryHandler,
} from './messaging-call';
import { loadTolerantService } from './messaging-proto';
import {
  checkOffset,
  checkQueue,
  checkReadable,
  type PullPlan,
  pullQueue,
  requireKnownGroup,
  tagMatcher,
  tagsOf,
} from './messaging-pull';
import {
  checkInvisibleMs,
  nothingReady,
  popOf,
  RECEIVE_BATCH_DEFAULT,
  receivePollUntilMs,
} from './messaging-pop';
import { encodeFetchAnswer, encodeReceiveStoredAnswer } from './rmq-message-encode';
import { checkGroup, checkTopic, effectiveNamespace } from './rmq-validate';

/** The protocol file, relative to the proto directory. */
export const FETCH_PROTO_FILE = 'fetch.proto';
/** Full name of the service. */
export const FETCH_SERVICE_NAME = 'raftmq.fetch.v1.Fetch';

/** A FetchQueue request as proto-loader decodes it (every field present). */
export interface FetchRequest {
  readonly namespace: string;
  readonly group: string;
  readonly topic: string;
  readonly queueId: number;
  readonly offset: number;
  readonly countMax: number;
  readonly bytesMax: number;
  readonly tagExpression: string;
  readonly awaitMs: number;
}

/** A ReceiveStored request as proto-loader decodes it (every field present). */
export interface ReceiveStoredRequest {
  readonly namespace: string;
  readonly group: string;
  readonly topic: string;
  readonly batchSize: number;
  readonly invisibleMs: number;
  readonly tagExpression: string;
  readonly awaitMs: number;
  readonly bytesMax: number;
}

/** The Fetch service definition; its request decoder never throws (see messaging-proto.ts). */
export function loadFetchDefinition(protoDir = ''): Promise<grpc.ServiceDefinition> {
  return loadTolerantService(FETCH_PROTO_FILE, FETCH_SERVICE_NAME, protoDir);
}

/** One FetchQueue call: the reply object (status, next offset, records and their offsets). */
async function fetchQueue(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
  signal: AbortSignal,
  hold: AnswerHold,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as FetchRequest;
  const ns = effectiveNamespace(namespaceHeader(call.metadata), request.namespace);
  requireKnownGroup(ctx, checkGroup(request.group, ns, 'group'));
  const q = checkQueue(ctx, ns, request.topic, request.queueId, {
    topic: 'topic',
    queueId: 'queue_id',
  });
  checkReadable(q);
  checkOffset(request.offset, 'offset');
  const { fetchCountMax, pullBytesMax } = ctx.options;
  const tags = tagsOf(request.tagExpression);
  const plan: PullPlan = {
    q,
    offset: request.offset,
    batch: request.countMax <= 0 ? fetchCountMax : Math.min(request.countMax, fetchCountMax),
    bytesMax: request.bytesMax <= 0 ? pullBytesMax : Math.min(request.bytesMax, pullBytesMax),
    matches: tagMatcher(tags),
    // The client checks every record's CRC32C (it must: the bytes crossed the network), so the
    // broker checks only what it relies on itself: each record's frame, topic and queue. With
    // a tag filter it relies on each tag too: a damaged tag must fail here, not skip a record.
    verifyCrc: tags !== undefined,
    waitMs: request.awaitMs,
    deadlineMs: callDeadlineMs(call, ctx),
    hold,
  };
  const outcome = await pullQueue(ctx, plan, signal);
  if (outcome.kind !== 'found') {
    const code = outcome.kind === 'none' ? RmqCode.MESSAGE_NOT_FOUND : RmqCode.ILLEGAL_OFFSET;
    return { status: { code, message: outcome.message }, nextOffset: outcome.nextOffset };
  }
  const answer = encodeFetchAnswer(outcome.nextOffset, outcome.items);
  hold.set(answer.bytes.length);
  return answer;
}

/** One ReceiveStored call: the reply object (status, and the messages handed out). */
async function receiveStored(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
  signal: AbortSignal,
  hold: AnswerHold,
): Promise<object> {
  requireClientId(call.metadata);
  const request = call.request as ReceiveStoredRequest;
  const ns = effectiveNamespace(namespaceHeader(call.metadata), request.namespace);
  const group = checkGroup(request.group, ns, 'group');
  const topic = checkTopic(request.topic, ns, 'topic', true);
  const invisibleMs = checkInvisibleMs(request.invisibleMs, 'invisible_ms');
  const filter = tagMatcher(tagsOf(request.tagExpression));
  const deadlineMs = callDeadlineMs(call, ctx);
  // Refused (BUSY) while the answers held are at their bound; the pop service bounds the rest.
  hold.reserve(1);
  const popped = await popOf(ctx).receive(
    {
      group,
      topic,
      filter,
      batchSize: request.batchSize > 0 ? request.batchSize : RECEIVE_BATCH_DEFAULT,
      invisibleMs,
      pollUntilMs: receivePollUntilMs(ctx, request.awaitMs, deadlineMs),
      signal,
      bytesMax: request.bytesMax > 0 ? request.bytesMax : undefined,
    },
    deadlineMs - ctx.options.forwardReserveMs,
  );
  if (popped.length === 0) return { status: nothingReady(topic, group) };
  const answer = encodeReceiveStoredAnswer(popped);
  hold.set(answer.bytes.length);
  return answer;
}

/**
 * A unary handler whose long poll ends when the client cancels or the service closes
 * (`ctx.closing`); it then answers with what it has. The call holds a place among the
 * long-polling reads, and its answer's bytes (`hold`), until its HTTP/2 stream closes, and is
 * reset at its deadline if its client has not taken the answer by then (call-watch.ts).
 */
function pollingHandler(
  ctx: ServiceContext,
  name: string,
  run: (
    ctx: ServiceContext,
    call: grpc.ServerUnaryCall<unknown, unknown>,
    signal: AbortSignal,
    hold: AnswerHold,
  ) => Promise<object>,
): grpc.handleUnaryCall<unknown, unknown> {
  const holds = new WeakMap<object, AnswerHold>();
  const admit: Admit = (call) => {
    const admitted = admitRead(ctx, call);
    if (admitted instanceof RaftmqError) return admitted;
    holds.set(call, admitted.hold);
    return () => admitted.watch.handlerDone();
  };
  const handle = async (call: grpc.ServerUnaryCall<unknown, unknown>): Promise<object> => {
    const hold = holds.get(call);
    assert(hold !== undefined, 'a polling call runs only once admitted');
    const stop = new AbortController();
    const onStop = (): void => stop.abort();
    call.on('cancelled', onStop);
    ctx.closing.addEventListener('abort', onStop);
    if (ctx.closing.aborted) stop.abort();
    try {
      return await run(ctx, call, stop.signal, hold);
    } finally {
      call.off('cancelled', onStop);
      ctx.closing.removeEventListener('abort', onStop);
    }
  };
  return unaryHandler(ctx, name, handle, admit);
}

/** The FetchQueue handler. */
export function fetchQueueHandler(ctx: ServiceContext): grpc.handleUnaryCall<unknown, unknown> {
  return pollingHandler(ctx, 'FetchQueue', fetchQueue);
}

/** The ReceiveStored handler. */
export function receiveStoredHandler(ctx: ServiceContext): grpc.handleUnaryCall<unknown, unknown> {
  return pollingHandler(ctx, 'ReceiveStored', receiveStored);
}
