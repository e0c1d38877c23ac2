/**
 * Long-poll waiters on queues: a reader that found nothing waits here until a message lands in
 * its queue (at an offset it asked for), its time runs out or it gives up. The state machine
 * marks queues it appended to and calls `notifyAll` once per applied batch, so waking costs
 * nothing per message. Bounded: beyond `waitersMax` a wait is refused with BUSY.
 */
import { RaftmqError } from '../common/errors';

interface Waiter {
  readonly offset: number;
  readonly finish: (found: boolean) => void;
}

export class QueueWaiters {
  private readonly byQueue = new Map<string, Map<number, Waiter>>();
  private readonly touchedQueues = new Set<string>();
  private count = 0;
  private nextId = 1;
  private closed = false;

  constructor(private readonly waitersMax: number) {}

  get size(): number {
    return this.count;
  }

  /**
   * Resolves true once `hasReached()` holds after an append to the queue, false after
   * `timeoutMs` or when `signal` aborts. The caller checks the queue first; this only waits.
   */
  wait(
    topic: string,
    queueId: number,
    offset: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    if (this.closed || timeoutMs <= 0 || signal?.aborted === true) return Promise.resolve(false);
    if (this.count >= this.waitersMax) {
      return Promise.reject(
        new RaftmqError('BUSY', `too many long-poll waiters (${this.waitersMax})`),
      );
    }
    const key = `${topic}\0${queueId}`;
    let waiters = this.byQueue.get(key);
    if (waiters === undefined) {
      waiters = new Map();
      this.byQueue.set(key, waiters);
    }
    const queueWaiters = waiters;
    const id = this.nextId++;
    this.count++;
    return new Promise<boolean>((resolve) => {
      const onAbort = (): void => finish(false);
      const timer = setTimeout(() => finish(false), timeoutMs);
      timer.unref();
      const finish = (found: boolean): void => {
        if (!queueWaiters.delete(id)) return;
        this.count--;
        if (queueWaiters.size === 0 && this.byQueue.get(key) === queueWaiters) {
          this.byQueue.delete(key);
        }
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(found);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      queueWaiters.set(id, { offset, finish });
    });
  }

  /** Marks a queue appended to since the last `notifyAll`. */
  touched(topic: string, queueId: number): void {
    if (this.count > 0) this.touchedQueues.add(`${topic}\0${queueId}`);
  }

  /** Wakes waiters of touched queues whose offset is now below the queue's end. */
  notifyAll(maxOffsetOf: (topic: string, queueId: number) => number): void {
    if (this.touchedQueues.size === 0) return;
    for (const key of this.touchedQueues) {
      const waiters = this.byQueue.get(key);
      if (waiters === undefined) continue;
      const sep = key.lastIndexOf('\0');
      const max = maxOffsetOf(key.slice(0, sep), Number(key.slice(sep + 1)));
      for (const w of [...waiters.values()]) if (w.offset < max) w.finish(true);
    }
    this.touchedQueues.clear();
  }

  /** Ends every wait (false) and refuses new ones. */
  closeAll(): void {
    this.closed = true;
    for (const waiters of [...this.byQueue.values()]) {
      for (const w of [...waiters.values()]) w.finish(false);
    }
  }
}
