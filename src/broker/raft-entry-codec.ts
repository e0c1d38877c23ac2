/**
 * Mapping between the Raft core's entries (`type` 'noop' | 'normal' | 'config', `data`) and the
 * CommitLog's stored entries (numeric `type`, `payload`). The payload bytes are shared, not
 * copied: the core never mutates entry data and the CommitLog copies on append.
 */
import { unreachable } from '../common/assert';
import { RaftmqError } from '../common/errors';
import { asLogIndex, asTerm } from '../common/types';
import type { Entry, EntryType as RaftEntryType } from '../raft/types';
import { EntryType, type LogEntry } from '../store/log-record';

/** The stored entry type of a Raft entry type. */
export function storeEntryType(type: RaftEntryType): EntryType {
  switch (type) {
    case 'noop':
      return EntryType.NOOP;
    case 'normal':
      return EntryType.NORMAL;
    case 'config':
      return EntryType.CONFIG;
    default:
      return unreachable(type, 'raft entry type');
  }
}

/** The Raft entry type of a stored entry type. */
export function raftEntryType(type: EntryType): RaftEntryType {
  switch (type) {
    case EntryType.NOOP:
      return 'noop';
    case EntryType.NORMAL:
      return 'normal';
    case EntryType.CONFIG:
      return 'config';
    default:
      // The CommitLog checks the type of every record it reads, so this is a corrupt value
      // that slipped past a check: refuse it as corrupt rather than guess.
      throw new RaftmqError('CORRUPT_RECORD', `unknown stored entry type ${String(type)}`);
  }
}

/** A Raft entry as the CommitLog stores it. */
export function toLogEntry(entry: Entry): LogEntry {
  return {
    index: entry.index,
    term: entry.term,
    type: storeEntryType(entry.type),
    payload: entry.data,
    recordCrc: entry.recordCrc,
  };
}

/** A stored entry as the Raft core sees it. */
export function fromLogEntry(entry: LogEntry): Entry {
  return {
    index: asLogIndex(entry.index),
    term: asTerm(entry.term),
    type: raftEntryType(entry.type),
    data: entry.payload,
  };
}
