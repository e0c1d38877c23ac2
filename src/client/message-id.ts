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

/** Two uppercase hex digits of each byte value. */
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).toUpperCase().padStart(2, '0'));

function hexU32(value: number): string {
  return (
    (HEX[value >>> 24] as string) +
    (HEX[(value >>> 16) & 0xff] as string) +
    (HEX[(value >>> 8) & 0xff] as string) +
    (HEX[value & 0xff] as string)
  );
}

/** Version, host id and process id: the same in every id of this process. */
const PREFIX = (() => {
  const buf = Buffer.allocUnsafe(9);
  buf[0] = 0x01;
  HOST_ID.copy(buf, 1);
  buf.writeUInt16BE(process.pid % 65535, 7);
  return buf.toString('hex').toUpperCase();
})();

/** The hex of the last second asked for (ids are made thousands of times a second). */
let cachedSecond = -1;
let cachedSecondHex = '';

/** A new message id, unique within this process and very likely across processes. */
export function newMessageId(nowMs: number = Date.now()): string {
  const second = Math.max(0, Math.floor((nowMs - EPOCH_2021_MS) / 1000)) >>> 0;
  if (second !== cachedSecond) {
    cachedSecond = second;
    cachedSecondHex = hexU32(second);
  }
  const id = PREFIX + cachedSecondHex + hexU32(sequence);
  sequence = (sequence + 1) >>> 0;
  return id;
}
