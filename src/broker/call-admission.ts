/**
 * What the MessagingService (and the Fetch service beside it) lets in at once: client calls in
 * flight, long-polling reads in flight, and bytes of read answers not yet taken by their
 * clients. Each check is O(1) and refuses with BUSY (RocketMQ TOO_MANY_REQUESTS, retryable)
 * rather than queueing: a client that floods the broker with calls, or reads and never takes
 * the answers, gets refusals instead of growing the leader's memory until it loses leadership.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
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
 * call has ended (written out, reset, or cancelled). Bounded in all, and per client id (so
 * that one client that does not read cannot take the whole budget from the others).
 */
export class AnswerBytesBudget {
  private heldBytes = 0;
  private readonly heldByClient = new Map<string, number>();

  constructor(
    readonly bytesMax: number,
    readonly clientBytesMax: number,
  ) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 1);
    assert(Number.isSafeInteger(clientBytesMax) && clientBytesMax >= 1);
  }

  get held(): number {
    return this.heldBytes;
  }

  /** Bytes held for calls of `clientId`. */
  heldBy(clientId: string): number {
    return this.heldByClient.get(clientId) ?? 0;
  }

  /** A hold of nothing yet, for one call of `clientId`; release it when the call ends. */
  hold(clientId: string): AnswerHold {
    return new AnswerHold(this, clientId);
  }

  /** Throws BUSY when `bytes` more for `clientId` would exceed a bound. */
  check(clientId: string, bytes: number): void {
    const clientHeld = this.heldBy(clientId);
    if (this.heldBytes + bytes > this.bytesMax) {
      throw new RaftmqError(
        'BUSY',
        `the broker holds ${this.heldBytes} bytes of answers its clients have not taken yet ` +
          `(at most ${this.bytesMax}); retry after a short backoff`,
      );
    }
    if (clientHeld + bytes > this.clientBytesMax) {
      throw new RaftmqError(
        'BUSY',
        `the broker holds ${clientHeld} bytes of answers this client has not taken yet ` +
          `(at most ${this.clientBytesMax} per client); read them, or retry after a short backoff`,
      );
    }
  }

  /** Adds `deltaBytes` (may be negative) to what `clientId` holds. */
  change(clientId: string, deltaBytes: number): void {
    this.heldBytes += deltaBytes;
    assert(this.heldBytes >= 0, 'answer bytes held went below zero');
    const clientHeld = this.heldBy(clientId) + deltaBytes;
    assert(clientHeld >= 0, "a client's answer bytes went below zero");
    if (clientHeld === 0) this.heldByClient.delete(clientId);
    else this.heldByClient.set(clientId, clientHeld);
  }
}

/** One call's share of an {@link AnswerBytesBudget}. */
export class AnswerHold {
  private bytes = 0;
  private released = false;

  constructor(
    private readonly budget: AnswerBytesBudget,
    private readonly clientId: string,
  ) {}

  get heldBytes(): number {
    return this.bytes;
  }

  /**
   * Reserves `bytes` before a read (a hold that already has as much keeps it); throws BUSY,
   * taking nothing, when the budget (or the client's share) has not that much left.
   */
  reserve(bytes: number): void {
    if (this.released || bytes <= this.bytes) return;
    this.budget.check(this.clientId, bytes - this.bytes);
    this.set(bytes);
  }

  /** Holds exactly `bytes` (what the built answer holds; may exceed what was reserved). */
  set(bytes: number): void {
    if (this.released) return;
    this.budget.change(this.clientId, bytes - this.bytes);
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
  readonly clientAnswerBytesMax: number;
}): CallAdmission {
  return {
    calls: new CallGate('calls', options.callsInFlightMax),
    polls: new CallGate('long-polling reads', options.pollsInFlightMax),
    answerBytes: new AnswerBytesBudget(options.answerBytesMax, options.clientAnswerBytesMax),
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

/** The RPCs (of both services) whose calls take a place among the long-polling reads. */
const POLLING_RPCS: ReadonlySet<string> = new Set([
  'PullMessage',
  'ReceiveMessage',
  'FetchQueue',
  'ReceiveStored',
]);

/** The gate an RPC's calls pass; Telemetry streams have a bound of their own. */
function gateOf(admission: CallAdmission, rpc: string): CallGate | undefined {
  if (rpc === 'Telemetry') return undefined;
  return POLLING_RPCS.has(rpc) ? admission.polls : admission.calls;
}

/**
 * `definition` with each request decoder skipped while its RPC's gate is full: the handler
 * gets UNDECODED_BUSY and answers BUSY, so a flood of calls past the bound costs no decoding
 * (a send's request may be megabytes of messages).
 */
export function gatedDecoding(
  definition: grpc.ServiceDefinition,
  admission: CallAdmission,
): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [rpc, method] of Object.entries(definition)) {
    const gate = gateOf(admission, rpc);
    const decode = method.requestDeserialize;
    out[rpc] =
      gate === undefined
        ? method
        : {
            ...method,
            requestDeserialize: (bytes: Buffer): unknown =>
              gate.full ? UNDECODED_BUSY : decode(bytes),
          };
  }
  return out;
}
