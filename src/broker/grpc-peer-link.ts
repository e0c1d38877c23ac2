/**
 * The outbound side of the gRPC Raft transport towards one peer ({@link PeerLink}): one
 * long-lived Append stream that carries the replication traffic in batches, written directly on
 * an HTTP/2 session (`common/raw-grpc.ts`: no copy of what is sent), and unary calls (with a
 * deadline) for votes and TimeoutNow through a lazily created grpc-js client. The queue is
 * bounded in count and bytes (full means drop and count), as are the bytes written but not yet
 * taken by HTTP/2 and the unary calls in flight. A broken stream drops what was queued for it
 * and reconnects with jittered exponential backoff; nothing already written is sent again, since
 * Raft retransmits by its own timers. The transport (`grpc-raft-transport.ts`) owns the links
 * and routes to them.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../common/logger';
import type { NodeId } from '../common/types';
import { FLOW_WINDOW_BYTES, backoffDelayMs, passBuffer, type RateLimitedWarn } from './grpc-util';
import { RAFT_METHOD_PATH, type RaftCodecs, type WireRoute } from './raft-wire';
import { channelOptions, type GrpcRaftTransportOptions } from './grpc-raft-transport-options';
import type { BufferPool } from './buffer-pool';
import {
  RawGrpcSession,
  type RawCallEnd,
  type RawClientStream,
  type RawSessionOptions,
} from '../common/raw-grpc';

/**
 * The counters a link updates: a subset of the transport's `GrpcRaftTransportStats` (declared
 * here so this file does not import the transport), shared with it by reference.
 */
export interface PeerLinkCounters {
  sent: number;
  /** `PeerBatch` messages written to Append streams (each carries one or more of `sent`). */
  batchesSent: number;
  dropped: number;
  droppedQueueFull: number;
  droppedUnreachable: number;
  streamsOpened: number;
  drainWaits: number;
}

/** What the peer links share with their transport. */
export interface LinkContext {
  readonly options: Readonly<GrpcRaftTransportOptions>;
  readonly codecs: RaftCodecs;
  readonly counters: PeerLinkCounters;
  readonly log: Logger;
  readonly random: () => number;
  /** Warns (rate-limited) when a peer rejects what this node sent. */
  readonly rejectedWarn: RateLimitedWarn;
  /** Where queued elements' `pooled` buffers go back once written. */
  readonly pool: BufferPool;
}

/**
 * Queued elements are joined into one batch up to this many bytes; larger ones go alone. Joining
 * copies nothing (the parts are written one after the other), but the receiver decodes a batch
 * only once all of it has arrived, so large elements are not held back for each other.
 */
export const COALESCE_BYTES_MAX = 64 * 1024;

/**
 * One queued append-class message: an element of `PeerBatch.messages`, in the parts it was
 * encoded in (none is changed after it is queued).
 */
export interface FramedParts {
  readonly parts: readonly Uint8Array[];
  readonly bytes: number;
  /**
   * A buffer of the link's pool that some of the parts view (the others are an Append's large
   * payloads, shared with its entries), given back once the write that carried them
   * succeeded (not when dropped unwritten or when the write failed: the garbage collector takes
   * those).
   */
  readonly pooled: Buffer | undefined;
}

/** One Append stream and what was written to it but not yet taken by HTTP/2. */
interface StreamState {
  readonly call: RawClientStream;
  waitingForDrain: boolean;
  inflightBytes: number;
  /** A write completed: the connection worked (the backoff starts over after a break). */
  delivered: boolean;
}

/**
 * The outbound side towards one peer: idle, connecting, streaming or backing off. The stream is
 * opened only once the channel is READY, so a message counts as `sent` only when it was written
 * to a live connection.
 */
export class PeerLink {
  private client: grpc.Client | null = null;
  private session: RawGrpcSession | null = null;
  private stream: StreamState | null = null;
  /** Abandons the connection attempt under way, if any. */
  private abandonConnect: (() => void) | null = null;
  private connecting = false;
  private backoffTimer: NodeJS.Timeout | null = null;
  private failedAttemptCount = 0;
  private up = false;
  private closed = false;
  private readonly queue: FramedParts[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  private readonly unaryCalls = new Set<grpc.ClientUnaryCall>();

  constructor(
    readonly id: NodeId,
    private readonly address: string,
    private readonly ctx: LinkContext,
  ) {}

  /**
   * Queues one append-class message, encoded and framed as an element of `PeerBatch.messages`
   * (so a batch is the concatenation of its elements); call {@link pump} after a batch of these.
   */
  enqueue(framed: FramedParts): void {
    const { options, counters } = this.ctx;
    const count = this.queue.length - this.queueHead;
    if (count >= options.queueCountMax || this.queuedBytes + framed.bytes > options.queueBytesMax) {
      counters.dropped += 1;
      counters.droppedQueueFull += 1;
      return;
    }
    this.queue.push(framed);
    this.queuedBytes += framed.bytes;
  }

  /** Writes queued messages in batches while the stream takes them; connects when needed. */
  pump(): void {
    if (this.closed) return;
    const s = this.stream;
    if (s === null) {
      if (!this.connecting && this.backoffTimer === null && this.queuedCount() > 0) this.connect();
      return;
    }
    const { options, counters } = this.ctx;
    while (
      s.call.writable &&
      this.queuedCount() > 0 &&
      !s.waitingForDrain &&
      s.inflightBytes < options.queueBytesMax
    ) {
      // The elements of a batch are written one after the other, without joining them.
      const { parts, count, bytes, pooled } = this.takeBatch();
      s.inflightBytes += bytes;
      counters.sent += count;
      counters.batchesSent += 1;
      const more = s.call.write(parts, bytes, (err?: Error | null) => {
        s.inflightBytes -= bytes;
        if (err === null || err === undefined) {
          // Written: the socket has taken these bytes, and nothing reads the buffers any more.
          for (const buf of pooled) this.ctx.pool.give(buf);
          this.onDelivered(s);
        }
        // A failed write (which also ends the call; its end handler acts on that) keeps its
        // buffers out of the pool: when a stream is destroyed, Node fails a write whose earlier
        // bytes may still sit in an unfinished socket write (one write request can carry
        // several batches), and a buffer reused now could be sent with another follower's bytes
        // in it. The garbage collector takes them.
        if (this.stream === s) this.pump();
      });
      // Backpressure: the stream's buffer is full; wait for its drain.
      if (!more) {
        s.waitingForDrain = true;
        counters.drainWaits += 1;
      }
    }
  }

  /** Sends a Vote-class or TimeoutNow message as one unary call with a deadline. */
  call(route: WireRoute, encoded: Buffer): void {
    const { options, counters, codecs, log } = this.ctx;
    if (this.unaryCalls.size >= options.unaryInflightCountMax) {
      counters.dropped += 1;
      counters.droppedQueueFull += 1;
      return;
    }
    // gRPC deadlines are wall-clock times, so they come from the real clock.
    const callOptions = { deadline: Date.now() + options.unaryDeadlineMs };
    const call = this.ensureClient().makeUnaryRequest<Buffer, unknown>(
      RAFT_METHOD_PATH[route],
      passBuffer,
      codecs.ack.decode,
      encoded,
      new grpc.Metadata(),
      callOptions,
      (err: grpc.ServiceError | null) => {
        this.unaryCalls.delete(call);
        if (this.closed) return;
        if (err === null) {
          counters.sent += 1;
        } else {
          counters.dropped += 1;
          counters.droppedUnreachable += 1;
          log.debug(
            { peer: this.id, route, code: err.code, details: err.details },
            'peer call failed',
          );
        }
      },
    );
    this.unaryCalls.add(call);
  }

  /** Cancels every call, drops the queue and closes the connections. */
  close(): void {
    this.closed = true;
    if (this.backoffTimer !== null) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
    this.abandonConnect?.();
    this.abandonConnect = null;
    this.stream?.call.cancel();
    this.stream = null;
    this.session?.close();
    this.session = null;
    for (const call of this.unaryCalls) call.cancel();
    this.unaryCalls.clear();
    this.dropQueue();
    this.client?.close();
  }

  private queuedCount(): number {
    return this.queue.length - this.queueHead;
  }

  /**
   * The next batch, as the list of its elements' parts: queued elements up to
   * `messageSizeMaxBytes`, but small ones only ({@link COALESCE_BYTES_MAX} together); an element
   * that large goes out alone, as a batch of one.
   */
  private takeBatch(): { parts: Uint8Array[]; count: number; bytes: number; pooled: Buffer[] } {
    const maxBytes = Math.min(this.ctx.options.messageSizeMaxBytes, COALESCE_BYTES_MAX);
    const parts: Uint8Array[] = [];
    const pooled: Buffer[] = [];
    let count = 0;
    let bytes = 0;
    while (this.queueHead < this.queue.length) {
      const next = this.queue[this.queueHead];
      if (next === undefined) break;
      if (count > 0 && bytes + next.bytes > maxBytes) break;
      for (const part of next.parts) parts.push(part);
      if (next.pooled !== undefined) pooled.push(next.pooled);
      count += 1;
      bytes += next.bytes;
      this.queueHead += 1;
      this.queuedBytes -= next.bytes;
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead >= 1024 && this.queueHead * 2 >= this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    return { parts, count, bytes, pooled };
  }

  private dropQueue(): number {
    const count = this.queuedCount();
    this.queue.length = 0;
    this.queueHead = 0;
    this.queuedBytes = 0;
    return count;
  }

  private ensureClient(): grpc.Client {
    this.client ??= new grpc.Client(
      this.address,
      grpc.credentials.createInsecure(),
      channelOptions(this.ctx.options),
    );
    return this.client;
  }

  /**
   * Waits for the unary calls' channel to be READY (bounded), so that votes find the peer's
   * connection up whenever the Append stream is; then connects the stream's own session and
   * opens the stream. Backs off when either fails.
   */
  private connect(): void {
    if (this.closed) return;
    const channel = this.ensureClient().getChannel();
    const state = channel.getConnectivityState(true);
    if (state === grpc.connectivityState.READY) {
      this.connectSession();
      return;
    }
    if (
      state === grpc.connectivityState.TRANSIENT_FAILURE ||
      state === grpc.connectivityState.SHUTDOWN
    ) {
      this.fail('unreachable', null);
      return;
    }
    this.connecting = true;
    const deadlineMs = Date.now() + this.ctx.options.connectTimeoutMs;
    channel.watchConnectivityState(state, deadlineMs, (err?: Error) => {
      this.connecting = false;
      if (this.closed) return;
      if (err !== undefined) this.fail('connect timeout', null);
      else this.connect();
    });
  }

  /** Opens the stream on the session, connecting one first (bounded) if there is none. */
  private connectSession(): void {
    if (this.session?.alive === true) {
      this.openStream(this.session);
      this.pump();
      return;
    }
    this.session = null;
    const { options } = this.ctx;
    const sessionOptions: RawSessionOptions = {
      connectTimeoutMs: options.connectTimeoutMs,
      keepaliveTimeMs: options.keepaliveTimeMs,
      keepaliveTimeoutMs: options.keepaliveTimeoutMs,
      windowBytes: FLOW_WINDOW_BYTES,
    };
    this.connecting = true;
    // A session that ends later ends its stream too, and the stream's end reports it.
    this.abandonConnect = RawGrpcSession.connect(this.address, sessionOptions, (err, session) => {
      this.connecting = false;
      this.abandonConnect = null;
      if (this.closed) {
        session?.close();
        return;
      }
      // A session already told to go away (GOAWAY) opens no streams: a failed attempt.
      if (err !== null || session === null || !session.alive) {
        session?.close();
        this.fail('unreachable', {
          code: grpc.status.UNAVAILABLE,
          details: err?.message ?? 'no usable session',
        });
        return;
      }
      this.session = session;
      this.openStream(session);
      this.pump();
    });
  }

  private openStream(session: RawGrpcSession): void {
    // The handlers run on later events only, once `state` is set.
    const state: StreamState = {
      call: session.openStream(RAFT_METHOD_PATH.append, {
        onDrain: () => {
          state.waitingForDrain = false;
          if (this.stream === state) this.pump();
        },
        onEnd: (end) => this.onStreamEnd(state, end),
      }),
      waitingForDrain: false,
      inflightBytes: 0,
      delivered: false,
    };
    this.stream = state;
    this.ctx.counters.streamsOpened += 1;
  }

  private onDelivered(s: StreamState): void {
    if (s.delivered) return;
    s.delivered = true;
    if (!this.up) {
      this.up = true;
      this.ctx.log.info({ peer: this.id, address: this.address }, 'peer stream up');
    }
  }

  private onStreamEnd(s: StreamState, end: RawCallEnd): void {
    if (this.stream !== s) return;
    this.stream = null;
    if (this.closed) return;
    if (end.code === grpc.status.INVALID_ARGUMENT) {
      this.ctx.rejectedWarn.warn(
        { peer: this.id, details: end.details },
        'peer rejected our messages',
      );
    } else if (s.delivered) {
      this.failedAttemptCount = 0;
    }
    // A stream that ended on a session that is still up is opened again on it after the backoff.
    this.fail('stream ended', end);
  }

  /** Drops what was queued for the failed connection and retries after a backoff. */
  private fail(reason: string, end: RawCallEnd | null): void {
    const { options, counters, log, random } = this.ctx;
    const droppedCount = this.dropQueue();
    counters.dropped += droppedCount;
    counters.droppedUnreachable += droppedCount;
    const delayMs = backoffDelayMs(
      this.failedAttemptCount,
      options.reconnectBackoffMinMs,
      options.reconnectBackoffMaxMs,
      random,
    );
    this.failedAttemptCount += 1;
    const fields = { peer: this.id, reason, code: end?.code, details: end?.details, delayMs };
    if (this.up) log.info(fields, 'peer stream down');
    else log.debug(fields, 'peer connection failed');
    this.up = false;
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = null;
      if (this.queuedCount() > 0) this.connect();
    }, delayMs);
  }
}
