/**
 * The configuration of one broker node (one Raft member of one broker group), as the broker
 * binary reads it from a JSON file and flags. `resolveBrokerNodeConfig` checks every field and
 * fills defaults; it throws INVALID_OPTION naming the first bad field by its path in the file
 * (`config.peers.n1.raft`).
 */
import * as net from 'node:net';
import {
  checkOption,
  intInRange,
  isBoolean,
  oneOf,
  resolveOptions,
  type OptionSpec,
} from '../common/options';
import { isHost } from '../common/hosts';
import { ROUTE_TABLE_DEFAULTS } from '../namesrv/route-types';
import { COMMIT_LOG_DEFAULTS, type FlushMode } from '../store/commit-log-options';
import type { PeerEndpoints } from './broker-types';

export interface BrokerTimingConfig {
  /** Milliseconds per Raft tick. */
  readonly tickIntervalMs: number;
  /** Election timeout in ticks (randomized in [t, 2t) by the core). */
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /**
   * How often the node re-registers with every NameServer (RocketMQ: 30 s); at most
   * {@link REGISTER_INTERVAL_MS_MAX}.
   */
  readonly registerIntervalMs: number;
  /**
   * How often the node runs retention (retention-task.ts): removes CommitLog segments older
   * than `fileReservedTimeMs`, or while the log exceeds `retainedBytesMax`, up to what is
   * applied here and, on the leader, matched by every live follower.
   */
  readonly retentionCheckIntervalMs: number;
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
  /**
   * Newest synced CommitLog bytes left in the page cache; older ones are released (-1: none
   * released). See `pageCacheKeepBytes` in commit-log-options.ts.
   */
  readonly pageCacheKeepBytes: number;
  /**
   * Capacity of one CommitLog segment file, the unit retention removes (1 GiB). At least
   * `maxBodyBytes` + {@link SEGMENT_HEADROOM_BYTES}: the largest entry must fit in one segment.
   */
  readonly segmentSizeBytes: number;
  /** Segments older than this may be removed by retention (RocketMQ `fileReservedTime`: 72 h). */
  readonly fileReservedTimeMs: number;
  /** Retention removes the oldest segments while the log is larger than this; 0: no bound. */
  readonly retainedBytesMax: number;
  /** Create unknown topics on first use (QueryRoute or SendMessage). */
  readonly autoCreateTopics: boolean;
  /** Queue count of auto-created topics. */
  readonly defaultQueueCount: number;
  /** Create unknown consumer groups on first use. */
  readonly autoCreateGroups: boolean;
  /**
   * Topics beyond which auto-creation is refused with PERMISSION_DENIED (every topic is a Raft
   * entry and stays in memory on every node). The admin CreateTopic is not bounded by it.
   */
  readonly topicsMax: number;
  /**
   * Consumer groups beyond which auto-creation is refused with PERMISSION_DENIED (every group is
   * a Raft entry and stays in memory on every node). The admin CreateGroup is not bounded by it.
   */
  readonly groupsMax: number;
  /** Largest message body accepted (default 4 MiB - 64 KiB, so Node consumers can read it). */
  readonly maxBodyBytes: number;
  /**
   * Invisibility of a push consumer's auto-renewing delivery, and of each renewal the leader
   * gives it while the consumer lives (pop-renewer.ts; RocketMQ's proxy: 60 s).
   */
  readonly autoRenewInvisibleMs: number;
  /** A node that takes leadership whenever it is caught up (DLedger's preferredLeaderId). */
  readonly preferredLeader: string | null;
  /**
   * The peer whose data directory was copied into `dataDir` to rebuild this node (operations.md,
   * "Data directory"): at its next start the node takes the copy over as its own. Otherwise a
   * data directory that another member wrote is refused (node-identity.ts). Null by default.
   */
  readonly adoptDataFrom: string | null;
  readonly timing: BrokerTimingConfig;
  /** Seed of the Raft PRNG; random when absent. */
  readonly seed?: number;
}

/** The fields every configuration must give (they have no default). */
export type BrokerNodeRequiredField = 'group' | 'nodeId' | 'peers' | 'dataDir';

/** Prefix of every field path in error messages. */
export const CONFIG_PATH = 'config';
/** Names of clusters, groups and nodes. */
export const CONFIG_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Nodes of one group, at most (odd counts tolerate the most failures per node). */
export const PEER_COUNT_MAX = 9;
/** NameServer endpoints, at most. */
export const NAMESRV_ADDRS_MAX = 32;
/** The largest body a Node gRPC consumer can receive in one 4 MiB frame, with headroom. */
export const MAX_BODY_BYTES_LIMIT = 4 * 1024 * 1024 - 64 * 1024;
export const DEFAULT_QUEUE_COUNT_MAX = 1024;
/** Largest `topicsMax` and `groupsMax` accepted. */
export const CREATED_COUNT_MAX_LIMIT = 1_000_000;
/**
 * Room in a segment beyond the largest body: a message's properties and batch header, or a
 * batch of small messages (send-batcher.ts packs up to 512 KiB into one entry).
 */
export const SEGMENT_HEADROOM_BYTES = 1024 * 1024;

/** Timing defaults; the Raft ones match `MEMBER_TIMING_DEFAULTS` of `raft-member.ts`. */
export const BROKER_TIMING_DEFAULTS: Readonly<BrokerTimingConfig> = Object.freeze({
  tickIntervalMs: 10,
  electionTimeoutTicks: 50,
  heartbeatIntervalTicks: 5,
  registerIntervalMs: 30_000,
  retentionCheckIntervalMs: 10_000,
});

/** Defaults of every optional field (`seed` is random when absent). */
export const BROKER_NODE_DEFAULTS: Readonly<
  Omit<BrokerNodeConfig, BrokerNodeRequiredField | 'seed'>
> = Object.freeze({
  cluster: 'DefaultCluster',
  listenHost: '127.0.0.1',
  namesrvAddrs: Object.freeze([] as string[]),
  flushMode: 'SYNC',
  pageCacheKeepBytes: COMMIT_LOG_DEFAULTS.pageCacheKeepBytes,
  segmentSizeBytes: COMMIT_LOG_DEFAULTS.segmentSizeBytes,
  fileReservedTimeMs: COMMIT_LOG_DEFAULTS.fileReservedTimeMs,
  retainedBytesMax: COMMIT_LOG_DEFAULTS.retainedBytesMax,
  autoCreateTopics: false,
  defaultQueueCount: 8,
  autoCreateGroups: true,
  topicsMax: 5_000,
  groupsMax: 20_000,
  maxBodyBytes: MAX_BODY_BYTES_LIMIT,
  autoRenewInvisibleMs: 60_000,
  preferredLeader: null,
  adoptDataFrom: null,
  timing: BROKER_TIMING_DEFAULTS,
});

/**
 * Longest `registerIntervalMs`: half a NameServer's default `brokerExpiryMs`. A NameServer drops
 * a node it has not heard from for `brokerExpiryMs`, so it must hear from each node several
 * times per expiry, or one lost registration takes the node out of the routes.
 */
export const REGISTER_INTERVAL_MS_MAX = ROUTE_TABLE_DEFAULTS.brokerExpiryMs / 2;

const TIMING_SPEC: OptionSpec<BrokerTimingConfig> = {
  tickIntervalMs: intInRange(1, 60_000),
  electionTimeoutTicks: intInRange(2, 1_000_000),
  heartbeatIntervalTicks: intInRange(1, 1_000_000),
  registerIntervalMs: (value, path) => {
    intInRange(100, Number.MAX_SAFE_INTEGER)(value, path);
    checkOption(
      value <= REGISTER_INTERVAL_MS_MAX,
      path,
      `must be at most ${REGISTER_INTERVAL_MS_MAX}, got ${String(value)}: NameServers drop a ` +
        `broker not heard from for brokerExpiryMs (${ROUTE_TABLE_DEFAULTS.brokerExpiryMs} by ` +
        'default), which must exceed the registration interval several times',
    );
  },
  retentionCheckIntervalMs: intInRange(10, 24 * 3600 * 1000),
};

/** Every top-level field except `timing`, unchecked until the spec has run. */
type UncheckedFields = { [K in Exclude<keyof BrokerNodeConfig, 'timing'>]-?: unknown };

const REQUIRED_PLACEHOLDERS = {
  group: undefined,
  nodeId: undefined,
  peers: undefined,
  dataDir: undefined,
  seed: undefined,
};

const FIELD_SPEC: OptionSpec<UncheckedFields> = {
  cluster: (v, p) => checkName(v, p),
  group: (v, p) => checkName(required(v, p), p),
  nodeId: (v, p) => checkName(required(v, p), p),
  peers: (v, p) => checkPeers(required(v, p), p),
  listenHost: (v, p) =>
    checkOption(typeof v === 'string' && isHost(v), p, 'must be a host name or IP address'),
  dataDir: (v, p) => {
    checkOption(typeof required(v, p) === 'string', p, 'must be a string');
    checkOption((v as string).length > 0 && !(v as string).includes('\0'), p, 'must be a path');
  },
  namesrvAddrs: (v, p) => checkEndpointList(v, p),
  flushMode: oneOf<FlushMode>('SYNC', 'ASYNC'),
  pageCacheKeepBytes: intInRange(-1, Number.MAX_SAFE_INTEGER),
  segmentSizeBytes: intInRange(SEGMENT_HEADROOM_BYTES, 2 ** 40),
  fileReservedTimeMs: intInRange(0, Number.MAX_SAFE_INTEGER),
  retainedBytesMax: intInRange(0, Number.MAX_SAFE_INTEGER),
  autoCreateTopics: isBoolean,
  defaultQueueCount: intInRange(1, DEFAULT_QUEUE_COUNT_MAX),
  autoCreateGroups: isBoolean,
  topicsMax: intInRange(0, CREATED_COUNT_MAX_LIMIT),
  groupsMax: intInRange(0, CREATED_COUNT_MAX_LIMIT),
  maxBodyBytes: intInRange(1, MAX_BODY_BYTES_LIMIT),
  autoRenewInvisibleMs: intInRange(1_000, 12 * 3600 * 1000),
  preferredLeader: (v, p) => {
    if (v !== null) checkName(v, p);
  },
  adoptDataFrom: (v, p) => {
    if (v !== null) checkName(v, p);
  },
  seed: (v, p) => {
    if (v !== undefined) intInRange(0, 0xffff_ffff)(v, p);
  },
};

/**
 * Checks `input` (a parsed JSON object, flags merged in) and fills defaults. Unknown keys are
 * refused at every level; endpoints are checked strictly and never rewritten (`h:0080` is
 * refused). Two fields naming the same endpoint are refused.
 * Throws INVALID_OPTION whose message and `details.option` name the field path.
 */
export function resolveBrokerNodeConfig(input: unknown): BrokerNodeConfig {
  checkOption(isPlainObject(input), CONFIG_PATH, 'must be an object');
  const { timing, ...rest } = input as Record<string, unknown>;
  checkOption(
    timing === undefined || isPlainObject(timing),
    `${CONFIG_PATH}.timing`,
    'must be an object',
  );
  const resolvedTiming = resolveOptions(
    `${CONFIG_PATH}.timing`,
    BROKER_TIMING_DEFAULTS,
    TIMING_SPEC,
    timing as Partial<BrokerTimingConfig> | undefined,
  );
  checkOption(
    resolvedTiming.heartbeatIntervalTicks < resolvedTiming.electionTimeoutTicks,
    `${CONFIG_PATH}.timing.heartbeatIntervalTicks`,
    'must be below timing.electionTimeoutTicks',
  );
  const { timing: _timingDefaults, ...optional } = BROKER_NODE_DEFAULTS;
  const defaults: UncheckedFields = { ...optional, ...REQUIRED_PLACEHOLDERS };
  const fields = resolveOptions(
    CONFIG_PATH,
    defaults,
    FIELD_SPEC,
    rest as Partial<UncheckedFields>,
  );
  const peers = fields.peers as Record<string, PeerEndpoints>;
  checkOption(
    Object.prototype.hasOwnProperty.call(peers, fields.nodeId as string),
    `${CONFIG_PATH}.nodeId`,
    `must be one of the peers (${Object.keys(peers).join(', ')})`,
  );
  checkOption(
    fields.preferredLeader === null ||
      Object.prototype.hasOwnProperty.call(peers, fields.preferredLeader as string),
    `${CONFIG_PATH}.preferredLeader`,
    'must be null or one of the peers',
  );
  checkOption(
    fields.adoptDataFrom === null ||
      (fields.adoptDataFrom !== fields.nodeId &&
        Object.prototype.hasOwnProperty.call(peers, fields.adoptDataFrom as string)),
    `${CONFIG_PATH}.adoptDataFrom`,
    'must be null or one of the other peers',
  );
  checkOption(
    (fields.segmentSizeBytes as number) >= (fields.maxBodyBytes as number) + SEGMENT_HEADROOM_BYTES,
    `${CONFIG_PATH}.segmentSizeBytes`,
    `must be at least maxBodyBytes + ${SEGMENT_HEADROOM_BYTES}: the largest entry must fit`,
  );
  // Both servers bind `listenHost`, on this node's two ports.
  const own = peers[fields.nodeId as string] as PeerEndpoints;
  const raftAt = parseEndpoint(own.raft, `${CONFIG_PATH}.peers.${fields.nodeId as string}.raft`);
  const clientAt = parseEndpoint(
    own.client,
    `${CONFIG_PATH}.peers.${fields.nodeId as string}.client`,
  );
  checkOption(
    raftAt.port !== clientAt.port,
    `${CONFIG_PATH}.peers.${fields.nodeId as string}`,
    `raft and client must be on different ports (both servers bind listenHost), got ${raftAt.port} twice`,
  );
  // Not given: the host this node's entry in peers announces, so that the node serves where the
  // others and the NameServers are told to find it (it bound 127.0.0.1 whatever peers said).
  const listenGiven = (rest as { listenHost?: unknown }).listenHost !== undefined;
  checkOption(
    listenGiven || raftAt.host === clientAt.host,
    `${CONFIG_PATH}.listenHost`,
    `must be given when this node's raft and client hosts differ (${raftAt.host}, ${clientAt.host}): both servers bind it`,
  );
  const listenHost = listenGiven ? fields.listenHost : raftAt.host;
  const config: BrokerNodeConfig = {
    ...(fields as Omit<BrokerNodeConfig, 'timing'>),
    listenHost: listenHost as string,
    namesrvAddrs: Object.freeze([...(fields.namesrvAddrs as string[])]),
    peers: Object.freeze(
      Object.fromEntries(
        Object.entries(peers).map(([id, p]) => [
          id,
          Object.freeze({ raft: p.raft, client: p.client }),
        ]),
      ),
    ),
    timing: resolvedTiming,
  };
  if (config.seed === undefined) delete (config as { seed?: number }).seed;
  return Object.freeze(config);
}

/** A parsed `host:port`. IPv6 hosts are written in brackets (`[::1]:9876`). */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

const PORT_DIGITS = /^[1-9][0-9]{0,4}$/;

/**
 * Parses `host:port` strictly: a host name, IPv4 address or bracketed IPv6 address, and a port
 * in 1..65535 without sign or leading zeros. Throws INVALID_OPTION naming `path`.
 */
export function parseEndpoint(text: unknown, path: string): Endpoint {
  checkOption(typeof text === 'string', path, `must be a "host:port" string, got ${String(text)}`);
  const value = text as string;
  const colon = value.lastIndexOf(':');
  const bad = `must be "host:port" with a port in 1..65535, got ${JSON.stringify(value)}`;
  checkOption(colon > 0, path, bad);
  let host = value.slice(0, colon);
  const portText = value.slice(colon + 1);
  if (host.startsWith('[') && host.endsWith(']')) {
    host = host.slice(1, -1);
    checkOption(net.isIPv6(host), path, `${JSON.stringify(host)} is not an IPv6 address`);
  } else {
    checkOption(!host.includes(':'), path, 'an IPv6 host must be in brackets: [::1]:port');
    checkOption(isHost(host), path, `${JSON.stringify(host)} is not a host name or IP address`);
  }
  checkOption(PORT_DIGITS.test(portText) && Number(portText) <= 65535, path, bad);
  return Object.freeze({ host, port: Number(portText) });
}

/** `host:port`, with an IPv6 host in brackets. */
export function formatEndpoint(endpoint: Endpoint): string {
  return net.isIPv6(endpoint.host)
    ? `[${endpoint.host}]:${endpoint.port}`
    : `${endpoint.host}:${endpoint.port}`;
}

function required(value: unknown, path: string): unknown {
  checkOption(value !== undefined && value !== null, path, 'is required');
  return value;
}

function checkName(value: unknown, path: string): void {
  checkOption(
    typeof value === 'string' && CONFIG_NAME_PATTERN.test(value),
    path,
    `must match ${CONFIG_NAME_PATTERN.source}, got ${JSON.stringify(value)}`,
  );
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkPeers(value: unknown, path: string): void {
  checkOption(isPlainObject(value), path, 'must be an object of id -> { raft, client }');
  const entries = Object.entries(value as Record<string, unknown>);
  checkOption(
    entries.length >= 1 && entries.length <= PEER_COUNT_MAX,
    path,
    `must list 1..${PEER_COUNT_MAX} nodes, got ${entries.length}`,
  );
  const seen = new Map<string, string>();
  for (const [id, peer] of entries) {
    const peerPath = `${path}.${id}`;
    checkName(id, peerPath);
    checkOption(isPlainObject(peer), peerPath, 'must be an object { raft, client }');
    for (const key of Object.keys(peer as object)) {
      checkOption(key === 'raft' || key === 'client', `${peerPath}.${key}`, 'unknown option');
    }
    for (const key of ['raft', 'client'] as const) {
      const fieldPath = `${peerPath}.${key}`;
      const endpoint = formatEndpoint(
        parseEndpoint((peer as Record<string, unknown>)[key], fieldPath),
      );
      const other = seen.get(endpoint);
      checkOption(other === undefined, fieldPath, `${endpoint} is also ${other ?? ''}`);
      seen.set(endpoint, fieldPath);
    }
  }
}

function checkEndpointList(value: unknown, path: string): void {
  checkOption(Array.isArray(value), path, 'must be an array of "host:port" strings');
  const list = value as unknown[];
  checkOption(list.length <= NAMESRV_ADDRS_MAX, path, `must list at most ${NAMESRV_ADDRS_MAX}`);
  const seen = new Set<string>();
  list.forEach((item, i) => {
    const endpoint = formatEndpoint(parseEndpoint(item, `${path}[${i}]`));
    checkOption(!seen.has(endpoint), `${path}[${i}]`, `${endpoint} is listed twice`);
    seen.add(endpoint);
  });
}
