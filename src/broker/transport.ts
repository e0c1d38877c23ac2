/**
 * How a broker node's Raft driver talks to the other members of its group. Production uses
 * gRPC (one long-lived append stream per follower, unary calls for votes and TimeoutNow); the
 * simulator uses an in-memory network that delays, drops, duplicates, reorders and partitions.
 *
 * Sending never blocks and never throws: Raft tolerates lost messages (it retries by its own
 * timers), so a full per-peer queue or a broken connection drops the message and counts it.
 */
import type { Message } from '../raft/types';
import type { NodeId } from '../common/types';

export interface TransportStats {
  sent: number;
  received: number;
  /** Dropped because the peer's bounded queue was full or the peer unreachable. */
  dropped: number;
  /** Inbound messages rejected as malformed, oversized or from an unknown node. */
  rejected: number;
}

export interface RaftTransport {
  /** Queues messages for their `to` peers, in order per peer. */
  send(messages: readonly Message[]): void;
  /** Sets the receiver of inbound messages (called in arrival order, per peer in send order). */
  setHandler(handler: (message: Message) => void): void;
  /** Peers this transport knows. */
  peers(): readonly NodeId[];
  stats(): TransportStats;
  close(): Promise<void>;
}
