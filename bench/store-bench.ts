/**
 * `npm run bench:store`: the storage engine on this machine's disk.
 *
 * - raw disk: a plain loop of 64 KiB write + fdatasync, the ceiling for SYNC appends at that
 *   batch size;
 * - append: 1 KiB entries into the CommitLog in SYNC mode, appended as fast as it accepts them
 *   (group commit decides how many share one fdatasync);
 * - read: sequential `readRange` of the same entries, every record checked;
 * - reopen: of a 1 GiB log with a clean checkpoint, and after a crash with 64 MiB written past
 *   the checkpoint (the instance is abandoned without close, as kill -9 would).
 *
 * Each figure is the median of several rounds. The last line of output is one JSON object.
 * Options: `--quick` for a smaller run (CI smoke), `--dir PATH` for where to write.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CommitLog } from '../src/store/commit-log';
import { NodeDisk } from '../src/store/node-disk';
import { LevelMetaStore } from '../src/store/level-meta-store';
import { EntryType, type LogEntry } from '../src/store/log-record';
import type { CommitLogOptions } from '../src/store/commit-log-options';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const dirArg = args[args.indexOf('--dir') + 1];
const root = args.includes('--dir') && dirArg ? dirArg : path.join(process.cwd(), '.bench-tmp');

const RECORD_PAYLOAD_BYTES = 1024;
const BATCH_ENTRIES = 64; // 64 x 1 KiB = a 64 KiB batch
const ROUNDS = quick ? 1 : 3;
const APPEND_BYTES = quick ? 64 * 1024 * 1024 : 512 * 1024 * 1024;
const LOG_BYTES = quick ? 128 * 1024 * 1024 : 1024 * 1024 * 1024;
const CRASH_TAIL_BYTES = quick ? 16 * 1024 * 1024 : 64 * 1024 * 1024;
const INFLIGHT_BYTES_MAX = 32 * 1024 * 1024;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

function fresh(name: string): string {
  const dir = path.join(root, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

function rawDiskMBPerSec(dir: string, totalBytes: number): number {
  const file = path.join(dir, 'raw');
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(64 * 1024, 7);
  const start = performance.now();
  for (let pos = 0; pos < totalBytes; pos += buf.byteLength) {
    fs.writeSync(fd, buf, 0, buf.byteLength, pos);
    fs.fdatasyncSync(fd);
  }
  const seconds = (performance.now() - start) / 1000;
  fs.closeSync(fd);
  fs.rmSync(file);
  return totalBytes / 1024 / 1024 / seconds;
}

const payload = Buffer.alloc(RECORD_PAYLOAD_BYTES, 0x5a);

function batchFrom(next: number, term: number): LogEntry[] {
  const out: LogEntry[] = [];
  for (let i = 0; i < BATCH_ENTRIES; i++) {
    out.push({ index: next + i, term, type: EntryType.NORMAL, payload });
  }
  return out;
}

interface Opened {
  log: CommitLog;
  meta: LevelMetaStore;
}

async function open(dir: string, options: Partial<CommitLogOptions> = {}): Promise<Opened> {
  const meta = await LevelMetaStore.open(path.join(dir, 'meta'));
  const log = await CommitLog.open(dir, { disk: new NodeDisk(), meta }, options);
  return { log, meta };
}

/** Appends `totalBytes` of 1 KiB entries as fast as the log accepts; returns seconds taken. */
async function appendAll(log: CommitLog, totalBytes: number): Promise<number> {
  const count = Math.ceil(totalBytes / RECORD_PAYLOAD_BYTES);
  const start = performance.now();
  let next = log.lastIndex() + 1;
  const end = next + count;
  const term = Math.max(1, log.lastTerm());
  const inflight: Promise<void>[] = [];
  while (next < end) {
    log.append(batchFrom(next, term));
    next += BATCH_ENTRIES;
    inflight.push(log.waitPersisted(next - 1));
    if (log.pendingWriteBytes() > INFLIGHT_BYTES_MAX || inflight.length > 256) {
      await inflight.shift();
    }
  }
  await Promise.all(inflight);
  return (performance.now() - start) / 1000;
}

async function readAll(log: CommitLog): Promise<{ seconds: number; records: number }> {
  const start = performance.now();
  let records = 0;
  for (let i = log.firstIndex(); i <= log.lastIndex();) {
    const got = await log.readRange(i, 4096, 4 * 1024 * 1024);
    records += got.length;
    i += got.length;
  }
  return { seconds: (performance.now() - start) / 1000, records };
}

function row(name: string, value: string, note = ''): void {
  console.log(`${name.padEnd(34)} ${value.padStart(14)}  ${note}`);
}

async function main(): Promise<void> {
  fs.mkdirSync(root, { recursive: true });
  console.log(`store benchmark (${quick ? 'quick' : 'full'}), data under ${root}`);
  console.log(`node ${process.version}, ${os.cpus().length} cpus\n`);

  const raw: number[] = [];
  const appendRate: number[] = [];
  const appendMB: number[] = [];
  const readRate: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    raw.push(rawDiskMBPerSec(fresh('raw'), Math.min(APPEND_BYTES, 256 * 1024 * 1024)));
    const dir = fresh('append');
    const { log, meta } = await open(dir);
    const seconds = await appendAll(log, APPEND_BYTES);
    const records = log.lastIndex();
    appendRate.push(records / seconds);
    appendMB.push((records * (RECORD_PAYLOAD_BYTES + 32)) / 1024 / 1024 / seconds);
    const r = await readAll(log);
    readRate.push(r.records / r.seconds);
    await log.close();
    await meta.close();
  }

  // Reopen of a large log with a clean checkpoint, and after a crash.
  const dir = fresh('reopen');
  {
    const { log, meta } = await open(dir, { checkpointIntervalMs: 3_600_000 });
    await appendAll(log, LOG_BYTES);
    await log.close();
    await meta.close();
  }
  const reopenClean: number[] = [];
  const reopenCrash: number[] = [];
  let rssAfterReopenMB = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const t0 = performance.now();
    const { log, meta } = await open(dir, { checkpointIntervalMs: 3_600_000 });
    reopenClean.push(performance.now() - t0);
    rssAfterReopenMB = process.memoryUsage().rss / 1024 / 1024;
    await log.close();
    await meta.close();
  }
  for (let round = 0; round < ROUNDS; round++) {
    const { log, meta } = await open(dir, { checkpointIntervalMs: 3_600_000 });
    await appendAll(log, CRASH_TAIL_BYTES);
    await log.flush();
    // Abandon the instance as a crash would: no close, no checkpoint. Its descriptors leak
    // for the rest of this process; the metadata store must be closed to release its lock.
    await meta.close();
    const t0 = performance.now();
    const again = await open(dir, { checkpointIntervalMs: 3_600_000 });
    reopenCrash.push(performance.now() - t0);
    await again.log.close();
    await again.meta.close();
  }
  fs.rmSync(root, { recursive: true, force: true });

  const figures = {
    bench: 'store',
    quick,
    rawDiskMBPerSec: Math.round(median(raw)),
    appendRecordsPerSec: Math.round(median(appendRate)),
    appendMBPerSec: Math.round(median(appendMB)),
    appendToRawRatio: Number((median(appendMB) / median(raw)).toFixed(2)),
    readRecordsPerSec: Math.round(median(readRate)),
    reopenCleanMs: Math.round(median(reopenClean)),
    reopenCrashMs: Math.round(median(reopenCrash)),
    logBytes: LOG_BYTES,
    crashTailBytes: CRASH_TAIL_BYTES,
    rssAfterReopenMB: Math.round(rssAfterReopenMB),
  };
  row('raw disk, 64 KiB write+fdatasync', `${figures.rawDiskMBPerSec} MB/s`);
  row(
    'append 1 KiB, SYNC, group commit',
    `${figures.appendMBPerSec} MB/s`,
    `${figures.appendRecordsPerSec} records/s, ${figures.appendToRawRatio} of raw`,
  );
  row('sequential read, 1 KiB, checked', `${figures.readRecordsPerSec}`, 'records/s');
  row(`reopen, ${LOG_BYTES >> 20} MiB, clean`, `${figures.reopenCleanMs} ms`);
  row(
    `reopen, crash, ${CRASH_TAIL_BYTES >> 20} MiB past checkpoint`,
    `${figures.reopenCrashMs} ms`,
  );
  row('resident memory after reopen', `${figures.rssAfterReopenMB} MB`);
  console.log(JSON.stringify(figures));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
