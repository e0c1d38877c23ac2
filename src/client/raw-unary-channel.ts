/**
 * Unary gRPC calls to one endpoint over a Node.js HTTP/2 session of raftmq's own
 * (`common/raw-grpc.ts`), for the producer's SendMessage: grpc-js's own work per call was about
 * half of a producer's CPU per 128-message send (docs/performance.md). The session is opened on
 * the first call, shared by every call after it, and opened again after it is lost or the server
 * sent a GOAWAY. A failed connection attempt fails the calls that waited for it with
 * UNAVAILABLE (the producer retries with its own delay). The session holds the process only
 * while calls are in flight.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import {
  RawGrpcSession,
  type RawSessionOptions,
  type RawUnaryRequest,
  type RawUnaryResult,
} from '../common/raw-grpc';

export class RawUnaryChannel {
  private session: RawGrpcSession | null = null;
  private connecting: Promise<RawGrpcSession | Error> | null = null;
  private abandonConnect: (() => void) | null = null;
  private closed = false;
  private callsInFlight = 0;

  constructor(
    /** `host:port`. */
    readonly address: string,
    private readonly options: RawSessionOptions,
  ) {}

  /**
   * One call, ended within `request.timeoutMs` and by `deadlineMs` (epoch ms), whichever comes
   * first, connecting included; never rejects: a failure is a result with the status that
   * ended it.
   */
  async call(
    request: RawUnaryRequest,
    deadlineMs = Number.POSITIVE_INFINITY,
  ): Promise<RawUnaryResult> {
    this.callsInFlight += 1;
    try {
      return await this.callOnce(request, deadlineMs);
    } finally {
      this.callsInFlight -= 1;
    }
  }

  /** True when no call is in flight (closing the channel would end none). */
  get idle(): boolean {
    return this.callsInFlight === 0;
  }

  private async callOnce(request: RawUnaryRequest, deadlineMs: number): Promise<RawUnaryResult> {
    const untilMs = Math.min(deadlineMs, Date.now() + request.timeoutMs);
    const session = await this.readyBefore(untilMs);
    if (session === undefined) return deadlineExceeded('no connection');
    if (session instanceof Error) {
      return {
        ok: false,
        end: { code: GrpcStatus.UNAVAILABLE, details: `${this.address}: ${session.message}` },
      };
    }
    const timeoutMs = untilMs - Date.now();
    if (timeoutMs <= 0) return deadlineExceeded('connected too late');
    return new Promise((resolve) => session.unary({ ...request, timeoutMs }, resolve));
  }

  /** Ends the session and any connection attempt; calls in flight end with UNAVAILABLE. */
  close(): void {
    this.closed = true;
    this.abandonConnect?.();
    this.session?.close();
    this.session = null;
  }

  /** {@link ready}, or undefined once `untilMs` has passed first. */
  private readyBefore(untilMs: number): Promise<RawGrpcSession | Error | undefined> {
    const ready = this.ready();
    const waitMs = untilMs - Date.now();
    if (waitMs <= 0) return Promise.resolve(undefined);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), waitMs);
    });
    return Promise.race([ready, late]).finally(() => clearTimeout(timer));
  }

  /** The session to start a call on: the current one, or one connected now. */
  private ready(): Promise<RawGrpcSession | Error> {
    if (this.closed) return Promise.resolve(new Error('the producer is closed'));
    const current = this.session;
    if (current !== null && current.acceptsCalls) return Promise.resolve(current);
    // Lost, or draining after a GOAWAY (it closes itself once its calls are done).
    this.session = null;
    this.connecting ??= new Promise((resolve) => {
      this.abandonConnect = RawGrpcSession.connect(this.address, this.options, (err, session) => {
        this.connecting = null;
        this.abandonConnect = null;
        if (err !== null || session === null) {
          resolve(err ?? new Error('no session'));
          return;
        }
        if (this.closed) {
          session.close();
          resolve(new Error('the producer is closed'));
          return;
        }
        session.holdOnlyDuringCalls();
        this.session = session;
        resolve(session);
      });
    });
    return this.connecting;
  }
}

function deadlineExceeded(why: string): RawUnaryResult {
  return {
    ok: false,
    end: { code: GrpcStatus.DEADLINE_EXCEEDED, details: `${why} within the call's deadline` },
  };
}
