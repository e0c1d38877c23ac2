/**
 * The NameServer process's service: one gRPC port serving both `raftmq.namesrv.v1.NameServer`
 * (brokers register and heartbeat, tools read routes and the cluster view; proto/namesrv.proto)
 * and the access-point part of `apache.rocketmq.v2.MessagingService` (namesrv-messaging.ts), so
 * RocketMQ 5 clients can use a NameServer as their endpoints.
 *
 * State lives in memory only (namesrv-registry.ts): a restarted NameServer starts empty and is
 * whole again once every broker has re-registered (within one registration interval, 30 s by
 * default). Nodes silent for `brokerExpiryMs` are dropped by a scan every `scanIntervalMs`,
 * on an unref'd timer cleared by `stop()`.
 *
 * Errors: a malformed request ends with INVALID_ARGUMENT naming the field, a table without room
 * for a new group or node with RESOURCE_EXHAUSTED (RaftmqError `BUSY`); nothing a client sends
 * can crash the process. Topics beyond `topicsMax` are left out of a registration that is
 * otherwise recorded; the reply counts them, and a warning (at most one a minute) names them.
 */
import * as grpc from '@grpc/grpc-js';
import { type Clock, systemClock } from '../common/clock';
import { RaftmqError } from '../common/errors';
import { componentLogger, type Logger } from '../common/logger';
import { isHost } from '../common/hosts';
import {
  checkOption,
  intInRange,
  isString,
  type OptionSpec,
  resolveOptions,
} from '../common/options';
import {
  bindServer,
  type Decoded,
  NAMESRV_REQUEST_BYTES_MAX,
  NAMESRV_SERVER_OPTIONS,
  RateLimitedWarn,
  safeServiceDefinition,
  serviceOf,
  shutdownServer,
  statusError,
  toServiceError,
} from './namesrv-grpc';
import { createNamesrvMessaging, type NamesrvMessagingService } from './namesrv-messaging';
import { RouteRegistry } from './namesrv-registry';
import {
  clusterToWire,
  loadNamesrvProto,
  NAMESRV_SERVICE,
  registerResultToWire,
  registrationFromWire,
  routeToWire,
} from './namesrv-wire';
import { resolveRouteTableOptions, type RouteTableOptions } from './route-types';

/** How long `stop()` waits for open calls before cancelling them. */
const SHUTDOWN_TIMEOUT_MS = 2_000;
/** A full route table is logged at most this often (brokers re-register every 30 s). */
const FULL_WARN_INTERVAL_MS = 60_000;
/** Names of left-out topics a warning carries, at most. */
const DROPPED_TOPICS_LOGGED_MAX = 10;

/** A NameServer's configuration. */
export interface NameServerConfig {
  /** Address to listen on (default `127.0.0.1`; `0.0.0.0` for every interface). */
  listenHost: string;
  /** Port to listen on; 0 picks a free one (see `NameServer.port`). Default 9876 (RocketMQ's). */
  port: number;
  /** Route table bounds and timing (route-types.ts); defaults from RocketMQ. */
  routeTable?: Partial<RouteTableOptions>;
  /** Directory of the `.proto` files; empty: `$RAFTMQ_PROTO_DIR`, else the package's. */
  protoDir?: string;
}

/** A resolved configuration: every field set, the route table's options resolved. */
export interface ResolvedNameServerConfig {
  readonly listenHost: string;
  readonly port: number;
  readonly routeTable: Readonly<RouteTableOptions>;
  readonly protoDir: string;
}

const NAMESRV_DEFAULTS = Object.freeze({
  listenHost: '127.0.0.1',
  port: 9876,
  routeTable: undefined as Partial<RouteTableOptions> | undefined,
  protoDir: '',
});

const NAMESRV_SPEC: OptionSpec<typeof NAMESRV_DEFAULTS> = {
  listenHost: (value, path) => {
    isString(true)(value, path);
    checkOption(
      isHost(value),
      path,
      `must be a host name or IP address (IPv6 without brackets), got ${JSON.stringify(value)}`,
    );
  },
  port: intInRange(0, 65_535),
  routeTable: (value) => {
    resolveRouteTableOptions(value);
  },
  protoDir: isString(false),
};

/**
 * Checks `input` (a parsed JSON object, say) and fills defaults. Throws INVALID_OPTION naming
 * the field (`namesrv.port`, `routeTable.brokerExpiryMs`, ...) for an unknown or bad one.
 */
export function resolveNameServerConfig(input: unknown): ResolvedNameServerConfig {
  if (
    input !== undefined &&
    (typeof input !== 'object' || input === null || Array.isArray(input))
  ) {
    throw new RaftmqError('INVALID_OPTION', 'namesrv: configuration must be an object', {
      details: { option: 'namesrv' },
    });
  }
  const given = (input ?? {}) as Partial<typeof NAMESRV_DEFAULTS>;
  const options = resolveOptions('namesrv', NAMESRV_DEFAULTS, NAMESRV_SPEC, given);
  return Object.freeze({
    listenHost: options.listenHost,
    port: options.port,
    routeTable: resolveRouteTableOptions(options.routeTable),
    protoDir: options.protoDir,
  });
}

/** Optional dependencies of {@link NameServer.start}. */
export interface NameServerDeps {
  /** Time for heartbeats and expiry (monotonic) and the cluster view (wall). */
  readonly clock?: Clock;
}

/** A running NameServer; see the file comment. */
export class NameServer {
  private stopping: Promise<void> | undefined;

  private constructor(
    /** The port actually bound. */
    readonly port: number,
    readonly config: ResolvedNameServerConfig,
    /** The route table and extras, for tests and in-process tools. */
    readonly registry: RouteRegistry,
    private readonly server: grpc.Server,
    private readonly messaging: NamesrvMessagingService,
    private readonly scanTimer: NodeJS.Timeout,
    private readonly log: Logger,
  ) {}

  /** Resolves `config`, loads the protocols, binds the port and starts the expiry scan. */
  static async start(
    config: Partial<NameServerConfig>,
    logger: Logger,
    deps: NameServerDeps = {},
  ): Promise<NameServer> {
    const resolved = resolveNameServerConfig(config);
    const clock = deps.clock ?? systemClock;
    const log = componentLogger(logger, { component: 'namesrv' });
    const registry = new RouteRegistry(resolved.routeTable, clock);
    const namesrv = serviceOf(await loadNamesrvProto(resolved.protoDir), NAMESRV_SERVICE);
    const messaging = await createNamesrvMessaging(registry, log, clock, resolved.protoDir);
    const server = new grpc.Server(NAMESRV_SERVER_OPTIONS);
    server.addService(
      safeServiceDefinition(namesrv, { Register: NAMESRV_REQUEST_BYTES_MAX }),
      namesrvHandlers(registry, clock, log),
    );
    server.addService(messaging.definition, messaging.handlers);
    let port: number;
    try {
      port = await bindServer(server, resolved.listenHost, resolved.port);
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
    const scanTimer = setInterval(() => {
      for (const node of registry.expire()) {
        log.info(
          { group: node.group, nodeId: node.nodeId, term: node.term, wasLeader: node.wasLeader },
          'broker node expired',
        );
      }
    }, resolved.routeTable.scanIntervalMs);
    scanTimer.unref();
    log.info({ host: resolved.listenHost, port }, 'NameServer started');
    return new NameServer(port, resolved, registry, server, messaging, scanTimer, log);
  }

  /** Stops the expiry scan, ends Telemetry streams and shuts the server down. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.scanTimer);
      this.messaging.close();
      await shutdownServer(this.server, SHUTDOWN_TIMEOUT_MS, this.log);
      this.log.info({ port: this.port }, 'NameServer stopped');
    })();
    return this.stopping;
  }
}

type Handler = (request: unknown) => object;

/** Wraps a handler: undecodable requests and thrown errors become gRPC status errors. */
function unary(rpc: string, log: Logger, handle: Handler): grpc.handleUnaryCall<Decoded, object> {
  return (call, callback) => {
    const request = call.request;
    if (!request.ok) {
      callback(statusError(grpc.status.INVALID_ARGUMENT, `${rpc}: ${request.reason}`));
      return;
    }
    try {
      callback(null, handle(request.value));
    } catch (err) {
      callback(toServiceError(err, log, rpc));
    }
  };
}

function requestField(request: unknown, field: string): unknown {
  return typeof request === 'object' && request !== null
    ? (request as Record<string, unknown>)[field]
    : undefined;
}

/** Handlers of `raftmq.namesrv.v1.NameServer`. */
function namesrvHandlers(
  registry: RouteRegistry,
  clock: Clock,
  log: Logger,
): grpc.UntypedServiceImplementation {
  // One key for every node: the warning names the latest and counts the ones suppressed.
  const fullWarn = new RateLimitedWarn(log, clock, FULL_WARN_INTERVAL_MS);
  return {
    Register: unary('Register', log, (request) => {
      const reg = registrationFromWire(request);
      const result = registry.register(reg);
      const fields = { group: reg.group, nodeId: reg.nodeId, term: reg.term, role: reg.role };
      if (result.stale) log.info({ ...fields, outcome: result.outcome }, 'stale registration');
      else log.debug({ ...fields, outcome: result.outcome }, 'registered');
      const dropped = result.droppedTopics;
      if (dropped.length > 0) {
        const topicsMax = registry.table.options.topicsMax;
        const sample = dropped.slice(0, DROPPED_TOPICS_LOGGED_MAX);
        fullWarn.warn(
          'topicsMax',
          { ...fields, topicsMax, droppedTopicCount: dropped.length, droppedTopics: sample },
          'route table full: topics of a registration left out of the routes',
        );
      }
      return registerResultToWire(result);
    }),
    Unregister: unary('Unregister', log, (request) => {
      const group = requestField(request, 'group') as string;
      const nodeId = requestField(request, 'nodeId') as string;
      const dropped = registry.unregister(group, nodeId);
      if (dropped !== undefined) {
        log.info({ group, nodeId, wasLeader: dropped.wasLeader }, 'broker node unregistered');
      }
      return { removed: dropped !== undefined };
    }),
    GetRoute: unary('GetRoute', log, (request) => {
      return routeToWire(registry.route(requestField(request, 'topic') as string));
    }),
    GetCluster: unary('GetCluster', log, () => {
      const monoNowMs = clock.monotonicMs();
      const wallNowMs = clock.nowMs();
      return clusterToWire(registry.clusterView(), (group, nodeId, lastHeartbeatMs) => ({
        extras: registry.extrasOf(group, nodeId),
        lastHeartbeatAgeMs: monoNowMs - lastHeartbeatMs,
        lastHeartbeatEpochMs: wallNowMs - (monoNowMs - lastHeartbeatMs),
      }));
    }),
  };
}
