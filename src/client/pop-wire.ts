/**
 * A hand-written encoder of the SDK's largest request, an AckMessageRequest settling up to
 * 1,024 messages (service.proto: AckMessageRequest {group 1, topic 2, entries 3};
 * Resource {resource_namespace 1, name 2}; AckMessageEntry {message_id 1, receipt_handle 2}),
 * and decoder of its answer (AckMessageResponse {status 1, entries 2}; AckMessageResultEntry
 * {message_id 1, receipt_handle 2, status 3}; Status {code 1, message 2}). The generic codec
 * built an object per entry and wrote each string twice (once to measure it); at a thousand
 * acks per request that was the largest cost of a consuming client. The decoder skips the
 * message ids (the consumer matches entries by position and handle).
 */
import { lenFieldSize, Writer } from '../common/proto-writer';
import { Reader, WIRE_LEN } from '../common/proto-reader';
import { decodeStatusEntries, readStatus, type StatusEntriesReply } from './pull-wire';

/** One message to acknowledge. */
export interface AckEntry {
  readonly messageId: string;
  readonly receiptHandle: string;
}

/** The bytes of an AckMessageRequest of `entries` for `group` and `topic` in `namespace`. */
export function encodeAckRequest(
  namespace: string,
  group: string,
  topic: string,
  entries: readonly AckEntry[],
): Buffer {
  const nsBytes = Buffer.byteLength(namespace, 'utf8');
  const resourceSize = (nameBytes: number): number =>
    (nsBytes > 0 ? lenFieldSize(nsBytes) : 0) + lenFieldSize(nameBytes);
  const groupBytes = Buffer.byteLength(group, 'utf8');
  const topicBytes = Buffer.byteLength(topic, 'utf8');
  const groupSize = resourceSize(groupBytes);
  const topicSize = resourceSize(topicBytes);
  let size = lenFieldSize(groupSize) + lenFieldSize(topicSize);
  const lengths = new Array<number>(entries.length * 2);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AckEntry;
    const idBytes = Buffer.byteLength(e.messageId, 'utf8');
    const handleBytes = Buffer.byteLength(e.receiptHandle, 'utf8');
    lengths[2 * i] = idBytes;
    lengths[2 * i + 1] = handleBytes;
    size += lenFieldSize(entrySize(idBytes, handleBytes));
  }
  const w = new Writer(Buffer.allocUnsafe(size));
  const resource = (field: number, fieldSize: number, name: string, nameBytes: number): void => {
    w.messageHeader(field, fieldSize);
    if (nsBytes > 0) w.stringField(1, namespace, nsBytes);
    w.stringField(2, name, nameBytes);
  };
  resource(1, groupSize, group, groupBytes);
  resource(2, topicSize, topic, topicBytes);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as AckEntry;
    const idBytes = lengths[2 * i] as number;
    const handleBytes = lengths[2 * i + 1] as number;
    w.messageHeader(3, entrySize(idBytes, handleBytes));
    if (idBytes > 0) w.stringField(1, e.messageId, idBytes);
    if (handleBytes > 0) w.stringField(2, e.receiptHandle, handleBytes);
  }
  if (w.pos !== size) throw new Error(`encodeAckRequest: wrote ${w.pos} of ${size} bytes`);
  return w.buf;
}

/** Bytes of an AckMessageEntry's body (proto3 leaves empty strings out). */
function entrySize(idBytes: number, handleBytes: number): number {
  return (
    (idBytes > 0 ? lenFieldSize(idBytes) : 0) + (handleBytes > 0 ? lenFieldSize(handleBytes) : 0)
  );
}

/** A decoded AckMessageResponse; a status absent on the wire is undefined. */
export type AckReply = StatusEntriesReply<{
  receiptHandle: string;
  status: { code: number; message: string } | undefined;
}>;

/** Decodes an AckMessageResponse; bytes that are not one throw (grpc-js fails the call). */
export function decodeAckReply(bytes: Buffer): AckReply {
  return decodeStatusEntries(bytes, readAckEntry);
}

/** An AckMessageResultEntry: its handle and status (the message id is skipped). */
function readAckEntry(e: Reader): AckReply['entries'][number] {
  const entry: AckReply['entries'][number] = { receiptHandle: '', status: undefined };
  while (!e.done) {
    const f = e.key();
    const t = e.wireType;
    if (f === 2 && t === WIRE_LEN) entry.receiptHandle = e.string();
    else if (f === 3 && t === WIRE_LEN) entry.status = readStatus(e.sub());
    else e.skip(t);
  }
  return entry;
}
