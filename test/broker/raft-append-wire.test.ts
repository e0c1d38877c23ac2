/*
 * The hand-written Append encoder (raft-append-wire.ts) must produce exactly the bytes the
 * protobuf library produces for the same message, framed as one element of a batch: fast-check
 * draws Appends with numbers up to 2^53 - 1, empty and large payloads, payloads that are views
 * into larger buffers, non-ASCII names, and entries with and without a record checksum, and
 * compares the two encodings byte for byte, then decodes the result. It does so with payloads
 * copied into the tail and with payloads shared as parts of their own, as large ones are.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import {
  APPEND_SHARE_MIN_BYTES,
  encodeAppendParts,
  encodeFramedAppend,
} from '../../src/broker/raft-append-wire';
import { frameBatch, loadRaftCodecs, toWire, type RaftCodecs } from '../../src/broker/raft-wire';
import type { AppendMessage, Entry, EntryType } from '../../src/raft/types';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import { fcParams } from '../fc-params';

const safeNat = fc.oneof(
  fc.constant(0),
  fc.nat({ max: 300 }),
  fc.nat({ max: 2 ** 32 }),
  fc.integer({ min: Number.MAX_SAFE_INTEGER - 8, max: Number.MAX_SAFE_INTEGER }),
  fc.maxSafeNat(),
);

const payload = fc
  .tuple(fc.uint8Array({ maxLength: 2048 }), fc.nat({ max: 7 }), fc.boolean())
  .map(([bytes, pad, asView]) => {
    if (!asView) return bytes;
    const outer = new Uint8Array(pad + bytes.length + 3);
    outer.set(bytes, pad);
    return outer.subarray(pad, pad + bytes.length);
  });

const entry = fc.record({
  index: safeNat,
  term: safeNat,
  type: fc.constantFrom<EntryType>('normal', 'noop', 'config'),
  data: payload,
  // A record checksum to send, or none (0 and 2^32 - 1 included).
  recordCrc: fc.option(fc.oneof(fc.constantFrom(0, 0xffffffff), fc.nat({ max: 0xffffffff }))),
});

const append = fc.record({
  group: fc.oneof(fc.constant('broker-a'), fc.constant(''), fc.string({ maxLength: 40 })),
  from: fc.constantFrom('n1', 'ñode-2', 'n3'),
  term: safeNat,
  prevIndex: safeNat,
  prevTerm: safeNat,
  commit: safeNat,
  entries: fc.array(entry, { maxLength: 6 }),
  // From what size payloads are shared rather than copied (the default shares none of these).
  shareMinBytes: fc.option(fc.integer({ min: 0, max: 2048 }), { nil: undefined }),
});

function appendOf(entries: Entry[]): AppendMessage {
  return {
    type: 'Append',
    from: asNodeId('n1'),
    to: asNodeId('n2'),
    term: asTerm(3),
    prevIndex: asLogIndex(10),
    prevTerm: asTerm(2),
    commit: asLogIndex(9),
    entries,
  };
}

describe('direct Append encoding', () => {
  let codecs: RaftCodecs;
  before(async () => {
    codecs = await loadRaftCodecs('');
  });

  it('is byte-identical to the protobuf encoding and decodes back', () => {
    fc.assert(
      fc.property(append, (a) => {
        const message: AppendMessage = {
          type: 'Append',
          from: asNodeId(a.from),
          to: asNodeId('n2'),
          term: asTerm(a.term),
          prevIndex: asLogIndex(a.prevIndex),
          prevTerm: asTerm(a.prevTerm),
          commit: asLogIndex(a.commit),
          entries: a.entries.map((e): Entry => ({
            index: asLogIndex(e.index),
            term: asTerm(e.term),
            type: e.type,
            data: e.data,
          })),
        };
        // The checksum to send with each entry, as the transport's lookup gives it.
        const crcs = new Map(message.entries.map((e, i) => [e, a.entries[i]?.recordCrc]));
        const crcOf = (e: Entry): number | undefined => crcs.get(e) ?? undefined;
        const direct = encodeFramedAppend(a.group, message, crcOf, a.shareMinBytes);
        const parts = encodeAppendParts(
          a.group,
          message,
          crcOf,
          (n) => Buffer.allocUnsafe(n),
          a.shareMinBytes,
        ).parts;
        assert.ok(
          parts.every((part) => part.length > 0),
          'no empty part',
        );
        const reference = frameBatch([codecs.peerMessage.encode(toWire(a.group, message, crcOf))]);
        assert.ok(direct.equals(reference), 'bytes differ from protobufjs');
        const decoded = codecs.peerBatch.decode(direct) as {
          messages: { append: { entries: { recordCrc?: number | null }[] } }[];
        };
        const sent = decoded.messages[0]?.append.entries.map((e) => e.recordCrc ?? null);
        assert.deepEqual(
          sent,
          a.entries.map((e) => e.recordCrc),
        );
      }),
      fcParams(300),
    );
  });

  it('sends a large payload as a part of its own, and copies small ones into the tail', () => {
    const big = Buffer.alloc(APPEND_SHARE_MIN_BYTES, 7);
    const small = Buffer.from('small');
    const bigger = Buffer.alloc(APPEND_SHARE_MIN_BYTES * 3, 9);
    const message = appendOf(
      [small, big, bigger, small].map((data, i) => ({
        index: asLogIndex(11 + i),
        term: asTerm(3),
        type: 'normal',
        data,
      })),
    );
    const asked: number[] = [];
    const encoded = encodeAppendParts('g', message, undefined, (bytes) => {
      asked.push(bytes);
      return Buffer.allocUnsafe(bytes + 100);
    });
    // The large payloads are the entries' own buffers; the small one is nowhere as a part.
    assert.ok(encoded.parts.includes(big));
    assert.ok(encoded.parts.includes(bigger));
    assert.ok(!encoded.parts.includes(small));
    assert.ok(encoded.parts.every((p) => p.length > 0));
    // Only the tail's own bytes came from the pool: the whole, less the shared payloads and the
    // head (the first part).
    const head = encoded.parts[0]?.length ?? 0;
    assert.deepEqual(asked, [encoded.bytes - head - big.length - bigger.length]);
    const joined = Buffer.concat(encoded.parts);
    assert.equal(joined.length, encoded.bytes);
    assert.ok(joined.equals(encodeFramedAppend('g', message, undefined, Number.MAX_SAFE_INTEGER)));
  });
});
