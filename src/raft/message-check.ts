/**
 * Shape checks for messages off the wire. The decoder's types may promise more than the bytes
 * held, so the core checks what its logic relies on before acting; a message that fails is
 * counted and dropped, never thrown on. Terms above TERM_MAX and indexes above LOG_INDEX_MAX
 * are malformed: the core adds one to both, and must stay exact and storable when it does.
 */
import { LOG_INDEX_MAX, TERM_MAX, type Entry, type Message } from './types';

const ENTRY_TYPES: ReadonlySet<string> = new Set(['normal', 'noop', 'config']);

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isTerm(value: unknown): value is number {
  return isCount(value) && value <= TERM_MAX;
}

function isIndex(value: unknown): value is number {
  return isCount(value) && value <= LOG_INDEX_MAX;
}

function isId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}

/** True when `entries` follow (prevIndex, prevTerm) consecutively with sane terms. */
function entriesWellFormed(entries: unknown, prevIndex: number, prevTerm: number,
  term: number): boolean {
  if (!Array.isArray(entries) || prevIndex + entries.length > LOG_INDEX_MAX) return false;
  let lastTerm = prevTerm;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as Partial<Entry> | null | undefined;
    if (typeof entry !== 'object' || entry === null) return false;
    if (entry.index !== prevIndex + 1 + i || !isTerm(entry.term)) return false;
    if (entry.term < lastTerm || entry.term > term) return false;
    if (typeof entry.type !== 'string' || !ENTRY_TYPES.has(entry.type)) return false;
    if (!(entry.data instanceof Uint8Array)) return false;
    lastTerm = entry.term;
  }
  return true;
}

/** True when `message` has every field its type needs, in range. */
export function isWellFormed(message: Message): boolean {
  if (typeof message !== 'object' || message === null) return false;
  if (!isId(message.from) || !isId(message.to) || !isTerm(message.term)) return false;
  switch (message.type) {
    case 'PreVote':
    case 'Vote':
      return isIndex(message.lastIndex) && isTerm(message.lastTerm)
        && message.lastTerm <= message.term
        && (message.type === 'PreVote' || typeof message.transfer === 'boolean');
    case 'PreVoteResp':
    case 'VoteResp':
      return typeof message.reject === 'boolean';
    case 'Append':
      return isIndex(message.prevIndex) && isTerm(message.prevTerm) && isIndex(message.commit)
        && message.prevTerm <= message.term
        && entriesWellFormed(message.entries, message.prevIndex, message.prevTerm, message.term);
    case 'AppendResp':
      return typeof message.reject === 'boolean' && isIndex(message.matchIndex)
        && isIndex(message.rejectedIndex) && isTerm(message.hintTerm)
        && isIndex(message.hintIndex);
    case 'Heartbeat':
      return isIndex(message.commit) && isCount(message.context);
    case 'HeartbeatResp':
      return isCount(message.context);
    case 'TimeoutNow':
      return true;
    default:
      return false;
  }
}
