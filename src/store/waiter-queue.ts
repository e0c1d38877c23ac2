/**
 * Promises waiting for a log index to reach some state (written, persisted). Waiters are kept
 * in index order, so resolving everything up to an index touches only those resolved.
 */
interface Waiter {
  index: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class WaiterQueue {
  private waiters: Waiter[] = [];
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
      this.head++;
      w.resolve();
    }
    this.compact();
  }

  /** Rejects waiters for `index` and above (their entries were truncated away). */
  rejectFrom(index: number, err: Error): void {
    const live = this.waiters.slice(this.head);
    this.waiters = live.filter((w) => w.index < index);
    this.head = 0;
    for (const w of live) if (w.index >= index) w.reject(err);
  }

  rejectAll(err: Error): void {
    const live = this.waiters.slice(this.head);
    this.waiters = [];
    this.head = 0;
    for (const w of live) w.reject(err);
  }

  size(): number {
    return this.waiters.length - this.head;
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.waiters.length) {
      this.waiters = this.waiters.slice(this.head);
      this.head = 0;
    }
  }
}
