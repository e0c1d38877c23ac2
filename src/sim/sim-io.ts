/**
 * Views of a node's simulated devices for one incarnation of its process:
 *
 * - {@link fencedMeta}: a metadata store view that stops working when fenced, so the promises a
 *   crashed incarnation leaves behind cannot write into the next one's metadata (the disk side
 *   is `fencedDisk` in sim-disk.ts);
 * - {@link slowDisk} and {@link slowMeta}: every fsync (and synced metadata batch) takes a
 *   seeded random time on the simulated clock. Without it a whole persist would finish inside
 *   one event, and no message, tick or crash could ever land while a node waits for its disk.
 *
 * Wrap the fenced view in the slow one: the fence is then checked after the delay, when the
 * operation really happens.
 */
import type { Disk, DiskFile } from '../store/disk';
import type { MetaStore } from '../store/meta';
import type { Prng } from '../common/prng';

/** A metadata store view that refuses all work once fenced. */
export function fencedMeta(store: MetaStore): { meta: MetaStore; fence: () => void } {
  let fenced = false;
  const check = (): void => {
    if (fenced) throw new Error('metadata fenced: process crashed');
  };
  const meta: MetaStore = {
    get: async (key) => {
      check();
      return store.get(key);
    },
    batch: async (ops, options) => {
      check();
      return store.batch(ops, options);
    },
    scan: async (prefix, options) => {
      check();
      return store.scan(prefix, options);
    },
    close: async () => {
      check();
      return store.close();
    },
  };
  return {
    meta,
    fence: () => {
      fenced = true;
    },
  };
}

/** Simulated IO latency: a sleep on the simulated clock and the largest delay to draw. */
export interface SimLatency {
  readonly sleep: (delayMs: number) => Promise<void>;
  readonly prng: Prng;
  /** Each sync takes a uniform random [0, this] milliseconds... */
  readonly syncMsMax: number;
  /** ...plus, with this chance (default 0: nothing is drawn), a stall of [50, stallMsMax]. */
  readonly stallProbability?: number;
  readonly stallMsMax?: number;
}

const STALL_MS_MIN = 50;

function delay(latency: SimLatency): Promise<void> {
  const { prng, stallProbability = 0, stallMsMax = STALL_MS_MIN } = latency;
  let ms = prng.nextInt(0, latency.syncMsMax + 1);
  if (stallProbability > 0 && prng.chance(stallProbability)) {
    ms += prng.nextInt(STALL_MS_MIN, Math.max(STALL_MS_MIN, stallMsMax) + 1);
  }
  return latency.sleep(ms);
}

/** A disk view whose file and directory syncs take simulated time. */
export function slowDisk(disk: Disk, latency: SimLatency): Disk {
  const slowFile = (file: DiskFile): DiskFile => ({
    path: file.path,
    read: file.read.bind(file),
    writev: file.writev.bind(file),
    sync: async () => {
      await delay(latency);
      return file.sync();
    },
    truncate: file.truncate.bind(file),
    size: file.size.bind(file),
    close: file.close.bind(file),
    releaseCache: file.releaseCache.bind(file),
  });
  return {
    releasesCache: disk.releasesCache,
    open: async (p, create) => slowFile(await disk.open(p, create)),
    list: disk.list.bind(disk),
    mkdirp: disk.mkdirp.bind(disk),
    remove: disk.remove.bind(disk),
    removeTree: disk.removeTree.bind(disk),
    syncDir: async (dir) => {
      await delay(latency);
      return disk.syncDir(dir);
    },
    stat: disk.stat.bind(disk),
    freeBytes: disk.freeBytes.bind(disk),
  };
}

/** A metadata store view whose synced batches take simulated time. */
export function slowMeta(store: MetaStore, latency: SimLatency): MetaStore {
  return {
    get: (key) => store.get(key),
    batch: async (ops, options) => {
      if (options.sync) await delay(latency);
      return store.batch(ops, options);
    },
    scan: (prefix, options) => store.scan(prefix, options),
    close: () => store.close(),
  };
}
