/**
 * A direct decoder for frames of the append stream (`PeerBatch` of `proto/raft.proto`), the
 * counterpart of `raft-append-wire.ts`. The general path lets protobufjs decode the batch and
 * build objects for every message and entry, which `raft-wire.ts` then checks and turns into
 * {@link Message}s: on a follower at 1 KiB entries that was a tenth of its CPU. Here an Append
 * message whose envelope is what this node expects is read straight into its {@link Message},
 * entries' data as views of the frame (no copy), and checked by the same protocol shape test
 * (`isWellFormed`).
 *
 * Anything else takes the general path, which also words the errors: a message of another type
 * (acknowledgements, heartbeats), an unexpected envelope (wrong group, unknown sender, another
 * addressee), a body other than Append, an integer of 2^53 or more, an unknown entry type, an
 * unusual wire type or a truncated field. A frame is accepted whole or rejected whole, as before.
 */
import { RaftmqError } from '../common/errors';
import { asLogIndex, asNodeId, asTerm } from '../common/types';
import { isWellFormed } from '../raft/message-check';
import type { AppendMessage, Entry, EntryType, Message } from '../raft/types';
import { recordChecksum } from '../store/log-record';
import { notePayloadVerified } from '../store/verified-payloads';
import type { MessageCodec } from './grpc-util';
import { storeEntryType } from './raft-entry-codec';
import {
  decodeInbound,
  decodeInboundBatch,
  type InboundExpectation,
  type InboundResult,
  PEER_BATCH_MESSAGES_MAX,
} from './raft-wire';

/** A decoded frame and the number of messages it held (at least 1, for the rejected count). */
export interface AppendFrame {
  readonly result: InboundResult;
  readonly messageCount: number;
  /** Entries whose record checksum came with them and matched (0 when rejected). */
  readonly checkedEntries: number;
}

/** A frame before its checksums are checked. */
type UncheckedFrame = Omit<AppendFrame, 'checkedEntries'>;

/** The codecs of the general path. */
export interface AppendFrameCodecs {
  readonly peerMessage: MessageCodec;
  readonly peerBatch: MessageCodec;
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_DELIMITED = 2;
const WIRE_FIXED32 = 5;

/** `PeerMessage` fields (raft.proto). */
const MESSAGE_GROUP = 1;
const MESSAGE_FROM = 2;
const MESSAGE_TO = 3;
const MESSAGE_TERM = 4;
const MESSAGE_APPEND = 14;
const BODY_FIELD_MIN = 10;
const BODY_FIELD_MAX = 18;
/** `Append` fields. */
const APPEND_PREV_INDEX = 1;
const APPEND_PREV_TERM = 2;
const APPEND_ENTRIES = 3;
const APPEND_COMMIT = 4;
/** `Entry` fields. */
const ENTRY_INDEX = 1;
const ENTRY_TERM = 2;
const ENTRY_TYPE = 3;
const ENTRY_DATA = 4;
const ENTRY_RECORD_CRC = 5;

/** `raftmq.raft.v1.EntryType` numbers; 0 (unspecified) and others are not accepted. */
const ENTRY_TYPE_OF_NUMBER: readonly (EntryType | undefined)[] = [
  undefined,
  'normal',
  'noop',
  'config',
];

/** Returned by the readers for anything the fast path does not take. */
const NOT_FAST = -1;

/** A read position in `buf`, bounded by `end`. */
class Cursor {
  /** `buf.buffer` and `buf.byteOffset`, read once: V8 does not inline those getters. */
  readonly arrayBuffer: ArrayBufferLike;
  readonly byteOffset: number;

  constructor(
    readonly buf: Buffer,
    public pos: number,
    public end: number,
  ) {
    this.arrayBuffer = buf.buffer;
    this.byteOffset = buf.byteOffset;
  }

  /** An unsigned varint below 2^53, or NOT_FAST (truncated, too long or too large). */
  varint(): number {
    const buf = this.buf;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) return NOT_FAST;
      const byte = buf[this.pos++] as number;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value <= Number.MAX_SAFE_INTEGER ? value : NOT_FAST;
      scale *= 0x80;
    }
    return NOT_FAST;
  }

  /** The length of a delimited field, checked against the bytes left, or NOT_FAST. */
  length(): number {
    const length = this.varint();
    return length === NOT_FAST || length > this.end - this.pos ? NOT_FAST : length;
  }

  /** Skips a field of `wireType`; false when the fast path does not take it. */
  skip(wireType: number): boolean {
    switch (wireType) {
      case WIRE_VARINT:
        return this.varint() !== NOT_FAST;
      case WIRE_FIXED64:
        return this.advance(8);
      case WIRE_DELIMITED: {
        const length = this.length();
        return length !== NOT_FAST && this.advance(length);
      }
      case WIRE_FIXED32:
        return this.advance(4);
      default:
        return false;
    }
  }

  private advance(bytes: number): boolean {
    if (bytes > this.end - this.pos) return false;
    this.pos += bytes;
    return true;
  }
}

/** A field's tag ((number << 3) | wire type), or NOT_FAST at a bad one. */
function readTag(c: Cursor): number {
  const tag = c.varint();
  // Above 2^32 protobufjs would read another field number (it reads tags as 32 bits).
  return tag < 8 || tag > 0xffffffff ? NOT_FAST : tag;
}

/** The data of an entry that has none (shared: nothing writes to it). */
const NO_DATA = new Uint8Array(0);

/** One `Entry` at [c.pos, c.end), or undefined. */
function readEntry(c: Cursor): Entry | undefined {
  let index = 0;
  let term = 0;
  let type: EntryType | undefined;
  let data: Uint8Array = NO_DATA;
  let recordCrc: number | undefined;
  while (c.pos < c.end) {
    const tag = readTag(c);
    if (tag === NOT_FAST) return undefined;
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === ENTRY_RECORD_CRC && wireType === WIRE_FIXED32) {
      if (c.end - c.pos < 4) return undefined;
      recordCrc = c.buf.readUInt32LE(c.pos);
      c.pos += 4;
    } else if (field === ENTRY_DATA && wireType === WIRE_DELIMITED) {
      const length = c.length();
      if (length === NOT_FAST) return undefined;
      data = new Uint8Array(c.arrayBuffer, c.byteOffset + c.pos, length);
      c.pos += length;
    } else if (field >= ENTRY_INDEX && field <= ENTRY_TYPE && wireType === WIRE_VARINT) {
      const value = c.varint();
      if (value === NOT_FAST) return undefined;
      if (field === ENTRY_INDEX) index = value;
      else if (field === ENTRY_TERM) term = value;
      else type = ENTRY_TYPE_OF_NUMBER[value];
    } else if (field <= ENTRY_RECORD_CRC || !c.skip(wireType)) {
      return undefined;
    }
  }
  if (type === undefined) return undefined;
  // One object per entry (a spread of a first one made two). The checksum is checked against
  // the bytes in `decodeAppendFrame` before anything uses it.
  return recordCrc === undefined
    ? { index: asLogIndex(index), term: asTerm(term), type, data }
    : { index: asLogIndex(index), term: asTerm(term), type, data, recordCrc };
}

/** The `Append` body at [c.pos, c.end) with its envelope, or undefined. */
function readAppend(
  c: Cursor,
  envelope: Pick<AppendMessage, 'from' | 'to' | 'term'>,
): AppendMessage | undefined {
  let prevIndex = 0;
  let prevTerm = 0;
  let commit = 0;
  const entries: Entry[] = [];
  while (c.pos < c.end) {
    const tag = readTag(c);
    if (tag === NOT_FAST) return undefined;
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === APPEND_ENTRIES && wireType === WIRE_DELIMITED) {
      const length = c.length();
      if (length === NOT_FAST) return undefined;
      // The same cursor, bounded to the entry for a moment.
      const bodyEnd = c.end;
      c.end = c.pos + length;
      const entry = readEntry(c);
      if (entry === undefined) return undefined;
      entries.push(entry);
      c.end = bodyEnd;
    } else if (
      field === APPEND_PREV_INDEX ||
      field === APPEND_PREV_TERM ||
      field === APPEND_COMMIT
    ) {
      if (wireType !== WIRE_VARINT) return undefined;
      const value = c.varint();
      if (value === NOT_FAST) return undefined;
      if (field === APPEND_PREV_INDEX) prevIndex = value;
      else if (field === APPEND_PREV_TERM) prevTerm = value;
      else commit = value;
    } else if (field <= APPEND_COMMIT || !c.skip(wireType)) {
      return undefined;
    }
  }
  return {
    type: 'Append',
    ...envelope,
    prevIndex: asLogIndex(prevIndex),
    prevTerm: asTerm(prevTerm),
    commit: asLogIndex(commit),
    entries,
  };
}

/**
 * The `PeerMessage` at [start, end) when it is an Append with the envelope `expect` asks for,
 * well formed; undefined for anything the general path must see.
 */
function readAppendMessage(
  buf: Buffer,
  start: number,
  end: number,
  expect: InboundExpectation,
): Message | undefined {
  const c = new Cursor(buf, start, end);
  let group = '';
  let from = '';
  let to = '';
  let term = 0;
  let bodyStart = NOT_FAST;
  let bodyEnd = NOT_FAST;
  while (c.pos < c.end) {
    const tag = readTag(c);
    if (tag === NOT_FAST) return undefined;
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === MESSAGE_TERM) {
      if (wireType !== WIRE_VARINT) return undefined;
      term = c.varint();
      if (term === NOT_FAST) return undefined;
    } else if (field <= MESSAGE_TO || field === MESSAGE_APPEND) {
      if (wireType !== WIRE_DELIMITED) return undefined;
      const length = c.length();
      if (length === NOT_FAST) return undefined;
      if (field === MESSAGE_APPEND) {
        bodyStart = c.pos;
        bodyEnd = c.pos + length;
      } else {
        const text = buf.toString('utf8', c.pos, c.pos + length);
        if (field === MESSAGE_GROUP) group = text;
        else if (field === MESSAGE_FROM) from = text;
        else to = text;
      }
      c.pos += length;
    } else if ((field >= BODY_FIELD_MIN && field <= BODY_FIELD_MAX) || !c.skip(wireType)) {
      // Another body (the oneof's last one would win) or an unusual field: the general path.
      return undefined;
    }
  }
  if (bodyStart === NOT_FAST || expect.route !== 'append') return undefined;
  if (group !== expect.group || to !== expect.selfId || !expect.peers.has(from)) return undefined;
  const envelope = { from: asNodeId(from), to: asNodeId(to), term: asTerm(term) };
  const message = readAppend(new Cursor(buf, bodyStart, bodyEnd), envelope);
  return message !== undefined && isWellFormed(message) ? message : undefined;
}

/** The frame through protobufjs and the checks of `raft-wire.ts`. */
function generalFrame(
  bytes: Buffer,
  codecs: AppendFrameCodecs,
  expect: InboundExpectation,
): UncheckedFrame {
  let raw: unknown;
  try {
    raw = codecs.peerBatch.decode(bytes);
  } catch (err) {
    const error = new RaftmqError('MESSAGE_MALFORMED', `undecodable protobuf: ${String(err)}`);
    return { result: { ok: false, error }, messageCount: 1 };
  }
  const list = (raw as { messages?: unknown } | null)?.messages;
  const messageCount = Array.isArray(list) && list.length > 0 ? list.length : 1;
  return { result: decodeInboundBatch(raw, expect), messageCount };
}

/**
 * Decodes and checks one frame of the append stream (see the file comment): all its messages,
 * or the first reason it is malformed. An entry that carries its record checksum is checked
 * against its bytes here, once: a mismatch (bytes changed on the way) rejects the frame, and a
 * match marks the payload verified (verified-payloads.ts), so that applying it skips the check
 * of each message inside.
 */
export function decodeAppendFrame(
  bytes: Buffer,
  codecs: AppendFrameCodecs,
  expect: InboundExpectation,
): AppendFrame {
  const frame = decodeFrame(bytes, codecs, expect);
  if (!frame.result.ok) return { ...frame, checkedEntries: 0 };
  // Marked only once the whole frame passed: a refused frame trusts nothing.
  const checked: Uint8Array[] = [];
  for (const message of frame.result.messages) {
    if (message.type !== 'Append') continue;
    for (const entry of message.entries) {
      if (entry.recordCrc === undefined) continue;
      const type = storeEntryType(entry.type);
      const actual = recordChecksum(entry.index, entry.term, type, entry.data);
      if (actual !== entry.recordCrc) {
        const error = new RaftmqError(
          'MESSAGE_MALFORMED',
          `entry ${entry.index}: record checksum ${entry.recordCrc} sent, ${actual} received`,
        );
        return {
          result: { ok: false, error },
          messageCount: frame.messageCount,
          checkedEntries: 0,
        };
      }
      checked.push(entry.data);
    }
  }
  for (const data of checked) notePayloadVerified(data);
  return { ...frame, checkedEntries: checked.length };
}

function decodeFrame(
  bytes: Buffer,
  codecs: AppendFrameCodecs,
  expect: InboundExpectation,
): UncheckedFrame {
  const c = new Cursor(bytes, 0, bytes.length);
  const spans: number[] = [];
  while (c.pos < c.end) {
    // PeerBatch.messages (field 1, delimited) is its only field.
    if (c.varint() !== ((1 << 3) | WIRE_DELIMITED)) return generalFrame(bytes, codecs, expect);
    const length = c.length();
    if (length === NOT_FAST) return generalFrame(bytes, codecs, expect);
    if (spans.length === 2 * PEER_BATCH_MESSAGES_MAX) {
      const error = new RaftmqError('MESSAGE_MALFORMED', 'batch.messages: too many');
      return { result: { ok: false, error }, messageCount: PEER_BATCH_MESSAGES_MAX + 1 };
    }
    spans.push(c.pos, c.pos + length);
    c.pos += length;
  }
  if (spans.length === 0) return generalFrame(bytes, codecs, expect);
  const messageCount = spans.length / 2;
  const messages: Message[] = [];
  for (let i = 0; i < spans.length; i += 2) {
    const start = spans[i] as number;
    const end = spans[i + 1] as number;
    const fast = readAppendMessage(bytes, start, end, expect);
    if (fast !== undefined) {
      messages.push(fast);
      continue;
    }
    let raw: unknown;
    try {
      raw = codecs.peerMessage.decode(bytes.subarray(start, end));
    } catch (err) {
      const error = new RaftmqError('MESSAGE_MALFORMED', `undecodable protobuf: ${String(err)}`);
      return { result: { ok: false, error }, messageCount };
    }
    const one = decodeInbound(raw, expect);
    if (!one.ok) return { result: one, messageCount };
    messages.push(...one.messages);
  }
  return { result: { ok: true, messages }, messageCount };
}
