/**
 * Reading the command line of the `raftmq` admin tool: `parseAdminCommandLine` turns argv into
 * one checked command (admin-cli-commands.ts), or the help to print, or a usage error with the
 * usage of the command it concerns. Pure: no IO, so the whole grammar is testable without a
 * broker.
 *
 * Command words may come first or between flags (`raftmq --json topic list` and
 * `raftmq topic list --json` are the same); each command accepts only its own flags and the
 * common ones, and refuses unknown flags, missing or extra arguments and bad values, naming
 * the flag.
 */
import { isRaftmqError, RaftmqError } from '../common/errors';
import {
  ADMIN_CLI_TIMEOUT_MS_DEFAULT,
  COMMANDS,
  COMMON_FLAGS,
  FAMILIES,
  type AdminCommand,
  type CommandSpec,
  type CommonArgs,
} from './admin-cli-commands';
import { formatFlagHelp, parseFlags, type FlagSpecs } from './flags';

/** The result of reading a command line. */
export type AdminCommandLine =
  | { readonly kind: 'run'; readonly command: AdminCommand }
  | { readonly kind: 'help'; readonly text: string }
  | { readonly kind: 'usage-error'; readonly message: string; readonly usage: string };

/** The help of the whole tool. */
export function adminUsage(): string {
  const lines = COMMANDS.map((c) => {
    const head = `  ${[c.name, ...c.args].join(' ')}`;
    return `${head.padEnd(24)}${c.summary}`;
  });
  return [
    'usage: raftmq <command> [arguments] [flags]',
    '',
    'Administers a raftmq broker group over its admin protocol (proto/admin.proto).',
    '',
    'commands:',
    ...lines,
    '',
    'flags of every command:',
    formatFlagHelp(COMMON_FLAGS),
    '',
    'raftmq <command> --help describes one command. Exit codes: 0 done, 1 the broker refused',
    'or could not be reached (one line "error CODE: message" on stderr), 2 bad usage.',
    '',
  ].join('\n');
}

/** The help of one command, or of a family (`topic`) when `name` is its first word. */
export function commandUsage(name: string): string {
  const spec = COMMANDS.find((c) => c.name === name);
  if (spec === undefined) {
    const members = COMMANDS.filter((c) => c.name.startsWith(`${name} `));
    if (members.length === 0) return adminUsage();
    return [
      `usage: raftmq ${name} <${members.map((c) => c.name.slice(name.length + 1)).join('|')}> ...`,
      '',
      ...members.map((c) => `  raftmq ${synopsisOf(c, false)}\n      ${c.summary}`),
      '',
      'Every command also takes --endpoint host:port, --timeout-ms ms, --json and --help;',
      `raftmq ${name} <command> --help describes one command.`,
      '',
    ].join('\n');
  }
  return [
    `usage: raftmq ${synopsisOf(spec)}`,
    '',
    `${spec.summary[0]?.toUpperCase() ?? ''}${spec.summary.slice(1)}.`,
    '',
    formatFlagHelp({ ...spec.flags, ...COMMON_FLAGS }),
    '',
  ].join('\n');
}

function synopsisOf(c: CommandSpec, withCommon = true): string {
  const common = withCommon ? '[--endpoint host:port] [--timeout-ms ms] [--json]' : '';
  return [c.name, ...c.args, c.synopsis, common].filter((s) => s !== '').join(' ');
}

/**
 * Flags that take a value, over every command (to tell flag values from command words). Taken
 * from every command's flags, so none is missed: `--group` of `group progress` was, and
 * `raftmq --group billing group progress` read `billing` as the command.
 */
const VALUE_FLAGS = new Set(
  [COMMON_FLAGS, ...COMMANDS.map((c) => c.flags)].flatMap((specs: FlagSpecs) =>
    Object.entries(specs).flatMap(([n, s]) => (s.type === 'boolean' ? [] : [n])),
  ),
);

/** Indexes of the arguments that are not flags or flag values, up to `--`. */
function wordIndexes(argv: readonly string[]): number[] {
  const words: number[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') break;
    if (arg.startsWith('-') && arg !== '-') {
      const next = argv[i + 1];
      if (arg.includes('=') || next === undefined) continue;
      if (VALUE_FLAGS.has(arg.slice(2)) || next === 'true' || next === 'false') i++;
      continue;
    }
    words.push(i);
  }
  return words;
}

function usageError(message: string): RaftmqError {
  return new RaftmqError('INVALID_OPTION', message);
}

/** Reads `argv` (without node and script); see the file comment. */
export function parseAdminCommandLine(argv: readonly string[]): AdminCommandLine {
  const words = wordIndexes(argv);
  const first = words[0] === undefined ? undefined : argv[words[0]];
  const wantsHelp = argv.some((a) => a === '--help' || a === '-h' || a === '--help=true');
  if (first === undefined || first === 'help') {
    const topic = words.slice(1, 3).map((i) => argv[i] as string);
    if (first === 'help' || wantsHelp) {
      return {
        kind: 'help',
        text: topic.length === 0 ? adminUsage() : commandUsage(topic.join(' ')),
      };
    }
    return { kind: 'usage-error', message: 'no command given', usage: adminUsage() };
  }
  const family = (FAMILIES as readonly string[]).includes(first) ? first : undefined;
  const second = words[1] === undefined ? undefined : argv[words[1]];
  const name = family === undefined ? first : `${first} ${second ?? ''}`;
  const spec = COMMANDS.find((c) => c.name === name);
  if (spec === undefined) {
    if (family !== undefined) {
      if (second === undefined && wantsHelp) return { kind: 'help', text: commandUsage(family) };
      const message =
        second === undefined ? `${family} needs a command` : `unknown command ${name}`;
      return { kind: 'usage-error', message, usage: commandUsage(family) };
    }
    return { kind: 'usage-error', message: `unknown command ${first}`, usage: adminUsage() };
  }
  const used = new Set(words.slice(0, family === undefined ? 1 : 2));
  const rest = argv.filter((_a, i) => !used.has(i));
  const usage = commandUsage(spec.name);
  try {
    return buildCommand(spec, rest, usage);
  } catch (err) {
    if (!isRaftmqError(err, 'INVALID_OPTION')) throw err;
    return { kind: 'usage-error', message: err.message, usage };
  }
}

function buildCommand(spec: CommandSpec, rest: readonly string[], usage: string): AdminCommandLine {
  const { flags, positionals } = parseFlags(rest, { ...spec.flags, ...COMMON_FLAGS });
  if (flags.help === true) return { kind: 'help', text: usage };
  const missing = spec.args[positionals.length];
  if (missing !== undefined) throw usageError(`${missing} is required`);
  const extra = positionals[spec.args.length];
  if (extra !== undefined) throw usageError(`unexpected argument ${JSON.stringify(extra)}`);
  const common: CommonArgs = {
    endpoint: flags.endpoint,
    timeoutMs: flags['timeout-ms'] ?? ADMIN_CLI_TIMEOUT_MS_DEFAULT,
    json: flags.json ?? false,
  };
  return { kind: 'run', command: spec.build(flags, positionals, common) };
}
