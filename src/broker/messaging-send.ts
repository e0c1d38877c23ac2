/**
 * SendMessage. Every message of the request is checked first (rmq-convert.ts); if any fails,
 * nothing is stored and each entry says why: the invalid ones their own status, the valid ones
 * the first failure's code ("not stored: message i is invalid"), so the entry a client reads
 * first names the real problem. The top-level status is the shared code, or MULTIPLE_RESULTS
 * when entries differ (contract §5.4). DELAY and TRANSACTION messages are refused with
 * UNSUPPORTED until the backend says it supports them; routes do not advertise them meanwhile
 * (served-message-types.ts), so the official clients refuse them before sending.
 *
 * Valid requests go to `backend.send` with the call's deadline (capped); a follower forwards
 * them to the leader (messaging-forward.ts). Entries echo the client's message ids and carry
 * the queue offset each message got.
 */
import type * as grpc from '@grpc/grpc-js';
import { RaftmqError, RmqCode } from '../common/errors';
import type { ProduceMessage, SendReceipt } from './broker-types';
import {
  callDeadlineMs,
  namespaceHeader,
  requireClientId,
  type ServiceContext,
} from './messaging-call';
import { checkGzipBody } from './gzip-body-check';
import { runOrForward } from './messaging-forward';
import { okStatus, type ProduceContext, toProduceMessage, toStatus } from './rmq-convert';
import { encodeSendAccepted } from './rmq-message-encode';
import type { WireMessage, WireStatus } from './rmq-wire';

/** RocketMQ `Code.MULTIPLE_RESULTS`: entries of one response carry different codes. */
export const MULTIPLE_RESULTS_CODE = 30_000;

interface SendRequest {
  readonly messages: readonly WireMessage[];
}

interface SendResultEntry {
  readonly status: WireStatus;
  readonly messageId: string;
  readonly transactionId: string;
  readonly offset: number;
  readonly recallHandle: string;
}

interface SendResponse {
  readonly status: WireStatus;
  readonly entries: readonly SendResultEntry[];
}

type Checked =
  | { readonly ok: true; readonly message: ProduceMessage }
  | { readonly ok: false; readonly err: unknown };

function entry(status: WireStatus, messageId: string, offset = 0): SendResultEntry {
  return { status, messageId, transactionId: '', offset, recallHandle: '' };
}

function wireMessageId(m: WireMessage): string {
  return m.systemProperties?.messageId ?? '';
}

/** Refuses message types the backend does not store yet. */
function checkSupported(ctx: ServiceContext, message: ProduceMessage): void {
  const { backend } = ctx;
  if (message.messageType === 'DELAY' && backend.supportsDelayMessages !== true) {
    throw new RaftmqError(
      'UNSUPPORTED',
      'DELAY messages are not supported yet (planned); send it as a NORMAL message',
      { details: { field: 'system_properties.message_type' } },
    );
  }
  if (message.messageType === 'TRANSACTION' && backend.supportsTransactionMessages !== true) {
    throw new RaftmqError('UNSUPPORTED', 'TRANSACTION messages are not supported yet (planned)', {
      details: { field: 'system_properties.message_type' },
    });
  }
}

/**
 * Checks each GZIP body (gzip-body-check.ts), all at once; marks those that fail in `checked`
 * and resolves whether any did. A request without GZIP bodies costs one pass over its messages.
 */
async function gzipBodiesRefused(
  produce: readonly ProduceMessage[],
  checked: Checked[],
): Promise<boolean> {
  let checks: Promise<void>[] | undefined;
  for (let i = 0; i < produce.length; i++) {
    const m = produce[i] as ProduceMessage;
    if (m.bodyEncoding !== 'GZIP') continue;
    (checks ??= []).push(
      checkGzipBody(m.body).catch((err: unknown) => {
        checked[i] = { ok: false, err };
      }),
    );
  }
  if (checks === undefined) return false;
  await Promise.all(checks);
  return checked.some((c) => !c.ok);
}

/** The answer to a request with at least one invalid message: nothing was stored. */
function rejection(
  ctx: ServiceContext,
  messages: readonly WireMessage[],
  checked: Checked[],
): SendResponse {
  const firstBad = checked.findIndex((c) => !c.ok);
  const first = checked[firstBad];
  const firstStatus = toStatus(first !== undefined && !first.ok ? first.err : undefined, ctx.log);
  const entries = checked.map((c, i) => {
    const id = wireMessageId(messages[i] as WireMessage);
    if (!c.ok) return entry(toStatus(c.err, ctx.log), id);
    const message = `not stored: message ${firstBad} of the request is invalid: ${firstStatus.message}`;
    return entry({ code: firstStatus.code, message }, id);
  });
  const codes = new Set(entries.map((e) => e.status.code));
  const status: WireStatus =
    codes.size === 1
      ? firstStatus
      : {
          code: MULTIPLE_RESULTS_CODE,
          message: 'messages were refused for different reasons; see entries',
        };
  return { status, entries };
}

/** The answer to a request whose messages were all stored, encoded directly (the hot path). */
function accepted(messages: readonly WireMessage[], receipts: readonly SendReceipt[]): object {
  if (receipts.length !== messages.length) {
    throw new RaftmqError(
      'INTERNAL',
      `the broker returned ${receipts.length} receipts for ${messages.length} messages`,
    );
  }
  const sent = new Array<{ messageId: string; offset: number }>(receipts.length);
  for (let i = 0; i < receipts.length; i++) {
    sent[i] = {
      messageId: wireMessageId(messages[i] as WireMessage),
      offset: (receipts[i] as SendReceipt).queueOffset,
    };
  }
  return encodeSendAccepted(sent, RmqCode.OK, okStatus().message);
}

/** The whole request failed with `err` (not stored, or not known to be stored). */
function failed(ctx: ServiceContext, messages: readonly WireMessage[], err: unknown): SendResponse {
  const status = toStatus(err, ctx.log);
  return { status, entries: messages.map((m) => entry(status, wireMessageId(m))) };
}

/** Handles one SendMessage call; resolves to the response (its own or the leader's). */
export async function sendMessage(
  ctx: ServiceContext,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): Promise<object> {
  requireClientId(call.metadata);
  const { messages } = call.request as SendRequest;
  if (messages.length === 0) {
    throw new RaftmqError('INVALID_ARGUMENT', 'messages is empty', {
      details: { field: 'messages' },
    });
  }
  if (messages.length > ctx.options.messagesPerSendMax) {
    throw new RaftmqError(
      'INVALID_ARGUMENT',
      `messages has ${messages.length} messages; at most ${ctx.options.messagesPerSendMax}`,
      { details: { field: 'messages' } },
    );
  }
  const produceCtx: ProduceContext = {
    namespaceHeader: namespaceHeader(call.metadata),
    maxBodyBytes: ctx.options.maxBodyBytes,
    maxDelayMs: ctx.options.maxDelayMs,
    nowMs: ctx.clock.nowMs(),
    peer: call.getPeer(),
  };
  // Loops, not callbacks: V8 optimizes each instance of a hot closure on its own, and closures
  // made per request (called once per message) were compiled again and again under load.
  const checked: Checked[] = new Array<Checked>(messages.length);
  const produce: ProduceMessage[] = [];
  for (let i = 0; i < messages.length; i++) {
    try {
      const message = toProduceMessage(messages[i] as WireMessage, produceCtx);
      checkSupported(ctx, message);
      checked[i] = { ok: true, message };
      produce.push(message);
    } catch (err) {
      checked[i] = { ok: false, err };
    }
  }
  if (produce.length !== checked.length) return rejection(ctx, messages, checked);
  if (await gzipBodiesRefused(produce, checked)) return rejection(ctx, messages, checked);
  const deadlineMs = callDeadlineMs(call, ctx);
  const { backend } = ctx;
  const findStored = backend.findStoredSend?.bind(backend);
  const inDoubt =
    findStored &&
    (async (sinceTerm: number, settleDeadlineMs: number) => {
      const found = await findStored(produce, sinceTerm, settleDeadlineMs);
      if (found === undefined) return undefined;
      return found === 'none' ? ('resend' as const) : accepted(messages, found);
    });
  try {
    return await runOrForward(
      ctx,
      call,
      'SendMessage',
      deadlineMs,
      async () => accepted(messages, await backend.send(produce, deadlineMs)),
      inDoubt,
    );
  } catch (err) {
    return failed(ctx, messages, err);
  }
}
