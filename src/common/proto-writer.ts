/**
 * Protobuf encoding by hand, for what is written by the thousand (the broker's delivered
 * messages, send and ack answers; the SDK's acknowledgements): field sizes computed first, then
 * one buffer written in order. Tags here are below 16 (one byte) unless a caller writes a
 * two-byte tag itself.
 */
import { copyBytes } from './bytes';

/** Wire types. */
export const VARINT = 0;
export const LEN = 2;

/** Copies up to this long are done byte by byte (see {@link Writer.copy}). */
const SHORT_COPY_MAX = 32;
/**
 * ASCII strings up to this long are measured and written here, a character at a time: a native
 * call per string (Buffer.byteLength, buf.write) cost more than the loop.
 */
const SHORT_STRING_MAX = 64;

/** The UTF-8 length of `s`. */
export function utf8Length(s: string): number {
  if (s.length <= SHORT_STRING_MAX) {
    let i = 0;
    while (i < s.length && s.charCodeAt(i) < 0x80) i++;
    if (i === s.length) return i;
  }
  return Buffer.byteLength(s, 'utf8');
}

/** Bytes of a varint of a non-negative safe integer. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Bytes of a length-delimited field (tags here are all below 16: one byte). */
export function lenFieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

export function varintFieldSize(n: number): number {
  return 1 + varintSize(n);
}

/** A Timestamp or Duration of `ms` milliseconds (ms >= 0): its size and its two fields. */
export interface SecondsNanos {
  readonly seconds: number;
  readonly nanos: number;
  readonly size: number;
}

export function secondsNanos(ms: number): SecondsNanos {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const size =
    (seconds !== 0 ? varintFieldSize(seconds) : 0) + (nanos !== 0 ? varintFieldSize(nanos) : 0);
  return { seconds, nanos, size };
}

/** Writes into one buffer of a size computed beforehand. */
export class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(n: number): void {
    const buf = this.buf;
    while (n >= 128) {
      buf[this.pos++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    buf[this.pos++] = n;
  }

  tag(field: number, wireType: number): void {
    this.buf[this.pos++] = (field << 3) | wireType;
  }

  varintField(field: number, n: number): void {
    this.tag(field, VARINT);
    this.varint(n);
  }

  /** A string field whose UTF-8 length is `len`. */
  stringField(field: number, s: string, len: number): void {
    this.tag(field, LEN);
    this.string(s, len);
  }

  /**
   * The varint length `len` and the UTF-8 bytes of `s`, for a field whose key is written. `len`
   * must be the UTF-8 length of `s` ({@link utf8Length}): a short string whose `len` equals its
   * UTF-16 length is written as ASCII without a check.
   */
  string(s: string, len: number): void {
    this.varint(len);
    // Every non-ASCII character takes more UTF-8 bytes than UTF-16 units: equal means ASCII.
    if (len === s.length && len <= SHORT_STRING_MAX) {
      const buf = this.buf;
      let pos = this.pos;
      for (let i = 0; i < len; i++) buf[pos++] = s.charCodeAt(i);
      this.pos = pos;
    } else {
      this.pos += this.buf.write(s, this.pos, len, 'utf8');
    }
  }

  bytesField(field: number, b: Uint8Array): void {
    this.tag(field, LEN);
    const len = b.length;
    this.varint(len);
    copyBytes(this.buf, b, this.pos);
    this.pos += len;
  }

  /** A length-delimited field holding `src[start, start + len)` (UTF-8 text or bytes). */
  copyField(field: number, src: Uint8Array, start: number, len: number): void {
    this.tag(field, LEN);
    this.copy(src, start, len);
  }

  /** Its varint length and `src[start, start + len)`, for a field whose tag is written. */
  copy(src: Uint8Array, start: number, len: number): void {
    this.varint(len);
    const buf = this.buf;
    let pos = this.pos;
    // A few bytes are copied faster here than by a native call.
    if (len <= SHORT_COPY_MAX) {
      for (let i = start; i < start + len; i++) buf[pos++] = src[i] ?? 0;
    } else {
      copyBytes(buf, src.subarray(start, start + len), pos);
      pos += len;
    }
    this.pos = pos;
  }

  /** The header of an embedded message of `len` bytes; its fields follow. */
  messageHeader(field: number, len: number): void {
    this.tag(field, LEN);
    this.varint(len);
  }

  secondsNanos(field: number, t: SecondsNanos): void {
    this.messageHeader(field, t.size);
    if (t.seconds !== 0) this.varintField(1, t.seconds);
    if (t.nanos !== 0) this.varintField(2, t.nanos);
  }
}
