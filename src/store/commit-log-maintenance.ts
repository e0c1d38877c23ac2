/**
 * The structural operations of a CommitLog: suffix truncation (Raft conflict resolution),
 * prefix removal and retention, and the recovery checkpoint. Each runs under the log's mutex,
 * records its intent or result in the metadata store (synced where recovery depends on it), and
 * stops the log if it fails half way, since its files may then be half-changed.
 */
import type { MetaBatchOp } from './meta';
import { MetaKeys } from './meta';
import { RaftmqError } from '../common/errors';
import { checkpointCodec, logStartCodec, truncationCodec } from './commit-log-recovery';
import type { CommitLogState } from './commit-log-state';
import type { CommitLogWriter } from './commit-log-writer';

/**
 * Removes entries from `fromIndex` on (Raft conflict resolution). Crash-safe: the intent is
 * recorded (synced) first and redone on open if the cut did not finish. Appends are refused
 * with BUSY while it runs.
 */
export async function truncateSuffix(
  s: CommitLogState,
  writer: CommitLogWriter,
  fromIndex: number,
): Promise<void> {
  s.usable();
  if (fromIndex < s.first) {
    throw new RaftmqError(
      'OUT_OF_RANGE',
      `cannot truncate from ${fromIndex} below first index ${s.first}`,
    );
  }
  if (fromIndex > s.last) return;
  s.truncating = true;
  try {
    await s.mutex.run(() => truncateLocked(s, writer, fromIndex));
  } catch (err) {
    s.fail(err);
    throw s.fatal ?? err;
  } finally {
    s.truncating = false;
  }
}

async function truncateLocked(
  s: CommitLogState,
  writer: CommitLogWriter,
  fromIndex: number,
): Promise<void> {
  await writer.drainForTruncation();
  s.usable();
  // Forgotten before anything is cut: a failure half way stops the log anyway.
  s.recent.truncateFrom(fromIndex);
  const rec = await s.index.lookup(fromIndex);
  const prevEnd =
    fromIndex - 1 >= s.first
      ? await s.index.lookup(fromIndex - 1).then((p) => p.position + p.sizeBytes)
      : s.firstPos;
  const ops: MetaBatchOp[] = [
    {
      type: 'put',
      key: MetaKeys.logTruncation,
      value: truncationCodec.encode({ fromIndex, position: rec.position }),
    },
  ];
  if (s.checkpointIdx >= fromIndex) {
    s.checkpointIdx = fromIndex - 1;
    ops.push({
      type: 'put',
      key: MetaKeys.logCheckpoint,
      value: checkpointCodec.encode({
        index: fromIndex - 1,
        endPosition: prevEnd,
        term: s.terms.termAt(fromIndex - 1) ?? 0,
      }),
    });
  }
  await s.meta.batch(ops, { sync: true });
  await cutAt(s, writer, fromIndex, rec.position);
  await s.meta.batch([{ type: 'del', key: MetaKeys.logTruncation }], { sync: true });
  s.last = fromIndex - 1;
  s.endPos = rec.position;
  s.terms.truncateAfter(s.last);
  s.writtenIdx = Math.min(s.writtenIdx, s.last);
  s.writtenEndPos = Math.min(s.writtenEndPos, s.endPos);
  s.durableIdx = Math.min(s.durableIdx, s.last);
  const err = new RaftmqError('OUT_OF_RANGE', `entries from ${fromIndex} were truncated`);
  s.written.rejectFrom(fromIndex, err);
  s.persisted.rejectFrom(fromIndex, err);
  s.log.info({ fromIndex, position: rec.position }, 'commit log suffix truncated');
}

/** Cuts data and index files so that `fromIndex` (at `position`) and all after it are gone. */
async function cutAt(
  s: CommitLogState,
  writer: CommitLogWriter,
  fromIndex: number,
  position: number,
): Promise<void> {
  const keep = s.segmentStartOf(position);
  for (const seg of s.segments.filter((x) => x.start > keep)) {
    await s.files.forget(s.segmentPath(seg.start));
    await s.disk.remove(s.segmentPath(seg.start));
    writer.forgetSegment(seg.start);
  }
  s.segments = s.segments.filter((x) => x.start <= keep);
  const last = s.segments[s.segments.length - 1];
  if (last && last.firstIndex !== undefined && last.firstIndex >= fromIndex)
    last.firstIndex = undefined;
  if (last) {
    await s.files.use(s.segmentPath(keep), false, async (f) => {
      await f.truncate(position - keep);
      await f.sync();
    });
  }
  await s.disk.syncDir(s.segmentDir);
  await s.index.truncateAfter(fromIndex - 1);
}

/**
 * Removes whole segments holding only entries below `keepFromIndex`. The new start is
 * recorded (synced) before files are deleted. Returns the new first index.
 */
export async function removePrefix(s: CommitLogState, keepFromIndex: number): Promise<number> {
  s.usable();
  return s.mutex.run(async () => {
    let k = -1;
    for (let i = 0; i < s.segments.length; i++) {
      const f = s.segments[i]?.firstIndex;
      if (f !== undefined && f <= keepFromIndex && f <= s.writtenIdx) k = i;
    }
    const seg = s.segments[k];
    if (!seg || seg.firstIndex === undefined || seg.firstIndex <= s.first) return s.first;
    const newFirst = seg.firstIndex;
    const prevTerm = s.terms.termAt(newFirst - 1) ?? 0;
    const start = { firstIndex: newFirst, position: seg.start, prevTerm };
    const removed = s.segments.slice(0, k);
    await s.stopOnError(async () => {
      await s.meta.batch(
        [{ type: 'put', key: MetaKeys.logStart, value: logStartCodec.encode(start) }],
        { sync: true },
      );
      // The synced start is the commit point: from here the log starts at newFirst, and an
      // open after a crash finishes the deletions below.
      s.segments = s.segments.slice(k);
      s.terms.trimBefore(newFirst - 1);
      s.first = newFirst;
      s.firstPos = seg.start;
      for (const old of removed) {
        await s.files.forget(s.segmentPath(old.start));
        await s.disk.remove(s.segmentPath(old.start));
      }
      await s.disk.syncDir(s.segmentDir);
      await s.index.removeFilesBefore(newFirst);
    });
    s.log.info({ firstIndex: newFirst, position: seg.start }, 'commit log prefix removed');
    return newFirst;
  });
}

/**
 * Retention's decision: the first index retention would keep. Segments go, oldest first, while
 * they are older than `fileReservedTimeMs` or the log exceeds `retainedBytesMax`, never the
 * active one and never one holding an entry at or above `keepFromIndexMax` (the caller's bound:
 * applied, and needed by followers). Returns `first` when nothing would go. Removes nothing:
 * the broker compacts its Raft core to the point before {@link removePrefix} removes it.
 */
export async function retentionPoint(s: CommitLogState, keepFromIndexMax: number): Promise<number> {
  s.usable();
  const now = s.clock.nowMs();
  let total = s.endPos - s.firstPos;
  let keepFrom = s.first;
  for (let i = 0; i + 1 < s.segments.length; i++) {
    const seg = s.segments[i];
    const next = s.segments[i + 1];
    if (!seg || next?.firstIndex === undefined || next.firstIndex > keepFromIndexMax) break;
    const stat = await s.disk.stat(s.segmentPath(seg.start));
    const expired = stat !== undefined && now - stat.mtimeMs > s.options.fileReservedTimeMs;
    const over = s.options.retainedBytesMax > 0 && total > s.options.retainedBytesMax;
    if (!expired && !over) break;
    keepFrom = next.firstIndex;
    total -= next.start - Math.max(seg.start, s.firstPos);
  }
  return keepFrom;
}

/** Retention in one step: {@link retentionPoint}, then {@link removePrefix} to it. */
export async function applyRetention(s: CommitLogState, keepFromIndexMax: number): Promise<number> {
  const keepFrom = await retentionPoint(s, keepFromIndexMax);
  return keepFrom > s.first ? removePrefix(s, keepFrom) : s.first;
}

/** Moves the recovery checkpoint to the durable index (index files synced first). */
export async function checkpoint(s: CommitLogState): Promise<void> {
  s.usable();
  await s.mutex.run(async () => {
    const idx = s.durableIdx;
    if (idx <= s.checkpointIdx || idx < s.first) return;
    await s.stopOnError(async () => {
      const rec = await s.index.lookup(idx);
      await s.index.sync();
      const cp = { index: idx, endPosition: rec.position + rec.sizeBytes, term: rec.term };
      // A lost checkpoint only means a longer scan at the next open, except at close, where
      // a synced one lets the next open skip the scan after a power loss too.
      await s.meta.batch(
        [{ type: 'put', key: MetaKeys.logCheckpoint, value: checkpointCodec.encode(cp) }],
        { sync: s.closing },
      );
      s.checkpointIdx = idx;
    });
  });
}
