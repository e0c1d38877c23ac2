/**
 * The commands of the `raftmq` admin tool: their flags, arguments and help lines, and how each
 * turns its flags into one checked {@link AdminCommand}. Pure: no IO. Reading a command line
 * (which command, help, usage errors) is admin-cli-parse.ts.
 */
import type { GroupInput, UpdateTopicInput, CreateTopicInput } from '../broker/admin-client';
import { MAX_DELIVERY_ATTEMPTS_MAX, QUEUE_COUNT_MAX } from '../broker/broker-command';
import type { MessageType, TopicPerm } from '../broker/broker-types';
import { MESSAGE_TYPES } from '../store/message-format';
import { flagError, splitList, type FlagSpecs } from './flags';

/** Deadline of each call when `--timeout-ms` is absent (the admin client's default). */
export const ADMIN_CLI_TIMEOUT_MS_DEFAULT = 10_000;
/** Longest `--timeout-ms` accepted (a broker honours at most 300 s of it). */
export const ADMIN_CLI_TIMEOUT_MS_MAX = 3_600_000;

/** Flags every command takes. */
export const COMMON_FLAGS = {
  endpoint: {
    type: 'string',
    valueName: 'host:port',
    description: "a broker's client endpoint (default: first broker of ./data)",
  },
  'timeout-ms': {
    type: 'int',
    min: 1,
    max: ADMIN_CLI_TIMEOUT_MS_MAX,
    valueName: 'ms',
    description: `deadline of the call (${ADMIN_CLI_TIMEOUT_MS_DEFAULT})`,
  },
  json: { type: 'boolean', description: 'print the answer as JSON' },
  help: { type: 'boolean', description: 'print this help' },
} as const satisfies FlagSpecs;

const PERMS: readonly TopicPerm[] = ['READ', 'WRITE', 'READ_WRITE'];

/** The topic flags; `create` gives their defaults, `update` keeps the fields not given. */
function topicFlags(absent: (createDefault: string) => string) {
  return {
    queues: {
      type: 'int',
      min: 1,
      max: QUEUE_COUNT_MAX,
      valueName: 'n',
      description: `queue count, 1..${QUEUE_COUNT_MAX}${absent('')}`,
    },
    perm: {
      type: 'string',
      valueName: PERMS.join('|'),
      description: `permission${absent('READ_WRITE')}`,
    },
    types: {
      type: 'string',
      valueName: MESSAGE_TYPES.join(','),
      description: `message types the topic accepts${absent('NORMAL')}`,
    },
  } as const satisfies FlagSpecs;
}

/** The group flags, as {@link topicFlags}. */
function groupFlags(absent: (createDefault: string) => string) {
  return {
    'max-delivery-attempts': {
      type: 'int',
      min: 1,
      max: MAX_DELIVERY_ATTEMPTS_MAX,
      valueName: 'n',
      description: `deliveries before %DLQ%<group>, 1..${MAX_DELIVERY_ATTEMPTS_MAX}${absent('17')}`,
    },
    fifo: {
      type: 'boolean',
      description: `deliver one message of a message group at a time${absent('false')}`,
    },
  } as const satisfies FlagSpecs;
}

const onCreate = (createDefault: string): string =>
  createDefault === '' ? ' (required)' : ` (${createDefault})`;
const onUpdate = (): string => ' (unchanged when absent)';
export const TOPIC_CREATE_FLAGS = topicFlags(onCreate);
const TOPIC_UPDATE_FLAGS = topicFlags(onUpdate);
export const GROUP_CREATE_FLAGS = groupFlags(onCreate);
const GROUP_UPDATE_FLAGS = groupFlags(onUpdate);

export const TRANSFER_FLAGS = {
  to: { type: 'string', valueName: 'node-id', description: 'the node to hand leadership to' },
} as const satisfies FlagSpecs;

/** What every command carries besides its own arguments. */
export interface CommonArgs {
  /** Undefined: take the first broker of ./data. */
  readonly endpoint: string | undefined;
  readonly timeoutMs: number;
  readonly json: boolean;
}

/** One checked command. */
export type AdminCommand = CommonArgs &
  (
    | { readonly name: 'status' }
    | { readonly name: 'topic create'; readonly topic: CreateTopicInput }
    | { readonly name: 'topic update'; readonly topic: UpdateTopicInput }
    | { readonly name: 'topic delete'; readonly topicName: string }
    | { readonly name: 'topic list' }
    | { readonly name: 'group create'; readonly group: GroupInput }
    | { readonly name: 'group update'; readonly group: GroupInput }
    | { readonly name: 'group delete'; readonly groupName: string }
    | { readonly name: 'group list' }
    | { readonly name: 'group progress'; readonly groupName: string }
    | { readonly name: 'leader transfer'; readonly nodeId: string }
  );

export type AdminCommandName = AdminCommand['name'];

/** Flag values as `parseFlags` gives them, by flag name. */
export type Flags = Record<string, string | number | boolean | undefined>;

/** One command: how it is written and how it is built. */
export interface CommandSpec {
  readonly name: AdminCommandName;
  /** Positional arguments, by their placeholder. */
  readonly args: readonly string[];
  /** The command's own flags in the synopsis (`--queues N`). */
  readonly synopsis: string;
  readonly summary: string;
  readonly flags: FlagSpecs;
  /** Builds the command from its flags and arguments; throws INVALID_OPTION naming a flag. */
  readonly build: (flags: Flags, args: readonly string[], common: CommonArgs) => AdminCommand;
}

const NO_FLAGS = {} as const satisfies FlagSpecs;
const PROGRESS_FLAGS = {
  group: { type: 'string', valueName: 'NAME', description: 'one consumer group (default: every)' },
} as const satisfies FlagSpecs;

/** Every command, in the order of the help. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'status',
    args: [],
    synopsis: '',
    summary: 'show every node of the group: role, term, leader, log/commit/apply index',
    flags: NO_FLAGS,
    build: (_f, _a, c) => ({ ...c, name: 'status' }),
  },
  {
    name: 'topic create',
    args: ['NAME'],
    synopsis: `--queues N [--perm ${PERMS.join('|')}] [--types NORMAL,FIFO,...]`,
    summary: 'create a topic',
    flags: TOPIC_CREATE_FLAGS,
    build: (f, [name], c) => {
      if (f.queues === undefined) flagError('queues', 'is required');
      const topic = { ...topicFields(f, name as string), queueCount: f.queues as number };
      return { ...c, name: 'topic create', topic };
    },
  },
  {
    name: 'topic update',
    args: ['NAME'],
    synopsis: `[--queues N] [--perm ${PERMS.join('|')}] [--types NORMAL,FIFO,...]`,
    summary: 'change the given fields of a topic (the queue count may only grow)',
    flags: TOPIC_UPDATE_FLAGS,
    build: (f, [name], c) => {
      if (f.queues === undefined && f.perm === undefined && f.types === undefined) {
        flagError('queues', 'nothing to change: give --queues, --perm or --types');
      }
      return { ...c, name: 'topic update', topic: topicFields(f, name as string) };
    },
  },
  {
    name: 'topic delete',
    args: ['NAME'],
    synopsis: '',
    summary: 'delete a topic',
    flags: NO_FLAGS,
    build: (_f, [name], c) => ({ ...c, name: 'topic delete', topicName: name as string }),
  },
  {
    name: 'topic list',
    args: [],
    synopsis: '',
    summary: 'list the topics of the group',
    flags: NO_FLAGS,
    build: (_f, _a, c) => ({ ...c, name: 'topic list' }),
  },
  {
    name: 'group create',
    args: ['NAME'],
    synopsis: '[--max-delivery-attempts N] [--fifo]',
    summary: 'create a consumer group',
    flags: GROUP_CREATE_FLAGS,
    build: (f, [name], c) => ({ ...c, name: 'group create', group: groupFields(f, name) }),
  },
  {
    name: 'group update',
    args: ['NAME'],
    synopsis: '[--max-delivery-attempts N] [--fifo true|false]',
    summary: 'change the given fields of a consumer group',
    flags: GROUP_UPDATE_FLAGS,
    build: (f, [name], c) => {
      if (f['max-delivery-attempts'] === undefined && f.fifo === undefined) {
        flagError('max-delivery-attempts', 'nothing to change: give it or --fifo');
      }
      return { ...c, name: 'group update', group: groupFields(f, name) };
    },
  },
  {
    name: 'group delete',
    args: ['NAME'],
    synopsis: '',
    summary: 'delete a consumer group',
    flags: NO_FLAGS,
    build: (_f, [name], c) => ({ ...c, name: 'group delete', groupName: name as string }),
  },
  {
    name: 'group list',
    args: [],
    synopsis: '',
    summary: 'list the consumer groups of the group',
    flags: NO_FLAGS,
    build: (_f, _a, c) => ({ ...c, name: 'group list' }),
  },
  {
    name: 'group progress',
    args: [],
    synopsis: '[--group NAME]',
    summary: 'pop consumption per group and queue: broker offset, acked frontier, in flight, lag',
    flags: PROGRESS_FLAGS,
    build: (f, _a, c) => ({
      ...c,
      name: 'group progress',
      groupName: typeof f.group === 'string' ? f.group : '',
    }),
  },
  {
    name: 'leader transfer',
    args: [],
    synopsis: '--to NODE_ID',
    summary: 'hand leadership to the node --to names; answers once it leads',
    flags: TRANSFER_FLAGS,
    build: (f, _a, c) => {
      if (typeof f.to !== 'string') flagError('to', 'is required');
      return { ...c, name: 'leader transfer', nodeId: f.to };
    },
  },
];

/** The first words of the commands that have sub-commands. */
export const FAMILIES = ['topic', 'group', 'leader'] as const;

/** The topic fields the flags give (the flag specs make `queues` a number). */
function topicFields(f: Flags, name: string): UpdateTopicInput {
  const queueCount = f.queues as number | undefined;
  const perm = f.perm === undefined ? undefined : parsePerm(f.perm as string);
  const messageTypes = f.types === undefined ? undefined : parseTypes(f.types as string);
  return {
    name,
    ...(queueCount === undefined ? {} : { queueCount }),
    ...(perm === undefined ? {} : { perm }),
    ...(messageTypes === undefined ? {} : { messageTypes }),
  };
}

/** The group fields the flags give. */
function groupFields(f: Flags, name: string | undefined): GroupInput {
  const attempts = f['max-delivery-attempts'] as number | undefined;
  const fifo = f.fifo as boolean | undefined;
  return {
    name: name as string,
    ...(attempts === undefined ? {} : { maxDeliveryAttempts: attempts }),
    ...(fifo === undefined ? {} : { fifo }),
  };
}

function parsePerm(text: string): TopicPerm {
  const perm = text.toUpperCase() as TopicPerm;
  if (!PERMS.includes(perm)) flagError('perm', `must be one of ${PERMS.join(', ')}, got ${text}`);
  return perm;
}

function parseTypes(text: string): MessageType[] {
  const types = splitList(text, 'types').map((t) => t.toUpperCase() as MessageType);
  for (const t of types) {
    if (!MESSAGE_TYPES.includes(t)) {
      flagError('types', `${t} is not one of ${MESSAGE_TYPES.join(', ')}`);
    }
  }
  if (new Set(types).size !== types.length) flagError('types', 'lists a type twice');
  return types;
}
