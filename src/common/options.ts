/**
 * Option resolution: every component has an `XOptions` type, frozen defaults and a pure
 * `resolveXOptions()` built from these helpers. Unknown keys and out-of-range values throw an
 * `INVALID_OPTION` error that names the field; defaults use `??`, so an explicit 0 is a value.
 */
import { RaftmqError } from './errors';

/** Checks one field of a resolved options object; throws naming `component.field`. */
export type FieldCheck<T> = (value: T[keyof T], path: string) => void;

export type OptionSpec<T> = { readonly [K in keyof T]: (value: T[K], path: string) => void };

function fail(path: string, message: string): never {
  throw new RaftmqError('INVALID_OPTION', `${path}: ${message}`, { details: { option: path } });
}

/**
 * Merges `input` over `defaults`, rejects unknown keys, runs every field's check and returns a
 * frozen object. `component` prefixes field names in messages (`commitLog.segmentSizeBytes`).
 */
export function resolveOptions<T extends object>(
  component: string,
  defaults: Readonly<T>,
  spec: OptionSpec<T>,
  input: Partial<T> | undefined,
): Readonly<T> {
  const given = input ?? {};
  if (typeof given !== 'object' || given === null) fail(component, 'options must be an object');
  for (const key of Object.keys(given)) {
    if (!Object.prototype.hasOwnProperty.call(defaults, key)) {
      fail(`${component}.${key}`, 'unknown option');
    }
  }
  const out = { ...defaults } as T;
  for (const key of Object.keys(defaults) as (keyof T)[]) {
    const value = (given as Partial<T>)[key];
    if (value !== undefined) out[key] = value;
    spec[key](out[key], `${component}.${String(key)}`);
  }
  return Object.freeze(out);
}

/** An integer within [min, max]. */
export function intInRange(min: number, max: number) {
  return (value: unknown, path: string): void => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      fail(path, `must be an integer, got ${String(value)}`);
    }
    if (value < min || value > max) fail(path, `must be in [${min}, ${max}], got ${value}`);
  };
}

/** A finite number within [min, max]. */
export function numberInRange(min: number, max: number) {
  return (value: unknown, path: string): void => {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      fail(path, `must be a finite number, got ${String(value)}`);
    }
    if (value < min || value > max) fail(path, `must be in [${min}, ${max}], got ${value}`);
  };
}

/** One of the listed strings. */
export function oneOf<S extends string>(...allowed: readonly S[]) {
  return (value: unknown, path: string): void => {
    if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
      fail(path, `must be one of ${allowed.join(', ')}, got ${String(value)}`);
    }
  };
}

/** A boolean. */
export function isBoolean(value: unknown, path: string): void {
  if (typeof value !== 'boolean') fail(path, `must be a boolean, got ${String(value)}`);
}

/** A string, optionally non-empty. */
export function isString(nonEmpty = true) {
  return (value: unknown, path: string): void => {
    if (typeof value !== 'string') fail(path, `must be a string, got ${String(value)}`);
    if (nonEmpty && value.length === 0) fail(path, 'must not be empty');
  };
}

/** Accepts anything (for fields whose type the compiler already checks, e.g. callbacks). */
export function anyValue(): void {}

/** Throws INVALID_OPTION naming `path` unless `condition` holds (for cross-field rules). */
export function checkOption(condition: boolean, path: string, message: string): void {
  if (!condition) fail(path, message);
}
