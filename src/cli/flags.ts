/**
 * A small command-line flag parser for raftmq's binaries (no dependency). Flags are declared
 * once with a type and a description; `--name value` and `--name=value` are accepted, a boolean
 * flag alone means true and also takes an explicit `true`/`false`, `--` ends the flags. Unknown,
 * repeated, valueless and ill-typed flags are refused with an INVALID_OPTION error naming the
 * flag (`--queues: must be an integer...`).
 */
import { RaftmqError } from '../common/errors';

export type FlagType = 'string' | 'boolean' | 'int';

/** One flag's declaration. */
export interface FlagSpec {
  readonly type: FlagType;
  /** One line for `--help`. */
  readonly description: string;
  /** Placeholder of the value in `--help` (`file`, `host:port`). */
  readonly valueName?: string;
  /** Bounds of an `int` flag (inclusive). */
  readonly min?: number;
  readonly max?: number;
}

/** Declarations by flag name, without the leading dashes (`node-id`). */
export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

type ValueOf<S extends FlagSpec> = S['type'] extends 'boolean'
  ? boolean
  : S['type'] extends 'int'
    ? number
    : string;

/** The flags given (absent ones are undefined). */
export type FlagValues<S extends FlagSpecs> = { readonly [K in keyof S]?: ValueOf<S[K]> };

export interface ParsedArgs<S extends FlagSpecs> {
  readonly flags: FlagValues<S>;
  /** Arguments that are not flags, in order (everything after `--` included). */
  readonly positionals: readonly string[];
}

/** Throws the INVALID_OPTION error of `flag` (with or without its dashes). */
export function flagError(flag: string, message: string): never {
  const name = flag.startsWith('-') ? flag : `--${flag}`;
  throw new RaftmqError('INVALID_OPTION', `${name}: ${message}`, { details: { option: name } });
}

/**
 * Refuses the first of `positionals`, if any: a binary that takes none names the stray word as
 * given (`--auto-create-topics yes` leaves `yes`, which is not a flag and is shown without dashes).
 */
export function refusePositionals(positionals: readonly string[]): void {
  const extra = positionals[0];
  if (extra === undefined) return;
  throw new RaftmqError('INVALID_OPTION', `unexpected argument ${JSON.stringify(extra)}`, {
    details: { option: extra },
  });
}

/** Parses `argv` (without the node and script paths) against `specs`. */
export function parseFlags<S extends FlagSpecs>(argv: readonly string[], specs: S): ParsedArgs<S> {
  const flags: Record<string, string | number | boolean> = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === '-h' && hasSpec(specs, 'help')) {
      set(flags, 'help', true);
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    if (!arg.startsWith('--')) flagError(arg, 'unknown flag (flags start with --)');
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const spec = hasSpec(specs, name) ? specs[name] : undefined;
    if (spec === undefined) flagError(`--${name}`, 'unknown flag');
    let text: string | undefined = eq === -1 ? undefined : arg.slice(eq + 1);
    if (text === undefined) {
      const next = argv[i + 1];
      if (spec.type === 'boolean') {
        if (next === 'true' || next === 'false') {
          text = next;
          i++;
        } else {
          text = 'true';
        }
      } else {
        if (next === undefined || (next.startsWith('--') && next.length > 2)) {
          flagError(
            name,
            `needs a value${spec.valueName === undefined ? '' : ` (${spec.valueName})`}`,
          );
        }
        text = next;
        i++;
      }
    }
    set(flags, name, convert(name, spec, text));
  }
  return { flags: flags as FlagValues<S>, positionals };
}

function hasSpec(specs: FlagSpecs, name: string): boolean {
  return Object.prototype.hasOwnProperty.call(specs, name);
}

function set(
  flags: Record<string, string | number | boolean>,
  name: string,
  value: string | number | boolean,
): void {
  if (Object.prototype.hasOwnProperty.call(flags, name)) flagError(name, 'given more than once');
  flags[name] = value;
}

function convert(name: string, spec: FlagSpec, text: string): string | number | boolean {
  switch (spec.type) {
    case 'boolean':
      if (text !== 'true' && text !== 'false')
        flagError(name, `must be true or false, got ${JSON.stringify(text)}`);
      return text === 'true';
    case 'int': {
      const min = spec.min ?? Number.MIN_SAFE_INTEGER;
      const max = spec.max ?? Number.MAX_SAFE_INTEGER;
      const value = /^-?[0-9]+$/.test(text) ? Number(text) : Number.NaN;
      if (!Number.isSafeInteger(value) || value < min || value > max) {
        flagError(name, `must be an integer in [${min}, ${max}], got ${JSON.stringify(text)}`);
      }
      return value;
    }
    case 'string':
      if (text.length === 0) flagError(name, 'must not be empty');
      return text;
  }
}

/** Splits a comma-separated flag value; empty items are refused naming the flag. */
export function splitList(value: string, flag: string): string[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s.length === 0))
    flagError(flag, `has an empty item in ${JSON.stringify(value)}`);
  return items;
}

/** The `--help` lines of `specs`, one flag per line, aligned. */
export function formatFlagHelp(specs: FlagSpecs): string {
  const heads = Object.entries(specs).map(([name, spec]) => {
    const value = spec.type === 'boolean' ? '' : ` <${spec.valueName ?? spec.type}>`;
    return [`  --${name}${value}`, spec.description] as const;
  });
  const width = Math.max(0, ...heads.map(([head]) => head.length)) + 2;
  return heads.map(([head, text]) => `${head.padEnd(width)}${text}`).join('\n');
}
