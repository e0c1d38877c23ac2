/**
 * Server-side renewal of auto-renewing deliveries (contract §5.6, top-10 #7). A push consumer
 * receives with `auto_renew=true` and no invisible duration, and never renews a lease itself:
 * the server owns the invisibility. RocketMQ's proxy renews such deliveries while the client is
 * alive, about 10 s before each lease runs out, for at most 3 h, and makes a terminated
 * client's deliveries visible again after 1 s. Without it a listener that takes longer than one
 * lease has its message handed out again while it still works on it (consumed twice; in a FIFO
 * group the next consumer takes the head of a message group another still holds).
 *
 * The leader keeps each auto-renewing delivery it handed out, by client id. Every
 * `scanIntervalMs` it takes the deliveries whose lease ends within `renewAheadMs` (soonest
 * first, at most `renewalsPerRoundMax`) and proposes their renewals together: `pop.change`
 * commands, which the command batcher packs into entries of up to 1,024, so a round costs one
 * Raft round, not one per message. A renewal names the delivery's handle, which stays valid
 * (an ack with the original handle still settles), and carries as `renewHandle` the handle of
 * its own previous renewal: a consumer's nack or invisibility change applied in between wins,
 * the renewal is refused, and the delivery is no longer renewed. Rounds run one at a time.
 *
 * Renewal of a delivery stops when:
 * - it is acknowledged, nacked or given a new invisibility, or dead-lettered (the messaging
 *   handlers release it; a renewal refused because the delivery changed releases it too);
 * - its client is no longer alive: no open Telemetry stream to this node and nothing heard from
 *   it (Settings, Heartbeat, a receive, ack or change through this leader) for
 *   `clientSilenceMsMax`. The message comes back when its current lease ends;
 * - it has been renewed for `renewTotalMsMax` (the last lease ends there);
 * - this node stops leading, or leads in another term: the tracking starts empty (a new leader
 *   knows nothing of the old one's clients). The messages come back when the lease the old
 *   leader last gave them ends, at most `invisibleMs` later, and are delivered again;
 * - its client sends NotifyClientTermination: its deliveries are given `releaseInvisibleMs`
 *   (1 s) and come back then, instead of waiting out their lease.
 *
 * Bounded: at most `deliveriesPerClientMax` deliveries per client and `deliveriesMax` in all,
 * counting receives in progress (a receive reserves room for its batch first, and is cut to the
 * room left, or refused with BUSY when there is none). The scan is O(deliveries) per interval.
 */
import type { Clock, Scheduler } from '../common/clock';
import { isRaftmqError, RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { CommandResult } from './broker-command';
import { POP_RENEWER_DEFAULTS, type PopRenewerOptions } from './pop-renewer-options';
import type { PopChangeCommand } from './pop-state';

/** What this node's client registry knows of a client. */
export interface ClientContact {
  /** It has a Telemetry stream open to this node. */
  readonly streamOpen: boolean;
  /** Monotonic ms it was last heard from. */
  readonly lastSeenMs: number;
}

export interface PopRenewerDeps {
  readonly clock: Clock;
  readonly scheduler: Scheduler;
  readonly log: Logger;
  /** The term this node leads in, ready to serve; undefined when it is not such a leader. */
  leaderTerm(): number | undefined;
  /**
   * Proposes the changes together and resolves with their results in order
   * (PopService.changeInvisibleAll); `wakeReceives` when they shorten leases.
   */
  changeAll(
    commands: readonly PopChangeCommand[],
    deadlineMs: number,
    wakeReceives: boolean,
  ): Promise<CommandResult[]>;
  /** The registry's view of a client; undefined when it does not know it. */
  clientContact(clientId: string): ClientContact | undefined;
  /**
   * The applied pop state's record of the delivery `deliveryHandle` at `offset` (PopState
   * `currentRecord`): its latest renewal's handle and when its lease ends; undefined once it
   * is settled or handed out again.
   */
  currentRecord(
    group: string,
    topic: string,
    queueId: number,
    offset: number,
    deliveryHandle: number,
  ): { readonly renewHandle: number; readonly visibleAtMs: number } | undefined;
}

/** One auto-renewing delivery as a receive handed it out. */
export interface RenewableDelivery {
  /** The receipt handle the client got (and acks with). */
  readonly receiptHandle: string;
  readonly queueId: number;
  readonly offset: number;
  /** The delivery's handle id in the pop state. */
  readonly handleId: number;
  /** Wall-clock ms its lease ends (the pop state's visible-at). */
  readonly visibleAtMs: number;
}

interface Lease {
  readonly key: string;
  readonly client: ClientLeases;
  readonly group: string;
  readonly topic: string;
  readonly queueId: number;
  readonly offset: number;
  readonly deliveryHandle: number;
  /** The handle of this renewer's latest renewal; 0 before the first. */
  renewHandle: number;
  /** Wall-clock ms the current lease ends. */
  endMs: number;
  /** Wall-clock ms no lease may go past. */
  readonly untilMs: number;
  /**
   * A round that renewed it failed without an answer (a timeout): its renewal may have been
   * applied all the same, so its handle and end are read back from the pop state first.
   */
  unsure: boolean;
}

interface ClientLeases {
  readonly clientId: string;
  readonly leases: Map<string, Lease>;
  /** Room held by receives in progress. */
  reserved: number;
  /** Monotonic ms of the last request this leader served the client. */
  seenMs: number;
}

/** Room for the deliveries of one receive; `track` or `cancel` it exactly once. */
export interface RenewReservation {
  /** Deliveries the receive may hand out. */
  readonly count: number;
  /** Starts renewing what the receive handed out (at most `count`), and frees the room. */
  track(group: string, topic: string, deliveries: readonly RenewableDelivery[]): void;
  /** Frees the room, renewing nothing (the receive failed or its answer was not sent). */
  cancel(): void;
}

function leaseKey(group: string, topic: string, receiptHandle: string): string {
  return `${group}\0${topic}\0${receiptHandle}`;
}

export class PopRenewer {
  private readonly leases = new Map<string, Lease>();
  private readonly clients = new Map<string, ClientLeases>();
  private reservedTotal = 0;
  private term: number | undefined;
  private round: Promise<void> | undefined;
  private readonly stopScan: () => void;
  private closed = false;

  constructor(
    private readonly deps: PopRenewerDeps,
    readonly options: Readonly<PopRenewerOptions> = POP_RENEWER_DEFAULTS,
  ) {
    this.stopScan = deps.scheduler.every(options.scanIntervalMs, () => void this.runRound());
  }

  /** Deliveries being renewed. */
  get size(): number {
    return this.leases.size;
  }

  /** Deliveries being renewed for `clientId`. */
  countOf(clientId: string): number {
    return this.clients.get(clientId)?.leases.size ?? 0;
  }

  /**
   * Room for up to `wanted` deliveries of `clientId`: as many as its bound and the total bound
   * leave. Throws BUSY when there is none.
   */
  reserve(clientId: string, wanted: number): RenewReservation {
    this.syncTerm();
    const client = this.clientOf(clientId);
    client.seenMs = this.deps.clock.monotonicMs();
    const { deliveriesPerClientMax, deliveriesMax } = this.options;
    const room = Math.min(
      wanted,
      deliveriesPerClientMax - client.leases.size - client.reserved,
      deliveriesMax - this.leases.size - this.reservedTotal,
    );
    if (room <= 0) {
      this.forgetIfIdle(client);
      throw new RaftmqError(
        'BUSY',
        `too many auto-renewed messages in flight (client ${clientId}: ` +
          `${client.leases.size} of ${deliveriesPerClientMax}; all: ${this.leases.size} of ` +
          `${deliveriesMax}); acknowledge some and retry`,
      );
    }
    client.reserved += room;
    this.reservedTotal += room;
    let open = true;
    const free = (): void => {
      if (!open) return;
      open = false;
      client.reserved -= room;
      this.reservedTotal -= room;
    };
    return {
      count: room,
      track: (group, topic, deliveries) => {
        if (!open) return;
        free();
        this.track(client, group, topic, deliveries.slice(0, room));
      },
      cancel: () => {
        free();
        this.forgetIfIdle(client);
      },
    };
  }

  /**
   * Stops renewing the delivery of `receiptHandle` (acknowledged, nacked, changed, or about to be
   * dead-lettered). A round in progress may still renew it: see {@link roundDone}.
   */
  release(group: string, topic: string, receiptHandle: string): void {
    // Called for every acknowledged message: with nothing tracked (Simple consumers renew
    // nothing), no key is built.
    if (this.leases.size === 0) return;
    const lease = this.leases.get(leaseKey(group, topic, receiptHandle));
    if (lease === undefined) return;
    lease.client.seenMs = this.deps.clock.monotonicMs();
    this.drop(lease);
  }

  /** Resolves once the round in progress, if any, has ended (it never rejects). */
  roundDone(): Promise<void> {
    return this.round ?? Promise.resolve();
  }

  /**
   * The client said it terminated (NotifyClientTermination): stops renewing its deliveries and,
   * after a round in progress, gives them `releaseInvisibleMs`. Never rejects: a failure is
   * logged, and those messages come back when their lease ends.
   */
  async terminate(clientId: string): Promise<void> {
    const client = this.clients.get(clientId);
    if (client === undefined) return;
    this.clients.delete(clientId);
    const leases = [...client.leases.values()];
    for (const lease of leases) this.leases.delete(lease.key);
    if (leases.length === 0) return;
    await this.round;
    const nowMs = this.deps.clock.nowMs();
    const current = leases.filter((l) => this.settleUnsure(l));
    const commands = current.map((l) => this.changeOf(l, nowMs, this.options.releaseInvisibleMs));
    try {
      const results = await this.deps.changeAll(
        commands,
        nowMs + this.options.roundTimeoutMs,
        true,
      );
      const released = results.filter((r) => r.ok).length;
      this.deps.log.debug({ clientId, released, tracked: leases.length }, 'client terminated');
    } catch (err) {
      this.deps.log.warn(
        { err, clientId, count: leases.length },
        'releasing a terminated client failed; its messages come back when their lease ends',
      );
    }
  }

  /**
   * Renews the leases that run out within `renewAheadMs` (none while a round is in progress);
   * resolves when done. Never rejects: a failed round is logged and its leases are tried again.
   */
  runRound(): Promise<void> {
    if (this.round !== undefined || this.closed) return this.round ?? Promise.resolve();
    const round = this.renewDue().finally(() => {
      this.round = undefined;
    });
    this.round = round;
    return round;
  }

  /** Stops the scans and forgets every delivery. */
  close(): void {
    this.closed = true;
    this.stopScan();
    this.reset(undefined);
  }

  private async renewDue(): Promise<void> {
    if (!this.syncTerm()) return;
    const nowMs = this.deps.clock.nowMs();
    for (const lease of [...this.leases.values()]) {
      if (lease.unsure && !this.settleUnsure(lease)) this.drop(lease);
    }
    const due = this.dueLeases(nowMs);
    if (due.length === 0) return;
    due.sort((a, b) => a.endMs - b.endMs);
    const batch = due.slice(0, this.options.renewalsPerRoundMax);
    const commands = batch.map((l) =>
      this.changeOf(l, nowMs, Math.min(this.options.invisibleMs, l.untilMs - nowMs)),
    );
    let results: CommandResult[];
    try {
      results = await this.deps.changeAll(commands, nowMs + this.options.roundTimeoutMs, false);
    } catch (err) {
      if (isRaftmqError(err, 'NOT_LEADER')) {
        this.reset(undefined);
        return;
      }
      // A timed-out round may still commit: the next one reads each lease back first, or its
      // renewal would name a superseded handle, be refused, and end renewal while the client
      // still works on the message.
      for (const lease of batch) lease.unsure = true;
      this.deps.log.warn({ err, count: batch.length }, 'lease renewal failed; retried next round');
      return;
    }
    let refused = 0;
    results.forEach((result, i) => {
      const lease = batch[i] as Lease;
      if (result.ok && result.handle !== undefined) {
        // Also when released meanwhile: a termination proposed next must name this renewal.
        lease.renewHandle = result.handle;
        lease.endMs = nowMs + (commands[i] as PopChangeCommand).invisibleMs;
      } else {
        refused += 1;
        if (this.leases.get(lease.key) === lease) this.drop(lease);
      }
    });
    this.deps.log.debug({ renewed: batch.length - refused, refused }, 'leases renewed');
  }

  /** The leases to renew now; drops those of clients gone silent and those at their cap. */
  private dueLeases(nowMs: number): Lease[] {
    const monoMs = this.deps.clock.monotonicMs();
    const due: Lease[] = [];
    for (const client of [...this.clients.values()]) {
      if (!this.isAlive(client, monoMs)) {
        this.deps.log.debug(
          { clientId: client.clientId, count: client.leases.size },
          'client silent; its messages are no longer renewed',
        );
        for (const lease of [...client.leases.values()]) this.drop(lease);
        continue;
      }
      for (const lease of [...client.leases.values()]) {
        if (lease.endMs - nowMs > this.options.renewAheadMs) continue;
        const newEndMs = Math.min(nowMs + this.options.invisibleMs, lease.untilMs);
        if (newEndMs <= Math.max(lease.endMs, nowMs)) this.drop(lease);
        else due.push(lease);
      }
    }
    return due;
  }

  private isAlive(client: ClientLeases, monoMs: number): boolean {
    const silenceMax = this.options.clientSilenceMsMax;
    if (monoMs - client.seenMs <= silenceMax) return true;
    const contact = this.deps.clientContact(client.clientId);
    return (
      contact !== undefined && (contact.streamOpen || monoMs - contact.lastSeenMs <= silenceMax)
    );
  }

  /**
   * Brings an unsure lease (see {@link Lease.unsure}) up to the applied pop state; false when
   * its delivery is no longer current there (settled, or handed out again).
   */
  private settleUnsure(lease: Lease): boolean {
    if (!lease.unsure) return true;
    const r = this.deps.currentRecord(
      lease.group,
      lease.topic,
      lease.queueId,
      lease.offset,
      lease.deliveryHandle,
    );
    if (r === undefined) return false;
    lease.renewHandle = r.renewHandle;
    lease.endMs = r.visibleAtMs;
    lease.unsure = false;
    return true;
  }

  private changeOf(lease: Lease, nowMs: number, invisibleMs: number): PopChangeCommand {
    return {
      op: 'pop.change',
      group: lease.group,
      topic: lease.topic,
      queueId: lease.queueId,
      offset: lease.offset,
      handle: lease.deliveryHandle,
      nowMs,
      invisibleMs,
      renewHandle: lease.renewHandle,
    };
  }

  private track(
    client: ClientLeases,
    group: string,
    topic: string,
    deliveries: readonly RenewableDelivery[],
  ): void {
    // Not leading, or leading in another term, or the client terminated meanwhile: the
    // deliveries keep the lease they have.
    if (!this.syncTerm() || this.clients.get(client.clientId) !== client) {
      this.forgetIfIdle(client);
      return;
    }
    const nowMs = this.deps.clock.nowMs();
    client.seenMs = this.deps.clock.monotonicMs();
    for (const d of deliveries) {
      const key = leaseKey(group, topic, d.receiptHandle);
      const old = this.leases.get(key);
      if (old !== undefined) this.drop(old);
      const lease: Lease = {
        key,
        client,
        group,
        topic,
        queueId: d.queueId,
        offset: d.offset,
        deliveryHandle: d.handleId,
        renewHandle: 0,
        endMs: d.visibleAtMs,
        untilMs: nowMs + this.options.renewTotalMsMax,
        unsure: false,
      };
      this.leases.set(key, lease);
      client.leases.set(key, lease);
    }
    this.forgetIfIdle(client);
  }

  private clientOf(clientId: string): ClientLeases {
    let client = this.clients.get(clientId);
    if (client === undefined) {
      client = { clientId, leases: new Map(), reserved: 0, seenMs: 0 };
      this.clients.set(clientId, client);
    }
    return client;
  }

  private drop(lease: Lease): void {
    this.leases.delete(lease.key);
    lease.client.leases.delete(lease.key);
    this.forgetIfIdle(lease.client);
  }

  private forgetIfIdle(client: ClientLeases): void {
    if (client.leases.size === 0 && client.reserved === 0) {
      if (this.clients.get(client.clientId) === client) this.clients.delete(client.clientId);
    }
  }

  /** True when this node is a ready leader; forgets everything on a change of term or role. */
  private syncTerm(): boolean {
    const term = this.deps.leaderTerm();
    if (term !== this.term) this.reset(term);
    return term !== undefined && !this.closed;
  }

  private reset(term: number | undefined): void {
    if (this.leases.size > 0) {
      this.deps.log.info(
        { count: this.leases.size, term: this.term, newTerm: term },
        'leadership changed; auto-renewed messages come back when their lease ends',
      );
    }
    this.term = term;
    this.leases.clear();
    // Receives in progress keep their room (their reservations free it); they renew nothing.
    this.clients.clear();
  }
}
