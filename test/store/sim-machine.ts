/**
 * Test helper: one simulated machine (clock, disk, metadata store, seeded PRNG) that a store
 * can be opened on again and again. Each incarnation gets fenced views of the disk and the
 * metadata, so after `crash()` the promises a dead incarnation left behind cannot write into the
 * next one.
 */
import { ManualClock, ManualScheduler } from '../../src/common/clock';
import { createPrng, type Prng } from '../../src/common/prng';
import { SimDisk, fencedDisk, type CrashMode } from '../../src/sim/sim-disk';
import { MemMetaStore } from '../../src/store/mem-meta-store';
import type { Disk } from '../../src/store/disk';
import type { MetaStore } from '../../src/store/meta';
import { fencedMeta } from './fenced-meta';

export interface Incarnation {
  disk: Disk;
  meta: MetaStore;
  clock: ManualClock;
  scheduler: ManualScheduler;
}

export class SimMachine {
  readonly clock = new ManualClock();
  readonly disk: SimDisk;
  readonly meta = new MemMetaStore();
  readonly prng: Prng;
  scheduler = new ManualScheduler(this.clock);
  private fences: Array<() => void> = [];

  constructor(seed: number) {
    this.prng = createPrng(seed);
    this.disk = new SimDisk({ clock: this.clock, prng: this.prng.fork() });
  }

  /** Fresh fenced views and scheduler for the next incarnation of the node. */
  incarnation(): Incarnation {
    const d = fencedDisk(this.disk);
    const m = fencedMeta(this.meta);
    this.fences = [d.fence, m.fence];
    this.scheduler = new ManualScheduler(this.clock);
    return { disk: d.disk, meta: m.meta, clock: this.clock, scheduler: this.scheduler };
  }

  /** Ends the current incarnation the way `mode` says a crash would. */
  crash(mode: CrashMode): void {
    for (const fence of this.fences) fence();
    this.disk.crash(mode);
    this.meta.crash(mode, this.prng.fork());
  }
}
