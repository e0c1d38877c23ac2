// Randomized simulation of whole groups. fast-check draws a seed; the seed alone decides the
// group size, the tunables, and every fault: message loss and reordering, partitions, crashes
// and restarts, late loads, and when clients propose, read or transfer leadership. Safety is
// checked throughout: at most one leader per term and one applied entry per index (by the
// harness), the Log Matching property, Leader Completeness (the latest leader holds every entry
// applied anywhere), and that every ReadIndex point covers all commits before the read.
// Liveness is checked after healing: a leader is elected within a bounded number of ticks, and
// every acknowledged proposal is applied, with its data at its index, on every node. A proposal
// is acknowledged as the driver would tell its client (raft-waiters.ts): once the node it was
// proposed to applies its index with its term, unless that node crashed first (then nobody was
// told). A failure prints the seed and a command that replays exactly that run.
//
// Environment, named like the other property tests' (test/fc-params.ts): RAFTMQ_FC_RUNS widens
// the run, RAFTMQ_SIM_SEED replays one seed. The older RAFT_RUNS and RAFT_SEED still work.
import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import fc from 'fast-check';
import { createPrng, type Prng } from '../../src/common/prng';
import { asNodeId, type NodeId } from '../../src/common/types';
import { Cluster, shuffle, text } from './harness';

const FAULT_TICKS = 300;
const HEAL_TICKS_MAX = 150;

interface Proposal {
  readonly index: number;
  readonly term: number;
  readonly data: string;
  /** The node the proposal was made to: the one that tells the client. */
  readonly proposer: NodeId;
}

/**
 * Moves each pending proposal whose proposer has applied its index to `acknowledged` if the entry
 * there has the proposal's term (the driver's rule; with another term it was replaced and
 * refused). A proposer that is down crashed before it could answer: its proposals are dropped,
 * their outcome unknown. The data is not looked at here: a proposal acknowledged at an index
 * that holds other data is exactly what the final check must catch.
 */
function settleProposals(c: Cluster, pending: Proposal[], acknowledged: Proposal[]): void {
  let kept = 0;
  for (const p of pending) {
    if (!c.isUp(p.proposer)) continue;
    const entry = c.store(p.proposer).applied[p.index - 1];
    if (entry === undefined) pending[kept++] = p;
    else if (entry.term === p.term) acknowledged.push(p);
  }
  pending.length = kept;
}

/** Log Matching (Raft §5.3): equal (index, term) means equal entries up to that index. */
function checkLogMatching(c: Cluster): void {
  for (const a of c.ids) {
    for (const b of c.ids) {
      if (a >= b) continue;
      const logA = c.store(a).log;
      const logB = c.store(b).log;
      let i = Math.min(logA.length, logB.length) - 1;
      while (i >= 0 && logA[i]?.term !== logB[i]?.term) i--;
      for (; i >= 0; i--) {
        const ea = logA[i];
        const eb = logB[i];
        assert.ok(ea !== undefined && eb !== undefined);
        assert.ok(ea.term === eb.term && text(ea) === text(eb) && ea.type === eb.type,
          `log matching broken between ${a} and ${b} at index ${i + 1}`);
      }
    }
  }
}

/**
 * Leader Completeness (Raft §5.4): the leader of the latest term holds every entry applied
 * anywhere (each was committed in that term or an earlier one). Stale leaders of older terms
 * that have not noticed yet are exempt.
 */
function checkLeaderCompleteness(c: Cluster): void {
  const latestTerm = Math.max(0, ...c.leaderOfTerm.keys());
  for (const id of c.ids) {
    const status = c.isUp(id) ? c.node(id).status() : undefined;
    if (status?.role !== 'leader' || status.term !== latestTerm) continue;
    const log = c.store(id).log;
    for (const [index, record] of c.appliedAt) {
      const entry = log[index - 1];
      assert.ok(entry !== undefined && entry.term === record.term && text(entry) === record.data,
        `leader ${id} lacks the entry applied at ${index}`);
    }
  }
}

/** Partitions, heals, crashes and restarts, each with a small chance per tick. */
function injectFaults(c: Cluster, prng: Prng, crashed: Set<NodeId>): void {
  if (prng.chance(0.04)) {
    const shuffled = [...c.ids];
    shuffle(prng, shuffled);
    const cut = prng.nextInt(1, c.ids.length);
    c.partition(shuffled.slice(0, cut), shuffled.slice(cut));
  } else if (prng.chance(0.03)) {
    c.heal();
  }
  if (prng.chance(0.02)) {
    const victim = c.ids[prng.nextInt(0, c.ids.length)];
    if (victim !== undefined && !crashed.has(victim)) {
      c.crash(victim);
      crashed.add(victim);
    }
  } else if (crashed.size > 0 && prng.chance(0.05)) {
    const back = [...crashed][0];
    if (back !== undefined) {
      c.restart(back);
      crashed.delete(back);
    }
  }
}

/**
 * ReadIndex linearizability (thesis §6.4): a read point must cover every entry committed
 * anywhere before the read was asked.
 */
class ReadChecker {
  private readonly required = new Map<string, number>();
  private readonly seen = new Map<NodeId, number>();

  constructor(private readonly c: Cluster) {}

  request(leader: NodeId, requestId: string): void {
    if (!this.c.node(leader).readIndex(requestId).ok) return;
    let committed = Math.max(0, ...this.c.appliedAt.keys());
    for (const id of this.c.ids) {
      if (this.c.isUp(id)) committed = Math.max(committed, this.c.node(id).status().commitIndex);
    }
    this.required.set(requestId, committed);
  }

  check(): void {
    for (const id of this.c.ids) {
      const states = this.c.store(id).readStates;
      for (let i = this.seen.get(id) ?? 0; i < states.length; i++) {
        const state = states[i];
        assert.ok(state !== undefined);
        const required = this.required.get(state.requestId);
        assert.ok(required !== undefined && state.index >= required,
          `read ${state.requestId} at ${state.index} misses commits up to ${String(required)}`);
      }
      this.seen.set(id, states.length);
    }
  }
}

/** Runs one seeded simulation; returns how many proposals were acknowledged. */
function simulate(seed: number): number {
  const prng = createPrng(seed);
  const c = new Cluster({
    nodeCount: prng.chance(0.5) ? 3 : 5,
    seed,
    dropRate: prng.nextInt(0, 4) * 0.05,
    reorder: prng.chance(0.5),
    delayLoads: prng.chance(0.5),
    config: {
      preVote: prng.chance(0.8),
      checkQuorum: prng.chance(0.8),
      batchEntriesMax: prng.nextInt(1, 5),
      inflightCountMax: prng.nextInt(1, 5),
      entryCacheBytesMax: prng.chance(0.5) ? prng.nextInt(0, 400) : 1 << 20,
      electionTimeoutTicks: 10,
      preferredLeaderId: prng.chance(0.2) ? asNodeId('n2') : null,
    },
  });
  const pending: Proposal[] = [];
  const acknowledged: Proposal[] = [];
  const crashed = new Set<NodeId>();
  const reads = new ReadChecker(c);
  let counter = 0;
  let proposed = 0;
  for (let tick = 0; tick < FAULT_TICKS; tick++) {
    injectFaults(c, prng, crashed);
    settleProposals(c, pending, acknowledged);
    const leader = c.leader();
    if (leader !== undefined && prng.chance(0.4)) {
      const data = `p${counter++}`;
      const result = c.node(leader).propose([new TextEncoder().encode(data)]);
      if (result.ok) {
        proposed += 1;
        pending.push({ index: result.firstIndex, term: result.term, data, proposer: leader });
      }
    }
    if (leader !== undefined && prng.chance(0.1)) reads.request(leader, `r${counter++}`);
    if (leader !== undefined && prng.chance(0.01)) {
      const target = c.ids[prng.nextInt(0, c.ids.length)];
      if (target !== undefined) c.node(leader).transferLeadership(target);
    }
    c.tick();
    settleProposals(c, pending, acknowledged);
    reads.check();
    checkLeaderCompleteness(c);
    if (tick % 25 === 0) checkLogMatching(c);
  }
  // Heal everything; the group must recover and converge.
  c.heal();
  c.dropRate = 0;
  for (const id of crashed) c.restart(id);
  c.tickUntil(() => c.leader() !== undefined, HEAL_TICKS_MAX);
  // A marker committed in the healed leader's term commits everything before it. The leader
  // found first may still be deposed by a later term, losing the marker: propose it again.
  const allApplied = (): boolean => c.ids.every((id) =>
    c.store(id).applied.some((e) => text(e).startsWith('marker')));
  try {
    c.tickUntil(() => {
      const leader = c.leader();
      if (leader !== undefined && c.node(leader).status().transferee === null
        && !c.store(leader).applied.some((e) => text(e).startsWith('marker'))
        && c.node(leader).status().lastIndex === c.node(leader).status().commitIndex) {
        c.node(leader).propose([new TextEncoder().encode(`marker${counter++}`)]);
      }
      return allApplied();
    }, HEAL_TICKS_MAX);
  } catch (err) {
    if (process.env.RAFT_DEBUG !== undefined) {
      for (const id of c.ids) {
        const s = c.node(id).status();
        console.error(id, JSON.stringify({ ...s, progress: [...s.progress] }),
          c.store(id).applied.length, c.node(id).stats);
      }
    }
    throw err;
  }
  checkLogMatching(c);
  checkLeaderCompleteness(c);
  settleProposals(c, pending, acknowledged);
  if (process.env.RAFT_DEBUG !== undefined) {
    const stats = c.ids.map((id) => c.node(id).stats);
    console.error(`seed ${seed}: terms ${c.leaderOfTerm.size} proposals ${proposed} `
      + `acknowledged ${acknowledged.length} applied ${c.appliedAt.size} `
      + `stats ${JSON.stringify(stats.reduce((a, b) => ({
        stale: a.stale + b.messagesStaleTerm, lease: a.lease + b.voteRequestsInLease,
        unexpected: a.unexpected + b.messagesUnexpected, loads: a.loads + b.loadsDiscarded,
      }), { stale: 0, lease: 0, unexpected: 0, loads: 0 }))}`);
  }
  for (const p of acknowledged) {
    for (const id of c.ids) {
      const entry = c.store(id).applied[p.index - 1];
      assert.ok(entry !== undefined && entry.term === p.term && text(entry) === p.data,
        `${id} lacks acknowledged proposal ${p.data} at ${p.index}/${p.term}: it applied `
        + (entry === undefined ? 'nothing' : `${text(entry)}/${entry.term}`));
    }
  }
  return acknowledged.length;
}

/** The command that runs exactly this seed again (this compiled file, from where mocha ran). */
function replayCommand(seed: number): string {
  return `npm run build && RAFTMQ_SIM_SEED=${seed} npx mocha --no-config --timeout 60000 `
    + `${path.relative(process.cwd(), __filename)}`;
}

function runSeed(seed: number): number {
  try {
    return simulate(seed);
  } catch (err) {
    console.error(`raft simulation failed with seed ${seed}; replay: ${replayCommand(seed)}`);
    throw err;
  }
}

describe('raft simulation (fast-check over seeds)', () => {
  const replaySeed = process.env.RAFTMQ_SIM_SEED ?? process.env.RAFT_SEED;
  if (replaySeed !== undefined) {
    it(`replays seed ${replaySeed}`, () => {
      runSeed(Number(replaySeed));
    });
    return;
  }

  it('keeps safety under faults and recovers after healing', () => {
    // RAFTMQ_FC_RUNS (or the older RAFT_RUNS) raises the number of seeds for a longer soak.
    const numRuns = Number(process.env.RAFTMQ_FC_RUNS ?? process.env.RAFT_RUNS ?? 60);
    let acknowledged = 0;
    fc.assert(fc.property(fc.integer({ min: 0, max: 0x7fff_ffff }), (seed) => {
      acknowledged += runSeed(seed);
    }), { numRuns });
    // Proposals were acknowledged, so the check above had something to check.
    assert.ok(acknowledged > numRuns, `${acknowledged} proposals acknowledged in ${numRuns} runs`);
  });
});
