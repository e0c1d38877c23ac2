/**
 * The simulator's event loop: one queue of timed events on one ManualClock, ordered by time and
 * then by the order they were scheduled, so a run is decided by its seed alone.
 *
 * Determinism with promises: the store and the driver are promise-based, and in the simulator
 * every promise settles through microtasks only (the simulated disk and metadata store resolve
 * at once; whatever should take time waits for a simulated timer, which is an event here). After
 * each event the loop yields once to `setImmediate`: Node runs the whole microtask queue, and
 * everything it queues, before the check phase, so when the loop resumes no work of that event
 * is left and the next event starts from a quiescent state. Nothing in the simulated code uses
 * real timers or IO, so the order of everything is fixed by the order of events.
 *
 * Timers belong to an owner, one per incarnation of a node: a killed owner's events are dropped
 * (a crashed process runs nothing), a paused owner's events wait until the pause ends.
 */
import { assert } from '../common/assert';
import type { ManualClock, Scheduler } from '../common/clock';
import { SimDiskError } from './sim-disk';
import type { SimTrace } from './sim-trace';

interface SimEvent {
  readonly atMs: number;
  readonly seq: number;
  readonly owner: SimTimers | null;
  readonly fn: () => void;
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

/** A binary min-heap of events. */
class EventHeap {
  private readonly items: SimEvent[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): SimEvent | undefined {
    return this.items[0];
  }

  push(event: SimEvent): void {
    const items = this.items;
    items.push(event);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = items[parent] as SimEvent;
      if (!before(event, p)) break;
      items[i] = p;
      i = parent;
    }
    items[i] = event;
  }

  pop(): SimEvent | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const l = items[left] as SimEvent;
      const r = items[right];
      const child = r !== undefined && before(r, l) ? right : left;
      const c = items[child] as SimEvent;
      if (!before(c, last)) break;
      items[i] = c;
      i = child;
    }
    items[i] = last;
    return top;
  }
}

/** Yields to the event loop once: every queued microtask (and what it queues) runs first. */
export function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The event loop; see the file comment. */
export class SimLoop {
  private readonly heap = new EventHeap();
  private seq = 0;
  /** Events run so far. */
  eventCount = 0;
  /** Receives what an event threw; the cluster records it as a violation. */
  onEventError: (err: unknown) => void = (err) => {
    throw err;
  };

  constructor(
    readonly clock: ManualClock,
    readonly trace: SimTrace,
  ) {}

  nowMs(): number {
    return this.clock.monotonicMs();
  }

  /** Runs `fn` at `atMs` (not before now), after every event already scheduled for then. */
  at(atMs: number, fn: () => void, owner: SimTimers | null = null): void {
    assert(Number.isFinite(atMs), 'sim loop: event time must be finite');
    this.seq += 1;
    this.heap.push({ atMs: Math.max(atMs, this.nowMs()), seq: this.seq, owner, fn });
  }

  after(delayMs: number, fn: () => void, owner: SimTimers | null = null): void {
    this.at(this.nowMs() + delayMs, fn, owner);
  }

  /**
   * Runs events up to `endMs` (then sets the clock to it), draining microtasks after each.
   * `afterEvent` runs after each drained event; returning false stops the run early.
   * Returns 'done', 'stopped' (by `afterEvent`) or 'bounded' (`eventsMax` events ran first).
   */
  async runUntil(
    endMs: number,
    afterEvent: () => boolean,
    eventsMax: number,
  ): Promise<'done' | 'stopped' | 'bounded'> {
    // Work the caller started since the last run (a proposal, a restart) settles first.
    await drainMicrotasks();
    for (let n = 0; n < eventsMax; n++) {
      const next = this.heap.peek();
      if (next === undefined || next.atMs > endMs) {
        this.advanceTo(endMs);
        return 'done';
      }
      this.heap.pop();
      this.advanceTo(next.atMs);
      const owner = next.owner;
      if (owner !== null && owner.killed) continue;
      if (owner !== null && owner.pausedUntilMs > next.atMs) {
        this.seq += 1;
        this.heap.push({ ...next, atMs: owner.pausedUntilMs, seq: this.seq });
        continue;
      }
      this.eventCount += 1;
      try {
        next.fn();
      } catch (err) {
        // A node threw inside an event (a broken invariant): report it with the run's seed.
        this.onEventError(err);
      }
      await drainMicrotasks();
      if (!afterEvent()) return 'stopped';
    }
    return 'bounded';
  }

  private advanceTo(atMs: number): void {
    const now = this.nowMs();
    if (atMs > now) this.clock.advance(atMs - now);
  }
}

/**
 * The timers of one incarnation of a node: a {@link Scheduler} for the store and the driver,
 * and `sleep` for simulated IO latency. `kill()` (a crash) drops every timer and fails every
 * sleep; `pauseUntil()` holds them.
 */
export class SimTimers implements Scheduler {
  killed = false;
  pausedUntilMs = 0;
  private readonly sleepers = new Set<(err: Error) => void>();

  constructor(private readonly loop: SimLoop) {}

  every(intervalMs: number, fn: () => void): () => void {
    assert(intervalMs > 0, 'sim timers: interval must be positive');
    let cancelled = false;
    const fire = (): void => {
      if (cancelled) return;
      fn();
      if (!cancelled) this.loop.after(intervalMs, fire, this);
    };
    this.loop.after(intervalMs, fire, this);
    return () => {
      cancelled = true;
    };
  }

  /** Resolves after `delayMs` of simulated time (later if paused); rejects if killed. */
  sleep(delayMs: number): Promise<void> {
    if (this.killed) return Promise.reject(crashedError());
    return new Promise((resolve, reject) => {
      this.sleepers.add(reject);
      this.loop.after(
        delayMs,
        () => {
          this.sleepers.delete(reject);
          resolve();
        },
        this,
      );
    });
  }

  pauseUntil(untilMs: number): void {
    this.pausedUntilMs = Math.max(this.pausedUntilMs, untilMs);
  }

  kill(): void {
    this.killed = true;
    const sleepers = [...this.sleepers];
    this.sleepers.clear();
    for (const reject of sleepers) reject(crashedError());
  }
}

function crashedError(): Error {
  return new SimDiskError('EIO', 'process crashed');
}
