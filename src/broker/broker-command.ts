/**
 * Broker commands: the Raft entries that are not messages. Topic and group configuration and
 * consumer offset commits go through the log like messages do, so every node applies the same
 * changes in the same order and a new leader has them all (DLedger mode copies them from master
 * to slave every 10 s instead, and loses recent ones on failover).
 *
 * Payload: kind byte 2, then the commands as UTF-8 JSON (an array). Configuration changes are
 * rare and small; JSON keeps them readable in a log dump. Acknowledgements are not rare: a run
 * of `pop.ack` commands of one group and topic travels as one `pop.acks` element
 * (`{op, group, topic, acks: [queueId, offset, handle, ...]}`, a fifth of the JSON), and
 * decodes back to the same commands. Every field is checked on decode, and again by the state
 * machine on apply, because a payload from the log is input like any other.
 *
 * Name rules follow RocketMQ: topics and groups match `^[%|a-zA-Z0-9_-]+$`, at most 127
 * characters (RocketMQ's limit), and may not use the reserved prefixes unless the broker itself
 * creates them (retry and dead-letter topics).
 */
import { RaftmqError } from '../common/errors';
import {
  RESERVED_TOPIC_NAMES,
  RESERVED_TOPIC_PREFIXES,
  RESOURCE_NAME_LENGTH_MAX,
  RESOURCE_NAME_PATTERN,
} from '../common/resource-names';
import { MESSAGE_TYPES, type MessageType } from '../store/message-format';
import type { GroupConfig, TopicConfig, TopicPerm } from './broker-types';
import type { PopAckCommand, PopCommand, PopGrant } from './pop-state';

export const PAYLOAD_KIND_COMMANDS = 2;

export const TOPIC_NAME_LENGTH_MAX = RESOURCE_NAME_LENGTH_MAX;
export const QUEUE_COUNT_MAX = 1024;
export const MAX_DELIVERY_ATTEMPTS_MAX = 1000;
/** Commands in one entry, at most. */
export const COMMANDS_PER_ENTRY_MAX = 4096;
const PERMS: readonly TopicPerm[] = ['READ', 'WRITE', 'READ_WRITE'];

export type BrokerCommand =
  | { readonly op: 'topic.put'; readonly topic: TopicConfig; readonly mode: PutMode }
  | { readonly op: 'topic.delete'; readonly name: string }
  | { readonly op: 'group.put'; readonly group: GroupConfig; readonly mode: PutMode }
  | { readonly op: 'group.delete'; readonly name: string }
  | {
      readonly op: 'offset.commit';
      readonly group: string;
      readonly topic: string;
      readonly queueId: number;
      readonly offset: number;
    }
  | PopCommand;

/**
 * `create`: fails if it exists; `update`: fails if it does not; `ensure`: creates when absent,
 * else keeps what exists (auto-creation racing with itself).
 */
export type PutMode = 'create' | 'update' | 'ensure';

/** The outcome of one applied command, the same on every node. */
export type CommandResult =
  | {
      readonly ok: true;
      /** What a `pop.receive` handed out. */
      readonly grants?: readonly PopGrant[];
      /** The new receipt handle of a `pop.change`. */
      readonly handle?: number;
    }
  | {
      readonly ok: false;
      readonly code:
        | 'TOPIC_EXISTS'
        | 'TOPIC_NOT_FOUND'
        | 'GROUP_NOT_FOUND'
        | 'INVALID_ARGUMENT'
        | 'INVALID_RECEIPT_HANDLE';
      readonly message: string;
    };

/** Throws ILLEGAL_TOPIC unless `name` is a legal topic name (`internal` allows reserved ones). */
export function checkTopicName(name: unknown, internal = false): asserts name is string {
  checkName(name, 'ILLEGAL_TOPIC', 'topic');
  if (!internal && RESERVED_TOPIC_PREFIXES.some((p) => name.startsWith(p))) {
    throw new RaftmqError('ILLEGAL_TOPIC', `topic ${JSON.stringify(name)} uses a reserved prefix`);
  }
  if (!internal && RESERVED_TOPIC_NAMES.has(name)) {
    throw new RaftmqError(
      'ILLEGAL_TOPIC',
      `topic ${JSON.stringify(name)} is a RocketMQ system topic`,
    );
  }
}

/** Throws ILLEGAL_CONSUMER_GROUP unless `name` is a legal group name. */
export function checkGroupName(name: unknown): asserts name is string {
  checkName(name, 'ILLEGAL_CONSUMER_GROUP', 'consumer group');
}

function checkName(
  name: unknown,
  code: 'ILLEGAL_TOPIC' | 'ILLEGAL_CONSUMER_GROUP',
  what: string,
): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new RaftmqError(code, `${what} name is empty`);
  }
  if (name.length > TOPIC_NAME_LENGTH_MAX) {
    throw new RaftmqError(code, `${what} name is longer than ${TOPIC_NAME_LENGTH_MAX} characters`);
  }
  if (!RESOURCE_NAME_PATTERN.test(name)) {
    throw new RaftmqError(
      code,
      `${what} name ${JSON.stringify(name)} has characters outside [%|a-zA-Z0-9_-]`,
    );
  }
}

/** Checks a topic configuration; throws ILLEGAL_TOPIC or INVALID_ARGUMENT naming the field. */
export function checkTopicConfig(t: unknown, internal = false): asserts t is TopicConfig {
  const o = asObject(t, 'topic');
  checkTopicName(o.name, internal);
  if (
    !Number.isSafeInteger(o.queueCount) ||
    (o.queueCount as number) < 1 ||
    (o.queueCount as number) > QUEUE_COUNT_MAX
  ) {
    throw bad(`topic.queueCount must be an integer in [1, ${QUEUE_COUNT_MAX}]`);
  }
  if (!PERMS.includes(o.perm as TopicPerm)) throw bad(`topic.perm must be one of ${PERMS.join()}`);
  const types = o.messageTypes;
  if (
    !Array.isArray(types) ||
    types.length === 0 ||
    types.length > MESSAGE_TYPES.length ||
    !types.every((x) => MESSAGE_TYPES.includes(x as MessageType)) ||
    new Set(types).size !== types.length
  ) {
    throw bad(`topic.messageTypes must be distinct values of ${MESSAGE_TYPES.join()}`);
  }
}

/** Checks a group configuration; throws ILLEGAL_CONSUMER_GROUP or INVALID_ARGUMENT. */
export function checkGroupConfig(g: unknown): asserts g is GroupConfig {
  const o = asObject(g, 'group');
  checkGroupName(o.name);
  const attempts = o.maxDeliveryAttempts;
  if (
    !Number.isSafeInteger(attempts) ||
    (attempts as number) < 1 ||
    (attempts as number) > MAX_DELIVERY_ATTEMPTS_MAX
  ) {
    throw bad(`group.maxDeliveryAttempts must be an integer in [1, ${MAX_DELIVERY_ATTEMPTS_MAX}]`);
  }
  if (typeof o.fifo !== 'boolean') throw bad('group.fifo must be a boolean');
}

/** Consecutive acknowledgements of one group and topic, as they travel. */
interface PackedAcks {
  readonly op: 'pop.acks';
  readonly group: string;
  readonly topic: string;
  /** `queueId, offset, handle` of each acknowledgement in turn. */
  readonly acks: number[];
}

/** `commands` with each run of two or more `pop.ack` of one group and topic packed. */
function packAcks(commands: readonly BrokerCommand[]): (BrokerCommand | PackedAcks)[] {
  const out: (BrokerCommand | PackedAcks)[] = [];
  let i = 0;
  while (i < commands.length) {
    const c = commands[i] as BrokerCommand;
    let j = i + 1;
    if (c.op === 'pop.ack') {
      while (j < commands.length) {
        const d = commands[j] as BrokerCommand;
        if (d.op !== 'pop.ack' || d.group !== c.group || d.topic !== c.topic) break;
        j++;
      }
    }
    if (c.op !== 'pop.ack' || j - i < 2) {
      out.push(c);
      i++;
      continue;
    }
    const acks: number[] = [];
    for (let k = i; k < j; k++) {
      const a = commands[k] as PopAckCommand;
      acks.push(a.queueId, a.offset, a.handle);
    }
    out.push({ op: 'pop.acks', group: c.group, topic: c.topic, acks });
    i = j;
  }
  return out;
}

/** Encodes commands as one entry payload. */
export function encodeCommands(commands: readonly BrokerCommand[]): Buffer {
  if (commands.length === 0 || commands.length > COMMANDS_PER_ENTRY_MAX) {
    throw bad(`an entry carries 1..${COMMANDS_PER_ENTRY_MAX} commands`);
  }
  const json = Buffer.from(JSON.stringify(packAcks(commands)), 'utf8');
  const out = Buffer.allocUnsafe(1 + json.length);
  out[0] = PAYLOAD_KIND_COMMANDS;
  json.copy(out, 1);
  return out;
}

export function isCommandPayload(payload: Uint8Array): boolean {
  return payload.byteLength >= 1 && payload[0] === PAYLOAD_KIND_COMMANDS;
}

/** Decodes a command payload; throws CORRUPT_RECORD when it is not one. */
export function decodeCommands(payload: Uint8Array): BrokerCommand[] {
  if (!isCommandPayload(payload)) throw corrupt('not a command payload');
  let parsed: unknown;
  try {
    parsed = JSON.parse(
      Buffer.from(payload.buffer, payload.byteOffset + 1, payload.byteLength - 1).toString('utf8'),
    );
  } catch (err) {
    throw corrupt(`undecodable JSON: ${String(err)}`);
  }
  if (!Array.isArray(parsed) || parsed.length > COMMANDS_PER_ENTRY_MAX) {
    throw corrupt('commands are not an array');
  }
  const commands: BrokerCommand[] = [];
  for (const c of parsed as unknown[]) {
    const o = typeof c === 'object' && c !== null ? (c as Record<string, unknown>) : {};
    if (o.op === 'pop.acks') unpackAcks(o, commands);
    else commands.push(checkCommandShape(c));
    if (commands.length > COMMANDS_PER_ENTRY_MAX) throw corrupt('too many commands');
  }
  return commands;
}

/** Appends the acknowledgements a `pop.acks` element packs, checked, to `into`. */
function unpackAcks(o: Record<string, unknown>, into: BrokerCommand[]): void {
  const { group, topic, acks } = o;
  if (
    typeof group !== 'string' ||
    typeof topic !== 'string' ||
    !Array.isArray(acks) ||
    acks.length === 0 ||
    acks.length % 3 !== 0 ||
    acks.length / 3 > COMMANDS_PER_ENTRY_MAX
  ) {
    throw corrupt('pop.acks is malformed');
  }
  for (let k = 0; k < acks.length; k += 3) {
    const queueId: unknown = acks[k];
    const offset: unknown = acks[k + 1];
    const handle: unknown = acks[k + 2];
    if (!isNat(queueId) || !isNat(offset) || !isNat(handle)) throw corrupt('pop.acks is malformed');
    into.push({ op: 'pop.ack', group, topic, queueId, offset, handle });
  }
}

/** The command's shape (types of fields); semantic checks happen on apply. */
function checkCommandShape(c: unknown): BrokerCommand {
  const o = typeof c === 'object' && c !== null ? (c as Record<string, unknown>) : {};
  switch (o.op) {
    case 'topic.put':
    case 'group.put':
      if (
        typeof o[o.op === 'topic.put' ? 'topic' : 'group'] !== 'object' ||
        !['create', 'update', 'ensure'].includes(o.mode as string)
      ) {
        throw corrupt(`${o.op} is malformed`);
      }
      return o as unknown as BrokerCommand;
    case 'topic.delete':
    case 'group.delete':
      if (typeof o.name !== 'string') throw corrupt(`${o.op} is malformed`);
      return o as unknown as BrokerCommand;
    case 'offset.commit':
      if (
        typeof o.group !== 'string' ||
        typeof o.topic !== 'string' ||
        !Number.isSafeInteger(o.queueId) ||
        !Number.isSafeInteger(o.offset)
      ) {
        throw corrupt('offset.commit is malformed');
      }
      return o as unknown as BrokerCommand;
    case 'pop.receive':
    case 'pop.ack':
    case 'pop.change':
    case 'pop.settle':
      checkPopShape(o);
      return o as unknown as BrokerCommand;
    default:
      throw corrupt(`unknown command ${JSON.stringify(o.op)}`);
  }
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isNat = (v: unknown): v is number => isInt(v) && v >= 0;

// Predicates of the module, not closures made per command: V8 compiles a hot closure again for
// each instance (docs/performance.md, "What V8 costs"), and these run once per message.
function isFreshShape(f: { offset?: unknown; messageGroup?: unknown } | null): boolean {
  return isNat(f?.offset) && typeof f?.messageGroup === 'string';
}

function isAgainShape(a: { offset?: unknown; attempt?: unknown } | null): boolean {
  return isNat(a?.offset) && isNat(a?.attempt);
}

/** The shape of a pop command: names are strings, numbers are safe integers. */
function checkPopShape(o: Record<string, unknown>): void {
  const op = String(o.op);
  const ok =
    typeof o.group === 'string' &&
    typeof o.topic === 'string' &&
    isNat(o.queueId) &&
    (op === 'pop.receive'
      ? isInt(o.nowMs) &&
        isNat(o.invisibleMs) &&
        isNat(o.from) &&
        isNat(o.to) &&
        Array.isArray(o.fresh) &&
        o.fresh.every(isFreshShape) &&
        Array.isArray(o.again) &&
        o.again.every(isAgainShape)
      : isNat(o.offset) &&
        (op === 'pop.settle'
          ? isNat(o.attempt) &&
            (o.reason === 'dlq' || o.reason === 'gone' || o.reason === 'filtered') &&
            (o.renewHandle === undefined || isNat(o.renewHandle))
          : isNat(o.handle) &&
            (op === 'pop.ack' ||
              (isInt(o.nowMs) &&
                isNat(o.invisibleMs) &&
                (o.renewHandle === undefined || isNat(o.renewHandle))))));
  if (!ok) throw corrupt(`${op} is malformed`);
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null) throw bad(`${what} must be an object`);
  return v as Record<string, unknown>;
}

function bad(message: string): RaftmqError {
  return new RaftmqError('INVALID_ARGUMENT', message);
}

function corrupt(message: string): RaftmqError {
  return new RaftmqError('CORRUPT_RECORD', `broker command entry: ${message}`);
}
