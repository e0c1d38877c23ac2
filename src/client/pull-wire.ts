/**
 * A hand-written decoder of `PullMessageResponse` frames for the PullConsumer (and of
 * `ReceiveMessageResponse` frames, which hold the same Message; their `delivery_timestamp = 3`
 * is skipped, and a pop delivery's receipt handle and attempt are read). A pull answers
 * up to hundreds of messages, one frame each; the generic decoder builds every field of every
 * message as an object tree (and the consumer then copies it into a PulledMessage), which cost
 * the client more CPU per message than the broker spent serving it. This one reads the fields
 * the consumer uses straight into its shapes and skips the rest by wire type.
 *
 * Field numbers (definition.proto / service.proto): PullMessageResponse {status 1, message 2,
 * next_offset 3}; Status {code 1, message 2}; Message {topic 1, user_properties 2 (map entries
 * {key 1, value 2}), system_properties 3, body 4}; SystemProperties {tag 1, keys 2,
 * message_id 3, body_encoding 5 (Encoding: 1 IDENTITY, 2 GZIP), born_timestamp 7,
 * store_timestamp 9, receipt_handle 12, queue_id 13, queue_offset 14, delivery_attempt 16,
 * message_group 17}; Timestamp {seconds 1, nanos 2}.
 *
 * FetchQueueResponse (raftmq's `proto/fetch.proto`) is read here too: a reply of a thousand
 * stored records, each left as a view of the reply for the consumer to check and decode.
 *
 * Bytes that are not a well-formed frame throw; grpc-js then fails the call, and the consumer
 * reports it as a failed pull.
 */
import { Reader } from '../common/proto-reader';
import type { PulledMessage } from './pull-consumer';

/** A decoded frame: one of the three oneof cases. */
export interface PullFrame {
  status?: { code: number; message: string };
  message?: PullFrameMessage;
  nextOffset?: number;
}

/** A pulled message as the frame carries it: no topic (the request names it), offset maybe. */
export type PullFrameMessage = Omit<PulledMessage, 'topic' | 'offset'> & {
  readonly queueOffset: number | undefined;
  /** Set on pop deliveries (ReceiveMessage). */
  readonly receiptHandle: string | undefined;
  readonly deliveryAttempt: number | undefined;
};

const VARINT = 0;
const LEN = 2;

function timestampMs(r: Reader): number {
  let seconds = 0;
  let nanos = 0;
  while (!r.done) {
    const field = r.key();
    const type = r.wireType;
    if (field === 1 && type === VARINT) seconds = r.varint();
    else if (field === 2 && type === VARINT) nanos = r.int32();
    else r.skip(type);
  }
  return seconds * 1000 + Math.floor(nanos / 1_000_000);
}

function mapEntry(r: Reader, into: Map<string, string>): void {
  let k = '';
  let v = '';
  while (!r.done) {
    const field = r.key();
    const type = r.wireType;
    if (field === 1 && type === LEN) k = r.string();
    else if (field === 2 && type === LEN) v = r.string();
    else r.skip(type);
  }
  into.set(k, v);
}

function message(r: Reader): PullFrameMessage {
  const properties = new Map<string, string>();
  const keys: string[] = [];
  let body: Buffer = Buffer.alloc(0);
  let bodyEncoding: 'IDENTITY' | 'GZIP' = 'IDENTITY';
  let messageId = '';
  let queueId = 0;
  let queueOffset: number | undefined;
  let tag: string | undefined;
  let messageGroup: string | undefined;
  let bornTimestampMs: number | undefined;
  let storeTimestampMs: number | undefined;
  let receiptHandle: string | undefined;
  let deliveryAttempt: number | undefined;
  while (!r.done) {
    const field = r.key();
    const type = r.wireType;
    if (field === 2 && type === LEN) {
      mapEntry(r.sub(), properties);
    } else if (field === 4 && type === LEN) {
      body = r.bytes();
    } else if (field === 3 && type === LEN) {
      const sp = r.sub();
      while (!sp.done) {
        const f = sp.key();
        const t = sp.wireType;
        if (f === 1 && t === LEN) tag = sp.string();
        else if (f === 2 && t === LEN) keys.push(sp.string());
        else if (f === 3 && t === LEN) messageId = sp.string();
        else if (f === 5 && t === VARINT) bodyEncoding = sp.int32() === 2 ? 'GZIP' : 'IDENTITY';
        else if (f === 7 && t === LEN) bornTimestampMs = timestampMs(sp.sub());
        else if (f === 9 && t === LEN) storeTimestampMs = timestampMs(sp.sub());
        else if (f === 12 && t === LEN) receiptHandle = sp.string();
        else if (f === 13 && t === VARINT) queueId = sp.int32();
        else if (f === 14 && t === VARINT) queueOffset = sp.varint();
        else if (f === 16 && t === VARINT) deliveryAttempt = sp.int32();
        else if (f === 17 && t === LEN) messageGroup = sp.string();
        else sp.skip(t);
      }
    } else {
      r.skip(type);
    }
  }
  return {
    messageId,
    queueId,
    queueOffset,
    body,
    bodyEncoding,
    tag,
    keys,
    properties,
    messageGroup,
    bornTimestampMs,
    storeTimestampMs,
    receiptHandle,
    deliveryAttempt,
  };
}

/** A Status (PullMessageResponse) or FetchStatus (FetchQueueResponse): code 1, message 2. */
export function readStatus(s: Reader): { code: number; message: string } {
  let code = 0;
  let text = '';
  while (!s.done) {
    const f = s.key();
    const t = s.wireType;
    if (f === 1 && t === VARINT) code = s.int32();
    else if (f === 2 && t === LEN) text = s.string();
    else s.skip(t);
  }
  return { code, message: text };
}

/** A decoded answer of the shape {status 1, repeated entries 2} (SendMessage, AckMessage). */
export interface StatusEntriesReply<E> {
  status: { code: number; message: string } | undefined;
  entries: E[];
}

/**
 * Decodes an answer of the shape {status 1, repeated entries 2}, each entry by `readEntry`
 * (given the entry's bytes); bytes that are not one throw (grpc-js fails the call).
 */
export function decodeStatusEntries<E>(
  bytes: Buffer,
  readEntry: (e: Reader) => E,
): StatusEntriesReply<E> {
  const r = new Reader(bytes, 0, bytes.length);
  const reply: StatusEntriesReply<E> = { status: undefined, entries: [] };
  while (!r.done) {
    const field = r.key();
    const type = r.wireType;
    if (field === 2 && type === LEN) reply.entries.push(readEntry(r.sub()));
    else if (field === 1 && type === LEN) reply.status = readStatus(r.sub());
    else r.skip(type);
  }
  return reply;
}

/** Decodes one PullMessageResponse frame. */
export function decodePullFrame(bytes: Buffer): PullFrame {
  const r = new Reader(bytes, 0, bytes.length);
  const frame: PullFrame = {};
  while (!r.done) {
    const field = r.key();
    const type = r.wireType;
    if (field === 1 && type === LEN) {
      frame.status = readStatus(r.sub());
    } else if (field === 2 && type === LEN) {
      frame.message = message(r.sub());
    } else if (field === 3 && type === VARINT) {
      frame.nextOffset = r.int64();
    } else {
      r.skip(type);
    }
  }
  return frame;
}

/**
 * A decoded FetchQueueResponse (proto/fetch.proto: status 1, next_offset 2, records 3, offsets
 * 4). Each record is a view of the reply's bytes, not a copy; the consumer checks and decodes it.
 */
export interface FetchReply {
  status: { code: number; message: string } | undefined;
  nextOffset: number;
  records: Buffer[];
  offsets: number[];
}

/**
 * Decodes a FetchQueueResponse. Offsets are read packed (as raftmq writes them) or one per
 * field, as protobuf allows either for a repeated scalar.
 */
export function decodeFetchReply(bytes: Buffer): FetchReply {
  const r = new Reader(bytes, 0, bytes.length);
  const reply: FetchReply = { status: undefined, nextOffset: 0, records: [], offsets: [] };
  while (!r.done) {
    const field = r.key();
    const type = r.wireType;
    if (field === 3 && type === LEN) {
      reply.records.push(r.bytes());
    } else if (field === 4 && type === LEN) {
      const packed = r.sub();
      while (!packed.done) reply.offsets.push(packed.varint());
    } else if (field === 4 && type === VARINT) {
      reply.offsets.push(r.varint());
    } else if (field === 2 && type === VARINT) {
      reply.nextOffset = r.varint();
    } else if (field === 1 && type === LEN) {
      reply.status = readStatus(r.sub());
    } else {
      r.skip(type);
    }
  }
  return reply;
}

/**
 * A decoded ReceiveStoredResponse (proto/fetch.proto: status 1, records 2, offsets 3,
 * receipt_handles 4, delivery_attempts 5). Records are views of the reply's bytes.
 */
export interface ReceiveStoredReply {
  status: { code: number; message: string } | undefined;
  records: Buffer[];
  offsets: number[];
  receiptHandles: string[];
  attempts: number[];
}

/** Decodes a ReceiveStoredResponse; packed or unpacked repeated numbers both read. */
export function decodeReceiveStoredReply(bytes: Buffer): ReceiveStoredReply {
  const r = new Reader(bytes, 0, bytes.length);
  const reply: ReceiveStoredReply = {
    status: undefined,
    records: [],
    offsets: [],
    receiptHandles: [],
    attempts: [],
  };
  while (!r.done) {
    const field = r.key();
    const type = r.wireType;
    if (field === 2 && type === LEN) {
      reply.records.push(r.bytes());
    } else if (field === 4 && type === LEN) {
      reply.receiptHandles.push(r.string());
    } else if ((field === 3 || field === 5) && type === LEN) {
      const into = field === 3 ? reply.offsets : reply.attempts;
      const packed = r.sub();
      while (!packed.done) into.push(packed.varint());
    } else if (field === 3 && type === VARINT) {
      reply.offsets.push(r.varint());
    } else if (field === 5 && type === VARINT) {
      reply.attempts.push(r.varint());
    } else if (field === 1 && type === LEN) {
      reply.status = readStatus(r.sub());
    } else {
      r.skip(type);
    }
  }
  return reply;
}
