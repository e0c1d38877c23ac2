/**
 * Raft messages on the wire (`proto/raft.proto`): the object form proto-loader encodes, and the
 * one place where the loosely typed objects it decodes are checked and turned back into
 * {@link Message}s. Every inbound message passes {@link decodeInbound}: envelope (group, sender,
 * addressee), the body matching the RPC it came on, every field present with the right type,
 * integers safe (below 2^53), terms at most TERM_MAX (the core adds one to them, and the store
 * must take the result), entry types known, and the protocol shape the Raft core relies on
 * ({@link isWellFormed}). Anything else is a MESSAGE_MALFORMED error value, never a throw.
 */
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { isRaftmqError, RaftmqError } from '../common/errors';
import { asLogIndex, asNodeId, asTerm, type NodeId } from '../common/types';
import { isWellFormed } from '../raft/message-check';
import {
  TERM_MAX,
  type Entry,
  type EntryType,
  type Message,
  type MessageType,
} from '../raft/types';
import { unreachable } from '../common/assert';
import {
  messageCodec,
  passBuffer,
  safeDecoder,
  type DecodedFrame,
  type MessageCodec,
} from './grpc-util';
import { findProtoDir, loadProto } from '../common/proto-files';
import type { RecordCrcLookup } from './raft-append-wire';

/** Which RPC carries a message type: the append stream, the Vote call or the TimeoutNow call. */
export type WireRoute = 'append' | 'vote' | 'timeoutNow';

/** The route of each message type. */
export function routeOf(type: MessageType): WireRoute {
  switch (type) {
    case 'Append':
    case 'AppendResp':
    case 'Heartbeat':
    case 'HeartbeatResp':
      return 'append';
    case 'PreVote':
    case 'PreVoteResp':
    case 'Vote':
    case 'VoteResp':
      return 'vote';
    case 'TimeoutNow':
      return 'timeoutNow';
    default:
      return unreachable(type, 'message type');
  }
}

/** The oneof field of `PeerMessage.body` for each message type (camelCase, as loaded). */
const BODY_FIELD: Readonly<Record<MessageType, string>> = Object.freeze({
  PreVote: 'preVote',
  PreVoteResp: 'preVoteResp',
  Vote: 'vote',
  VoteResp: 'voteResp',
  Append: 'append',
  AppendResp: 'appendResp',
  Heartbeat: 'heartbeat',
  HeartbeatResp: 'heartbeatResp',
  TimeoutNow: 'timeoutNow',
});

const TYPE_OF_BODY_FIELD: ReadonlyMap<string, MessageType> = new Map(
  (Object.entries(BODY_FIELD) as [MessageType, string][]).map(([type, field]) => [field, type]),
);

const WIRE_ENTRY_TYPE: Readonly<Record<EntryType, string>> = Object.freeze({
  normal: 'ENTRY_TYPE_NORMAL',
  noop: 'ENTRY_TYPE_NOOP',
  config: 'ENTRY_TYPE_CONFIG',
});

const ENTRY_TYPE_OF_WIRE: ReadonlyMap<unknown, EntryType> = new Map(
  (Object.entries(WIRE_ENTRY_TYPE) as [EntryType, string][]).map(([type, wire]) => [wire, type]),
);

/** How a body scalar is checked: `term` is a `u64` at most TERM_MAX. */
type ScalarKind = 'u64' | 'term' | 'bool';

/** The scalar fields of each body, in proto order: `u64` (index, context), `term` or `bool`. */
const BODY_SCALARS: Readonly<Record<MessageType, readonly (readonly [string, ScalarKind])[]>> =
  Object.freeze({
    PreVote: [
      ['lastIndex', 'u64'],
      ['lastTerm', 'term'],
    ],
    PreVoteResp: [['reject', 'bool']],
    Vote: [
      ['lastIndex', 'u64'],
      ['lastTerm', 'term'],
      ['transfer', 'bool'],
    ],
    VoteResp: [['reject', 'bool']],
    Append: [
      ['prevIndex', 'u64'],
      ['prevTerm', 'term'],
      ['commit', 'u64'],
    ],
    AppendResp: [
      ['reject', 'bool'],
      ['matchIndex', 'u64'],
      ['rejectedIndex', 'u64'],
      ['hintTerm', 'term'],
      ['hintIndex', 'u64'],
    ],
    Heartbeat: [
      ['commit', 'u64'],
      ['context', 'u64'],
    ],
    HeartbeatResp: [['context', 'u64']],
    TimeoutNow: [],
  });

/** The object form of a `PeerMessage`, ready for the proto-loader encoder. */
export type PeerMessageWire = { group: string; from: string; to: string; term: number } & Record<
  string,
  unknown
>;

/**
 * The object form of `message` in `group`; an Append's entries carry the checksums
 * `recordCrcOf` gives them (raft-append-wire.ts).
 */
export function toWire(
  group: string,
  message: Message,
  recordCrcOf?: RecordCrcLookup,
): PeerMessageWire {
  const fields = message as unknown as Readonly<Record<string, unknown>>;
  const body: Record<string, unknown> = {};
  for (const [key] of BODY_SCALARS[message.type]) body[key] = fields[key];
  if (message.type === 'Append') {
    body.entries = message.entries.map((entry) => ({
      index: entry.index,
      term: entry.term,
      type: WIRE_ENTRY_TYPE[entry.type],
      data: entry.data,
      recordCrc: recordCrcOf?.(entry),
    }));
  }
  const { from, to, term } = message;
  return { group, from, to, term, [BODY_FIELD[message.type]]: body };
}

/** What an inbound message must match: this node's group and id, and the known peers. */
export interface InboundExpectation {
  readonly group: string;
  readonly selfId: NodeId;
  readonly peers: ReadonlySet<string>;
  /** The RPC the message came on. */
  readonly route: WireRoute;
}

/** A decoded frame: its messages, or why it was rejected (a MESSAGE_MALFORMED error). */
export type InboundResult =
  | { readonly ok: true; readonly messages: readonly Message[] }
  | { readonly ok: false; readonly error: RaftmqError };

/**
 * Messages one frame may carry, on both decoding paths (raft-append-decode.ts too): a sender
 * frames at most its queue (`queueCountMax`, at most this). Handling each message of a frame
 * costs the receiver microseconds on its loop; a frame of a million heartbeats from a lying peer
 * held one node's loop for 10 s.
 */
export const PEER_BATCH_MESSAGES_MAX = 65_536;

function malformed(reason: string): never {
  throw new RaftmqError('MESSAGE_MALFORMED', reason);
}

function record(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    malformed(`${where}: not a message`);
  }
  return value as Record<string, unknown>;
}

function u64(obj: Record<string, unknown>, key: string, where: string): number {
  const value = obj[key];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    malformed(`${where}.${key}: not an unsigned integer below 2^53 (${String(value)})`);
  }
  return value;
}

/**
 * A term: a u64 at most TERM_MAX. A peer's term of 2^53 - 1 once passed here, and the receiver
 * adopted it durably and then could not store term + 1 for its own campaign.
 */
function termOf(obj: Record<string, unknown>, key: string, where: string): number {
  const value = u64(obj, key, where);
  if (value > TERM_MAX) malformed(`${where}.${key}: term above TERM_MAX (${value})`);
  return value;
}

/** An optional fixed32: undefined when absent (protobufjs leaves it unset or null). */
function optionalU32(obj: Record<string, unknown>, key: string, where: string): number | undefined {
  const value = obj[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    const shown = typeof value === 'number' ? String(value) : typeof value;
    malformed(`${where}.${key}: not an unsigned 32-bit integer (${shown})`);
  }
  return value;
}

function bool(obj: Record<string, unknown>, key: string, where: string): boolean {
  const value = obj[key];
  if (typeof value !== 'boolean') malformed(`${where}.${key}: not a boolean`);
  return value;
}

/** Wire strings quoted in reasons are cut short: a reason is logged, and a peer chose it. */
function clip(value: string): string {
  return JSON.stringify(value.length <= 64 ? value : `${value.slice(0, 64)}...`);
}

function text(obj: Record<string, unknown>, key: string): string {
  const value = obj[key];
  if (typeof value !== 'string') malformed(`${key}: not a string`);
  return value;
}

function decodeEntry(raw: unknown, where: string): Entry {
  const obj = record(raw, where);
  const type = ENTRY_TYPE_OF_WIRE.get(obj.type);
  if (type === undefined) malformed(`${where}.type: unknown entry type ${String(obj.type)}`);
  const data = obj.data;
  if (!(data instanceof Uint8Array)) malformed(`${where}.data: not bytes`);
  const entry = {
    index: asLogIndex(u64(obj, 'index', where)),
    term: asTerm(termOf(obj, 'term', where)),
    type,
    // A plain view (no copy) of the frame's bytes, so entries compare equal to what was sent.
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
  const recordCrc = optionalU32(obj, 'recordCrc', where);
  // Checked against the bytes by the append stream's decoder before anything uses it.
  return recordCrc === undefined ? entry : { ...entry, recordCrc };
}

function decodeEntries(raw: unknown, where: string): Entry[] {
  if (!Array.isArray(raw)) malformed(`${where}: not a list`);
  return raw.map((entry: unknown, i) => decodeEntry(entry, `${where}[${i}]`));
}

/**
 * The message of `type` from its checked envelope and body. The result is assembled from the
 * table above, so its type is asserted here and then proven field by field by `isWellFormed`
 * in {@link decodeMessage} (branded numbers are plain numbers at run time).
 */
function decodeBody(
  type: MessageType,
  body: Record<string, unknown>,
  envelope: { from: NodeId; to: NodeId; term: number },
): Message {
  const where = BODY_FIELD[type];
  const out: Record<string, unknown> = { type, ...envelope };
  for (const [key, kind] of BODY_SCALARS[type]) {
    if (kind === 'u64') out[key] = u64(body, key, where);
    else if (kind === 'term') out[key] = termOf(body, key, where);
    else out[key] = bool(body, key, where);
  }
  if (type === 'Append') out.entries = decodeEntries(body.entries, `${where}.entries`);
  return out as unknown as Message;
}

function decodeMessage(raw: unknown, expect: InboundExpectation, where: string): Message {
  const obj = record(raw, where);
  const group = text(obj, 'group');
  if (group !== expect.group) malformed(`${where}.group: ${clip(group)} is not this group`);
  const from = text(obj, 'from');
  if (!expect.peers.has(from)) malformed(`${where}.from: unknown node ${clip(from)}`);
  const to = text(obj, 'to');
  if (to !== expect.selfId) malformed(`${where}.to: ${clip(to)} is not this node`);
  const term = asTerm(termOf(obj, 'term', where));
  const bodyField = obj.body;
  const type = typeof bodyField === 'string' ? TYPE_OF_BODY_FIELD.get(bodyField) : undefined;
  if (type === undefined) malformed(`${where}.body: missing`);
  if (routeOf(type) !== expect.route) malformed(`${where}: ${type} on the ${expect.route} RPC`);
  const body = record(obj[BODY_FIELD[type]], `${where}.${BODY_FIELD[type]}`);
  const message = decodeBody(type, body, { from: asNodeId(from), to: asNodeId(to), term });
  if (!isWellFormed(message)) malformed(`${where}: ${type} breaks the protocol's shape`);
  return message;
}

function decoding(run: () => readonly Message[]): InboundResult {
  try {
    return { ok: true, messages: run() };
  } catch (err) {
    // Only the malformed-input errors raised above become values; anything else is a bug.
    if (isRaftmqError(err, 'MESSAGE_MALFORMED')) return { ok: false, error: err };
    throw err;
  }
}

/** Checks one decoded `PeerMessage` (a Vote or TimeoutNow request). */
export function decodeInbound(raw: unknown, expect: InboundExpectation): InboundResult {
  return decoding(() => [decodeMessage(raw, expect, 'message')]);
}

/** Checks one decoded `PeerBatch` (a frame of the append stream); all or nothing. */
export function decodeInboundBatch(raw: unknown, expect: InboundExpectation): InboundResult {
  return decoding(() => {
    const list = record(raw, 'batch').messages;
    if (!Array.isArray(list) || list.length === 0) malformed('batch.messages: empty');
    if (list.length > PEER_BATCH_MESSAGES_MAX) malformed('batch.messages: too many');
    return list.map((message: unknown, i) => decodeMessage(message, expect, `messages[${i}]`));
  });
}

/** Bytes a message adds to a `PeerBatch` beyond its own encoding (field tag and length). */
export function batchFramingBytes(encodedBytes: number): number {
  let varintBytes = 1;
  for (let rest = encodedBytes >>> 7; rest > 0; rest >>>= 7) varintBytes += 1;
  return 1 + varintBytes;
}

/** `PeerBatch.messages` is field 1, length-delimited: tag byte (1 << 3) | 2. */
const MESSAGES_FIELD_TAG = 0x0a;

/**
 * The encoding of a `PeerBatch` holding already encoded `PeerMessage`s, built by framing each
 * as a repeated length-delimited field (protobuf encoding spec), so each message is encoded
 * once, at send time, when its size is checked.
 */
export function frameBatch(encoded: readonly Buffer[]): Buffer {
  let totalBytes = 0;
  for (const part of encoded) totalBytes += batchFramingBytes(part.length) + part.length;
  const out = Buffer.allocUnsafe(totalBytes);
  let at = 0;
  for (const part of encoded) {
    out[at++] = MESSAGES_FIELD_TAG;
    let rest = part.length;
    while (rest >= 0x80) {
      out[at++] = (rest & 0x7f) | 0x80;
      rest >>>= 7;
    }
    out[at++] = rest;
    at += part.copy(out, at);
  }
  if (at !== totalBytes) throw new RaftmqError('INTERNAL', 'frameBatch: size mismatch');
  return out;
}

/** The gRPC method of each route. */
export const RAFT_METHOD_PATH: Readonly<Record<WireRoute, string>> = Object.freeze({
  append: '/raftmq.raft.v1.RaftPeer/Append',
  vote: '/raftmq.raft.v1.RaftPeer/Vote',
  timeoutNow: '/raftmq.raft.v1.RaftPeer/TimeoutNow',
});

/** Encoders and (unchecked) decoders of the messages of `raft.proto`. */
export interface RaftCodecs {
  readonly peerMessage: MessageCodec;
  readonly peerBatch: MessageCodec;
  readonly ack: MessageCodec;
}

/** The append stream's deserializer: the frame's bytes, decoded later by the handler. */
function rawFrame(bytes: Buffer): DecodedFrame {
  return { ok: true, value: bytes };
}

/** Loads `raft.proto` from `protoDir` (see {@link findProtoDir}) and returns its codecs. */
export async function loadRaftCodecs(protoDir: string): Promise<RaftCodecs> {
  const definition = await loadProto(
    path.join(findProtoDir(RAFT_PROTO_FILE, protoDir), RAFT_PROTO_FILE),
  );
  return {
    peerMessage: messageCodec(definition, 'raftmq.raft.v1.PeerMessage'),
    peerBatch: messageCodec(definition, 'raftmq.raft.v1.PeerBatch'),
    ack: messageCodec(definition, 'raftmq.raft.v1.Ack'),
  };
}

const RAFT_PROTO_FILE = 'raft.proto';

/**
 * The server-side definition of `RaftPeer`. Requests are decoded without throwing (undecodable
 * bytes become a {@link DecodedFrame} the handler rejects and counts); clients write frames
 * they encoded themselves.
 */
export function raftPeerServiceDefinition(codecs: RaftCodecs): grpc.ServiceDefinition {
  const method = (route: WireRoute, codec: MessageCodec) => ({
    path: RAFT_METHOD_PATH[route],
    requestStream: route === 'append',
    responseStream: false,
    requestSerialize: passBuffer,
    requestDeserialize: safeDecoder(codec),
    responseSerialize: (value: object) => codecs.ack.encode(value),
    responseDeserialize: (bytes: Buffer) => codecs.ack.decode(bytes),
  });
  return {
    // Frames of the stream are decoded by the handler (raft-append-decode.ts), which knows
    // what to expect of them; here they are passed on as they came.
    Append: { ...method('append', codecs.peerBatch), requestDeserialize: rawFrame },
    Vote: method('vote', codecs.peerMessage),
    TimeoutNow: method('timeoutNow', codecs.peerMessage),
  };
}
