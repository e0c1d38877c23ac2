/**
 * A direct protobuf encoder for the hot message of the append stream: an Append `PeerMessage`
 * (`proto/raft.proto`), written already framed as one element of `PeerBatch.messages`, in one
 * pass. The general path (`toWire` and proto-loader) builds an object per entry,
 * lets protobufjs copy each payload into its writer, and `frameBatch` copies the message once
 * more; at 1 KiB entries and two followers that was the leader's largest cost. Here an entry's
 * header and payload are written once, into the message's tail (a pooled buffer), and the parts
 * are written to the stream as they are (`common/raw-grpc.ts`). A large payload (a batch of
 * produced messages is one entry of 100 KiB and more) is not copied at all: it goes to the
 * stream as a part of its own, between the views of the tail around it.
 *
 * The output is what protobufjs writes for the same message (fields in number order, every
 * scalar present even when 0); the test suite decodes it with the proto-loader codec. Field
 * numbers below must follow `raft.proto`.
 */
import { unreachable } from '../common/assert';
import { bufferView, copyBytes } from '../common/bytes';
import { RaftmqError } from '../common/errors';
import type { AppendMessage, Entry, EntryType } from '../raft/types';

/** A fresh buffer, for encodings that have no pool to take one from. */
const allocUnsafe = (bytes: number): Buffer => Buffer.allocUnsafe(bytes);

/** Wire type 0 (varint) and 2 (length-delimited) tags: (field number << 3) | wire type. */
const TAG = Object.freeze({
  batchMessages: (1 << 3) | 2,
  messageGroup: (1 << 3) | 2,
  messageFrom: (2 << 3) | 2,
  messageTo: (3 << 3) | 2,
  messageTerm: 4 << 3,
  messageAppend: (14 << 3) | 2,
  appendPrevIndex: 1 << 3,
  appendPrevTerm: 2 << 3,
  appendEntries: (3 << 3) | 2,
  appendCommit: 4 << 3,
  entryIndex: 1 << 3,
  entryTerm: 2 << 3,
  entryType: 3 << 3,
  entryData: (4 << 3) | 2,
  entryRecordCrc: (5 << 3) | 5,
});

/**
 * Payloads of at least this many bytes are sent as parts of their own instead of being copied
 * into the tail. Below it the copy costs less than one more buffer in the stream's `writev`
 * (and a run of small entries would make hundreds of parts).
 */
export const APPEND_SHARE_MIN_BYTES = 16 * 1024;

/** Bytes of `Entry.record_crc` when present: its tag and a fixed32. */
const RECORD_CRC_FIELD_BYTES = 5;

/**
 * The record checksum to send with an entry (raft.proto `Entry.record_crc`), or undefined to
 * send none; see verified-payloads.ts for which entries have one.
 */
export type RecordCrcLookup = (entry: Entry) => number | undefined;

/** The checksums of the Append being encoded, found while sizing it and used to write it. */
const recordCrcs: (number | undefined)[] = [];

/** `raft.v1.EntryType` numbers. */
function wireEntryType(type: EntryType): number {
  switch (type) {
    case 'normal':
      return 1;
    case 'noop':
      return 2;
    case 'config':
      return 3;
    default:
      return unreachable(type, 'entry type');
  }
}

/** Bytes of the varint encoding of `value`, an integer in [0, 2^53). */
function varintBytes(value: number): number {
  let bytes = 1;
  let rest = value;
  while (rest > 0x7fffffff) {
    rest = Math.floor(rest / 0x80);
    bytes += 1;
  }
  for (rest >>>= 7; rest > 0; rest >>>= 7) bytes += 1;
  return bytes;
}

function writeVarint(out: Buffer, at: number, value: number): number {
  let rest = value;
  let pos = at;
  while (rest > 0x7fffffff) {
    // `& 0x7f` keeps the low 7 bits of any integer below 2^53 (ToInt32 is modulo 2^32).
    out[pos++] = (rest & 0x7f) | 0x80;
    rest = Math.floor(rest / 0x80);
  }
  while (rest >= 0x80) {
    out[pos++] = (rest & 0x7f) | 0x80;
    rest >>>= 7;
  }
  out[pos++] = rest;
  return pos;
}

/** Bytes of a length-delimited field (tag, length, body) with a body of `bodyBytes`. */
function delimitedBytes(bodyBytes: number): number {
  return 1 + varintBytes(bodyBytes) + bodyBytes;
}

/** Bytes of a one-byte-tag varint field. */
function scalarBytes(value: number): number {
  return 1 + varintBytes(value);
}

/**
 * An Append encoded as one framed element of `PeerBatch.messages`: the head (the element's tag
 * and length, `group`, `from` and `to`), then the tail (`term` and the `append` body with every
 * entry). The tail is views of `pooled`, and between them the payloads of
 * {@link APPEND_SHARE_MIN_BYTES} or more, shared with the entries (never written to: an entry's
 * payload does not change once made). Written one after the other the parts are the element. The
 * shape is that of a queued element of the transport (`FramedParts`).
 */
export interface EncodedAppend {
  readonly parts: readonly Uint8Array[];
  /** Bytes of the parts together. */
  readonly bytes: number;
  /** The buffer `takeBuffer` gave and the tail was written into, for its pool once written. */
  readonly pooled: Buffer;
}

/**
 * The encoding of `message` (in `group`) as one framed element of `PeerBatch.messages`:
 * concatenating such elements gives a valid `PeerBatch`. Each entry carries the checksum
 * `recordCrcOf` gives it, if any. The tail, but for payloads of `shareMinBytes` or more, is
 * written into a buffer from `takeBuffer` (of at least the bytes asked for; a pool's, so that a
 * leader does not make a new buffer per Append and follower: buffer-pool.ts).
 */
export function encodeAppendParts(
  group: string,
  message: AppendMessage,
  recordCrcOf?: RecordCrcLookup,
  takeBuffer: (bytes: number) => Buffer = allocUnsafe,
  shareMinBytes: number = APPEND_SHARE_MIN_BYTES,
): EncodedAppend {
  const toBytes = Buffer.byteLength(message.to, 'utf8');
  const groupBytes = Buffer.byteLength(group, 'utf8');
  const fromBytes = Buffer.byteLength(message.from, 'utf8');
  let appendBytes =
    scalarBytes(message.prevIndex) + scalarBytes(message.prevTerm) + scalarBytes(message.commit);
  const entries = message.entries;
  const count = entries.length;
  if (recordCrcOf !== undefined) recordCrcs.length = count;
  let sharedBytes = 0;
  for (let i = 0; i < count; i++) {
    const entry = entries[i] as Entry;
    let crc: number | undefined;
    if (recordCrcOf !== undefined) {
      crc = recordCrcOf(entry);
      recordCrcs[i] = crc;
    }
    appendBytes += delimitedBytes(entryBytes(entry, crc));
    if (shared(entry.data.length, shareMinBytes)) sharedBytes += entry.data.length;
  }
  const tailBytes = scalarBytes(message.term) + delimitedBytes(appendBytes);
  const messageBytes =
    delimitedBytes(groupBytes) + delimitedBytes(fromBytes) + delimitedBytes(toBytes) + tailBytes;
  const totalBytes = delimitedBytes(messageBytes);
  const headBytes = totalBytes - tailBytes;

  const head = Buffer.allocUnsafe(headBytes);
  let at = 0;
  head[at++] = TAG.batchMessages;
  at = writeVarint(head, at, messageBytes);
  at = writeText(head, at, TAG.messageGroup, group, groupBytes);
  at = writeText(head, at, TAG.messageFrom, message.from, fromBytes);
  at = writeText(head, at, TAG.messageTo, message.to, toBytes);
  if (at !== headBytes) throw new RaftmqError('INTERNAL', 'encodeAppendParts: head size mismatch');

  const parts: Uint8Array[] = [head];
  // The tail's own bytes; `at` counts them, and `from` is where the view not yet in `parts`
  // starts.
  const ownBytes = tailBytes - sharedBytes;
  const pooled = takeBuffer(ownBytes);
  const out = pooled.length === ownBytes ? pooled : pooled.subarray(0, ownBytes);
  let from = 0;
  at = 0;
  out[at++] = TAG.messageTerm;
  at = writeVarint(out, at, message.term);
  out[at++] = TAG.messageAppend;
  at = writeVarint(out, at, appendBytes);
  out[at++] = TAG.appendPrevIndex;
  at = writeVarint(out, at, message.prevIndex);
  out[at++] = TAG.appendPrevTerm;
  at = writeVarint(out, at, message.prevTerm);
  for (let i = 0; i < count; i++) {
    const entry = entries[i] as Entry;
    const crc = recordCrcOf === undefined ? undefined : recordCrcs[i];
    out[at++] = TAG.appendEntries;
    at = writeVarint(out, at, entryBytes(entry, crc));
    out[at++] = TAG.entryIndex;
    at = writeVarint(out, at, entry.index);
    out[at++] = TAG.entryTerm;
    at = writeVarint(out, at, entry.term);
    out[at++] = TAG.entryType;
    at = writeVarint(out, at, wireEntryType(entry.type));
    out[at++] = TAG.entryData;
    const data = entry.data;
    at = writeVarint(out, at, data.length);
    if (shared(data.length, shareMinBytes)) {
      parts.push(bufferView(out, from, at), data);
      from = at;
    } else {
      copyBytes(out, data, at);
      at += data.length;
    }
    if (crc !== undefined) {
      out[at] = TAG.entryRecordCrc;
      out.writeUInt32LE(crc, at + 1);
      at += RECORD_CRC_FIELD_BYTES;
    }
  }
  out[at++] = TAG.appendCommit;
  at = writeVarint(out, at, message.commit);
  if (at !== ownBytes) throw new RaftmqError('INTERNAL', 'encodeAppendParts: size mismatch');
  parts.push(from === 0 ? out : bufferView(out, from, at));
  return { parts, bytes: totalBytes, pooled };
}

/** Whether a payload of `bytes` goes out as a part of its own (never an empty one). */
function shared(bytes: number, shareMinBytes: number): boolean {
  return bytes > 0 && bytes >= shareMinBytes;
}

/** {@link encodeAppendParts} as one buffer (its parts joined). */
export function encodeFramedAppend(
  group: string,
  message: AppendMessage,
  recordCrcOf?: RecordCrcLookup,
  shareMinBytes?: number,
): Buffer {
  const encoded = encodeAppendParts(group, message, recordCrcOf, allocUnsafe, shareMinBytes);
  return Buffer.concat(encoded.parts, encoded.bytes);
}

function entryBytes(entry: Entry, recordCrc: number | undefined): number {
  return (
    scalarBytes(entry.index) +
    scalarBytes(entry.term) +
    scalarBytes(wireEntryType(entry.type)) +
    delimitedBytes(entry.data.length) +
    (recordCrc === undefined ? 0 : RECORD_CRC_FIELD_BYTES)
  );
}

function writeText(out: Buffer, at: number, tag: number, value: string, bytes: number): number {
  out[at] = tag;
  const pos = writeVarint(out, at + 1, bytes);
  return pos + out.write(value, pos, bytes, 'utf8');
}
