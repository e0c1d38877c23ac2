/**
 * What the MessagingService (and the Fetch service beside it) lets in at once: client calls in
 * flight, long-polling reads in flight, and bytes of read answers not yet taken by their
 * clients. Each check is O(1) and refuses with BUSY (RocketMQ TOO_MANY_REQUESTS, retryable)
 * rather than queueing: a client that floods the broker with calls, or reads and never takes
 * the answers, gets refusals instead of growing the leader's memory until it loses leadership.
 */
import { strict as assert } from 'node:assert';
import { RaftmqError } from '../common/errors';

/** A count of calls in flight with a bound; entering above it is refused. */
export class CallGate {
  private inFlightCount = 0;

  constructor(
    /** For error messages: what is counted. */
    readonly name: string,
    readonly inFlightCountMax: number,
  ) {
    assert(Number.isSafeInteger(inFlightCountMax) && inFlightCountMax >= 1);
  }

  get count(): number {
    return this.inFlightCount;
  }

  /** True when one more call would be refused. */
  get full(): boolean {
    return this.inFlightCount >= this.inFlightCountMax;
  }

  /** Takes a place; false (nothing taken) when the gate is full. */
  tryEnter(): boolean {
    if (this.inFlightCount >= this.inFlightCountMax) return false;
    this.inFlightCount++;
    return true;
  }

  /** Gives back a place taken by `tryEnter`. */
  leave(): void {
    assert(this.inFlightCount > 0, `${this.name}: leave without enter`);
    this.inFlightCount--;
  }

  /** The BUSY error of a refused call. */
  busy(): RaftmqError {
    return new RaftmqError(
      'BUSY',
      `the broker has ${this.inFlightCount} ${this.name} in flight (at most ` +
        `${this.inFlightCountMax}); retry after a short backoff`,
    );
  }
}

/**
 * Bytes of read answers held by the service until their clients take them: reserved before a
 * read of the store, resized to what the answer holds once it is built, released when its
 * call has ended (written out, reset, or cancelled).
 */
export class AnswerBytesBudget {
  private heldBytes = 0;

  constructor(readonly bytesMax: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 1);
  }

  get held(): number {
    return this.heldBytes;
  }

  /** A hold of nothing yet, for one call; release it when the call ends. */
  hold(): AnswerHold {
    return new AnswerHold(this, (delta) => {
      this.heldBytes += delta;
      assert(this.heldBytes >= 0, 'answer bytes held went below zero');
    });
  }

  /** Throws BUSY when `bytes` more would exceed the bound. */
  check(bytes: number): void {
    if (this.heldBytes + bytes > this.bytesMax) {
      throw new RaftmqError(
        'BUSY',
        `the broker holds ${this.heldBytes} bytes of answers its clients have not taken yet ` +
          `(at most ${this.bytesMax}); retry after a short backoff`,
      );
    }
  }
}

/** One call's share of an {@link AnswerBytesBudget}. */
export class AnswerHold {
  private bytes = 0;
  private released = false;

  constructor(
    private readonly budget: AnswerBytesBudget,
    private readonly change: (deltaBytes: number) => void,
  ) {}

  get heldBytes(): number {
    return this.bytes;
  }

  /**
   * Reserves `bytes` before a read (a hold that already has as much keeps it); throws BUSY,
   * taking nothing, when the budget has not that much left.
   */
  reserve(bytes: number): void {
    if (this.released || bytes <= this.bytes) return;
    this.budget.check(bytes - this.bytes);
    this.set(bytes);
  }

  /** Holds exactly `bytes` (what the built answer holds; may exceed what was reserved). */
  set(bytes: number): void {
    if (this.released) return;
    this.change(bytes - this.bytes);
    this.bytes = bytes;
  }

  /** Gives everything back; later calls change nothing. */
  release(): void {
    if (this.released) return;
    this.set(0);
    this.released = true;
  }
}

/** The bounds of one service instance. */
export interface CallAdmission {
  /** Calls other than long-polling reads and Telemetry streams. */
  readonly calls: CallGate;
  /** PullMessage, ReceiveMessage, FetchQueue and ReceiveStored. */
  readonly polls: CallGate;
  readonly answerBytes: AnswerBytesBudget;
}

export function createCallAdmission(options: {
  readonly callsInFlightMax: number;
  readonly pollsInFlightMax: number;
  readonly answerBytesMax: number;
}): CallAdmission {
  return {
    calls: new CallGate('calls', options.callsInFlightMax),
    polls: new CallGate('long-polling reads', options.pollsInFlightMax),
    answerBytes: new AnswerBytesBudget(options.answerBytesMax),
  };
}

/**
 * What a handler receives in place of a request left undecoded because its gate was full when
 * it came (messaging-service.ts wraps the decoders): it answers BUSY.
 */
export const UNDECODED_BUSY: unique symbol = Symbol('undecoded: the service was busy');

/** The BUSY error of a request left undecoded ({@link UNDECODED_BUSY}). */
export function undecodedBusy(): RaftmqError {
  return new RaftmqError(
    'BUSY',
    'the broker had too many calls in flight to read this request; retry after a short backoff',
  );
}
