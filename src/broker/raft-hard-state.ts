/**
 * The Raft hard state as stored under `MetaKeys.raftHardState`: term, vote and commit index in
 * one value, so term and vote change together in one synced batch (a vote must never be acted
 * on before it is durable, Raft §5.2 and thesis §3.8).
 *
 * | offset | size | field                                    |
 * |--------|------|------------------------------------------|
 * | 0      | 1    | version (1)                              |
 * | 1      | 1    | reserved, zero                           |
 * | 2      | 2    | vote length in bytes (0 = no vote)       |
 * | 4      | 8    | term, u64 big-endian                     |
 * | 12     | 8    | commit index, u64 big-endian             |
 * | 20     | n    | vote: the voted-for node id, UTF-8       |
 *
 * Decoding checks every field and the exact length; through `getMeta` a failure becomes
 * META_CORRUPT naming the key.
 */
import { asLogIndex, asNodeId, asTerm } from '../common/types';
import type { HardState } from '../raft/types';
import { type MetaCodec } from '../store/meta';
import { readU64BE as readU64, writeU64BE as writeU64 } from '../common/bytes';

const VERSION = 1;
const HEADER_BYTES = 20;
const VOTE_BYTES_MAX = 0xffff;
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** The hard state of a node that has never run. */
export const INITIAL_HARD_STATE: HardState = Object.freeze({
  term: asTerm(0),
  vote: null,
  commit: asLogIndex(0),
});

function checkU64(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`hard state ${what} must be a non-negative safe integer, got ${value}`);
  }
}

/** The binary codec of {@link HardState}; see the file comment for the layout. */
export const hardStateCodec: MetaCodec<HardState> = {
  encode(value) {
    checkU64(value.term, 'term');
    checkU64(value.commit, 'commit');
    const vote = value.vote === null ? Buffer.alloc(0) : Buffer.from(value.vote, 'utf8');
    if (value.vote !== null && (vote.byteLength === 0 || vote.byteLength > VOTE_BYTES_MAX)) {
      throw new RangeError(`hard state vote must be 1..${VOTE_BYTES_MAX} bytes`);
    }
    const buf = Buffer.alloc(HEADER_BYTES + vote.byteLength);
    buf[0] = VERSION;
    buf.writeUInt16BE(vote.byteLength, 2);
    writeU64(buf, 4, value.term);
    writeU64(buf, 12, value.commit);
    vote.copy(buf, HEADER_BYTES);
    return buf;
  },
  decode(bytes) {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (buf.byteLength < HEADER_BYTES) throw new RangeError('hard state too short');
    if (buf[0] !== VERSION) throw new RangeError(`hard state version ${String(buf[0])}`);
    if (buf[1] !== 0) throw new RangeError('hard state reserved byte is not zero');
    const voteBytes = buf.readUInt16BE(2);
    if (buf.byteLength !== HEADER_BYTES + voteBytes) {
      throw new RangeError(
        `hard state of ${buf.byteLength} bytes, expected ${HEADER_BYTES + voteBytes}`,
      );
    }
    const term = readU64(buf, 4);
    const commit = readU64(buf, 12);
    checkU64(term, 'term');
    checkU64(commit, 'commit');
    const vote = voteBytes === 0 ? null : utf8Decoder.decode(buf.subarray(HEADER_BYTES));
    return {
      term: asTerm(term),
      vote: vote === null ? null : asNodeId(vote),
      commit: asLogIndex(commit),
    };
  },
};
