/**
 * Time as an injected dependency. Production code asks a {@link Clock}; the simulator supplies
 * one it advances itself, so a run is decided by its seed alone.
 */

export interface Clock {
  /** Wall-clock milliseconds since the epoch (may jump: used for timestamps, never timeouts). */
  nowMs(): number;
  /** Monotonic milliseconds from an arbitrary origin (used for durations and timeouts). */
  monotonicMs(): number;
}

/** The real clock. */
export const systemClock: Clock = Object.freeze({
  nowMs: () => Date.now(),
  monotonicMs: () => performance.now(),
});

/** A clock that moves only when told to; for tests and the simulator. */
export class ManualClock implements Clock {
  private wallMs: number;
  private monoMs = 0;

  constructor(startWallMs = 1_700_000_000_000) {
    this.wallMs = startWallMs;
  }

  nowMs(): number {
    return this.wallMs;
  }

  monotonicMs(): number {
    return this.monoMs;
  }

  /** Moves both clocks forward. */
  advance(ms: number): void {
    this.wallMs += ms;
    this.monoMs += ms;
  }

  /** Moves only the wall clock (a clock jump); monotonic time is unaffected. */
  jumpWall(ms: number): void {
    this.wallMs += ms;
  }
}

/** Runs periodic work; the simulator supplies one driven by its own clock. */
export interface Scheduler {
  /** Calls `fn` every `intervalMs` until the returned function is called. */
  every(intervalMs: number, fn: () => void): () => void;
}

/** Real timers; unref'd so a forgotten store never keeps a process alive. */
export const systemScheduler: Scheduler = Object.freeze({
  every(intervalMs: number, fn: () => void): () => void {
    const timer = setInterval(fn, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  },
});

/** A scheduler that runs nothing by itself; tests call `runDue()` after moving a ManualClock. */
export class ManualScheduler implements Scheduler {
  private readonly tasks = new Set<{ intervalMs: number; nextMs: number; fn: () => void }>();

  constructor(private readonly clock: Clock) {}

  every(intervalMs: number, fn: () => void): () => void {
    const task = { intervalMs, nextMs: this.clock.monotonicMs() + intervalMs, fn };
    this.tasks.add(task);
    return () => this.tasks.delete(task);
  }

  /** Runs every task whose time has come (once each). */
  runDue(): void {
    const now = this.clock.monotonicMs();
    for (const task of [...this.tasks]) {
      if (task.nextMs <= now) {
        task.nextMs = now + task.intervalMs;
        task.fn();
      }
    }
  }
}
