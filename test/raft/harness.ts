// An in-memory network of RaftNodes for the scenario and property tests. Each node has a
// MemStore that persists a Ready instantly; the harness plays the driver's part exactly as the
// Ready contract says (persist, then send, then apply, then advance; loads answered later).
// Messages travel through one queue with partitions, crashes, a drop rate and an optional
// filter; every random choice comes from one seed. While it runs, the harness checks safety:
// at most one leader per term, and no two nodes ever apply different entries at one index.
import { strict as assert } from 'node:assert';
import { createPrng, type Prng } from '../../src/common/prng';
import { asLogIndex, asNodeId, asTerm, type NodeId, type Term } from '../../src/common/types';
import type { RaftTunables } from '../../src/raft/config';
import { RaftNode } from '../../src/raft/raft-node';
import {
  entrySizeBytes, type Entry, type HardState, type LoadRequest, type Message, type ProposeResult,
  type RaftStorageState, type ReadState, type Ready,
} from '../../src/raft/types';

/** One node's disk and state machine, in memory. */
export class MemStore {
  hardState: HardState = { term: asTerm(0), vote: null, commit: asLogIndex(0) };
  /** The log; index i is at log[i - 1]. */
  log: Entry[] = [];
  /** Entries the state machine applied, in order (index i at applied[i - 1]). */
  applied: Entry[] = [];
  readStates: ReadState[] = [];
  snapshotsNeeded: NodeId[] = [];

  termAt = (index: number): Term | undefined =>
    index === 0 ? asTerm(0) : this.log[index - 1]?.term;

  storageState(): RaftStorageState {
    return {
      hardState: this.hardState,
      firstIndex: asLogIndex(1),
      lastIndex: asLogIndex(this.log.length),
      termAt: (index) => this.termAt(index),
      appliedIndex: asLogIndex(this.applied.length),
    };
  }

  /** Step 1 of the Ready contract. */
  persist(ready: Ready): void {
    if (ready.truncateFrom !== undefined) {
      assert.ok(ready.truncateFrom > this.hardState.commit, 'truncating committed entries');
      this.log.length = ready.truncateFrom - 1;
    }
    for (const entry of ready.entries) {
      assert.equal(entry.index, this.log.length + 1, 'entries must extend the log');
      this.log.push(entry);
    }
    if (ready.hardState !== undefined) this.hardState = ready.hardState;
  }

  /** Answers a load from the durable log. */
  load(request: LoadRequest): Entry[] {
    const out: Entry[] = [];
    let bytes = 0;
    for (let index = request.fromIndex; index <= this.log.length; index++) {
      const entry = this.log[index - 1];
      if (entry === undefined || out.length >= request.countMax) break;
      bytes += entrySizeBytes(entry);
      if (out.length > 0 && bytes > request.bytesMax) break;
      out.push(entry);
    }
    return out;
  }
}

/** How to build a cluster. */
export interface ClusterOptions {
  nodeCount?: number;
  seed?: number;
  /** Tunables for every node. */
  config?: Partial<RaftTunables>;
  /** Probability that a message is lost. */
  dropRate?: number;
  /** Deliver messages in random order instead of FIFO. */
  reorder?: boolean;
  /** Answer loads one delivery round later instead of at once. */
  delayLoads?: boolean;
}

/** What was applied at an index, as first seen anywhere. */
interface AppliedRecord {
  readonly node: NodeId;
  readonly term: number;
  readonly type: string;
  readonly data: string;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Text of an entry's payload, for readable assertions. */
export function text(entry: Entry): string {
  return decoder.decode(entry.data);
}

/** N nodes in memory; see the file comment. */
export class Cluster {
  readonly ids: NodeId[];
  readonly nodes = new Map<NodeId, RaftNode>();
  readonly stores = new Map<NodeId, MemStore>();
  readonly prng: Prng;
  dropRate: number;
  reorder: boolean;
  /** Return false to drop a message (applied after partitions and crashes). */
  filter: ((message: Message) => boolean) | null = null;
  /** Every Ready each node produced, when `recordReadies` is on. */
  readonly readies: { node: NodeId; ready: Ready }[] = [];
  recordReadies = false;
  /** Check cross-node safety while running (off only for tests that forge messages). */
  checkSafety = true;
  readonly leaderOfTerm = new Map<number, NodeId>();
  readonly appliedAt = new Map<number, AppliedRecord>();
  private inFlight: Message[] = [];
  private pendingLoads: { node: NodeId; request: LoadRequest }[] = [];
  private readonly group = new Map<NodeId, number>();
  private readonly down = new Set<NodeId>();
  private readonly delayLoads: boolean;
  private readonly config: Partial<RaftTunables>;
  private readonly nodePrngs = new Map<NodeId, Prng>();

  constructor(options: ClusterOptions = {}) {
    const count = options.nodeCount ?? 3;
    this.ids = Array.from({ length: count }, (_, i) => asNodeId(`n${i + 1}`));
    this.prng = createPrng(options.seed ?? 1);
    this.dropRate = options.dropRate ?? 0;
    this.reorder = options.reorder ?? false;
    this.delayLoads = options.delayLoads ?? false;
    this.config = options.config ?? {};
    for (const id of this.ids) {
      this.nodePrngs.set(id, this.prng.fork());
      this.stores.set(id, new MemStore());
      this.start(id);
    }
  }

  private start(id: NodeId): void {
    const prng = this.nodePrngs.get(id);
    assert.ok(prng !== undefined);
    this.nodes.set(id, new RaftNode({ ...this.config, id, peers: this.ids, prng },
      this.store(id).storageState()));
  }

  node(id: string): RaftNode {
    const node = this.nodes.get(asNodeId(id));
    assert.ok(node !== undefined, `no node ${id}`);
    return node;
  }

  store(id: string): MemStore {
    const store = this.stores.get(asNodeId(id));
    assert.ok(store !== undefined, `no store ${id}`);
    return store;
  }

  isUp(id: NodeId): boolean {
    return !this.down.has(id);
  }

  /** Runs one Ready cycle of node `id` as its driver; false when it had nothing to do. */
  processReady(id: NodeId): boolean {
    const node = this.node(id);
    if (!node.hasReady()) return false;
    const ready = node.ready();
    if (this.recordReadies) this.readies.push({ node: id, ready });
    this.inFlight.push(...ready.messages);
    const store = this.store(id);
    store.persist(ready);
    this.inFlight.push(...ready.messagesAfterPersist);
    for (const entry of ready.committedEntries) this.apply(id, store, entry);
    store.readStates.push(...ready.readStates);
    store.snapshotsNeeded.push(...ready.snapshotsNeeded);
    node.advance(ready);
    this.checkLeader(id);
    for (const request of ready.loads) {
      if (this.delayLoads) this.pendingLoads.push({ node: id, request });
      else node.entriesLoaded(request.peer, store.load(request));
    }
    return true;
  }

  private apply(id: NodeId, store: MemStore, entry: Entry): void {
    assert.equal(entry.index, store.applied.length + 1, `${id} applies out of order`);
    store.applied.push(entry);
    const record = { node: id, term: entry.term, type: entry.type, data: text(entry) };
    const earlier = this.appliedAt.get(entry.index);
    if (!this.checkSafety) return;
    if (earlier === undefined) {
      this.appliedAt.set(entry.index, record);
      return;
    }
    assert.deepEqual({ ...record, node: earlier.node }, earlier,
      `${id} applied a different entry at ${entry.index} than ${earlier.node}`);
  }

  private checkLeader(id: NodeId): void {
    if (!this.checkSafety) return;
    const status = this.node(id).status();
    if (status.role !== 'leader') return;
    const known = this.leaderOfTerm.get(status.term);
    assert.ok(known === undefined || known === id,
      `two leaders in term ${status.term}: ${known} and ${id}`);
    this.leaderOfTerm.set(status.term, id);
  }

  private deliverable(message: Message): boolean {
    if (this.down.has(message.to) || this.down.has(message.from)) return false;
    if ((this.group.get(message.from) ?? 0) !== (this.group.get(message.to) ?? 0)) return false;
    if (this.filter !== null && !this.filter(message)) return false;
    return this.dropRate === 0 || !this.prng.chance(this.dropRate);
  }

  /** Delivers the messages in flight now (not those their delivery produces). */
  deliverRound(): number {
    const batch = this.inFlight;
    this.inFlight = [];
    if (this.reorder) shuffle(this.prng, batch);
    let delivered = 0;
    for (const message of batch) {
      if (!this.deliverable(message)) continue;
      this.node(message.to).step(message);
      delivered += 1;
    }
    const loads = this.pendingLoads;
    this.pendingLoads = [];
    for (const { node, request } of loads) {
      if (this.down.has(node)) continue;
      this.node(node).entriesLoaded(request.peer, this.store(node).load(request));
    }
    return delivered + loads.length;
  }

  /** Runs Ready cycles and deliveries until nothing moves (bounded). */
  stabilize(roundsMax = 1000): void {
    for (let round = 0; round < roundsMax; round++) {
      let moved = false;
      for (const id of this.ids) {
        if (this.down.has(id)) continue;
        for (let cycles = 0; this.processReady(id); cycles++) {
          assert.ok(cycles < 10_000, `${id} keeps producing Readies`);
          moved = true;
        }
      }
      if (this.inFlight.length > 0 || this.pendingLoads.length > 0) {
        this.deliverRound();
        moved = true;
      }
      if (!moved) return;
    }
    assert.fail(`cluster did not settle within ${roundsMax} rounds`);
  }

  /** Ticks every running node once (or only `ids`), then settles. */
  tick(ids: readonly NodeId[] = this.ids): void {
    for (const id of ids) if (!this.down.has(id)) this.node(id).tick();
    this.stabilize();
  }

  /** Ticks up to `ticksMax` times until `done()` holds; returns the ticks used. */
  tickUntil(done: () => boolean, ticksMax: number): number {
    for (let ticks = 0; ticks < ticksMax; ticks++) {
      if (done()) return ticks;
      this.tick();
    }
    assert.ok(done(), `condition not reached within ${ticksMax} ticks`);
    return ticksMax;
  }

  /** Makes `id` campaign now and settles. */
  campaign(id: string): void {
    this.node(id).campaign();
    this.stabilize();
  }

  /** The running node that believes it leads the highest term, if any. */
  leader(): NodeId | undefined {
    let best: { id: NodeId; term: number } | undefined;
    for (const id of this.ids) {
      if (this.down.has(id)) continue;
      const status = this.node(id).status();
      if (status.role === 'leader' && (best === undefined || status.term > best.term)) {
        best = { id, term: status.term };
      }
    }
    return best?.id;
  }

  /** Elects `id` (ticking only it) and settles; asserts it won. */
  elect(id: string): void {
    this.campaign(id);
    assert.equal(this.node(id).status().role, 'leader', `${id} did not win`);
  }

  /** Ticks until one of `ids` leads a term later than any seen so far; returns it. */
  electAmong(ids: readonly string[], ticksMax = 100): NodeId {
    const termBefore = Math.max(0, ...this.leaderOfTerm.keys());
    let winner: NodeId | undefined;
    this.tickUntil(() => {
      winner = this.ids.find((id) => ids.includes(id) && this.isUp(id)
        && this.node(id).status().role === 'leader' && this.node(id).status().term > termBefore);
      return winner !== undefined;
    }, ticksMax);
    assert.ok(winner !== undefined);
    return winner;
  }

  propose(id: string, ...payloads: string[]): ProposeResult {
    const result = this.node(id).propose(payloads.map((p) => encoder.encode(p)));
    this.stabilize();
    return result;
  }

  /** Splits the network: nodes talk only within their group. */
  partition(...groups: readonly (readonly string[])[]): void {
    this.group.clear();
    groups.forEach((members, i) => {
      for (const id of members) this.group.set(asNodeId(id), i + 1);
    });
  }

  /** Cuts `id` off from everyone else. */
  isolate(id: string): void {
    const others = this.ids.filter((other) => other !== id);
    this.partition([id], others);
  }

  heal(): void {
    this.group.clear();
  }

  /** Stops a node: its in-memory state is lost, its store stays. */
  crash(id: string): void {
    this.down.add(asNodeId(id));
  }

  /** Starts a crashed node again from its store. */
  restart(id: string): void {
    const nodeId = asNodeId(id);
    this.down.delete(nodeId);
    this.start(nodeId);
  }

  /** Terms of a node's durable log, for compact assertions. */
  logTerms(id: string): number[] {
    return this.store(id).log.map((entry) => entry.term);
  }

  /** Payload texts a node applied, noops left out. */
  appliedTexts(id: string): string[] {
    return this.store(id).applied.filter((e) => e.type === 'normal').map(text);
  }
}

/** Fisher-Yates shuffle driven by `prng`. */
export function shuffle<T>(prng: Prng, items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = prng.nextInt(0, i + 1);
    const a = items[i] as T;
    items[i] = items[j] as T;
    items[j] = a;
  }
}
