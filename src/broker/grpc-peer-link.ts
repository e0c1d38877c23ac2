/**
 * The outbound side of the gRPC Raft transport towards one peer ({@link PeerLink}): a lazily
 * created client, one long-lived Append stream that carries the replication traffic in batches,
 * and unary calls (with a deadline) for votes and TimeoutNow. The queue is bounded in count and
 * bytes (full means drop and count), as are the bytes written but not yet taken by HTTP/2 and the
 * unary calls in flight. A broken stream drops what was queued for it and reconnects with
 * jittered exponential backoff; nothing already written is sent again, since Raft retransmits by
 * its own timers. The transport (`grpc-raft-transport.ts`) owns the links and routes to them.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../common/logger';
import type { NodeId } from '../common/types';
import { backoffDelayMs, passBuffer, type RateLimitedWarn } from './grpc-util';
import { RAFT_METHOD_PATH, type RaftCodecs, type WireRoute } from './raft-wire';
import { channelOptions, type GrpcRaftTransportOptions } from './grpc-raft-transport-options';

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
}

/** Queued elements are joined into one batch up to this many bytes; larger ones go alone. */
export const COALESCE_BYTES_MAX = 64 * 1024;

/** One Append stream and what was written to it but not yet taken by HTTP/2. */
interface StreamState {
  readonly call: grpc.ClientWritableStream<Buffer>;
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
  private stream: StreamState | null = null;
  private connecting = false;
  private backoffTimer: NodeJS.Timeout | null = null;
  private failedAttemptCount = 0;
  private up = false;
  private closed = false;
  private readonly queue: Buffer[] = [];
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
  enqueue(framed: Buffer): void {
    const { options, counters } = this.ctx;
    const count = this.queue.length - this.queueHead;
    if (
      count >= options.queueCountMax ||
      this.queuedBytes + framed.length > options.queueBytesMax
    ) {
      counters.dropped += 1;
      counters.droppedQueueFull += 1;
      return;
    }
    this.queue.push(framed);
    this.queuedBytes += framed.length;
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
      this.queuedCount() > 0 &&
      !s.waitingForDrain &&
      s.inflightBytes < options.queueBytesMax
    ) {
      const parts = this.takeBatch();
      // A single element is already a whole PeerBatch: written as it is, without a copy.
      const frame = parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts);
      s.inflightBytes += frame.length;
      counters.sent += parts.length;
      counters.batchesSent += 1;
      const more = s.call.write(frame, (err: Error | null | undefined) => {
        s.inflightBytes -= frame.length;
        if (err === null || err === undefined) this.onDelivered(s);
        // A failed write also ends the call, whose callback handles it.
        if (this.stream === s) this.pump();
      });
      // Backpressure: write() false means gRPC's buffer is full; wait for 'drain'.
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

  /** Cancels every call, drops the queue and closes the client. */
  close(): void {
    this.closed = true;
    if (this.backoffTimer !== null) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
    this.stream?.call.cancel();
    this.stream = null;
    for (const call of this.unaryCalls) call.cancel();
    this.unaryCalls.clear();
    this.dropQueue();
    this.client?.close();
  }

  private queuedCount(): number {
    return this.queue.length - this.queueHead;
  }

  /**
   * The next batch: queued elements up to `messageSizeMaxBytes`, but small ones only
   * ({@link COALESCE_BYTES_MAX} together). Joining elements copies them into a new buffer, and
   * joining the Appends of a leader's proposals copied every entry once more per follower
   * (`docs/performance.md`); an element that large goes out alone, as a batch of one.
   */
  private takeBatch(): Buffer[] {
    const maxBytes = Math.min(this.ctx.options.messageSizeMaxBytes, COALESCE_BYTES_MAX);
    const parts: Buffer[] = [];
    let bytes = 0;
    while (this.queueHead < this.queue.length) {
      const next = this.queue[this.queueHead];
      if (next === undefined) break;
      if (parts.length > 0 && bytes + next.length > maxBytes) break;
      parts.push(next);
      bytes += next.length;
      this.queueHead += 1;
      this.queuedBytes -= next.length;
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead >= 1024 && this.queueHead * 2 >= this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    return parts;
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

  /** Waits for the channel to be READY (bounded), then opens the stream; else backs off. */
  private connect(): void {
    if (this.closed) return;
    const channel = this.ensureClient().getChannel();
    const state = channel.getConnectivityState(true);
    if (state === grpc.connectivityState.READY) {
      this.openStream();
      this.pump();
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

  private openStream(): void {
    const { codecs, counters, log } = this.ctx;
    const call = this.ensureClient().makeClientStreamRequest<Buffer, unknown>(
      RAFT_METHOD_PATH.append,
      passBuffer,
      codecs.ack.decode,
      new grpc.Metadata(),
      {},
      (err: grpc.ServiceError | null) => this.onStreamEnd(state, err),
    );
    const state: StreamState = { call, waitingForDrain: false, inflightBytes: 0, delivered: false };
    call.on('drain', () => {
      state.waitingForDrain = false;
      if (this.stream === state) this.pump();
    });
    // Errors also reach the call's callback, which acts on them; this only keeps them handled.
    call.on('error', (err: Error) => log.trace({ peer: this.id, err }, 'append stream error'));
    this.stream = state;
    counters.streamsOpened += 1;
  }

  private onDelivered(s: StreamState): void {
    if (s.delivered) return;
    s.delivered = true;
    if (!this.up) {
      this.up = true;
      this.ctx.log.info({ peer: this.id, address: this.address }, 'peer stream up');
    }
  }

  private onStreamEnd(s: StreamState, err: grpc.ServiceError | null): void {
    if (this.stream !== s) return;
    this.stream = null;
    if (this.closed) return;
    const code = err?.code ?? grpc.status.OK;
    if (code === grpc.status.INVALID_ARGUMENT) {
      this.ctx.rejectedWarn.warn(
        { peer: this.id, details: err?.details },
        'peer rejected our messages',
      );
    } else if (s.delivered) {
      this.failedAttemptCount = 0;
    }
    this.fail('stream ended', err);
  }

  /** Drops what was queued for the failed connection and retries after a backoff. */
  private fail(reason: string, err: grpc.ServiceError | null): void {
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
    const fields = { peer: this.id, reason, code: err?.code, details: err?.details, delayMs };
    if (this.up) log.info(fields, 'peer stream down');
    else log.debug(fields, 'peer connection failed');
    this.up = false;
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = null;
      if (this.queuedCount() > 0) this.connect();
    }, delayMs);
  }
}
