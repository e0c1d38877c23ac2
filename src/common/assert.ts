/**
 * Assertions for invariants (programmer errors). They stay on in production and are never
 * caught: a broken invariant in a replicated log must stop the process, not be logged and
 * survived.
 */

export class AssertionFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AssertionFailure';
  }
}

/** Throws {@link AssertionFailure} when `condition` is false. */
export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) {
    throw new AssertionFailure(typeof message === 'function' ? message() : message);
  }
}

/** For the `default` branch of exhaustive switches. */
export function unreachable(value: never, what: string): never {
  throw new AssertionFailure(`unreachable: unexpected ${what} ${String(value)}`);
}
