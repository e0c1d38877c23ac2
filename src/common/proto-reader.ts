/**
 * Protobuf decoding by hand, for what is read by the thousand (the SDK's pulled and received
 * messages, the broker's SendMessage requests): a reader over one buffer, and over ranges of it
 * for embedded messages. Bytes that are not protobuf throw a RaftmqError MESSAGE_MALFORMED
 * saying what is wrong and where; each caller decides what it becomes (a failed call in the
 * SDK, a BAD_REQUEST answer in the broker).
 */
import { isUtf8 } from 'node:buffer';
import { bufferView } from './bytes';
import { RaftmqError } from './errors';

/** The error for bytes that are not protobuf (built only when thrown: not on the hot path). */
function malformed(message: string): RaftmqError {
  return new RaftmqError('MESSAGE_MALFORMED', message);
}

/** Wire types. */
export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
const START_GROUP = 3;
const END_GROUP = 4;
export const WIRE_I32 = 5;

/** Groups nested deeper than this are refused (protobuf.js's recursion limit). */
const GROUP_DEPTH_MAX = 100;

export class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  /** The field number and wire type of the key {@link key} read last. */
  field = 0;
  wireType = 0;

  /** Reads the next field's key: returns its number and keeps it and its wire type. */
  key(): number {
    const k = this.varint();
    this.wireType = k % 8;
    this.field = Math.floor(k / 8);
    return this.field;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Throws unless the field whose key was read last has wire type `type`. */
  expect(type: number): void {
    if (this.wireType !== type) {
      throw malformed(`field ${this.field} has wire type ${this.wireType}, expected ${type}`);
    }
  }

  /** A varint as a number: exact up to 2^53 (lengths, keys, enums, offsets). */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      const b = this.buf[this.pos++] as number;
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    throw malformed('varint longer than 10 bytes');
  }

  /**
   * An int32 field: negative values arrive as 10-byte varints of their 64-bit form, whose low
   * 32 bits are the value (the sum `varint()` makes of all ten bytes loses them).
   */
  int32(): number {
    return this.lowBits() | 0;
  }

  /** An int64 field, signed; beyond 2^53 rounded, as protobuf.js's `longs: Number` does. */
  int64(): number {
    let lo = this.lowBits();
    let hi = this.high;
    if (hi >>> 31 !== 0) {
      lo = (~lo + 1) >>> 0;
      hi = ~hi >>> 0;
      if (lo === 0) hi = (hi + 1) >>> 0;
      return -(lo + hi * 4294967296);
    }
    return lo + hi * 4294967296;
  }

  /** The high 32 bits of the varint {@link lowBits} read last, unsigned. */
  private high = 0;

  /** Reads a varint: returns its low 32 bits and keeps the high ones in `high` (unsigned). */
  private lowBits(): number {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      const v = (this.buf[this.pos] as number) & 0x7f;
      if (i < 4) {
        lo |= v << (7 * i);
      } else if (i === 4) {
        lo |= v << 28;
        hi |= v >>> 4;
      } else {
        hi |= v << (7 * i - 32);
      }
      if ((this.buf[this.pos++] as number) < 0x80) {
        this.high = hi >>> 0;
        return lo >>> 0;
      }
    }
    throw malformed('varint longer than 10 bytes');
  }

  /** The bounds of a length-delimited field's contents; moves past them. */
  sub(): Reader {
    const len = this.varint();
    if (len > this.end - this.pos) throw malformed('length-delimited field runs past its end');
    const r = new Reader(this.buf, this.pos, this.pos + len);
    this.pos += len;
    return r;
  }

  string(): string {
    const len = this.varint();
    if (len > this.end - this.pos) throw malformed('length-delimited field runs past its end');
    const start = this.pos;
    const s = this.buf.toString('utf8', start, start + len);
    this.pos += len;
    // Invalid bytes decode to U+FFFD: a string field must be UTF-8 (proto3), and a tag or id
    // changed in decoding would be stored as another and echoed back unrecognizable. The scan
    // for U+FFFD is cheap; the exact check runs only when one appears.
    if (s.includes('\ufffd') && !isUtf8(bufferView(this.buf, start, start + len))) {
      throw malformed('a string field is not valid UTF-8');
    }
    return s;
  }

  /** A bytes field: a view of the buffer, not a copy. */
  bytes(): Buffer {
    const len = this.varint();
    if (len > this.end - this.pos) throw malformed('length-delimited field runs past its end');
    const start = this.pos;
    this.pos += len;
    return bufferView(this.buf, start, this.pos);
  }

  /**
   * Skips the field whose key was read last (wire type `wireType`), groups included (nested at
   * most {@link GROUP_DEPTH_MAX} deep).
   */
  skip(wireType: number, depth = 0): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.advance(this.varint());
        return;
      case WIRE_I32:
        this.advance(4);
        return;
      case START_GROUP:
        this.skipGroup(this.field, depth);
        return;
      default:
        throw malformed(`unexpected wire type ${wireType} of field ${this.field}`);
    }
  }

  private skipGroup(group: number, depth: number): void {
    if (depth >= GROUP_DEPTH_MAX) throw malformed(`groups nested deeper than ${GROUP_DEPTH_MAX}`);
    for (;;) {
      const f = this.key();
      if (this.wireType === END_GROUP) {
        if (f !== group) throw malformed(`group ${group} ended by ${f}`);
        return;
      }
      this.skip(this.wireType, depth + 1);
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw malformed('field runs past its end');
    this.pos += n;
  }
}
