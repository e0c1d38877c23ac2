/**
 * One seeded simulation run, as the property tests and `npm run sim` use it: a group runs under
 * faults for `faultTicks` ticks while clients propose, read and move leadership; then every
 * fault is healed and the group must elect a leader, commit a fresh proposal and apply every
 * acknowledged proposal on every node within `healTicksMax` ticks (liveness; more with small
 * Append windows, see `healBound`), and then keep its leader and term. Safety is checked
 * throughout by the cluster and its history, and on minority sides by sim-isolation.ts.
 *
 * Before the run the seed draws its profile (sim-draws.ts): Raft settings, sync latency, fault
 * rates. Faults, each drawn per tick from the seed: network conditions (delay, loss,
 * duplication, reordering), partitions (isolate one node, isolate the leader, majority/minority
 * splits, one-way cuts, a lossy link), crashes with every loss mode (some aimed right after a
 * promise or a truncation) and later restarts, and pauses. Only faults the design claims to
 * survive are injected: devices may lose unsynced writes, but never synced ones, and never fail.
 */
import type { Logger } from '../common/logger';
import type { Prng } from '../common/prng';
import type { NodeId } from '../common/types';
import { createPrng } from '../common/prng';
import type { CrashMode } from './sim-disk';
import { SimCluster } from './sim-cluster';
import {
  describeProfile,
  drawRunProfile,
  networkProfile,
  pick,
  type FaultRates,
  type RunProfile,
} from './sim-draws';
import { IsolationChecks } from './sim-isolation';
import { CALM_NETWORK } from './sim-network';

/** What decides a run. */
export interface ScenarioOptions {
  readonly seed: number;
  readonly nodeCount: number;
  /** Ticks of faults and client load. */
  readonly faultTicks: number;
  /** After healing, ticks within which the group must be live again. */
  readonly healTicksMax: number;
  readonly tickIntervalMs?: number;
  readonly traceSink?: (line: string) => void;
  readonly logger?: Logger;
}

/** The outcome of a run. */
export interface ScenarioResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly violations: readonly string[];
  readonly violationCount: number;
  /** The trace lines before the first violation (empty when none). */
  readonly traceBeforeViolation: readonly string[];
  readonly traceDigest: string;
  /** Ticks the group needed to be live after healing, or null if it never was. */
  readonly healTicks: number | null;
  readonly stats: Readonly<Record<string, number | string>>;
}

/** Ticks a healed group gets to be live again (the liveness bound). */
export const DEFAULT_HEAL_TICKS_MAX = 300;

/** The command that replays a run exactly (printed on every failure). */
export function replayCommand(seed: number, nodeCount: number, faultTicks: number): string {
  return (
    `npm run sim -- --seed ${seed} --nodes ${nodeCount} --ticks ${faultTicks}` +
    '  (add --trace to print every event)'
  );
}

const CRASH_MODES: readonly CrashMode[] = ['lose', 'tear', 'keep'];
/** Aimed crashes are power losses: a process crash loses nothing a promise could rely on. */
const POWER_LOSS_MODES: readonly CrashMode[] = ['lose', 'tear'];
/** Salt for the PRNG that draws a run's profile (kept apart from the cluster's own streams). */
const PROFILE_SEED_SALT = 0x5eed_f11e;
const OUTSTANDING_PROPOSALS_MAX = 16;
/** Events per node and tick a run may average before it counts as a message storm. */
const EVENTS_PER_NODE_TICK_MAX = 40;

function shuffled<T>(prng: Prng, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = prng.nextInt(0, i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** Drives the faults and the clients of one run. */
class Scenario {
  private readonly prng: Prng;
  private readonly rates: FaultRates;
  private readonly isolation: IsolationChecks;
  private readonly restartAtTick = new Map<NodeId, number>();
  private outstanding = 0;
  private partitionHealTick = -1;
  /** The liveness bound of this run (set when healing begins). */
  healTicksBound: number;
  private tick = 0;
  private proposalSeq = 0;

  constructor(
    private readonly cluster: SimCluster,
    private readonly options: ScenarioOptions,
    private readonly profile: RunProfile,
  ) {
    this.prng = cluster.prng.fork();
    this.rates = profile.rates;
    this.healTicksBound = options.healTicksMax;
    const { syncMsMax, stallProbability, stallMsMax } = profile.sync;
    const syncMsLongest = syncMsMax + (stallProbability > 0 ? stallMsMax : 0);
    this.isolation = new IsolationChecks(
      cluster,
      profile.electionTimeoutTicks,
      Math.ceil(syncMsLongest / cluster.options.tickIntervalMs),
    );
    cluster.trace.line(describeProfile(profile));
  }

  /** Replaces the current partition (if any) with a new one, healed at `healAtTick`. */
  private partition(tick: number): void {
    const c = this.cluster;
    const ids = c.ids;
    c.history.partitions += 1;
    c.network.heal();
    this.isolation.healed();
    const isolate = (id: NodeId): void => {
      c.network.isolate(id);
      this.isolation.partitioned([[id]], tick);
    };
    switch (this.prng.nextInt(0, 5)) {
      case 0: {
        const id = pick(this.prng, ids);
        c.trace.line(`fault isolate ${id}`);
        isolate(id);
        return;
      }
      case 1: {
        const leader = c.leader();
        if (leader === undefined) return;
        c.trace.line(`fault isolate-leader ${leader}`);
        isolate(leader);
        return;
      }
      case 2: {
        const order = shuffled(this.prng, ids);
        const cut = this.prng.nextInt(1, ids.length);
        const groups = [order.slice(0, cut), order.slice(cut)];
        c.trace.line(`fault split ${groups.map((g) => g.join(',')).join(' | ')}`);
        c.network.split(groups);
        this.isolation.partitioned(groups, tick);
        return;
      }
      case 3: {
        const [from, to] = shuffled(this.prng, ids) as [NodeId, NodeId];
        c.trace.line(`fault cut ${from} -> ${to}`);
        c.network.cutLink(from, to);
        return;
      }
      default: {
        const [from, to] = shuffled(this.prng, ids) as [NodeId, NodeId];
        c.trace.line(`fault lossy ${from} -> ${to}`);
        c.network.setLinkRule(from, to, { lossProbability: 0.5, extraDelayMsMax: 20 });
        return;
      }
    }
  }

  /**
   * Restarts nodes whose downtime is over, and may crash one: at a random moment within this
   * tick (not only at tick boundaries, so crashes also land while a node waits for its disk),
   * or, for a share of crashes, aimed right after its next promise or truncation.
   */
  private crashOrRestart(tick: number): void {
    const c = this.cluster;
    for (const [id, at] of this.restartAtTick) {
      if (at > tick || c.node(id).state !== 'down') continue;
      this.restartAtTick.delete(id);
      c.start(id);
    }
    if (!this.prng.chance(this.rates.crashPerTick)) return;
    const id = pick(this.prng, c.ids);
    const r = this.rates;
    if (c.node(id).state !== 'down') {
      const downTicks = this.prng.nextInt(r.restartTicksMin, r.restartTicksMax);
      this.restartAtTick.set(id, tick + downTicks);
    }
    if (this.prng.chance(r.aimedCrashShare)) {
      const kind = this.prng.chance(0.7) ? 'promise' : 'truncate';
      c.aimCrash(id, kind, pick(this.prng, POWER_LOSS_MODES));
      return;
    }
    const mode = pick(this.prng, CRASH_MODES);
    c.loop.after(this.prng.nextInt(0, c.options.tickIntervalMs), () => c.crash(id, mode));
  }

  private clients(): void {
    const c = this.cluster;
    const leader = c.leader();
    if (this.outstanding < OUTSTANDING_PROPOSALS_MAX && this.prng.chance(0.4)) {
      const target =
        leader !== undefined && this.prng.chance(0.85) ? leader : pick(this.prng, c.ids);
      this.propose(target);
    }
    if (leader !== undefined && this.prng.chance(0.05)) c.readIndex(leader);
    if (leader !== undefined && this.prng.chance(0.003)) {
      this.isolation.transferred(this.tick);
      c.transfer(
        leader,
        pick(
          this.prng,
          c.ids.filter((id) => id !== leader),
        ),
      );
    }
  }

  private propose(target: NodeId, onDone?: (acked: boolean) => void): void {
    this.proposalSeq += 1;
    const payload = Buffer.from(`s${this.options.seed}-p${this.proposalSeq}`);
    if (this.cluster.driver(target) === undefined) {
      onDone?.(false);
      return;
    }
    this.outstanding += 1;
    this.cluster.propose(target, payload, (acked) => {
      this.outstanding -= 1;
      onDone?.(acked);
    });
  }

  /** The fault phase. */
  async faults(): Promise<void> {
    const c = this.cluster;
    const tickMs = c.options.tickIntervalMs;
    for (let tick = 0; tick < this.options.faultTicks; tick++) {
      this.tick = tick;
      if (this.prng.chance(this.rates.networkChangePerTick)) {
        const n = networkProfile(this.prng);
        c.history.networkChanges += 1;
        c.trace.line(
          `fault network loss ${n.lossProbability} dup ${n.duplicateProbability} delay ` +
            `${n.delayMsMin}-${n.delayMsMax} reorder ${n.reorderProbability}+${n.reorderDelayMsMax}`,
        );
        c.network.setConditions(n);
      }
      if (tick === this.partitionHealTick) {
        c.trace.line('fault heal');
        c.network.heal();
        this.isolation.healed();
      }
      if (this.prng.chance(this.rates.partitionPerTick)) {
        this.partition(tick);
        this.partitionHealTick = tick + this.prng.nextInt(10, 200);
      }
      this.crashOrRestart(tick);
      if (this.prng.chance(this.rates.pausePerTick)) {
        const id = pick(this.prng, c.ids);
        if (c.node(id).state !== 'down') {
          const pauseTicks = this.prng.nextInt(3, 40);
          c.pause(id, pauseTicks * tickMs);
          this.isolation.paused(id, tick + pauseTicks);
        }
      }
      this.clients();
      if (!(await c.runFor(tickMs)) || !this.withinEventBudget()) return;
      this.isolation.check(tick + 1);
    }
  }

  /** Heals everything; returns the ticks until the group was live again, or null. */
  async heal(): Promise<number | null> {
    const c = this.cluster;
    c.trace.line('heal');
    c.network.heal();
    c.network.setConditions(CALM_NETWORK);
    this.restartAtTick.clear();
    this.isolation.healed();
    for (const id of c.ids) {
      c.node(id).aimedCrash = undefined;
      if (c.node(id).state === 'down') c.start(id);
    }
    const probe: { state: 'none' | 'outstanding' | 'acked' } = { state: 'none' };
    this.healTicksBound = this.healBound();
    for (let tick = 0; tick < this.healTicksBound; tick++) {
      if (probe.state === 'acked' && this.allApplied())
        return (await this.staysStable()) ? tick : null;
      const leader = c.leader();
      if (probe.state === 'none' && leader !== undefined) {
        probe.state = 'outstanding';
        // A refused probe (the leader just lost its role) is tried again at the next leader.
        this.propose(leader, (acked) => {
          probe.state = acked ? 'acked' : 'none';
        });
      }
      if (!(await c.runFor(c.options.tickIntervalMs)) || !this.withinEventBudget()) return null;
    }
    return probe.state === 'acked' && this.allApplied() ? this.healTicksBound : null;
  }

  /**
   * The liveness bound: `healTicksMax`, plus, in runs with small Append windows, two ticks per
   * entry some node may have to catch up on, per entry an Append carries (a node that lost its
   * log catches up one window per fsync and round trip, and fsyncs may take 40 ms).
   */
  private healBound(): number {
    const batch = this.profile.raft.batchEntriesMax;
    if (batch === undefined) return this.options.healTicksMax;
    const h = this.cluster.history;
    const appliedMin = Math.min(...this.cluster.ids.map((id) => h.appliedIndexOf.get(id) ?? 0));
    const lag = Math.max(0, h.committedIndexMax - appliedMin);
    return this.options.healTicksMax + Math.ceil((2 * lag) / batch);
  }

  /**
   * Once the healed group is live, its leader keeps its term: on a calm network with every node
   * up, nothing should start an election (PreVote and CheckQuorum's leader lease, thesis §9.6).
   * Watched for two election timeouts and a few ticks; a change is a violation.
   */
  private async staysStable(): Promise<boolean> {
    const c = this.cluster;
    const leader = c.leader();
    const term = leader === undefined ? undefined : c.status(leader)?.term;
    const ticks = 2 * this.profile.electionTimeoutTicks + 5;
    for (let tick = 0; tick < ticks; tick++) {
      if (!(await c.runFor(c.options.tickIntervalMs))) return false;
      const now = c.leader();
      const nowTerm = now === undefined ? undefined : c.status(now)?.term;
      const termMax = Math.max(...c.ids.map((id) => c.status(id)?.term ?? 0));
      if (now !== leader || nowTerm !== term || termMax !== term) {
        c.history.violation(
          `stability: after healing, ${leader ?? 'none'} led term ${String(term)}, then ` +
            `${tick + 1} ticks later ${now ?? 'none'} leads term ${String(nowTerm)} ` +
            `(highest term ${termMax})`,
        );
        return false;
      }
    }
    return true;
  }

  /**
   * A healthy group runs a few events per node and tick; a run far beyond that is a message
   * storm (a livelock or a retry loop), which is a bug even when nothing unsafe happens.
   */
  private withinEventBudget(): boolean {
    const c = this.cluster;
    const budget =
      (this.options.faultTicks + this.healTicksBound) * c.ids.length * EVENTS_PER_NODE_TICK_MAX;
    if (c.loop.eventCount <= budget) return true;
    c.history.violation(`event storm: more than ${budget} events`);
    return false;
  }

  private allApplied(): boolean {
    const c = this.cluster;
    const target = c.history.maxAckedIndex;
    return c.ids.every(
      (id) => c.node(id).state === 'up' && (c.history.appliedIndexOf.get(id) ?? 0) >= target,
    );
  }
}

/** Runs one scenario; never throws for a violation (it is in the result). */
export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const wallStartMs = performance.now();
  const profile = drawRunProfile(createPrng((options.seed ^ PROFILE_SEED_SALT) >>> 0));
  const cluster = new SimCluster({
    seed: options.seed,
    nodeCount: options.nodeCount,
    tickIntervalMs: options.tickIntervalMs ?? 10,
    raft: profile.raft,
    syncMsMax: profile.sync.syncMsMax,
    syncStallProbability: profile.sync.stallProbability,
    syncStallMsMax: profile.sync.stallMsMax,
    traceSink: options.traceSink,
    logger: options.logger,
  });
  for (const id of cluster.ids) cluster.start(id);
  const scenario = new Scenario(cluster, options, profile);
  await scenario.faults();
  const h = cluster.history;
  const healTicks = h.violationCount === 0 ? await scenario.heal() : null;
  if (healTicks === null && h.violationCount === 0) {
    const applied = cluster.ids.map((id) => `${id}:${h.appliedIndexOf.get(id) ?? 0}`).join(' ');
    h.violation(
      `liveness: not live within ${scenario.healTicksBound} ticks after healing ` +
        `(leader ${cluster.leader() ?? 'none'}, acknowledged up to ${h.maxAckedIndex}, ` +
        `applied ${applied})`,
    );
  }
  // Once more at the end (it runs every few ticks), unless the run already stopped on a violation.
  if (h.violationCount === 0) cluster.checkLogMatching();
  for (const failure of cluster.unexpectedFailures) h.violation(`node failed: ${failure}`);
  const rejected = [...h.proposalsRejected].map(([code, n]) => `${code}:${n}`).join(' ');
  return {
    seed: options.seed,
    ok: h.violationCount === 0,
    violations: h.violations,
    violationCount: h.violationCount,
    traceBeforeViolation: h.firstViolationTrace ?? [],
    traceDigest: cluster.trace.digest(),
    healTicks,
    stats: {
      nodes: options.nodeCount,
      faultTicks: options.faultTicks,
      simulatedMs: cluster.loop.nowMs(),
      events: cluster.loop.eventCount,
      terms: h.leaderOfTerm.size,
      maxTerm: h.maxLeaderTerm(),
      proposals: h.proposalsSent,
      acked: h.acked.size,
      rejected: rejected === '' ? '-' : rejected,
      appliedMax: Math.max(0, ...h.appliedIndexOf.values()),
      reads: h.readsServed,
      crashes: h.crashes,
      aimedCrashes: h.aimedCrashes,
      pauses: h.pauses,
      partitions: h.partitions,
      networkChanges: h.networkChanges,
      committedMax: h.committedIndexMax,
      healTicks: healTicks ?? 'never',
      cacheReleasedKiB: Math.round(
        cluster.ids.reduce(
          (sum, id) => sum + cluster.node(id).disk.cacheReleases.releasedBytes,
          0,
        ) / 1024,
      ),
      wallMs: Math.round(performance.now() - wallStartMs),
    },
  };
}
