/**
 * The broker's side of the NameServer protocol. {@link BrokerRegistrar} keeps every NameServer
 * told of this node: it registers with all of them in parallel at start, every `intervalMs`
 * (RocketMQ: 30 s) and at once when asked (`registerNow()`: the node became leader, or its
 * topics changed), so a failover reaches the routes without waiting for the next interval.
 * {@link NameServerLookup} (namesrv-lookup.ts, re-exported here) reads routes back.
 *
 * Registration rounds never overlap: a `registerNow()` during a round schedules one more round
 * after it (the state may have changed after the running round took its snapshot), and any
 * number of such calls coalesce into that one. A NameServer that fails is logged (once per
 * `warnIntervalMs` while it keeps failing) and tried again at the next round; nothing is
 * thrown to the caller and no promise is left to reject unhandled.
 */
import { type Clock, systemClock } from '../common/clock';
import { componentLogger, type Logger } from '../common/logger';
import { intInRange, isString, type OptionSpec, resolveOptions } from '../common/options';
import { checkNamesrvAddresses, NameServerChannels } from './namesrv-channels';
import { RateLimitedWarn } from './namesrv-grpc';
import {
  type NodeRegistration,
  type RegisterReply,
  registerReplyFromWire,
  registrationToWire,
} from './namesrv-wire';

export type { NodeRegistration, NodeStats, RegistrationExtras } from './namesrv-wire';

/** Tunables of a {@link BrokerRegistrar}. */
export interface BrokerRegistrarTuning {
  /** Time between registration rounds (RocketMQ: 30 s). */
  intervalMs: number;
  /** Deadline of each Register and Unregister call. */
  callTimeoutMs: number;
  /** A NameServer that keeps failing is logged at most once per this interval. */
  warnIntervalMs: number;
  /** Directory of the `.proto` files; empty: `$RAFTMQ_PROTO_DIR`, else the package's. */
  protoDir: string;
}

/** What a {@link BrokerRegistrar} is built from. */
export interface BrokerRegistrarOptions extends Partial<BrokerRegistrarTuning> {
  /** NameServer addresses (`host:port`); every one is registered with. */
  readonly addresses: readonly string[];
  /** The node's current registration; called once per round. */
  readonly snapshot: () => NodeRegistration;
  readonly logger: Logger;
  /** For rate-limiting warnings; the system clock when absent. */
  readonly clock?: Clock;
}

export const BROKER_REGISTRAR_DEFAULTS: Readonly<BrokerRegistrarTuning> = Object.freeze({
  intervalMs: 30_000,
  callTimeoutMs: 3_000,
  warnIntervalMs: 60_000,
  protoDir: '',
});

const TUNING_SPEC: OptionSpec<BrokerRegistrarTuning> = {
  intervalMs: intInRange(10, 3_600_000),
  callTimeoutMs: intInRange(10, 600_000),
  warnIntervalMs: intInRange(0, 86_400_000),
  protoDir: isString(false),
};

/** Checks the tunables and fills defaults; throws INVALID_OPTION naming the field. */
export function resolveBrokerRegistrarTuning(
  input?: Partial<BrokerRegistrarTuning>,
): Readonly<BrokerRegistrarTuning> {
  return resolveOptions('brokerRegistrar', BROKER_REGISTRAR_DEFAULTS, TUNING_SPEC, input);
}

/** What the registrar knows of one NameServer. */
export interface NameServerState {
  readonly address: string;
  /** Rounds in which Register succeeded / failed. */
  readonly successCount: number;
  readonly failureCount: number;
  /** The last successful reply. */
  readonly lastReply: RegisterReply | undefined;
  /** The error of the last round, cleared by a success. */
  readonly lastError: Error | undefined;
}

/** Keeps every NameServer told of this node; see the file comment. */
export class BrokerRegistrar {
  private readonly tuning: Readonly<BrokerRegistrarTuning>;
  private readonly addresses: readonly string[];
  private readonly channels: NameServerChannels;
  private readonly log: Logger;
  private readonly warn: RateLimitedWarn;
  private readonly states = new Map<string, NameServerState>();
  private timer: NodeJS.Timeout | undefined;
  private inflight: Promise<void> | undefined;
  private again = false;
  private started = false;
  private stopped = false;
  private stopping: Promise<void> | undefined;
  private identity: { group: string; nodeId: string } | undefined;
  private roundCount = 0;

  constructor(private readonly options: BrokerRegistrarOptions) {
    const { addresses, snapshot: _s, logger: _l, clock: _c, ...tuning } = options;
    this.tuning = resolveBrokerRegistrarTuning(tuning);
    this.addresses = checkNamesrvAddresses(addresses, 'brokerRegistrar.addresses');
    this.channels = new NameServerChannels(this.addresses, this.tuning.protoDir);
    this.log = componentLogger(options.logger, { component: 'namesrv-registrar' });
    this.warn = new RateLimitedWarn(
      this.log,
      options.clock ?? systemClock,
      this.tuning.warnIntervalMs,
    );
    for (const address of this.addresses) {
      this.states.set(address, {
        address,
        successCount: 0,
        failureCount: 0,
        lastReply: undefined,
        lastError: undefined,
      });
    }
  }

  /** Registers at once, then every `intervalMs` (on an unref'd timer). Idempotent. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.timer = setInterval(() => this.registerNow(), this.tuning.intervalMs);
    this.timer.unref();
    this.registerNow();
  }

  /**
   * Registers with every NameServer now, in parallel, without waiting for the interval.
   * Returns at once; calls during a round coalesce into one more round. No-op after stop().
   */
  registerNow(): void {
    if (this.stopped) return;
    if (this.inflight !== undefined) {
      this.again = true;
      return;
    }
    this.inflight = this.runRounds().finally(() => {
      this.inflight = undefined;
    });
  }

  /** Resolves once no round is running or scheduled (for tests and orderly shutdown). */
  async whenIdle(): Promise<void> {
    while (this.inflight !== undefined) await this.inflight;
  }

  /** Rounds started so far. */
  get rounds(): number {
    return this.roundCount;
  }

  /** What is known of each NameServer, in address order. */
  nameServers(): NameServerState[] {
    return this.addresses.map((a) => this.states.get(a)).filter((s) => s !== undefined);
  }

  /**
   * Stops the rounds, waits for the running one, then unregisters from every NameServer (best
   * effort, in parallel, each bounded by `callTimeoutMs`) and closes the channels. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopped = true;
      clearInterval(this.timer);
      await this.whenIdle();
      const identity = this.identity;
      if (identity !== undefined) {
        await Promise.all(this.addresses.map((address) => this.unregisterFrom(address, identity)));
      }
      this.channels.close();
    })();
    return this.stopping;
  }

  /** Runs rounds until no more were asked for; never rejects. */
  private async runRounds(): Promise<void> {
    do {
      this.again = false;
      await this.round();
    } while (this.again && !this.stopped);
  }

  private async round(): Promise<void> {
    this.roundCount += 1;
    let request: object;
    try {
      const reg = this.options.snapshot();
      this.identity = { group: reg.group, nodeId: reg.nodeId };
      request = registrationToWire(reg);
    } catch (err) {
      // Not swallowed: logged; the next round takes a new snapshot.
      this.warn.warn('snapshot', { err }, 'cannot take the registration snapshot; skipping round');
      return;
    }
    await Promise.all(this.addresses.map((address) => this.registerWith(address, request)));
  }

  /** One Register call; records and logs the outcome; never rejects. */
  private async registerWith(address: string, request: object): Promise<void> {
    const state = this.states.get(address);
    if (state === undefined) return;
    try {
      const response = await this.channels.call(
        address,
        'Register',
        request,
        this.tuning.callTimeoutMs,
      );
      const reply = registerReplyFromWire(response);
      this.states.set(address, {
        ...state,
        successCount: state.successCount + 1,
        lastReply: reply,
        lastError: undefined,
      });
      if (this.warn.recovered(address)) this.log.info({ address }, 'NameServer reachable again');
      const fields = { address, outcome: reply.outcome, leader: reply.leader?.nodeId };
      if (reply.outcome === 'stale-leader' || reply.outcome === 'stale-term') {
        this.log.info(fields, 'NameServer refused our leadership claim as stale');
      } else {
        this.log.debug(fields, 'registered with NameServer');
      }
      if (reply.droppedTopicCount > 0) {
        this.warn.warn(
          `${address}/topicsMax`,
          { address, droppedTopicCount: reply.droppedTopicCount },
          'NameServer route table full: some of our topics are not routed by it',
        );
      }
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.states.set(address, {
        ...state,
        failureCount: state.failureCount + 1,
        lastError: error,
      });
      // Not swallowed: logged (rate-limited); the next round tries again.
      this.warn.warn(address, { address, err: error }, 'NameServer registration failed');
    }
  }

  /** One best-effort Unregister call; never rejects. */
  private async unregisterFrom(
    address: string,
    identity: { group: string; nodeId: string },
  ): Promise<void> {
    try {
      await this.channels.call(address, 'Unregister', identity, this.tuning.callTimeoutMs);
      this.log.debug({ address }, 'unregistered from NameServer');
    } catch (err) {
      // Best effort: the NameServer expires the node after brokerExpiryMs anyway.
      this.log.warn({ address, err }, 'NameServer unregistration failed; it will expire us');
    }
  }
}
