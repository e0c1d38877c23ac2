/**
 * Group commit for the leader's proposers (SendBatcher, CommandBatcher): items submitted while
 * the proposer is busy are handed over together. A flush starts on the next turn of the event
 * loop after an item arrives, so everything submitted in one turn goes together; and at most
 * `inFlightMax` flushes are outstanding, so whatever arrives while they are in flight waits and
 * goes out as one group when one of them ends.
 *
 * Why the bound: a client that acknowledges or sends one message per call (the official
 * clients do) spreads its calls over many turns; unbounded, each became an entry of its own,
 * and each entry costs a Raft round on three nodes (appends, acknowledgements, a metadata
 * write on each). Bounded, a burst waits at most for the rounds in flight and shares the next.
 */

import { RaftmqError } from '../common/errors';

/** What a queued item needs for {@link takeLive}. */
export interface Expiring {
  /** Past this (the proposer's clock), the submitter has given up: the item is not proposed. */
  readonly deadlineMs: number;
  readonly reject: (err: Error) => void;
}

/**
 * The items of a group still worth proposing. The others are refused with TIMEOUT: their
 * caller already gave up, and proposing them anyway would apply an effect nobody waits for (a
 * receive would hide messages from every consumer for its invisibility; a send the client
 * then retries would be stored twice). They were never proposed, so nothing of them is stored.
 */
export function takeLive<T extends Expiring>(items: readonly T[], nowMs: number): T[] {
  const live: T[] = [];
  for (const item of items) {
    if (item.deadlineMs > nowMs) {
      live.push(item);
    } else {
      item.reject(
        new RaftmqError('TIMEOUT', 'the request waited past its deadline and was not proposed'),
      );
    }
  }
  return live;
}

/** `propose()`, with a synchronous throw turned into a rejection the caller handles. */
export function proposeSafely<R>(propose: () => Promise<R>): Promise<R> {
  try {
    return propose();
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

export class GroupCommitQueue<T> {
  private queue: T[] = [];
  private scheduled = false;
  private inFlight = 0;

  /**
   * `flush` gets each group, in submission order, and settles every item itself; its promise
   * only tells when the group is done (a rejection is treated like a resolution).
   */
  constructor(
    private readonly flush: (items: T[]) => Promise<unknown>,
    readonly inFlightMax: number,
  ) {
    if (!(Number.isSafeInteger(inFlightMax) && inFlightMax >= 1)) {
      throw new RaftmqError('INVALID_OPTION', 'proposalsInFlightMax must be at least 1', {
        details: { option: 'proposalsInFlightMax' },
      });
    }
  }

  /** Items waiting for a flush. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Flushes running. */
  get flushing(): number {
    return this.inFlight;
  }

  push(item: T): void {
    this.queue.push(item);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || this.inFlight >= this.inFlightMax) return;
    this.scheduled = true;
    setImmediate(() => this.run());
  }

  private run(): void {
    this.scheduled = false;
    if (this.queue.length === 0 || this.inFlight >= this.inFlightMax) return;
    const items = this.queue;
    this.queue = [];
    this.inFlight += 1;
    const done = (): void => {
      this.inFlight -= 1;
      this.schedule();
    };
    // `flush` settles its items itself and never throws (the batchers turn a throwing proposer
    // into a rejection with `proposeSafely`); a throw here is a bug, left to end the process.
    this.flush(items).then(done, done);
  }
}
