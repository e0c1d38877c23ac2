/*
 * The direct decoder of append-stream frames (raft-append-decode.ts) must give exactly what the
 * general path gives (protobufjs, then the checks of raft-wire.ts): fast-check draws batches of
 * Appends (with numbers up to 2^53 - 1, empty and large payloads) mixed with acknowledgements
 * and heartbeats, some with a wrong group, an unknown sender or another addressee, encoded by
 * the hand encoder or by protobufjs, and compares the two decodings; then it corrupts frames
 * (bytes flipped, cut, inserted) and checks that the decoder never throws and still agrees.
 * Entries come with their record checksum, a wrong one or none: a wrong one rejects the frame,
 * and every entry of an accepted frame that had one is counted and its payload trusted.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { decodeAppendFrame, type AppendFrame } from '../../src/broker/raft-append-decode';
import { encodeFramedAppend } from '../../src/broker/raft-append-wire';
import {
  decodeInboundBatch,
  frameBatch,
  loadRaftCodecs,
  PEER_BATCH_MESSAGES_MAX,
  toWire,
  type InboundExpectation,
  type RaftCodecs,
} from '../../src/broker/raft-wire';
import { isRaftmqError } from '../../src/common/errors';
import { asLogIndex, asNodeId, asTerm } from '../../src/common/types';
import {
  LOG_INDEX_MAX,
  type AppendMessage,
  type Entry,
  type EntryType,
  type Message,
} from '../../src/raft/types';
import { storeEntryType } from '../../src/broker/raft-entry-codec';
import { recordChecksum } from '../../src/store/log-record';
import { isPayloadVerified } from '../../src/store/verified-payloads';
import { fcParams } from '../fc-params';

const GROUP = 'broker-a';
const SELF = asNodeId('n2');
const EXPECT: InboundExpectation = {
  group: GROUP,
  selfId: SELF,
  peers: new Set(['n1', 'n3']),
  route: 'append',
};

const safeNat = fc.oneof(
  fc.nat({ max: 300 }),
  fc.nat({ max: 2 ** 32 }),
  // Either side of the bound on terms and indexes (TERM_MAX, LOG_INDEX_MAX), and the top.
  fc.integer({ min: 2 ** 52 - 4, max: 2 ** 52 + 4 }),
  fc.integer({ min: Number.MAX_SAFE_INTEGER - 4, max: Number.MAX_SAFE_INTEGER }),
);

/** The record checksum of an entry, as the CommitLog computes it. */
function crcOf(e: Pick<Entry, 'index' | 'term' | 'type' | 'data'>): number {
  return recordChecksum(e.index, e.term, storeEntryType(e.type), e.data);
}

const entryArb = fc.record({
  index: safeNat,
  term: safeNat,
  type: fc.constantFrom<EntryType>('normal', 'noop', 'config'),
  data: fc.uint8Array({ maxLength: 1500 }),
  // Sent without a record checksum, with the right one, or with a wrong one.
  crc: fc.constantFrom('none', 'none', 'right', 'right', 'wrong'),
});

/**
 * The drawn entries as sent: renumbered to follow `prevIndex` in the message's term when
 * `wellFormed` (else most Appends drawn break the protocol and never reach the checksums), each
 * with its checksum (right or wrong) or none.
 */
function sentEntries(
  drawn: readonly { index: number; term: number; type: EntryType; data: Uint8Array; crc: string }[],
  wellFormed: boolean,
  prevIndex: number,
  term: number,
): Entry[] {
  return drawn.map(({ crc, ...e }, i) => {
    const entry = {
      ...e,
      index: asLogIndex(wellFormed ? prevIndex + 1 + i : e.index),
      term: asTerm(wellFormed ? term : e.term),
    };
    if (crc === 'none') return entry;
    return { ...entry, recordCrc: crc === 'right' ? crcOf(entry) : (crcOf(entry) ^ 1) >>> 0 };
  });
}

/** Mostly the expected envelope; sometimes one field is wrong. */
const envelopeArb = fc.record({
  group: fc.oneof(
    { weight: 8, arbitrary: fc.constant(GROUP) },
    { weight: 1, arbitrary: fc.constantFrom('broker-b', '') },
  ),
  from: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom('n1', 'n3') },
    { weight: 1, arbitrary: fc.constantFrom('n9', 'ñ1') },
  ),
  to: fc.oneof(
    { weight: 8, arbitrary: fc.constant('n2') },
    { weight: 1, arbitrary: fc.constant('n1') },
  ),
  term: safeNat,
});

interface Drawn {
  readonly group: string;
  readonly message: Message;
  /** Encode an Append with the hand encoder (else with protobufjs). */
  readonly direct: boolean;
}

const messageArb: fc.Arbitrary<Drawn> = fc
  .tuple(
    envelopeArb,
    fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          type: fc.constant('Append' as const),
          prevIndex: safeNat,
          prevTerm: safeNat,
          commit: safeNat,
          entries: fc.array(entryArb, { maxLength: 5 }),
          wellFormed: fc.boolean(),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          type: fc.constant('AppendResp' as const),
          reject: fc.boolean(),
          matchIndex: safeNat,
          rejectedIndex: safeNat,
          hintTerm: safeNat,
          hintIndex: safeNat,
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          type: fc.constant('Heartbeat' as const),
          commit: safeNat,
          context: safeNat,
        }),
      },
    ),
    fc.boolean(),
  )
  .map(([envelope, drawnBody, direct]) => {
    let body: Record<string, unknown> = drawnBody;
    if ('entries' in drawnBody) {
      const { wellFormed, entries, ...rest } = drawnBody;
      const prevIndex = wellFormed
        ? Math.min(drawnBody.prevIndex, LOG_INDEX_MAX - 8)
        : drawnBody.prevIndex;
      const prevTerm = wellFormed ? Math.min(drawnBody.prevTerm, envelope.term) : rest.prevTerm;
      body = {
        ...rest,
        prevIndex,
        prevTerm,
        entries: sentEntries(entries, wellFormed, prevIndex, envelope.term),
      };
    }
    const message = {
      ...body,
      from: asNodeId(envelope.from),
      to: asNodeId(envelope.to),
      term: asTerm(envelope.term),
    } as unknown as Message;
    return { group: envelope.group, message, direct };
  });

/** The checksum the sender attaches: the one the drawn entry carries. */
const sentCrc = (e: Entry): number | undefined => e.recordCrc;

function encodeFrame(codecs: RaftCodecs, drawn: readonly Drawn[]): Buffer {
  return Buffer.concat(
    drawn.map(({ group, message, direct }) =>
      direct && message.type === 'Append'
        ? encodeFramedAppend(group, message, sentCrc)
        : frameBatch([codecs.peerMessage.encode(toWire(group, message, sentCrc))]),
    ),
  );
}

/**
 * The general path: protobufjs, then raft-wire's checks; then the rule for checksums (any
 * entry whose record checksum does not match its bytes rejects the frame).
 */
function general(codecs: RaftCodecs, bytes: Buffer): AppendFrame['result'] {
  let raw: unknown;
  try {
    raw = codecs.peerBatch.decode(bytes);
  } catch {
    return { ok: false, error: new Error('undecodable') as never };
  }
  const result = decodeInboundBatch(raw, EXPECT);
  if (!result.ok) return result;
  const entries = result.messages.flatMap((m) => (m.type === 'Append' ? m.entries : []));
  if (entries.some((e) => e.recordCrc !== undefined && e.recordCrc !== crcOf(e))) {
    return { ok: false, error: new Error('checksum') as never };
  }
  return result;
}

function assertAgrees(codecs: RaftCodecs, bytes: Buffer): AppendFrame {
  const fast = decodeAppendFrame(bytes, codecs, EXPECT);
  const slow = general(codecs, bytes);
  assert.equal(fast.result.ok, slow.ok, 'accepted by one path and not the other');
  if (fast.result.ok && slow.ok) {
    assert.deepEqual(fast.result.messages, slow.messages);
    // Every entry that came with a checksum was checked, and its payload is trusted now.
    const entries = fast.result.messages.flatMap((m) => (m.type === 'Append' ? m.entries : []));
    const checked = entries.filter((e) => e.recordCrc !== undefined);
    assert.equal(fast.checkedEntries, checked.length);
    for (const e of checked) assert.ok(isPayloadVerified(e.data));
  } else if (!fast.result.ok) {
    assert.ok(isRaftmqError(fast.result.error, 'MESSAGE_MALFORMED'));
    assert.equal(fast.checkedEntries, 0);
  }
  assert.ok(fast.messageCount >= 1);
  return fast;
}

/** An Append from n1 to this node in term 3, after index 9 of term 2, commit 8. */
function leaderAppend(entries: Entry[]): AppendMessage {
  return {
    type: 'Append',
    from: asNodeId('n1'),
    to: SELF,
    term: asTerm(3),
    prevIndex: asLogIndex(9),
    prevTerm: asTerm(2),
    commit: asLogIndex(8),
    entries,
  };
}

describe('direct decoding of append-stream frames', () => {
  let codecs: RaftCodecs;
  before(async () => {
    codecs = await loadRaftCodecs('');
  });

  it('decodes a leader batch to the very messages sent, entries as views of the frame', () => {
    const message = leaderAppend([
      { index: asLogIndex(10), term: asTerm(3), type: 'normal', data: new Uint8Array([1, 2]) },
      { index: asLogIndex(11), term: asTerm(3), type: 'noop', data: new Uint8Array(0) },
    ]);
    const frame = Buffer.concat([
      encodeFramedAppend(GROUP, message),
      encodeFramedAppend(GROUP, message),
    ]);
    const { result, messageCount } = decodeAppendFrame(frame, codecs, EXPECT);
    assert.equal(messageCount, 2);
    assert.ok(result.ok);
    assert.deepEqual(result.messages, [message, message]);
    const decoded = result.messages[0];
    assert.ok(decoded?.type === 'Append');
    assert.equal(decoded.entries[0]?.data.buffer, frame.buffer, 'no copy of the payload');
  });

  it('refuses a frame of more messages than a sender may batch, on both paths', () => {
    const message = leaderAppend([]);
    const one = encodeFramedAppend(GROUP, message);
    const frame = (n: number): Buffer => Buffer.concat(Array.from({ length: n }, () => one));
    const within = decodeAppendFrame(frame(PEER_BATCH_MESSAGES_MAX), codecs, EXPECT);
    assert.ok(within.result.ok);
    assert.equal(within.messageCount, PEER_BATCH_MESSAGES_MAX);
    const over = decodeAppendFrame(frame(PEER_BATCH_MESSAGES_MAX + 1), codecs, EXPECT);
    assert.ok(!over.result.ok);
    assert.match(over.result.error.message, /too many/);
    // The general decoder gives the same answer.
    const general = decodeInboundBatch(
      codecs.peerBatch.decode(frame(PEER_BATCH_MESSAGES_MAX + 1)),
      EXPECT,
    );
    assert.ok(!general.ok);
    assert.match(general.error.message, /too many/);
  });

  it('checks a record checksum once: a match marks the payload verified, a mismatch rejects', () => {
    const data = Buffer.from('a message batch, as the leader encoded it');
    const entry = { index: asLogIndex(10), term: asTerm(3), type: 'normal' as const, data };
    const append = (recordCrc?: number): AppendMessage =>
      leaderAppend([recordCrc === undefined ? entry : { ...entry, recordCrc }]);
    const decode = (m: AppendMessage, crc: (e: Entry) => number | undefined): AppendFrame =>
      decodeAppendFrame(encodeFramedAppend(GROUP, m, crc), codecs, EXPECT);
    const payloadOf = (frame: AppendFrame): Uint8Array => {
      assert.ok(frame.result.ok);
      const m = frame.result.messages[0];
      assert.ok(m?.type === 'Append' && m.entries[0] !== undefined);
      return m.entries[0].data;
    };

    const good = decode(append(crcOf(entry)), sentCrc);
    assert.equal(good.checkedEntries, 1);
    assert.ok(isPayloadVerified(payloadOf(good)));
    // The record that the follower writes uses the checked value.
    assert.ok(good.result.ok && good.result.messages[0]?.type === 'Append');
    assert.equal(good.result.messages[0].entries[0]?.recordCrc, crcOf(entry));

    const none = decode(append(), () => undefined);
    assert.equal(none.checkedEntries, 0);
    assert.ok(!isPayloadVerified(payloadOf(none)), 'no checksum: each message is checked');

    // The same checksum over bytes changed on the way: the frame is refused whole.
    const bytes = encodeFramedAppend(GROUP, append(crcOf(entry)), sentCrc);
    const at = bytes.indexOf(data) + 3;
    bytes[at] = (bytes[at] ?? 0) ^ 0x20;
    const bad = decodeAppendFrame(bytes, codecs, EXPECT);
    assert.ok(!bad.result.ok && isRaftmqError(bad.result.error, 'MESSAGE_MALFORMED'));
    assert.match(bad.result.error.message, /record checksum/);
    assert.equal(bad.checkedEntries, 0);
  });

  it('gives what the general path gives, for every mix of messages and envelopes', () => {
    fc.assert(
      fc.property(fc.array(messageArb, { minLength: 1, maxLength: 4 }), (drawn) => {
        const frame = assertAgrees(codecs, encodeFrame(codecs, drawn));
        assert.equal(frame.messageCount, drawn.length);
      }),
      fcParams(300),
    );
  });

  it('never throws on a corrupted frame, and still agrees with the general path', () => {
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.nat(255) }),
      fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.nat(255) }),
    );
    fc.assert(
      fc.property(
        fc.array(messageArb, { minLength: 1, maxLength: 3 }),
        fc.array(edit, { minLength: 1, maxLength: 4 }),
        (drawn, edits) => {
          let bytes = encodeFrame(codecs, drawn);
          for (const e of edits) {
            const at = bytes.length === 0 ? 0 : e.at % bytes.length;
            if (e.kind === 'flip' && bytes.length > 0) {
              bytes = Buffer.from(bytes);
              bytes[at] = e.value;
            } else if (e.kind === 'cut') {
              bytes = bytes.subarray(0, at);
            } else if (e.kind === 'insert') {
              bytes = Buffer.concat([
                bytes.subarray(0, at),
                Buffer.from([e.value]),
                bytes.subarray(at),
              ]);
            }
          }
          assertAgrees(codecs, bytes);
        },
      ),
      fcParams(1000),
    );
  });
});
