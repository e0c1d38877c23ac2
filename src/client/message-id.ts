/**
 * Message ids in the layout the official RocketMQ 5 clients generate ("v1"): 17 bytes written
 * as 34 uppercase hex characters — version 0x01, six bytes of a host identifier, the process id
 * modulo 65535, seconds since 2021-01-01T00:00:00Z, and a per-process sequence number. Brokers
 * treat ids as opaque strings; the layout keeps ours recognisable beside theirs.
 */
import { randomBytes } from 'node:crypto';

const EPOCH_2021_MS = Date.UTC(2021, 0, 1);
const HOST_ID = randomBytes(6);
let sequence = 0;

/** A new message id, unique within this process and very likely across processes. */
export function newMessageId(nowMs: number = Date.now()): string {
  const buf = Buffer.allocUnsafe(17);
  buf[0] = 0x01;
  HOST_ID.copy(buf, 1);
  buf.writeUInt16BE(process.pid % 65535, 7);
  buf.writeUInt32BE(Math.max(0, Math.floor((nowMs - EPOCH_2021_MS) / 1000)) >>> 0, 9);
  buf.writeUInt32BE(sequence, 13);
  sequence = (sequence + 1) >>> 0;
  return buf.toString('hex').toUpperCase();
}
