/**
 * Holding a read call to its deadline, and to the service's bounds until its client has taken
 * the answer.
 *
 * A client that asks for messages and then does not read the answer leaves it in the HTTP/2
 * stream's buffers (grpc-js hands frames on without waiting for the peer's window), and a
 * status cannot pass the data queued before it. So the end of a read call is when its HTTP/2
 * stream closes: only then is its place in flight given back and its answer's bytes released
 * (call-admission.ts). At the call's deadline (capped by `requestTimeoutMsMax`) a stream still
 * open is reset with CANCEL, as gRPC servers end a call past its deadline, which drops what
 * it still held; the client sees CANCELLED (or its own DEADLINE_EXCEEDED).
 */
import { constants as http2Constants } from 'node:http2';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../common/logger';
import type { RaftmqError } from '../common/errors';
import { EncodedFrame } from './rmq-message-encode';
import { http2StreamOf } from './grpc-util';
import { type AnswerHold, type CallGate, undecodedBusy } from './call-admission';
import { callDeadlineMs, clientIdOf, isUndecodedBusy, type ServiceContext } from './messaging-call';

/** A long-polling read call let in: its hold on its client's answer bytes, and its watch. */
export interface AdmittedRead {
  readonly hold: AnswerHold;
  readonly deadlineMs: number;
  /** The handler calls `watch.handlerDone()` once it has written its answer (or failed). */
  readonly watch: { handlerDone(): void };
}

/**
 * Lets a long-polling read call in (PullMessage, ReceiveMessage, FetchQueue, ReceiveStored): a
 * place among the service's polls, a hold on its client's answer bytes, both kept until the
 * call ends ({@link watchCall}); or the BUSY error to refuse it with.
 */
export function admitRead(
  ctx: ServiceContext,
  call: {
    readonly request: unknown;
    readonly metadata: grpc.Metadata;
    getDeadline(): grpc.Deadline;
  },
): AdmittedRead | RaftmqError {
  // A request left undecoded because the gate was full is refused whatever the gate says now.
  if (isUndecodedBusy(call.request)) return undecodedBusy();
  const gate = ctx.admission.polls;
  if (!gate.tryEnter()) return gate.busy();
  const hold = ctx.admission.answerBytes.hold(clientIdOf(call.metadata));
  const deadlineMs = callDeadlineMs(call, ctx);
  const watch = watchCall(ctx, call, deadlineMs, readCallEnd(gate, hold));
  return { hold, deadlineMs, watch };
}

/** Whether the grpc-js internals were missing once already (warned once per process). */
let warnedUnwatchable = false;

/**
 * Runs `onEnd` once both the handler has said it is done (`handlerDone`) and the call's HTTP/2
 * stream has closed; resets the stream if it is still open at `deadlineMs` (epoch ms, by
 * `ctx.clock`). When this grpc-js does not show its stream, `onEnd` runs when the handler is
 * done, and nothing resets the call (logged once).
 */
function watchCall(
  ctx: ServiceContext,
  call: object,
  deadlineMs: number,
  onEnd: () => void,
): { handlerDone(): void } {
  let pending = 2;
  const step = (): void => {
    pending--;
    if (pending === 0) onEnd();
  };
  const stream = http2StreamOf(call);
  if (stream === undefined) {
    warnUnwatchable(ctx.log);
    pending = 1;
  } else if (stream.closed || stream.destroyed) {
    step();
  } else {
    const timer = setTimeout(
      () => {
        if (stream.closed || stream.destroyed) return;
        ctx.log.debug({ deadlineMs }, 'call past its deadline with its answer unread; reset');
        stream.close(http2Constants.NGHTTP2_CANCEL);
      },
      Math.max(0, deadlineMs - ctx.clock.nowMs()),
    );
    // A broker stopping does not wait for it: closing the server closes the stream.
    timer.unref();
    stream.once('close', () => {
      clearTimeout(timer);
      step();
    });
  }
  let done = false;
  return {
    handlerDone(): void {
      if (done) return;
      done = true;
      step();
    },
  };
}

function warnUnwatchable(log: Logger): void {
  if (warnedUnwatchable) return;
  warnedUnwatchable = true;
  log.warn({}, 'grpc-js internals changed: read calls are not reset at their deadline');
}

/** The place in flight and the answer bytes of one read call, given back once. */
function readCallEnd(gate: CallGate, hold: AnswerHold): () => void {
  return () => {
    hold.release();
    gate.leave();
  };
}

/** Bytes an answer's frames hold (frames encoded by hand; others are a few bytes). */
export function framesBytes(frames: readonly object[]): number {
  let bytes = 0;
  for (const frame of frames) if (frame instanceof EncodedFrame) bytes += frame.bytes.length;
  return bytes;
}

/**
 * Writes `frames` in order, waiting for 'drain' when `write()` asks; stops early when `signal`
 * aborts (the client left, or the call was reset at its deadline).
 */
export async function writeFrames(
  call: grpc.ServerWritableStream<unknown, unknown>,
  frames: readonly object[],
  signal: AbortSignal,
): Promise<void> {
  for (const frame of frames) {
    if (signal.aborted) return;
    if (!call.write(frame)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          call.off('drain', done);
          signal.removeEventListener('abort', done);
          resolve();
        };
        call.on('drain', done);
        signal.addEventListener('abort', done);
      });
    }
  }
}
