/**
 * gRPC calls written directly on a Node.js HTTP/2 session, for the two hot paths whose bytes
 * grpc-js would copy: the Raft transport's outbound Append stream (a client-streaming call,
 * `broker/grpc-peer-link.ts`) and the SDK producer's SendMessage (a unary call,
 * `client/raw-unary-channel.ts`). The peer's side is an ordinary gRPC server (grpc-js in
 * raftmq), and the bytes on the wire are those of any gRPC client: a POST to the method's path
 * with `content-type: application/grpc`, each message behind its 5-byte length prefix, and the
 * status in the trailers.
 *
 * Why not grpc-js here: its client frames every message by copying it into a new buffer behind
 * the prefix. On a leader that is one more copy, and one more fresh Buffer, of every replicated
 * byte per follower, and fresh Buffers are what start V8's collections on a busy leader
 * (docs/performance.md, "What V8 costs"). Here the prefix is a buffer of its own and the message
 * follows it as the parts it was encoded in, in one `writev`; Node's HTTP/2 sends DATA frames
 * from those buffers without copying them. For a producer's unary call grpc-js's own work per
 * call (its call stack, interceptors, metadata and status objects, and that copy) was about half
 * of the client's CPU per 128 KiB send, measured against this code (docs/performance.md).
 *
 * What grpc-js did and is done here instead: the connection (with a connect timeout) and
 * keepalive pings, so that a peer that vanished without closing its connection is noticed, and a
 * GOAWAY: the session's calls finish sending (what was written still arrives), the server ends
 * them, and the owner connects again. Node sends no new ping on a session that got a GOAWAY, so
 * a drain is bounded by time instead (keepalive time plus timeout). A unary call also carries
 * its deadline (`grpc-timeout`) and is cancelled when it passes. Nothing here compresses or
 * accepts compressed messages (`grpc-accept-encoding: identity`).
 */
import * as http2 from 'node:http2';
import { status as GrpcStatus } from '@grpc/grpc-js';

const {
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_SCHEME,
  HTTP2_HEADER_CONTENT_TYPE,
  HTTP2_HEADER_TE,
  NGHTTP2_CANCEL,
} = http2.constants;

/** Bytes of the gRPC message prefix: a compressed flag and a 32-bit big-endian length. */
export const GRPC_PREFIX_BYTES = 5;

/**
 * `write` reports backpressure once this many bytes wait in the stream's own buffer (Node's
 * default mark, 16 KiB, is below one Append; the caller bounds what is in flight by itself).
 */
export const RAW_STREAM_BUFFER_BYTES = 4 * 1024 * 1024;

/** Node's `maxSessionMemory` for the session, in MB (see `connect`). */
const SESSION_MEMORY_MAX_MB = 1024;

export interface RawSessionOptions {
  readonly connectTimeoutMs: number;
  /** A ping is sent after this long; 0 turns keepalive off. */
  readonly keepaliveTimeMs: number;
  /** A ping not answered within this long ends the session. */
  readonly keepaliveTimeoutMs: number;
  /** The receive window granted to the peer per stream, and twice this per session. */
  readonly windowBytes: number;
}

/** How a call ended: the gRPC status, from the trailers or made up from how the stream closed. */
export interface RawCallEnd {
  readonly code: GrpcStatus;
  readonly details: string;
}

/** What a {@link RawClientStream} tells its owner. */
export interface RawStreamHandlers {
  /** The stream's buffer went below {@link RAW_STREAM_BUFFER_BYTES} after a `write` said no. */
  onDrain(): void;
  /** The call ended, once, for whatever reason (status, reset, session gone, cancel). */
  onEnd(end: RawCallEnd): void;
}

/** The gRPC message prefix of an uncompressed message of `bytes` bytes. */
export function grpcPrefix(bytes: number): Buffer {
  const prefix = Buffer.allocUnsafe(GRPC_PREFIX_BYTES);
  prefix[0] = 0;
  prefix.writeUInt32BE(bytes, 1);
  return prefix;
}

/** The `grpc-status` and `grpc-message` of a header block, if it has a status. */
function statusOf(headers: http2.IncomingHttpHeaders): RawCallEnd | undefined {
  const raw = headers['grpc-status'];
  if (typeof raw !== 'string') return undefined;
  const code = /^\d{1,2}$/.test(raw) ? Number(raw) : -1;
  const message = headers['grpc-message'];
  let details = '';
  if (typeof message === 'string') {
    try {
      details = decodeURIComponent(message);
    } catch {
      details = message;
    }
  }
  return {
    code: Number.isInteger(code) && code >= 0 && code <= 16 ? code : GrpcStatus.UNKNOWN,
    details,
  };
}

/**
 * The end of a call whose response headers say it is not a gRPC answer (an HTTP status other
 * than 200 without a gRPC status), or undefined.
 */
function notGrpcAnswer(headers: http2.IncomingHttpHeaders): RawCallEnd | undefined {
  const status = headers[':status'];
  if (status === undefined || Number(status) === 200 || statusOf(headers) !== undefined) {
    return undefined;
  }
  return {
    code: GrpcStatus.UNKNOWN,
    details: `the peer answered HTTP status ${String(status)}, not a gRPC call`,
  };
}

/** The end of a call the peer ended (END_STREAM) without a status. */
const ENDED_WITHOUT_STATUS: RawCallEnd = Object.freeze({
  code: GrpcStatus.UNKNOWN,
  details: 'the peer ended the call without a status',
});

/** The end of a call whose stream closed (reset, session gone) without a status. */
function closedWithoutStatus(stream: http2.ClientHttp2Stream): RawCallEnd {
  return {
    code: GrpcStatus.UNAVAILABLE,
    details: `stream closed without a status (HTTP/2 code ${stream.rstCode ?? 'none'})`,
  };
}

/** The request headers of a call of the method at `path`. */
function callHeaders(path: string): http2.OutgoingHttpHeaders {
  return {
    [HTTP2_HEADER_METHOD]: 'POST',
    [HTTP2_HEADER_PATH]: path,
    [HTTP2_HEADER_SCHEME]: 'http',
    [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
    [HTTP2_HEADER_TE]: 'trailers',
    'grpc-accept-encoding': 'identity',
  };
}

/** One client-streaming call; its response message is read and ignored, its status reported. */
export class RawClientStream {
  private end: RawCallEnd | undefined;
  private ended = false;

  constructor(
    private readonly stream: http2.ClientHttp2Stream,
    private readonly handlers: RawStreamHandlers,
  ) {
    // A status (in the trailers, or in the headers of a trailers-only answer) ends the call:
    // the server is done with it, and our side, never ended by us, is closed here.
    stream.on('response', (headers) => this.onResponse(headers));
    stream.on('trailers', (trailers: http2.IncomingHttpHeaders) => this.noteStatus(trailers));
    // The response message (an empty Ack) is not needed, but must be read for the call to end.
    stream.on('data', () => undefined);
    // The peer ended its side without a status (not a gRPC server, or a proxy in between): the
    // call is over all the same, or the link would write into it for ever.
    stream.on('end', () => {
      // A stream destroyed under us (session gone, reset) ends its readable side too: 'close'
      // follows and reports that as UNAVAILABLE.
      if (this.stream.destroyed) return;
      this.endWith(ENDED_WITHOUT_STATUS);
    });
    stream.on('drain', () => handlers.onDrain());
    // An error is followed by 'close', which reports it.
    stream.on('error', () => undefined);
    stream.on('close', () => this.finish());
  }

  /**
   * Writes one gRPC message made of `parts` (`bytes` in all) in one `writev`; `done` is called
   * once they have been handed to the connection, or with the error that stopped them. Returns
   * false when the stream's buffer is over {@link RAW_STREAM_BUFFER_BYTES}: wait for `onDrain`.
   */
  write(parts: readonly Uint8Array[], bytes: number, done: (err?: Error | null) => void): boolean {
    const s = this.stream;
    if (!this.writable) {
      process.nextTick(done, new Error('the call has ended'));
      return false;
    }
    s.cork();
    s.write(grpcPrefix(bytes));
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) s.write(parts[i]);
    s.write(parts[last], done);
    s.uncork();
    return s.writableLength < RAW_STREAM_BUFFER_BYTES;
  }

  /** False once the call has ended or is ending: nothing written now would be sent. */
  get writable(): boolean {
    return !this.ended && !this.stream.destroyed && !this.stream.writableEnded;
  }

  /**
   * Ends our side of the call (END_STREAM after what was written): the server sees the end of
   * the messages and ends the call with its status. Nothing can be written after it.
   */
  finishSending(): void {
    if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
  }

  /** Ends the call at once (RST_STREAM CANCEL); `onEnd` follows with CANCELLED. */
  cancel(): void {
    this.end ??= { code: GrpcStatus.CANCELLED, details: 'cancelled' };
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_CANCEL);
  }

  /** The response headers: a trailers-only answer carries the status; a non-200 is an end. */
  private onResponse(headers: http2.IncomingHttpHeaders): void {
    const notGrpc = notGrpcAnswer(headers);
    if (notGrpc !== undefined) this.endWith(notGrpc);
    else this.noteStatus(headers);
  }

  private noteStatus(headers: http2.IncomingHttpHeaders): void {
    const end = statusOf(headers);
    if (end !== undefined) this.endWith(end);
  }

  /** Reports the call's end (the first reason given wins) and closes our side. */
  private endWith(end: RawCallEnd): void {
    this.end ??= end;
    this.finish();
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_CANCEL);
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.handlers.onEnd(this.end ?? closedWithoutStatus(this.stream));
  }
}

/** A unary call: the request and its bounds. */
export interface RawUnaryRequest {
  /** The method's path, `/package.Service/Method`. */
  readonly path: string;
  /** Metadata sent as headers (lower-case names); it cannot replace the call's own headers. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The serialized request message. */
  readonly message: Uint8Array;
  /**
   * The call's deadline, from now: sent as `grpc-timeout`, and when it passes the call is
   * cancelled and ends with DEADLINE_EXCEEDED.
   */
  readonly timeoutMs: number;
  /** A response message over this many bytes cancels the call (RESOURCE_EXHAUSTED). */
  readonly responseBytesMax: number;
}

/** How a unary call ended: its one response message under an OK status, or the status. */
export type RawUnaryResult =
  | { readonly ok: true; readonly message: Buffer }
  | { readonly ok: false; readonly end: RawCallEnd };

/** The largest value of a `grpc-timeout` header (at most eight digits). */
const GRPC_TIMEOUT_VALUE_MAX = 99_999_999;

/** `grpc-timeout` for `ms` milliseconds: in milliseconds, or whole seconds beyond 8 digits. */
export function grpcTimeoutHeader(ms: number): string {
  const millis = Math.max(1, Math.ceil(ms));
  if (millis <= GRPC_TIMEOUT_VALUE_MAX) return `${millis}m`;
  return `${Math.min(GRPC_TIMEOUT_VALUE_MAX, Math.ceil(millis / 1000))}S`;
}

/**
 * One unary call on a session: the request is written at once, the response gathered, and
 * `onDone` called exactly once, when the stream has closed or the call was given up (deadline,
 * oversized or malformed response), whichever comes first.
 */
class RawUnaryCall {
  private readonly chunks: Buffer[] = [];
  private received = 0;
  private status: RawCallEnd | undefined;
  /** Why this side gave the call up, if it did (wins over anything the peer says after). */
  private failure: RawCallEnd | undefined;
  /** The peer ended its side (END_STREAM), as opposed to a reset or a lost session. */
  private endedByPeer = false;
  private done = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly stream: http2.ClientHttp2Stream,
    private readonly request: RawUnaryRequest,
    private readonly onDone: (result: RawUnaryResult) => void,
  ) {
    this.timer = setTimeout(
      () =>
        this.giveUp({
          code: GrpcStatus.DEADLINE_EXCEEDED,
          details: `no answer within ${request.timeoutMs} ms`,
        }),
      request.timeoutMs,
    );
    stream.on('response', (headers) => this.onResponse(headers));
    stream.on('trailers', (trailers: http2.IncomingHttpHeaders) => {
      this.status ??= statusOf(trailers);
    });
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => {
      // A stream destroyed under us (session gone, reset) ends its readable side too.
      if (!this.stream.destroyed) this.endedByPeer = true;
    });
    // An error is followed by 'close', which reports it.
    stream.on('error', () => undefined);
    stream.on('close', () => this.finish());
  }

  private onResponse(headers: http2.IncomingHttpHeaders): void {
    const notGrpc = notGrpcAnswer(headers);
    if (notGrpc !== undefined) this.giveUp(notGrpc);
    // A trailers-only answer: the status comes in the response headers.
    else this.status ??= statusOf(headers);
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    this.chunks.push(chunk);
    this.received += chunk.length;
    if (this.received > GRPC_PREFIX_BYTES + this.request.responseBytesMax) {
      this.giveUp({
        code: GrpcStatus.RESOURCE_EXHAUSTED,
        details: `response larger than ${this.request.responseBytesMax} bytes`,
      });
    }
  }

  /** Ends the call from this side (RST_STREAM CANCEL) with `end`. */
  private giveUp(end: RawCallEnd): void {
    if (this.done) return;
    this.failure = end;
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_CANCEL);
    this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    const result = this.result();
    this.chunks.length = 0;
    this.onDone(result);
  }

  private result(): RawUnaryResult {
    if (this.failure !== undefined) return { ok: false, end: this.failure };
    const status = this.status;
    if (status === undefined) {
      return {
        ok: false,
        end: this.endedByPeer ? ENDED_WITHOUT_STATUS : closedWithoutStatus(this.stream),
      };
    }
    if (status.code !== GrpcStatus.OK) return { ok: false, end: status };
    const body = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    const malformed = (details: string): RawUnaryResult => ({
      ok: false,
      end: { code: GrpcStatus.INTERNAL, details },
    });
    if (body.length < GRPC_PREFIX_BYTES) return malformed('an OK answer without a message');
    if (body[0] !== 0) return malformed('a compressed answer, which was not asked for');
    const bytes = body.readUInt32BE(1);
    if (body.length !== GRPC_PREFIX_BYTES + bytes) {
      return malformed(`an answer of ${body.length} bytes is not one message of ${bytes}`);
    }
    return { ok: true, message: body.subarray(GRPC_PREFIX_BYTES) };
  }
}

/**
 * One HTTP/2 connection to a peer, with keepalive pings. When it ends, for any reason, its
 * streams end with it (and report it); `alive` turns false.
 */
export class RawGrpcSession {
  /** The keepalive's timer (the next ping, or the wait for its answer), or the drain's bound. */
  private pingTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** A GOAWAY came: no new streams, no pings; the open calls finish, within a bound. */
  private draining = false;
  private readonly streams = new Set<RawClientStream>();
  private unaryInFlight = 0;
  private unrefWhenIdle = false;

  private constructor(
    private readonly session: http2.ClientHttp2Session,
    private readonly options: RawSessionOptions,
  ) {}

  /**
   * Connects to `address` ("host:port", plain text) and calls `done` once: with the session
   * when it is connected, or with the error (including a timeout). Returns a function that
   * abandons the attempt.
   */
  static connect(
    address: string,
    options: RawSessionOptions,
    done: (err: Error | null, session: RawGrpcSession | null) => void,
  ): () => void {
    let session: http2.ClientHttp2Session;
    try {
      session = http2.connect(`http://${address}`, {
        settings: { initialWindowSize: options.windowBytes, enablePush: false },
        // Node's default (10 MB) counts the DATA queued to send, which the link bounds by
        // itself (queueBytesMax); past it Node refuses new streams. grpc-js lifts it too.
        maxSessionMemory: SESSION_MEMORY_MAX_MB,
      });
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      process.nextTick(() => done(e, null));
      return () => undefined;
    }
    let settled = false;
    let lastError: Error | undefined;
    // An 'error' without a listener would end the process; 'close' follows and reports it.
    session.on('error', (err: Error) => {
      lastError = err;
    });
    const timer = setTimeout(() => settle(new Error('connect timeout')), options.connectTimeoutMs);
    const raw = new RawGrpcSession(session, options);
    const settle = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err !== null) {
        raw.close();
        done(err, null);
        return;
      }
      try {
        session.setLocalWindowSize(2 * options.windowBytes);
      } catch {
        // Closed meanwhile: 'close' reports it.
      }
      raw.startKeepalive();
      done(null, raw);
    };
    session.once('connect', () => settle(null));
    session.on('goaway', () => raw.drain());
    session.once('close', () => {
      raw.stopKeepalive();
      raw.closed = true;
      settle(lastError ?? new Error('connection closed'));
    });
    return () => settle(new Error('abandoned'));
  }

  /** True while the session can open streams. */
  get alive(): boolean {
    return !this.closed && !this.session.closed && !this.session.destroyed;
  }

  /** True while new calls may start here: alive, and no GOAWAY received. */
  get acceptsCalls(): boolean {
    return this.alive && !this.draining;
  }

  /**
   * Lets the process exit while no unary call is in flight (as grpc-js does with an idle
   * channel); the session holds it only during calls. For a client's sessions, not for the
   * Raft transport's long-lived stream.
   */
  holdOnlyDuringCalls(): void {
    this.unrefWhenIdle = true;
    if (this.unaryInFlight === 0) this.session.unref();
  }

  /**
   * Starts a unary call of the method at `request.path`; `done` is called once with its
   * answer or the status that ended it (UNAVAILABLE at once when no stream can be opened).
   */
  unary(request: RawUnaryRequest, done: (result: RawUnaryResult) => void): void {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.request(
        {
          ...request.metadata,
          ...callHeaders(request.path),
          'grpc-timeout': grpcTimeoutHeader(request.timeoutMs),
        },
        { endStream: false },
      );
    } catch (err) {
      const details = `cannot start a call: ${err instanceof Error ? err.message : String(err)}`;
      process.nextTick(done, { ok: false, end: { code: GrpcStatus.UNAVAILABLE, details } });
      return;
    }
    this.unaryInFlight += 1;
    if (this.unaryInFlight === 1 && this.unrefWhenIdle) this.session.ref();
    new RawUnaryCall(stream, request, (result) => {
      this.unaryInFlight -= 1;
      if (this.unaryInFlight === 0 && this.unrefWhenIdle && !this.session.destroyed) {
        this.session.unref();
      }
      done(result);
    });
    stream.cork();
    stream.write(grpcPrefix(request.message.length));
    stream.end(request.message);
    stream.uncork();
  }

  /** Opens a client-streaming call of the method at `path`. */
  openStream(path: string, handlers: RawStreamHandlers): RawClientStream {
    const stream = this.session.request(callHeaders(path), { endStream: false });
    const call: RawClientStream = new RawClientStream(stream, {
      onDrain: () => handlers.onDrain(),
      onEnd: (end) => {
        this.streams.delete(call);
        handlers.onEnd(end);
      },
    });
    this.streams.add(call);
    return call;
  }

  /** Ends the session and its streams. */
  close(): void {
    this.stopKeepalive();
    this.closed = true;
    if (!this.session.destroyed) this.session.destroy();
  }

  /**
   * The peer sent a GOAWAY (Node then opens no new streams on the session and sends no new
   * pings): the open calls stop sending, so that the server ends them once it has read what they
   * carried, and the session is closed if that has not happened within the keepalive time plus
   * its timeout (the timeout alone with keepalive off: a drain is bounded either way).
   */
  private drain(): void {
    if (this.draining || this.closed) return;
    this.draining = true;
    this.stopKeepalive();
    for (const call of this.streams) call.finishSending();
    const { keepaliveTimeMs, keepaliveTimeoutMs } = this.options;
    this.pingTimer = setTimeout(
      () => this.close(),
      Math.max(0, keepaliveTimeMs) + keepaliveTimeoutMs,
    );
    this.pingTimer.unref();
  }

  private startKeepalive(): void {
    const { keepaliveTimeMs, keepaliveTimeoutMs } = this.options;
    if (keepaliveTimeMs <= 0 || this.draining) return;
    this.pingTimer = setTimeout(() => {
      this.pingTimer = null;
      if (this.closed || this.draining || this.session.destroyed) return;
      this.pingTimer = setTimeout(() => this.close(), keepaliveTimeoutMs);
      this.pingTimer.unref();
      let sent = false;
      try {
        sent = this.session.ping((err) => {
          // A drain that began meanwhile has its own bound; this answer changes nothing.
          if (this.draining) return;
          this.stopKeepalive();
          if (err !== null) this.close();
          else if (!this.closed && !this.session.destroyed) this.startKeepalive();
        });
      } catch {
        // A session Node no longer lets ping is one to end (never an exception in a timer).
      }
      if (!sent) this.close();
    }, keepaliveTimeMs);
    this.pingTimer.unref();
  }

  private stopKeepalive(): void {
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    this.pingTimer = null;
  }
}
