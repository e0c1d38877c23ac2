/**
 * The configuration of one broker node (one Raft member of one broker group), as the broker
 * binary reads it from a JSON file and flags. `resolveBrokerNodeConfig` checks every field and
 * fills defaults; it throws INVALID_OPTION naming the first bad field.
 */
import type { FlushMode } from '../store/commit-log-options';
import type { PeerEndpoints } from './broker-types';

export interface BrokerTimingConfig {
  /** Milliseconds per Raft tick. */
  readonly tickIntervalMs: number;
  /** Election timeout in ticks (randomized in [t, 2t) by the core). */
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /** How often the node re-registers with every NameServer (RocketMQ: 30 s). */
  readonly registerIntervalMs: number;
}

export interface BrokerNodeConfig {
  /** Cluster name reported to NameServers (RocketMQ's `brokerClusterName`). */
  readonly cluster: string;
  /** Broker group name (RocketMQ's `brokerName`); unique in the cluster. */
  readonly group: string;
  /** This node's id; a key of `peers`. */
  readonly nodeId: string;
  /** Every node of the group, this one included: id -> its Raft and client endpoints. */
  readonly peers: Readonly<Record<string, PeerEndpoints>>;
  /** Address the two servers bind (ports come from `peers[nodeId]`). */
  readonly listenHost: string;
  /** The node's data directory (commitlog/, index/, consumequeue/, meta/). */
  readonly dataDir: string;
  /** NameServer endpoints (`host:port`) to register with; may be empty. */
  readonly namesrvAddrs: readonly string[];
  readonly flushMode: FlushMode;
  /** Create unknown topics on first use (QueryRoute or SendMessage). */
  readonly autoCreateTopics: boolean;
  /** Queue count of auto-created topics. */
  readonly defaultQueueCount: number;
  /** Create unknown consumer groups on first use. */
  readonly autoCreateGroups: boolean;
  /** Largest message body accepted (default 4 MiB - 64 KiB, so Node consumers can read it). */
  readonly maxBodyBytes: number;
  /** A node that takes leadership whenever it is caught up (DLedger's preferredLeaderId). */
  readonly preferredLeader: string | null;
  readonly timing: BrokerTimingConfig;
  /** Seed of the Raft PRNG; random when absent. */
  readonly seed?: number;
}
