/**
 * Answers the broker writes by the thousand, encoded straight to protobuf bytes without the
 * object tree @grpc/proto-loader's serializer wants (and then converts field by field): the
 * answers to stored sends, to AckMessage and to FetchQueue, and the enum numbers delivered
 * messages carry (their frames: rmq-stored-frame.ts). `test/broker/rmq-message-encode.test.ts`
 * decodes each with the project's `.proto` files and compares it with what the generic encoder
 * writes.
 *
 * A frame that is already bytes travels as an {@link EncodedFrame}; messaging-proto.ts lets
 * such a frame through the response serializer untouched.
 */
import { RaftmqError, RmqCode } from '../common/errors';
import type { BodyEncoding, MessageType } from '../store/message-format';
import { lenFieldSize, varintFieldSize, varintSize, Writer } from '../common/proto-writer';
import type { WireStatus } from './rmq-wire';

/** A response frame already encoded: the serializer sends `bytes` as they are. */
export class EncodedFrame {
  constructor(readonly bytes: Buffer) {}
}

/** `Encoding` enum numbers. */
export const ENCODING_NUMBERS: Readonly<Record<BodyEncoding, number>> = { IDENTITY: 1, GZIP: 2 };
/** `MessageType` enum numbers. */
export const MESSAGE_TYPE_NUMBERS: Readonly<Record<MessageType, number>> = {
  NORMAL: 1,
  FIFO: 2,
  DELAY: 3,
  TRANSACTION: 4,
};

/** One stored message of a SendMessage answer. */
export interface AcceptedSend {
  readonly messageId: string;
  /** Its queue offset (a non-negative safe integer). */
  readonly offset: number;
}

/**
 * A Status field {code 1, message 2} of `size` bytes. A function of the module, not a closure
 * per call: V8 optimizes each instance of a hot closure on its own, and a closure made per
 * request was compiled again and again under load.
 */
function writeStatus(w: Writer, size: number, code: number, message: string, len: number): void {
  w.messageHeader(1, size);
  w.varintField(1, code);
  w.stringField(2, message, len);
}

/**
 * The `SendMessageResponse` of a request whose messages were all stored: the status `code`
 * with `message`, and per message an entry with the same status, its id and queue offset
 * (`SendResultEntry`: status 1, message_id 2, offset 4; the empty transaction id and recall
 * handle are left out, as proto3 allows). Every stored send is answered this way, so it is
 * encoded directly rather than through protobufjs objects, like delivered messages.
 */
export function encodeSendAccepted(
  entries: readonly AcceptedSend[],
  code: number,
  message: string,
): EncodedFrame {
  const messageLen = Buffer.byteLength(message, 'utf8');
  const statusSize = varintFieldSize(code) + lenFieldSize(messageLen);
  const idLens = new Array<number>(entries.length);
  const entrySizes = new Array<number>(entries.length);
  let size = lenFieldSize(statusSize);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AcceptedSend;
    if (!Number.isSafeInteger(e.offset) || e.offset < 0) {
      throw new RaftmqError('INTERNAL', `send answer: queue offset ${e.offset} is not valid`);
    }
    const idLen = Buffer.byteLength(e.messageId, 'utf8');
    const entrySize =
      lenFieldSize(statusSize) +
      (idLen > 0 ? lenFieldSize(idLen) : 0) +
      (e.offset > 0 ? varintFieldSize(e.offset) : 0);
    idLens[i] = idLen;
    entrySizes[i] = entrySize;
    size += lenFieldSize(entrySize);
  }
  const w = new Writer(Buffer.allocUnsafe(size));
  writeStatus(w, statusSize, code, message, messageLen);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AcceptedSend;
    w.messageHeader(2, entrySizes[i] as number);
    writeStatus(w, statusSize, code, message, messageLen);
    if ((idLens[i] as number) > 0) w.stringField(2, e.messageId, idLens[i] as number);
    if (e.offset > 0) w.varintField(4, e.offset);
  }
  if (w.pos !== size) throw new RaftmqError('INTERNAL', 'encodeSendAccepted: size mismatch');
  return new EncodedFrame(w.buf);
}

/** One entry of an AckMessage answer (`AckMessageResultEntry`). */
export interface AckAnswerEntry {
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly status: WireStatus;
}

/** A status code as its number (a `Code` name is looked up). */
function codeNumber(code: number | string): number {
  if (typeof code === 'number') return code;
  const n = (RmqCode as Readonly<Record<string, number>>)[code];
  if (n === undefined) throw new RaftmqError('INTERNAL', `unknown status code ${code}`);
  return n;
}

/**
 * The bytes of an AckMessageResponse: `status = 1`, then per entry `entries = 2`
 * (`AckMessageResultEntry`: message_id 1, receipt_handle 2, status 3). An AckMessage of a
 * thousand receipts is answered with a thousand entries, which protobufjs builds as objects
 * and writes string by string; this writes them at once. Empty strings and a zero code are
 * left out, as proto3 allows.
 */
export function encodeAckAnswer(
  status: WireStatus,
  entries: readonly AckAnswerEntry[],
): EncodedFrame {
  const statusSize = (s: WireStatus): number => {
    const len = Buffer.byteLength(s.message, 'utf8');
    const code = codeNumber(s.code);
    return (code !== 0 ? varintFieldSize(code) : 0) + (len > 0 ? lenFieldSize(len) : 0);
  };
  const sizes = new Array<number>(entries.length * 4);
  let size = lenFieldSize(statusSize(status));
  // Consecutive entries usually share one status: its size is computed once per run.
  let last: AckAnswerEntry['status'] | undefined;
  let lastSize = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AckAnswerEntry;
    if (last === undefined || e.status.code !== last.code || e.status.message !== last.message) {
      last = e.status;
      lastSize = statusSize(last);
    }
    const idLen = Buffer.byteLength(e.messageId, 'utf8');
    const handleLen = Buffer.byteLength(e.receiptHandle, 'utf8');
    const entrySize =
      (idLen > 0 ? lenFieldSize(idLen) : 0) +
      (handleLen > 0 ? lenFieldSize(handleLen) : 0) +
      lenFieldSize(lastSize);
    sizes[i * 4] = idLen;
    sizes[i * 4 + 1] = handleLen;
    sizes[i * 4 + 2] = lastSize;
    sizes[i * 4 + 3] = entrySize;
    size += lenFieldSize(entrySize);
  }
  const w = new Writer(Buffer.allocUnsafe(size));
  const writeStatus = (field: number, s: AckAnswerEntry['status'], sSize: number): void => {
    w.messageHeader(field, sSize);
    const code = codeNumber(s.code);
    if (code !== 0) w.varintField(1, code);
    if (s.message !== '') w.stringField(2, s.message, Buffer.byteLength(s.message, 'utf8'));
  };
  writeStatus(1, status, statusSize(status));
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AckAnswerEntry;
    const idLen = sizes[i * 4] as number;
    const handleLen = sizes[i * 4 + 1] as number;
    w.messageHeader(2, sizes[i * 4 + 3] as number);
    if (idLen > 0) w.stringField(1, e.messageId, idLen);
    if (handleLen > 0) w.stringField(2, e.receiptHandle, handleLen);
    writeStatus(3, e.status, sizes[i * 4 + 2] as number);
  }
  if (w.pos !== size) throw new RaftmqError('INTERNAL', 'encodeAckAnswer: size mismatch');
  return new EncodedFrame(w.buf);
}

/** A stored record of a FetchQueue answer, and its queue offset. */
export interface FetchedRecord {
  readonly bytes: Uint8Array;
  readonly queueOffset: number;
}

/**
 * The bytes of a FetchQueueResponse (proto/fetch.proto) that found records: `status = 1`
 * (`FetchStatus`: code 1, message 2) OK, `next_offset = 2`, each record as `records = 3`, and
 * their offsets packed in `offsets = 4`. The records are copied once, into the answer.
 */
export function encodeFetchAnswer(
  nextOffset: number,
  records: readonly FetchedRecord[],
): EncodedFrame {
  if (!Number.isSafeInteger(nextOffset) || nextOffset < 0) {
    throw new RaftmqError('INTERNAL', `fetch answer: next offset ${nextOffset} is not valid`);
  }
  const message = 'OK';
  const statusSize = varintFieldSize(RmqCode.OK) + lenFieldSize(message.length);
  let offsetsSize = 0;
  let size = lenFieldSize(statusSize) + (nextOffset > 0 ? varintFieldSize(nextOffset) : 0);
  for (const r of records) {
    if (!Number.isSafeInteger(r.queueOffset) || r.queueOffset < 0) {
      throw new RaftmqError('INTERNAL', `fetch answer: queue offset ${r.queueOffset} is not valid`);
    }
    size += lenFieldSize(r.bytes.byteLength);
    offsetsSize += varintSize(r.queueOffset);
  }
  if (records.length > 0) size += lenFieldSize(offsetsSize);
  const w = new Writer(Buffer.allocUnsafe(size));
  w.messageHeader(1, statusSize);
  w.varintField(1, RmqCode.OK);
  w.stringField(2, message, message.length);
  if (nextOffset > 0) w.varintField(2, nextOffset);
  for (const r of records) w.copyField(3, r.bytes, 0, r.bytes.byteLength);
  if (records.length > 0) {
    w.messageHeader(4, offsetsSize);
    for (const r of records) w.varint(r.queueOffset);
  }
  if (w.pos !== size) throw new RaftmqError('INTERNAL', 'encodeFetchAnswer: size mismatch');
  return new EncodedFrame(w.buf);
}

/** A message of a ReceiveStored answer: its stored record and offset, handle and attempt. */
export interface ReceivedRecord {
  readonly record: FetchedRecord;
  readonly receiptHandle: string;
  readonly attempt: number;
}

/**
 * The bytes of a ReceiveStoredResponse (proto/fetch.proto) that hands out messages: `status = 1`
 * OK, each record as `records = 2`, then packed `offsets = 3`, one `receipt_handles = 4` each
 * and packed `delivery_attempts = 5`. The records are copied once, into the answer.
 */
export function encodeReceiveStoredAnswer(received: readonly ReceivedRecord[]): EncodedFrame {
  const message = 'OK';
  const statusSize = varintFieldSize(RmqCode.OK) + lenFieldSize(message.length);
  let size = lenFieldSize(statusSize);
  let offsetsSize = 0;
  let attemptsSize = 0;
  const handleBytes = new Array<number>(received.length);
  for (let i = 0; i < received.length; i++) {
    const r = received[i] as ReceivedRecord;
    const offset = r.record.queueOffset;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new RaftmqError('INTERNAL', `receive answer: queue offset ${offset} is not valid`);
    }
    if (!Number.isSafeInteger(r.attempt) || r.attempt < 1 || r.attempt > 0xffff_ffff) {
      throw new RaftmqError('INTERNAL', `receive answer: attempt ${r.attempt} is not valid`);
    }
    const hb = Buffer.byteLength(r.receiptHandle, 'utf8');
    handleBytes[i] = hb;
    size += lenFieldSize(r.record.bytes.byteLength) + lenFieldSize(hb);
    offsetsSize += varintSize(offset);
    attemptsSize += varintSize(r.attempt);
  }
  if (received.length > 0) size += lenFieldSize(offsetsSize) + lenFieldSize(attemptsSize);
  const w = new Writer(Buffer.allocUnsafe(size));
  w.messageHeader(1, statusSize);
  w.varintField(1, RmqCode.OK);
  w.stringField(2, message, message.length);
  for (const r of received) w.copyField(2, r.record.bytes, 0, r.record.bytes.byteLength);
  if (received.length > 0) {
    w.messageHeader(3, offsetsSize);
    for (const r of received) w.varint(r.record.queueOffset);
    for (let i = 0; i < received.length; i++) {
      const r = received[i] as ReceivedRecord;
      w.stringField(4, r.receiptHandle, handleBytes[i] as number);
    }
    w.messageHeader(5, attemptsSize);
    for (const r of received) w.varint(r.attempt);
  }
  if (w.pos !== size) throw new RaftmqError('INTERNAL', 'encodeReceiveStoredAnswer: size mismatch');
  return new EncodedFrame(w.buf);
}
