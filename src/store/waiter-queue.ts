/**
 * Promises waiting for a log index to reach some state (written, persisted). Waiters are kept
 * in index order, so resolving everything up to an index touches only those resolved.
 *
 * A settled waiter's slot is emptied at once: a waiter holds its promise's resolving functions
 * and so the promise, and a slot left filled until the next compaction (a thousand rounds
 * later) kept every settled waiter alive for seconds, long enough for V8 to promote it.
 */
interface Waiter {
  index: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class WaiterQueue {
  private waiters: (Waiter | undefined)[] = [];
  private head = 0;

  /** A promise that resolves once `resolveUpTo(i)` is called with i >= index. */
  wait(index: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const w = { index, resolve, reject };
      const tail = this.waiters[this.waiters.length - 1];
      if (!tail || tail.index <= index) {
        this.waiters.push(w);
      } else {
        let i = this.waiters.length;
        while (i > this.head && (this.waiters[i - 1]?.index ?? 0) > index) i--;
        this.waiters.splice(i, 0, w);
      }
    });
  }

  resolveUpTo(index: number): void {
    while (this.head < this.waiters.length) {
      const w = this.waiters[this.head];
      if (!w || w.index > index) break;
      this.waiters[this.head] = undefined;
      this.head++;
      w.resolve();
    }
    this.compact();
  }

  /** Rejects waiters for `index` and above (their entries were truncated away). */
  rejectFrom(index: number, err: Error): void {
    const live = this.live();
    this.waiters = live.filter((w) => w.index < index);
    this.head = 0;
    for (const w of live) if (w.index >= index) w.reject(err);
  }

  rejectAll(err: Error): void {
    const live = this.live();
    this.waiters = [];
    this.head = 0;
    for (const w of live) w.reject(err);
  }

  size(): number {
    return this.waiters.length - this.head;
  }

  /** The waiters not yet settled, in order (only slots before `head` are emptied). */
  private live(): Waiter[] {
    return this.waiters.slice(this.head) as Waiter[];
  }

  private compact(): void {
    if (this.head === this.waiters.length) {
      this.waiters = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.waiters.length) {
      this.waiters = this.waiters.slice(this.head);
      this.head = 0;
    }
  }
}
