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
