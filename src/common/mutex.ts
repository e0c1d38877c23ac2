/**
 * A promise-chain mutex: `run(fn)` starts `fn` after every earlier `run` has settled. Used for
 * the few structural operations (truncation, retention, checkpoints) that must not interleave.
 */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  private held = 0;

  run<T>(fn: () => Promise<T>): Promise<T> {
    this.held++;
    const result = this.tail.then(fn);
    const settle = (): void => {
      this.held--;
    };
    // The chain continues whether `fn` succeeded or not; `result` carries its outcome to the
    // caller, so nothing is lost by ignoring it on this side.
    this.tail = result.then(settle, settle);
    return result;
  }

  /** True while some `run` is queued or running. */
  isBusy(): boolean {
    return this.held > 0;
  }
}
