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
  ) {}

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
    let flushing: Promise<unknown>;
    try {
      flushing = this.flush(items);
    } catch {
      // `flush` settles its items itself; a synchronous throw must not stall the queue.
      done();
      return;
    }
    flushing.then(done, done);
  }
}
