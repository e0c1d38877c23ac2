/**
 * Consuming loads of the consume benchmark (consume-bench.ts), each running until stopped:
 *
 * - {@link BatchedPopLoad}: one loop per receiver of a receive (a large batch) followed by one
 *   AckMessage carrying every receipt of that batch (consume-pop-client.ts: the SDK
 *   SimpleConsumer, or raw RocketMQ 5 ReceiveMessage).
 * - {@link PullLoad}: one loop per queue of the SDK PullConsumer reading by offset from the node
 *   the queue is assigned to, starting over at offset 0 at the queue's end (re-reading is the
 *   same work for the broker, so a small backlog serves any duration).
 * - {@link PushLoad}: the official PushConsumer, whose listener counts and returns SUCCESS (the
 *   client then acks each message with its own AckMessage); acknowledged messages are counted
 *   by the broker (admin ConsumerProgress).
 *
 * Every loop is bounded in time and in requests, whatever `stop()` does.
 */
import { ConsumeResult, PushConsumer, type ILogger } from 'rocketmq-client-nodejs';
import type { AdminClient } from '../src/broker/admin-client';
import type { PullConsumer } from '../src/client/pull-consumer';
import type { BatchedReceiver, ReceiveSpec } from './consume-pop-client';

/** A consuming load; see the file comment. */
export interface ConsumeLoad {
  /** Messages the load can consume at most (Infinity when it reads around again). */
  readonly backlog: number;
  /** Messages consumed so far, as the load itself sees them (cheap: polled). */
  seen(): number;
  /** Messages consumed so far as the measurement counts them (acked, or read). */
  count(): Promise<number>;
  /** Request latencies (ms) recorded since the last call. */
  takeLatencies(): number[];
  readonly failedRequests: number;
  readonly firstError: string | undefined;
  /** Stops issuing requests; resolves when those in flight are answered. */
  stop(): Promise<void>;
}

/** A failed request makes its loop wait this long, so a broken cluster is not hammered. */
const FAILED_PAUSE_MS = 20;

export const delayMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** What the loops of a load share: the stop flag, bounds, counters. */
abstract class LoopLoad implements ConsumeLoad {
  protected consumed = 0;
  protected latencies: number[] = [];
  failedRequests = 0;
  firstError: string | undefined;
  private stopped = false;
  private readonly endMs: number;
  private requests = 0;
  private loops: Promise<void>[] = [];

  constructor(
    readonly backlog: number,
    durationMsMax: number,
    private readonly requestsMax: number,
  ) {
    this.endMs = performance.now() + durationMsMax;
  }

  seen(): number {
    return this.consumed;
  }

  count(): Promise<number> {
    return Promise.resolve(this.consumed);
  }

  takeLatencies(): number[] {
    const out = this.latencies;
    this.latencies = [];
    return out;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  protected startLoops(count: number, step: (loop: number) => Promise<void>): void {
    const run = async (loop: number): Promise<void> => {
      while (
        !this.stopped &&
        performance.now() < this.endMs &&
        this.requests < this.requestsMax &&
        this.consumed < this.backlog
      ) {
        this.requests++;
        try {
          await step(loop);
        } catch (err) {
          this.fail(errorText(err));
          await delayMs(FAILED_PAUSE_MS);
        }
      }
    };
    this.loops = Array.from({ length: count }, (_, i) => run(i));
  }

  protected fail(why: string): void {
    this.failedRequests++;
    this.firstError ??= why;
  }
}

/** Receives and acks through batched receivers, one loop each; see the file comment. */
export class BatchedPopLoad extends LoopLoad {
  /** Latency (ms) of each ReceiveMessage that handed out messages, and of each AckMessage. */
  readonly receiveMs: number[] = [];
  readonly ackMs: number[] = [];

  constructor(
    private readonly clients: readonly BatchedReceiver[],
    private readonly spec: ReceiveSpec & { readonly ackEntriesMax: number },
    backlog: number,
    durationMsMax: number,
    requestsMax: number,
  ) {
    super(backlog, durationMsMax, requestsMax);
    this.startLoops(clients.length, (i) => this.cycle(i));
  }

  /** One receive, then its acks; the latency is the whole cycle's. */
  private async cycle(loop: number): Promise<void> {
    const client = this.clients[loop];
    if (client === undefined) throw new Error(`no pop client ${loop}`);
    const startMs = performance.now();
    const got = await client.receive(this.spec);
    if (got.status === 'MESSAGE_NOT_FOUND') return;
    if (got.status !== 'OK') {
      this.fail(`ReceiveMessage: ${got.status}: ${got.statusMessage}`);
      await delayMs(FAILED_PAUSE_MS);
      return;
    }
    const ackStartMs = performance.now();
    this.receiveMs.push(ackStartMs - startMs);
    const max = this.spec.ackEntriesMax;
    for (let i = 0; i < got.receipts.length; i += max) {
      const acked = await client.ack(got.receipts.slice(i, i + max), this.spec.timeoutMs);
      this.consumed += acked.ackedCount;
      if (acked.firstFailure !== undefined) this.fail(`AckMessage: ${acked.firstFailure}`);
    }
    const endMs = performance.now();
    this.ackMs.push(endMs - ackStartMs);
    this.latencies.push(endMs - startMs);
  }
}

/** One queue of a pull load and the node it reads from. */
export interface PullAssignment {
  readonly queueId: number;
  readonly endpoint: string;
}

/** Reads queues by offset with the SDK PullConsumer; see the file comment. */
export class PullLoad extends LoopLoad {
  /** Messages read from each endpoint. */
  readonly byEndpoint = new Map<string, number>();
  private readonly offsets: number[];

  constructor(
    private readonly consumer: PullConsumer,
    private readonly topic: string,
    private readonly assignments: readonly PullAssignment[],
    private readonly countMax: number,
    durationMsMax: number,
    requestsMax: number,
  ) {
    super(Infinity, durationMsMax, requestsMax);
    this.offsets = assignments.map(() => 0);
    this.startLoops(assignments.length, (i) => this.pullOnce(i));
  }

  private async pullOnce(loop: number): Promise<void> {
    const a = this.assignments[loop];
    if (a === undefined) throw new Error(`no pull assignment ${loop}`);
    const offset = this.offsets[loop] ?? 0;
    const startMs = performance.now();
    const got = await this.consumer.pull(this.topic, a.queueId, offset, this.countMax, {
      endpoint: a.endpoint,
      awaitMs: 0,
    });
    this.latencies.push(performance.now() - startMs);
    this.consumed += got.messages.length;
    this.byEndpoint.set(a.endpoint, (this.byEndpoint.get(a.endpoint) ?? 0) + got.messages.length);
    // At the queue's end (nothing new, or past it): read it again from the start.
    const atEnd = got.status === 'NO_NEW_MSG' || got.status === 'OFFSET_ILLEGAL';
    this.offsets[loop] = atEnd ? 0 : got.nextOffset;
  }
}

/** A logger for the official client that prints nothing and counts what it would have. */
export class QuietLogger implements ILogger {
  warnings = 0;
  errors = 0;
  firstError: string | undefined;
  info(): void {}
  debug(): void {}
  close(): void {}
  warn(): void {
    this.warnings++;
  }
  error(...logArgs: unknown[]): void {
    this.errors++;
    this.firstError ??= logArgs.map(String).join(' ').slice(0, 300);
  }
}

/** Settled messages of a consumer group that started at offset 0 of every queue. */
async function settledCount(admin: AdminClient, group: string): Promise<number> {
  const queues = await admin.consumerProgress(group, { timeoutMs: 5_000 });
  // lag = brokerOffset - frontier - (settled above the frontier): what is not settled.
  return queues.reduce((sum, q) => sum + q.brokerOffset - q.lag, 0);
}

/** The official PushConsumer of one group; see the file comment. */
export class PushLoad implements ConsumeLoad {
  readonly failedRequests = 0;
  private consumed = 0;
  private shutdown: Promise<void> | undefined;

  private constructor(
    private readonly consumer: PushConsumer,
    private readonly admin: AdminClient,
    private readonly group: string,
    readonly backlog: number,
    private readonly logger: QuietLogger,
    counter: { onConsume: () => void },
  ) {
    counter.onConsume = () => {
      this.consumed++;
    };
  }

  /** Starts a consumer of `group` on `topic` through the access point `endpoint`. */
  static async start(spec: {
    readonly endpoint: string;
    readonly group: string;
    readonly topic: string;
    readonly backlog: number;
    readonly admin: AdminClient;
    readonly logger: QuietLogger;
  }): Promise<PushLoad> {
    const counter = { onConsume: (): void => {} };
    const consumer = new PushConsumer({
      endpoints: spec.endpoint,
      namespace: '',
      consumerGroup: spec.group,
      subscriptions: new Map([[spec.topic, '*']]),
      logger: spec.logger,
      messageListener: {
        consume() {
          counter.onConsume();
          return ConsumeResult.SUCCESS;
        },
      },
    });
    await consumer.startup();
    return new PushLoad(consumer, spec.admin, spec.group, spec.backlog, spec.logger, counter);
  }

  get firstError(): string | undefined {
    return this.logger.firstError;
  }

  seen(): number {
    return this.consumed;
  }

  count(): Promise<number> {
    return settledCount(this.admin, this.group);
  }

  takeLatencies(): number[] {
    return [];
  }

  /**
   * Stops receiving at once (the client drops its queues before its first await), and returns
   * without waiting for the rest of the shutdown: it waits out the consumer's long poll. Await
   * {@link shutdownDone} before the process ends.
   */
  stop(): Promise<void> {
    this.shutdown ??= this.consumer.shutdown();
    return Promise.resolve();
  }

  /** The whole shutdown, bounded by `timeoutMs` (its error is the caller's to report). */
  async shutdownDone(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not shut down in ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.shutdown ?? this.consumer.shutdown(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
