/**
 * The production {@link RaftTransport}: gRPC (`proto/raft.proto`) between the members of one
 * broker group. Per peer there is one lazily created client, one long-lived Append stream that
 * carries the replication traffic in batches, and unary calls for votes and TimeoutNow, so an
 * election is never queued behind a backlog of appends. Order is kept per peer within each of
 * those two paths; votes are not ordered against appends (Raft needs no such order: every
 * message carries its term).
 *
 * Everything is bounded: a per-peer queue (count and bytes; full means drop and count), the bytes
 * written to a stream but not yet taken by HTTP/2, the unary calls in flight, and the message
 * size (gRPC refuses larger frames with RESOURCE_EXHAUSTED). A broken stream drops what was
 * queued for it and reconnects with jittered exponential backoff; nothing already written is
 * sent again, since Raft retransmits by its own timers. Every inbound message is validated
 * (`decodeInbound`); a bad one ends its RPC with INVALID_ARGUMENT, is counted and logged
 * (rate-limited), and never reaches the Raft driver.
 *
 * This file holds the transport and the server side; the per-peer outbound link is in
 * `grpc-peer-link.ts`, the options and their resolver in `grpc-raft-transport-options.ts`
 * (re-exported here).
 */
import * as grpc from '@grpc/grpc-js';
import { systemClock, type Clock } from '../common/clock';
import { RaftmqError } from '../common/errors';
import { componentLogger, type Logger } from '../common/logger';
import type { Prng } from '../common/prng';
import { asNodeId, type NodeId } from '../common/types';
import type { Message } from '../raft/types';
import { PeerLink, type FramedParts, type LinkContext } from './grpc-peer-link';
import { encodeAppendParts, type RecordCrcLookup } from './raft-append-wire';
import { BufferPool } from './buffer-pool';
import { decodeAppendFrame } from './raft-append-decode';
import {
  channelOptions,
  resolveGrpcRaftTransportOptions,
  type GrpcRaftTransportOptions,
} from './grpc-raft-transport-options';
import {
  bindServer,
  widenFlowWindows,
  hostPort,
  RateLimitedWarn,
  shutdownServer,
  statusError,
  type DecodedFrame,
} from './grpc-util';
import {
  batchFramingBytes,
  decodeInbound,
  frameBatch,
  loadRaftCodecs,
  raftPeerServiceDefinition,
  routeOf,
  toWire,
  type InboundExpectation,
  type InboundResult,
  type RaftCodecs,
  type WireRoute,
} from './raft-wire';
import type { RaftTransport, TransportStats } from './transport';

/** What {@link GrpcRaftTransport.start} takes besides options: randomness and time. */
export interface GrpcRaftTransportDeps {
  /** Jitter for reconnect backoff; `Math.random` when absent. */
  readonly prng?: Prng;
  /** Monotonic time for rate-limiting warnings (gRPC deadlines always use real time). */
  readonly clock?: Clock;
  /**
   * The record checksum an outgoing Append carries for an entry (raft.proto
   * `Entry.record_crc`), or undefined for none; none at all when absent.
   */
  readonly recordCrc?: RecordCrcLookup;
}

/**
 * {@link TransportStats} with the reasons behind `dropped`. A stream message counts as `sent`
 * when it is written to a stream on a READY connection (it may still be lost if the connection
 * breaks); a vote or TimeoutNow when its call was acknowledged.
 */
export interface GrpcRaftTransportStats extends TransportStats {
  /** `PeerBatch` messages written to Append streams (each carries one or more of `sent`). */
  batchesSent: number;
  droppedQueueFull: number;
  droppedOversized: number;
  /** Queued for, or sent on, a connection that failed; and unary calls that failed. */
  droppedUnreachable: number;
  /** Addressed to a node that is not a peer, or sent after `close()`. */
  droppedUnknownPeer: number;
  /** Valid inbound messages that arrived before `setHandler`. */
  unhandled: number;
  streamsOpened: number;
  /** Times a stream write returned false and writing paused until 'drain' (backpressure). */
  drainWaits: number;
  /** Entries received with the sender's record checksum, which matched their bytes. */
  entriesChecked: number;
  /** Appends encoded into a pooled buffer that an earlier, written one gave back. */
  appendBuffersReused: number;
}

const zeroStats = (): GrpcRaftTransportStats => ({
  sent: 0,
  batchesSent: 0,
  received: 0,
  dropped: 0,
  rejected: 0,
  droppedQueueFull: 0,
  droppedOversized: 0,
  droppedUnreachable: 0,
  droppedUnknownPeer: 0,
  unhandled: 0,
  streamsOpened: 0,
  drainWaits: 0,
  entriesChecked: 0,
  appendBuffersReused: 0,
});

/** The number of messages a rejected frame held, for the `rejected` count (at least 1). */
function frameMessageCount(frame: DecodedFrame): number {
  if (!frame.ok || typeof frame.value !== 'object' || frame.value === null) return 1;
  const list = (frame.value as { messages?: unknown }).messages;
  return Array.isArray(list) && list.length > 0 ? list.length : 1;
}

/** The gRPC {@link RaftTransport} of one broker node; see the file comment. */
export class GrpcRaftTransport implements RaftTransport {
  private handler: ((message: Message) => void) | null = null;
  private readonly counters = zeroStats();
  private readonly links = new Map<NodeId, PeerLink>();
  /** The buffers Appends are encoded into, given back once written (buffer-pool.ts). */
  private readonly pool = new BufferPool();
  private readonly takeBuffer = (bytes: number): Buffer => this.pool.take(bytes);
  /** Ends each open inbound stream (for `close()`). */
  private readonly inbound = new Set<() => void>();
  private readonly expect: Readonly<Record<WireRoute, InboundExpectation>>;
  private readonly rejectedWarn: RateLimitedWarn;
  private boundPort = 0;
  private closing: Promise<void> | null = null;
  private readonly recordCrc: RecordCrcLookup | undefined;

  private constructor(
    readonly options: Readonly<GrpcRaftTransportOptions>,
    private readonly log: Logger,
    private readonly server: grpc.Server,
    private readonly codecs: RaftCodecs,
    deps: GrpcRaftTransportDeps,
  ) {
    const clock = deps.clock ?? systemClock;
    const prng = deps.prng;
    this.recordCrc = deps.recordCrc;
    this.rejectedWarn = new RateLimitedWarn(log, clock, options.rejectLogIntervalMs);
    const context: LinkContext = {
      options,
      codecs,
      counters: this.counters,
      log,
      rejectedWarn: new RateLimitedWarn(log, clock, options.rejectLogIntervalMs),
      random: prng === undefined ? Math.random : () => prng.nextFloat(),
      pool: this.pool,
    };
    for (const [id, address] of Object.entries(options.peers)) {
      this.links.set(asNodeId(id), new PeerLink(asNodeId(id), address, context));
    }
    const peers = new Set(Object.keys(options.peers));
    const expectOn = (route: WireRoute): InboundExpectation => ({
      group: options.group,
      selfId: asNodeId(options.selfId),
      peers,
      route,
    });
    this.expect = {
      append: expectOn('append'),
      vote: expectOn('vote'),
      timeoutNow: expectOn('timeoutNow'),
    };
  }

  /** Resolves `input`, loads the proto, binds the server and returns the running transport. */
  static async start(
    input: Partial<GrpcRaftTransportOptions>,
    logger: Logger,
    deps: GrpcRaftTransportDeps = {},
  ): Promise<GrpcRaftTransport> {
    const options = resolveGrpcRaftTransportOptions(input);
    const codecs = await loadRaftCodecs(options.protoDir);
    const log = componentLogger(logger, {
      component: 'raft-transport',
      group: options.group,
      node: options.selfId,
    });
    const server = new grpc.Server(channelOptions(options));
    const transport = new GrpcRaftTransport(options, log, server, codecs, deps);
    server.addService(raftPeerServiceDefinition(codecs), {
      Append: (
        call: grpc.ServerReadableStream<DecodedFrame, object>,
        callback: grpc.sendUnaryData<object>,
      ) => transport.onAppendStream(call, callback),
      Vote: (
        call: grpc.ServerUnaryCall<DecodedFrame, object>,
        callback: grpc.sendUnaryData<object>,
      ) => transport.onUnary('vote', call, callback),
      TimeoutNow: (
        call: grpc.ServerUnaryCall<DecodedFrame, object>,
        callback: grpc.sendUnaryData<object>,
      ) => transport.onUnary('timeoutNow', call, callback),
    });
    try {
      transport.boundPort = await bindServer(
        server,
        hostPort(options.listenHost, options.listenPort),
      );
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
    widenFlowWindows(server, log);
    log.info({ port: transport.boundPort, peers: options.peers }, 'raft transport listening');
    return transport;
  }

  /** The port the server listens on (the one chosen when `listenPort` was 0). */
  get port(): number {
    return this.boundPort;
  }

  send(messages: readonly Message[]): void {
    const { counters, options } = this;
    const touched = new Set<PeerLink>();
    for (const message of messages) {
      const link = this.closing === null ? this.links.get(message.to) : undefined;
      if (link === undefined) {
        counters.dropped += 1;
        counters.droppedUnknownPeer += 1;
        continue;
      }
      const route = routeOf(message.type);
      // Append-class messages are queued framed as `PeerBatch` elements (see `PeerLink`); the
      // size check counts the framing for every route, so both paths refuse the same sizes.
      let framed: FramedParts;
      if (message.type === 'Append') {
        framed = encodeAppendParts(options.group, message, this.recordCrc, this.takeBuffer);
      } else {
        const encoded = this.codecs.peerMessage.encode(toWire(options.group, message));
        if (route !== 'append') {
          if (this.fits(message, encoded.length + batchFramingBytes(encoded.length))) {
            link.call(route, encoded);
          }
          continue;
        }
        const batch = frameBatch([encoded]);
        framed = { parts: [batch], bytes: batch.length, pooled: undefined };
      }
      if (!this.fits(message, framed.bytes)) continue;
      link.enqueue(framed);
      touched.add(link);
    }
    // Pumping after the loop lets one send() of many messages go out as one batch per peer.
    for (const link of touched) link.pump();
  }

  /** True when `message`, framed in `framedBytes`, may be sent; else it is dropped and counted. */
  private fits(message: Message, framedBytes: number): boolean {
    if (framedBytes <= this.options.messageSizeMaxBytes) return true;
    this.counters.dropped += 1;
    this.counters.droppedOversized += 1;
    this.log.debug(
      { peer: message.to, type: message.type, sizeBytes: framedBytes },
      'message over messageSizeMaxBytes dropped',
    );
    return false;
  }

  /**
   * Sets the receiver of valid inbound messages. It must not throw: a throw is taken as a broken
   * invariant of the driver and ends the process (it is rethrown outside gRPC).
   */
  setHandler(handler: (message: Message) => void): void {
    this.handler = handler;
  }

  peers(): readonly NodeId[] {
    return [...this.links.keys()];
  }

  stats(): GrpcRaftTransportStats {
    return { ...this.counters, appendBuffersReused: this.pool.stats().reused };
  }

  /** Cancels outbound calls, ends inbound streams and shuts the server down (bounded wait). */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const link of this.links.values()) link.close();
    for (const end of [...this.inbound]) end();
    await shutdownServer(this.server, this.options.shutdownTimeoutMs, this.log);
    this.log.info({}, 'raft transport closed');
  }

  private onAppendStream(
    call: grpc.ServerReadableStream<DecodedFrame, object>,
    callback: grpc.sendUnaryData<object>,
  ): void {
    let finished = false;
    const finish = (err: grpc.ServerErrorResponse | null): void => {
      if (finished) return;
      finished = true;
      this.inbound.delete(endOnClose);
      if (err === null) callback(null, {});
      else callback(err);
    };
    const endOnClose = (): void => finish(statusError(grpc.status.UNAVAILABLE, 'closing'));
    this.inbound.add(endOnClose);
    call.on('data', (frame: DecodedFrame) => {
      if (finished) return;
      const { result, messageCount, checkedEntries } =
        frame.ok && Buffer.isBuffer(frame.value)
          ? decodeAppendFrame(frame.value, this.codecs, this.expect.append)
          : {
              result: this.undecodable(frame.ok ? 'not a frame' : frame.reason),
              messageCount: 1,
              checkedEntries: 0,
            };
      this.counters.entriesChecked += checkedEntries;
      if (this.accept(result, 'Append', call, messageCount)) return;
      finish(statusError(grpc.status.INVALID_ARGUMENT, result.ok ? '' : result.error.message));
    });
    call.on('end', () => finish(null));
    call.on('cancelled', () => {
      finished = true;
      this.inbound.delete(endOnClose);
    });
    call.on('error', (err: Error) => {
      this.log.debug({ err, peerAddress: call.getPeer() }, 'inbound append stream error');
      finish(statusError(grpc.status.CANCELLED, 'stream error'));
    });
  }

  private onUnary(
    route: 'vote' | 'timeoutNow',
    call: grpc.ServerUnaryCall<DecodedFrame, object>,
    callback: grpc.sendUnaryData<object>,
  ): void {
    const frame = call.request;
    const result = frame.ok
      ? decodeInbound(frame.value, this.expect[route])
      : this.undecodable(frame.reason);
    if (this.accept(result, route, call, frameMessageCount(frame))) callback(null, {});
    else callback(statusError(grpc.status.INVALID_ARGUMENT, result.ok ? '' : result.error.message));
  }

  private undecodable(reason: string): InboundResult {
    return { ok: false, error: new RaftmqError('MESSAGE_MALFORMED', reason) };
  }

  /**
   * Delivers a valid frame's messages and returns true, or counts and logs a rejection. The
   * call's peer address is read only for the log line: grpc-js builds it anew on every call of
   * `getPeer`, and an Append stream delivers a frame per Raft round.
   */
  private accept(
    result: InboundResult,
    rpc: string,
    call: { getPeer(): string },
    messageCount: number,
  ): boolean {
    if (!result.ok) {
      this.counters.rejected += messageCount;
      this.rejectedWarn.warn(
        { rpc, peerAddress: call.getPeer(), reason: result.error.message },
        'peer message rejected',
      );
      return false;
    }
    if (this.closing !== null) return true;
    const handler = this.handler;
    if (handler === null) {
      this.counters.unhandled += result.messages.length;
      return true;
    }
    for (const message of result.messages) {
      this.counters.received += 1;
      try {
        handler(message);
      } catch (err) {
        // A throw here is the driver's broken invariant, never bad input. gRPC would turn it into
        // a status for the peer and go on, so it is rethrown outside gRPC to stop the process.
        this.log.fatal({ err, type: message.type, peer: message.from }, 'message handler threw');
        process.nextTick(() => {
          throw err;
        });
        return true;
      }
    }
    return true;
  }
}
