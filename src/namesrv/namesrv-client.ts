/**
 * The broker's side of the NameServer protocol. {@link BrokerRegistrar} keeps every NameServer
 * told of this node: it registers with each at start, every `intervalMs` (RocketMQ: 30 s) and
 * at once when asked (`registerNow()`: the node became leader, or its topics changed), so a
 * failover reaches the routes without waiting for the next interval.
 * {@link NameServerLookup} (namesrv-lookup.ts) reads routes back.
 *
 * Each NameServer is served on its own: its own call in flight and its own "again" flag, so a
 * slow or dead NameServer delays only its own registrations. (Rounds that waited for every
 * NameServer delayed a new leader's registration at every healthy NameServer by up to
 * `callTimeoutMs`, 3 s, while one of them was stalled.) Calls to one NameServer never overlap:
 * a `registerNow()` during its call registers once more after it (the state may have changed
 * after the call's snapshot), and any number of such calls coalesce into that one. A failed
 * registration is tried again after a backoff (`retryInitialMs`, doubling up to `retryMaxMs`)
 * instead of at the next interval, since a new leader's failed Register would otherwise leave
 * that NameServer naming the old leader for 30 s; `registerNow()` skips the wait. Snapshots are
 * taken once per `registerNow()` and shared by the calls it starts. A failure is logged (once
 * per `warnIntervalMs` per NameServer while it keeps failing); nothing is thrown to the caller
 * and no promise is left to reject unhandled.
 */
import { type Clock, systemClock } from '../common/clock';
import { componentLogger, type Logger } from '../common/logger';
import {
  checkOption,
  intInRange,
  isString,
  type OptionSpec,
  resolveOptions,
} from '../common/options';
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
  /** Time between registrations (RocketMQ: 30 s). */
  intervalMs: number;
  /** Deadline of each Register and Unregister call. */
  callTimeoutMs: number;
  /** Wait before registering again with a NameServer after a failure; doubles per failure. */
  retryInitialMs: number;
  /** The longest such wait. */
  retryMaxMs: number;
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

/**
 * Deadline of the Unregister call at stop, at most: it is a courtesy (a NameServer expires a
 * silent node anyway), and a NameServer that accepts calls but never answers must not hold a
 * stopping broker for the whole `callTimeoutMs`.
 */
export const UNREGISTER_TIMEOUT_MS_MAX = 1_000;

export const BROKER_REGISTRAR_DEFAULTS: Readonly<BrokerRegistrarTuning> = Object.freeze({
  intervalMs: 30_000,
  callTimeoutMs: 3_000,
  retryInitialMs: 500,
  retryMaxMs: 8_000,
  warnIntervalMs: 60_000,
  protoDir: '',
});

const TUNING_SPEC: OptionSpec<BrokerRegistrarTuning> = {
  intervalMs: intInRange(10, 3_600_000),
  callTimeoutMs: intInRange(10, 600_000),
  retryInitialMs: intInRange(1, 3_600_000),
  retryMaxMs: intInRange(1, 3_600_000),
  warnIntervalMs: intInRange(0, 86_400_000),
  protoDir: isString(false),
};

/** Checks the tunables and fills defaults; throws INVALID_OPTION naming the field. */
export function resolveBrokerRegistrarTuning(
  input?: Partial<BrokerRegistrarTuning>,
): Readonly<BrokerRegistrarTuning> {
  const tuning = resolveOptions('brokerRegistrar', BROKER_REGISTRAR_DEFAULTS, TUNING_SPEC, input);
  checkOption(
    tuning.retryInitialMs <= tuning.retryMaxMs,
    'brokerRegistrar.retryInitialMs',
    'must not exceed retryMaxMs',
  );
  return tuning;
}

/** What the registrar knows of one NameServer. */
export interface NameServerState {
  readonly address: string;
  /** Register calls that succeeded / failed. */
  readonly successCount: number;
  readonly failureCount: number;
  /** Failures since the last success (the retry backoff's exponent). */
  readonly failureStreakCount: number;
  /** The last successful reply. */
  readonly lastReply: RegisterReply | undefined;
  /** The error of the last call, cleared by a success. */
  readonly lastError: Error | undefined;
}

/** The registrar's link to one NameServer: its call in flight and what comes after it. */
interface Link {
  readonly address: string;
  /** The running calls (one at a time, then again while asked); undefined when idle. */
  running: Promise<void> | undefined;
  /** `registerNow()` was called during the running call: register once more after it. */
  again: boolean;
  /** The retry after a failure, when one is waiting. */
  retryTimer: NodeJS.Timeout | undefined;
}

/** Keeps every NameServer told of this node; see the file comment. */
export class BrokerRegistrar {
  private readonly tuning: Readonly<BrokerRegistrarTuning>;
  private readonly addresses: readonly string[];
  private readonly channels: NameServerChannels;
  private readonly log: Logger;
  private readonly warn: RateLimitedWarn;
  private readonly states = new Map<string, NameServerState>();
  private readonly links: readonly Link[];
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;
  private stopping: Promise<void> | undefined;
  private identity: { group: string; nodeId: string } | undefined;
  private roundCount = 0;
  /** Aborted at stop: cancels the Register calls in flight. */
  private readonly registerAbort = new AbortController();
  /** The request of the current round, once a call has asked for it. */
  private request: { readonly round: number; readonly wire: object } | undefined;

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
        failureStreakCount: 0,
        lastReply: undefined,
        lastError: undefined,
      });
    }
    this.links = this.addresses.map((address) => ({
      address,
      running: undefined,
      again: false,
      retryTimer: undefined,
    }));
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
   * Registers with every NameServer now, without waiting for the interval or a retry's
   * backoff. Returns at once; with a NameServer whose call is in flight, registers once more
   * after it (calls during it coalesce). No-op after stop().
   */
  registerNow(): void {
    if (this.stopped) return;
    this.roundCount += 1;
    for (const link of this.links) this.kick(link);
  }

  /** Resolves once no call is in flight (retries waiting their backoff are not waited for). */
  async whenIdle(): Promise<void> {
    for (;;) {
      const running = this.links.map((l) => l.running).filter((r) => r !== undefined);
      if (running.length === 0) return;
      await Promise.all(running);
    }
  }

  /** Times a registration with every NameServer was asked for (start, interval, registerNow). */
  get rounds(): number {
    return this.roundCount;
  }

  /** What is known of each NameServer, in address order. */
  nameServers(): NameServerState[] {
    return this.addresses.map((a) => this.states.get(a)).filter((s) => s !== undefined);
  }

  /**
   * Stops registering, cancels the calls in flight (a registration sent now would be undone by
   * the Unregister that follows), then unregisters from every NameServer (best effort, in
   * parallel, each bounded by `callTimeoutMs` and UNREGISTER_TIMEOUT_MS_MAX) and closes the
   * channels. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopped = true;
      clearInterval(this.timer);
      for (const link of this.links) clearTimeout(link.retryTimer);
      this.registerAbort.abort();
      await this.whenIdle();
      const identity = this.identity;
      if (identity !== undefined) {
        await Promise.all(this.addresses.map((address) => this.unregisterFrom(address, identity)));
      }
      this.channels.close();
    })();
    return this.stopping;
  }

  /** Registers with `link`'s NameServer now, or once more after its call in flight. */
  private kick(link: Link): void {
    clearTimeout(link.retryTimer);
    link.retryTimer = undefined;
    if (link.running !== undefined) {
      link.again = true;
      return;
    }
    link.running = this.serve(link).finally(() => {
      link.running = undefined;
    });
  }

  /** Calls Register until no more was asked for; schedules a retry after a failure. */
  private async serve(link: Link): Promise<void> {
    let ok = true;
    do {
      link.again = false;
      const request = this.currentRequest();
      if (request === undefined) return;
      ok = await this.registerWith(link.address, request);
    } while (link.again && !this.stopped);
    if (!ok && !this.stopped) this.scheduleRetry(link);
  }

  /** Arms `link`'s retry after its current run of failures (exponential backoff, capped). */
  private scheduleRetry(link: Link): void {
    const streak = this.states.get(link.address)?.failureStreakCount ?? 1;
    const { retryInitialMs, retryMaxMs } = this.tuning;
    const delayMs = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(streak - 1, 30));
    link.retryTimer = setTimeout(() => {
      link.retryTimer = undefined;
      if (!this.stopped) this.kick(link);
    }, delayMs);
    link.retryTimer.unref();
  }

  /**
   * The Register request of the current round, from one snapshot shared by every NameServer's
   * call of that round; undefined (logged) when the snapshot cannot be taken.
   */
  private currentRequest(): object | undefined {
    if (this.request?.round === this.roundCount) return this.request.wire;
    try {
      const reg = this.options.snapshot();
      this.identity = { group: reg.group, nodeId: reg.nodeId };
      this.request = { round: this.roundCount, wire: registrationToWire(reg) };
      return this.request.wire;
    } catch (err) {
      // Not swallowed: logged; the next registerNow() or interval takes a new snapshot.
      this.warn.warn('snapshot', { err }, 'cannot take the registration snapshot; skipping');
      return undefined;
    }
  }

  /** One Register call; records and logs the outcome; never rejects. True on success. */
  private async registerWith(address: string, request: object): Promise<boolean> {
    const state = this.states.get(address);
    if (state === undefined) return false;
    try {
      const response = await this.channels.call(
        address,
        'Register',
        request,
        this.tuning.callTimeoutMs,
        this.registerAbort.signal,
      );
      const reply = registerReplyFromWire(response);
      this.states.set(address, {
        ...state,
        successCount: state.successCount + 1,
        failureStreakCount: 0,
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
      return true;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.states.set(address, {
        ...state,
        failureCount: state.failureCount + 1,
        failureStreakCount: state.failureStreakCount + 1,
        lastError: error,
      });
      if (this.stopped) {
        // Cancelled by stop(), or failed while stopping: nothing is retried; Unregister follows.
        this.log.debug({ address, err: error }, 'NameServer registration ended by stop');
      } else {
        // Not swallowed: logged (rate-limited); the caller schedules a retry.
        this.warn.warn(address, { address, err: error }, 'NameServer registration failed');
      }
      return false;
    }
  }

  /** One best-effort Unregister call; never rejects. */
  private async unregisterFrom(
    address: string,
    identity: { group: string; nodeId: string },
  ): Promise<void> {
    try {
      const timeoutMs = Math.min(this.tuning.callTimeoutMs, UNREGISTER_TIMEOUT_MS_MAX);
      await this.channels.call(address, 'Unregister', identity, timeoutMs);
      this.log.debug({ address }, 'unregistered from NameServer');
    } catch (err) {
      // Best effort: the NameServer expires the node after brokerExpiryMs anyway.
      this.log.warn({ address, err }, 'NameServer unregistration failed; it will expire us');
    }
  }
}
