/**
 * Route lookups against the NameServers, for a broker that answers QueryRoute for a topic
 * across every group. Each lookup asks every NameServer in parallel and merges what they know,
 * group by group (route-merge.ts: per group the entry of the newest term; every group any of
 * them lists). NameServers never talk to each other: one may have missed a failover, or,
 * restarted a moment ago, have heard from only some groups, so the first answer alone could
 * name a dead leader or leave groups out. The lookup answers once every NameServer has
 * answered, or `answerGraceMs` after the first that knows the topic, whichever comes first, so
 * a slow NameServer delays it by the grace at most (and a lookup ends by the calls' deadline
 * in any case). "Not found" is the answer only once every NameServer has answered, and the
 * lookup fails (a RaftmqError) only when none answered at all.
 *
 * Answers, "not found" included, are cached for `cacheTtlMs` (1 s) in a cache of at most
 * `cacheEntriesMax` topics (oldest evicted first); concurrent lookups of one topic share one
 * round of calls. Failures are not cached.
 */
import { type Clock, systemClock } from '../common/clock';
import { GrpcStatus, RaftmqError } from '../common/errors';
import { componentLogger, type Logger } from '../common/logger';
import { intInRange, isString, type OptionSpec, resolveOptions } from '../common/options';
import { checkNamesrvAddresses, NameServerChannels } from './namesrv-channels';
import { routeFromWire } from './namesrv-wire';
import { mergeRoutes } from './route-merge';
import type { TopicRoute } from './route-types';

/** Tunables of a {@link NameServerLookup}. */
export interface NameServerLookupOptions {
  cacheTtlMs: number;
  cacheEntriesMax: number;
  /** Deadline of each GetRoute call. */
  callTimeoutMs: number;
  /** How long after the first NameServer that knows a topic the others are waited for. */
  answerGraceMs: number;
  /** Directory of the `.proto` files; empty: `$RAFTMQ_PROTO_DIR`, else the package's. */
  protoDir: string;
}

export const NAMESERVER_LOOKUP_DEFAULTS: Readonly<NameServerLookupOptions> = Object.freeze({
  cacheTtlMs: 1_000,
  cacheEntriesMax: 4_096,
  callTimeoutMs: 2_000,
  answerGraceMs: 100,
  protoDir: '',
});

const OPTION_SPEC: OptionSpec<NameServerLookupOptions> = {
  cacheTtlMs: intInRange(0, 600_000),
  cacheEntriesMax: intInRange(1, 1_000_000),
  callTimeoutMs: intInRange(10, 600_000),
  answerGraceMs: intInRange(0, 600_000),
  protoDir: isString(false),
};

/** Checks the options and fills defaults; throws INVALID_OPTION naming the field. */
export function resolveNameServerLookupOptions(
  input?: Partial<NameServerLookupOptions>,
): Readonly<NameServerLookupOptions> {
  return resolveOptions('nameServerLookup', NAMESERVER_LOOKUP_DEFAULTS, OPTION_SPEC, input);
}

interface CacheEntry {
  readonly route: TopicRoute | undefined;
  readonly expiresMs: number;
}

/** Asks the NameServers for routes; see the file comment. */
export class NameServerLookup {
  readonly options: Readonly<NameServerLookupOptions>;
  private readonly addresses: readonly string[];
  private readonly channels: NameServerChannels;
  private readonly log: Logger;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly pending = new Map<string, Promise<TopicRoute | undefined>>();
  private closed = false;
  private callCount = 0;

  constructor(
    addresses: readonly string[],
    logger: Logger,
    options: Partial<NameServerLookupOptions> = {},
    private readonly clock: Clock = systemClock,
  ) {
    this.options = resolveNameServerLookupOptions(options);
    this.addresses = checkNamesrvAddresses(addresses, 'nameServerLookup.addresses');
    this.channels = new NameServerChannels(this.addresses, this.options.protoDir);
    this.log = componentLogger(logger, { component: 'namesrv-lookup' });
  }

  /** GetRoute calls made so far (cache hits and shared lookups make none). */
  get calls(): number {
    return this.callCount;
  }

  /** Topics cached right now (expired entries included until evicted). */
  get cacheSize(): number {
    return this.cache.size;
  }

  /**
   * The route of `topic` (the full name, namespace prefix included) across every group, or
   * undefined when no NameServer knows it. Rejects with INVALID_ARGUMENT for a malformed name
   * (as a NameServer says it), TIMEOUT when every call timed out, INTERNAL otherwise.
   */
  route(topic: string): Promise<TopicRoute | undefined> {
    if (this.closed) {
      return Promise.reject(new RaftmqError('INTERNAL', 'NameServerLookup is closed'));
    }
    const nowMs = this.clock.monotonicMs();
    const cached = this.cache.get(topic);
    if (cached !== undefined && cached.expiresMs > nowMs) return Promise.resolve(cached.route);
    const shared = this.pending.get(topic);
    if (shared !== undefined) return shared;
    const lookup = this.ask(topic).then((route) => {
      this.remember(topic, route);
      return route;
    });
    if (this.pending.size < this.options.cacheEntriesMax) {
      this.pending.set(topic, lookup);
      const forget = (): void => {
        this.pending.delete(topic);
      };
      lookup.then(forget, forget);
    }
    return lookup;
  }

  /** Closes the channels; later lookups reject. Idempotent. */
  close(): void {
    this.closed = true;
    this.cache.clear();
    this.channels.close();
  }

  private remember(topic: string, route: TopicRoute | undefined): void {
    if (this.options.cacheTtlMs === 0 || this.closed) return;
    this.cache.delete(topic);
    while (this.cache.size >= this.options.cacheEntriesMax) {
      const oldest = this.cache.keys().next();
      if (oldest.done === true) break;
      this.cache.delete(oldest.value);
    }
    this.cache.set(topic, { route, expiresMs: this.clock.monotonicMs() + this.options.cacheTtlMs });
  }

  /** Asks every NameServer and merges their routes (see the file comment); never hangs. */
  private ask(topic: string): Promise<TopicRoute | undefined> {
    return new Promise((resolve, reject) => {
      // In address order, so that the merge breaks ties the same way whoever answers first.
      const routes: (TopicRoute | undefined)[] = this.addresses.map(() => undefined);
      const errors: unknown[] = [];
      let answeredCount = 0;
      let settledCount = 0;
      let grace: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(grace);
        const route = mergeRoutes(topic, routes);
        if (route !== undefined || answeredCount > 0) resolve(route);
        else reject(this.failure(topic, errors));
      };
      const settle = (): void => {
        settledCount += 1;
        if (settledCount === this.addresses.length) finish();
      };
      this.addresses.forEach((address, i) => {
        this.callCount += 1;
        this.channels
          .call(address, 'GetRoute', { topic }, this.options.callTimeoutMs)
          .then((response) => {
            routes[i] = routeFromWire(topic, response);
            answeredCount += 1;
            if (routes[i] !== undefined && grace === undefined && !done) {
              grace = setTimeout(finish, this.options.answerGraceMs);
              grace.unref();
            }
            settle();
          })
          .catch((err: unknown) => {
            // Not swallowed: counted; the lookup fails with it when no NameServer answers.
            this.log.debug({ address, topic, err }, 'GetRoute failed');
            errors.push(err);
            settle();
          });
      });
    });
  }

  private failure(topic: string, errors: readonly unknown[]): RaftmqError {
    const code = (err: unknown): unknown => (err as { code?: unknown } | null)?.code;
    const cause = new AggregateError(errors, `GetRoute ${topic} failed on every NameServer`);
    if (errors.every((err) => code(err) === GrpcStatus.INVALID_ARGUMENT)) {
      const details = (errors[0] as { details?: unknown } | undefined)?.details;
      const message = typeof details === 'string' ? details : `invalid topic ${topic}`;
      return new RaftmqError('INVALID_ARGUMENT', message, { cause });
    }
    const allTimedOut = errors.every((err) => code(err) === GrpcStatus.DEADLINE_EXCEEDED);
    const message = `no NameServer answered GetRoute ${topic} (${this.addresses.join(', ')})`;
    return new RaftmqError(allTimedOut ? 'TIMEOUT' : 'INTERNAL', message, { cause });
  }
}
