/**
 * The clients a broker node knows, by `x-mq-client-id`: their type and group, their last
 * Settings, when they were last heard from and their open Telemetry streams.
 *
 * Settings re-sends (contract §4.2): the Node client arms its wait for the Settings reply only
 * after it fetched every route, so a reply that arrives while a later route query is in flight
 * is lost, and its next chance would be five minutes later. The registry therefore asks each
 * stream to send its Settings again `settingsResendDelaysMs` after a Settings arrives (about 1 s
 * and 5 s) and again on every Heartbeat. Extra Settings are harmless: clients re-apply them.
 *
 * Bounded: at most `clientCountMax` clients (a new one beyond that is refused with BUSY after
 * idle ones are dropped) and `streamsPerClientMax` streams each. A client is dropped once it is
 * silent for `idleExpiryMs` (RocketMQ: 120 s) and has no open stream; an open stream is the
 * connection's liveness. Timers are unref'd and all cleared by `close()`.
 */
import { assert } from '../common/assert';
import { type Clock, type Scheduler, systemClock, systemScheduler } from '../common/clock';
import { RaftmqError } from '../common/errors';
import { checkOption, intInRange, type OptionSpec, resolveOptions } from '../common/options';
import type { WireSettings } from './rmq-wire';

export interface ClientRegistryOptions {
  clientCountMax: number;
  streamsPerClientMax: number;
  idleExpiryMs: number;
  /** How often idle clients are looked for. */
  expiryScanIntervalMs: number;
  /** Delays after a Settings at which each stream re-sends its Settings reply. */
  settingsResendDelaysMs: readonly number[];
}

export const CLIENT_REGISTRY_DEFAULTS: Readonly<ClientRegistryOptions> = Object.freeze({
  clientCountMax: 10_000,
  streamsPerClientMax: 16,
  idleExpiryMs: 120_000,
  expiryScanIntervalMs: 10_000,
  settingsResendDelaysMs: Object.freeze([1_000, 5_000]),
});

const RESEND_COUNT_MAX = 8;

const OPTION_SPEC: OptionSpec<ClientRegistryOptions> = {
  clientCountMax: intInRange(1, 10_000_000),
  streamsPerClientMax: intInRange(1, 1024),
  idleExpiryMs: intInRange(1_000, 86_400_000),
  expiryScanIntervalMs: intInRange(100, 3_600_000),
  settingsResendDelaysMs: (value, path) => {
    checkOption(
      Array.isArray(value) && value.length <= RESEND_COUNT_MAX,
      path,
      `must be an array of at most ${RESEND_COUNT_MAX} delays`,
    );
    value.forEach((ms, i) => intInRange(1, 600_000)(ms, `${path}[${i}]`));
  },
};

/** Checks `input` over the defaults; throws INVALID_OPTION naming a bad or unknown field. */
export function resolveClientRegistryOptions(
  input?: Partial<ClientRegistryOptions>,
): Readonly<ClientRegistryOptions> {
  return resolveOptions('clientRegistry', CLIENT_REGISTRY_DEFAULTS, OPTION_SPEC, input);
}

/** One-shot timers (an interface so tests can run them by hand). */
export interface OneShotTimers {
  /** Calls `fn` once after `delayMs`, unless the returned cancel is called first. */
  after(delayMs: number, fn: () => void): () => void;
}

/** Real timers, unref'd so the registry never keeps a process alive. */
export const systemTimers: OneShotTimers = Object.freeze({
  after(delayMs: number, fn: () => void): () => void {
    const timer = setTimeout(fn, delayMs);
    timer.unref();
    return () => clearTimeout(timer);
  },
});

/** A Telemetry stream as the registry sees it. */
export interface TelemetryPeer {
  /** Sends the client's Settings reply again (built from the latest Settings). */
  resendSettings(): void;
}

/** What a client told about itself (in Settings or a Heartbeat). */
export interface ClientInfo {
  readonly clientType: string;
  /** Broker name of the consumer group; undefined for producers. */
  readonly group: string | undefined;
  readonly namespace: string;
  /** Its latest Settings, when it sent any. */
  readonly settings?: WireSettings | undefined;
}

/** A client as `get()` and `list()` report it. */
export interface ClientSnapshot extends ClientInfo {
  readonly clientId: string;
  /** Monotonic ms of the last Settings, Heartbeat or stream event. */
  readonly lastSeenMs: number;
  readonly streamCount: number;
}

interface ClientRecord {
  info: ClientInfo;
  lastSeenMs: number;
  /** Each open stream with the cancels of its pending re-sends. */
  readonly streams: Map<TelemetryPeer, (() => void)[]>;
}

export class ClientRegistry {
  private readonly clients = new Map<string, ClientRecord>();
  private readonly stopScan: () => void;
  private closed = false;

  constructor(
    readonly options: Readonly<ClientRegistryOptions> = CLIENT_REGISTRY_DEFAULTS,
    private readonly clock: Clock = systemClock,
    private readonly timers: OneShotTimers = systemTimers,
    scheduler: Scheduler = systemScheduler,
  ) {
    this.stopScan = scheduler.every(options.expiryScanIntervalMs, () => this.expireIdle());
  }

  get size(): number {
    return this.clients.size;
  }

  get(clientId: string): ClientSnapshot | undefined {
    const r = this.clients.get(clientId);
    return r === undefined ? undefined : snapshot(clientId, r);
  }

  list(): ClientSnapshot[] {
    return [...this.clients].map(([id, r]) => snapshot(id, r));
  }

  /**
   * A Settings arrived on `stream`: records the client and the stream and schedules the
   * stream's re-sends (replacing any still pending). Throws BUSY when the registry or the
   * client's stream set is full.
   */
  onSettings(clientId: string, info: ClientInfo, stream: TelemetryPeer): void {
    const record = this.touchOrAdd(clientId, info);
    let cancels = record.streams.get(stream);
    if (cancels === undefined) {
      if (record.streams.size >= this.options.streamsPerClientMax) {
        throw new RaftmqError(
          'BUSY',
          `client ${clientId} has ${record.streams.size} Telemetry streams open; at most ` +
            `${this.options.streamsPerClientMax}`,
        );
      }
      cancels = [];
      record.streams.set(stream, cancels);
    }
    for (const cancel of cancels.splice(0)) cancel();
    for (const delayMs of this.options.settingsResendDelaysMs) {
      cancels.push(this.timers.after(delayMs, () => this.resend(clientId, stream)));
    }
  }

  /**
   * A Heartbeat arrived: records the client (creating it if unknown) and asks each of its open
   * streams to re-send Settings. Throws BUSY when a new client does not fit.
   */
  onHeartbeat(clientId: string, info: Omit<ClientInfo, 'settings'>): void {
    const record = this.touchOrAdd(clientId, info);
    for (const stream of record.streams.keys()) stream.resendSettings();
  }

  /** A stream ended (half-close, cancel or error): forgets it and its pending re-sends. */
  detachStream(clientId: string, stream: TelemetryPeer): void {
    const record = this.clients.get(clientId);
    const cancels = record?.streams.get(stream);
    if (record === undefined || cancels === undefined) return;
    for (const cancel of cancels) cancel();
    record.streams.delete(stream);
    record.lastSeenMs = this.clock.monotonicMs();
  }

  /** Forgets a client (NotifyClientTermination); its streams get no more re-sends. */
  unregister(clientId: string): boolean {
    const record = this.clients.get(clientId);
    if (record === undefined) return false;
    for (const cancels of record.streams.values()) for (const cancel of cancels) cancel();
    return this.clients.delete(clientId);
  }

  /** Drops clients silent for `idleExpiryMs` that have no open stream; returns their ids. */
  expireIdle(): string[] {
    const nowMs = this.clock.monotonicMs();
    const expired: string[] = [];
    for (const [id, r] of this.clients) {
      if (r.streams.size === 0 && nowMs - r.lastSeenMs > this.options.idleExpiryMs) {
        this.clients.delete(id);
        expired.push(id);
      }
    }
    return expired;
  }

  /** Cancels every timer and forgets every client. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopScan();
    for (const id of [...this.clients.keys()]) this.unregister(id);
  }

  private touchOrAdd(clientId: string, info: ClientInfo): ClientRecord {
    assert(!this.closed, 'client registry used after close');
    const nowMs = this.clock.monotonicMs();
    let record = this.clients.get(clientId);
    if (record === undefined) {
      if (this.clients.size >= this.options.clientCountMax) this.expireIdle();
      if (this.clients.size >= this.options.clientCountMax) {
        throw new RaftmqError(
          'BUSY',
          `the broker serves ${this.clients.size} clients; at most ${this.options.clientCountMax}`,
        );
      }
      record = { info, lastSeenMs: nowMs, streams: new Map() };
      this.clients.set(clientId, record);
    }
    record.info = { ...info, settings: info.settings ?? record.info.settings };
    record.lastSeenMs = nowMs;
    return record;
  }

  private resend(clientId: string, stream: TelemetryPeer): void {
    const cancels = this.clients.get(clientId)?.streams.get(stream);
    if (cancels === undefined) return;
    stream.resendSettings();
  }
}

function snapshot(clientId: string, r: ClientRecord): ClientSnapshot {
  return { clientId, ...r.info, lastSeenMs: r.lastSeenMs, streamCount: r.streams.size };
}
