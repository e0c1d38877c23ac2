/**
 * The simulated network: one {@link RaftTransport} per node incarnation over the simulator's
 * event queue. Every fate of a message is drawn from the network's seeded PRNG: a delay in a
 * range, loss, duplication, and reordering (an occasional much longer delay). Links can be cut
 * one way or both (partitions: isolate a node, split into groups, one-way cuts) and given their
 * own loss and delay. A cut is checked when a message is sent and again when it arrives, so a
 * partition also loses what was in flight. Messages to a paused node wait until it resumes.
 *
 * Entry payloads are copied on send: nodes share no buffers, as over a real wire.
 */
import type { NodeId } from '../common/types';
import type { RaftTransport, TransportStats } from '../broker/transport';
import type { Prng } from '../common/prng';
import type { Message } from '../raft/types';
import type { SimLoop } from './sim-loop';

/** The network's conditions; every field has a default. */
export interface SimNetworkConditions {
  readonly delayMsMin: number;
  readonly delayMsMax: number;
  readonly lossProbability: number;
  readonly duplicateProbability: number;
  /** Chance that a message is held back by up to `reorderDelayMsMax` more. */
  readonly reorderProbability: number;
  readonly reorderDelayMsMax: number;
}

/** A healthy LAN. */
export const CALM_NETWORK: Readonly<SimNetworkConditions> = Object.freeze({
  delayMsMin: 1,
  delayMsMax: 3,
  lossProbability: 0,
  duplicateProbability: 0,
  reorderProbability: 0,
  reorderDelayMsMax: 0,
});

/** Extra loss and delay on one directed link. */
export interface LinkRule {
  readonly lossProbability: number;
  readonly extraDelayMsMax: number;
}

function linkKey(from: NodeId, to: NodeId): string {
  return `${from}>${to}`;
}

/** A one-line summary of a message for the trace. */
export function describeMessage(m: Message): string {
  const head = `${m.type} ${m.from}>${m.to} t${m.term}`;
  switch (m.type) {
    case 'Append':
      return `${head} p${m.prevIndex}/${m.prevTerm} n${m.entries.length} c${m.commit}`;
    case 'AppendResp':
      return (
        `${head} ${m.reject ? `rej${m.rejectedIndex} h${m.hintTerm}/${m.hintIndex}` : 'ok'}` +
        ` m${m.matchIndex}`
      );
    case 'PreVote':
    case 'Vote':
      return `${head} l${m.lastIndex}/${m.lastTerm}`;
    case 'PreVoteResp':
    case 'VoteResp':
      return `${head} ${m.reject ? 'rej' : 'ok'}`;
    case 'Heartbeat':
      return `${head} c${m.commit} x${m.context}`;
    case 'HeartbeatResp':
      return `${head} x${m.context}`;
    case 'TimeoutNow':
      return head;
  }
}

function copyMessage(m: Message): Message {
  if (m.type !== 'Append' || m.entries.length === 0) return m;
  return { ...m, entries: m.entries.map((e) => ({ ...e, data: e.data.slice() })) };
}

/** The transport of one node incarnation. */
export class SimTransport implements RaftTransport {
  handler: ((message: Message) => void) | undefined;
  fenced = false;
  readonly counters: TransportStats = { sent: 0, received: 0, dropped: 0, rejected: 0 };

  constructor(
    readonly id: NodeId,
    private readonly network: SimNetwork,
  ) {}

  send(messages: readonly Message[]): void {
    for (const message of messages) this.network.submit(this, message);
  }

  setHandler(handler: (message: Message) => void): void {
    this.handler = handler;
  }

  peers(): readonly NodeId[] {
    return this.network.nodeIds.filter((id) => id !== this.id);
  }

  stats(): TransportStats {
    return { ...this.counters };
  }

  close(): Promise<void> {
    this.fenced = true;
    return Promise.resolve();
  }
}

/** The network; see the file comment. */
export class SimNetwork {
  private conditions: SimNetworkConditions = CALM_NETWORK;
  private readonly transports = new Map<NodeId, SimTransport>();
  private readonly cut = new Set<string>();
  private readonly rules = new Map<string, LinkRule>();
  private readonly heldUntilMs = new Map<NodeId, number>();
  /** Messages in flight, at most; beyond it new ones are dropped (a bounded queue). */
  readonly inFlightMax: number;
  private inFlight = 0;
  /** Sees every message a live transport sends, before its fate is drawn (for tests). */
  onSend: ((message: Message) => void) | undefined;
  /** Like `onSend`, for the simulator's own checks (tests may replace `onSend`). */
  private readonly observers: Array<(message: Message) => void> = [];

  constructor(
    private readonly loop: SimLoop,
    private readonly prng: Prng,
    readonly nodeIds: readonly NodeId[],
    inFlightMax = 100_000,
  ) {
    this.inFlightMax = inFlightMax;
  }

  /** A fresh transport for a new incarnation of `id`; the old one is fenced. */
  attach(id: NodeId): SimTransport {
    this.detach(id);
    const transport = new SimTransport(id, this);
    this.transports.set(id, transport);
    return transport;
  }

  /** Fences the current transport of `id` (its process crashed): it sends and hears nothing. */
  detach(id: NodeId): void {
    const old = this.transports.get(id);
    if (old !== undefined) old.fenced = true;
    this.transports.delete(id);
  }

  /** Adds an observer of every message a live transport sends. */
  observe(observer: (message: Message) => void): void {
    this.observers.push(observer);
  }

  setConditions(conditions: SimNetworkConditions): void {
    this.conditions = conditions;
  }

  getConditions(): SimNetworkConditions {
    return this.conditions;
  }

  /** Cuts the link from `from` to `to` (one way). */
  cutLink(from: NodeId, to: NodeId): void {
    this.cut.add(linkKey(from, to));
  }

  /** Cuts `id` off from every other node, both ways. */
  isolate(id: NodeId): void {
    for (const other of this.nodeIds) {
      if (other === id) continue;
      this.cutLink(id, other);
      this.cutLink(other, id);
    }
  }

  /** Splits the nodes into groups that hear only each other. */
  split(groups: readonly (readonly NodeId[])[]): void {
    for (const a of groups) {
      for (const b of groups) {
        if (a === b) continue;
        for (const from of a) for (const to of b) this.cutLink(from, to);
      }
    }
  }

  setLinkRule(from: NodeId, to: NodeId, rule: LinkRule | undefined): void {
    if (rule === undefined) this.rules.delete(linkKey(from, to));
    else this.rules.set(linkKey(from, to), rule);
  }

  /** Restores every link and removes every link rule. */
  heal(): void {
    this.cut.clear();
    this.rules.clear();
  }

  /** Holds messages to `id` until `untilMs` (its process is paused). */
  holdUntil(id: NodeId, untilMs: number): void {
    this.heldUntilMs.set(id, Math.max(untilMs, this.heldUntilMs.get(id) ?? 0));
  }

  isCut(from: NodeId, to: NodeId): boolean {
    return this.cut.has(linkKey(from, to));
  }

  /** Called by a transport for each message it sends. */
  submit(transport: SimTransport, message: Message): void {
    if (transport.fenced) return;
    transport.counters.sent += 1;
    for (const observer of this.observers) observer(message);
    this.onSend?.(message);
    const c = this.conditions;
    const rule = this.rules.get(linkKey(message.from, message.to));
    const lossProbability = Math.max(c.lossProbability, rule?.lossProbability ?? 0);
    if (
      this.isCut(message.from, message.to) ||
      this.prng.chance(lossProbability) ||
      this.inFlight >= this.inFlightMax
    ) {
      transport.counters.dropped += 1;
      this.loop.trace.line(`lost ${describeMessage(message)}`);
      return;
    }
    const copies = this.prng.chance(c.duplicateProbability) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      let delayMs = this.prng.nextInt(c.delayMsMin, c.delayMsMax + 1);
      if (rule !== undefined) delayMs += this.prng.nextInt(0, rule.extraDelayMsMax + 1);
      if (this.prng.chance(c.reorderProbability)) {
        delayMs += this.prng.nextInt(0, c.reorderDelayMsMax + 1);
      }
      this.inFlight += 1;
      const copy = copyMessage(message);
      this.loop.after(delayMs, () => this.deliver(copy));
    }
    this.loop.trace.line(`send ${describeMessage(message)}${copies > 1 ? ' x2' : ''}`);
  }

  private deliver(message: Message): void {
    const heldUntilMs = this.heldUntilMs.get(message.to) ?? 0;
    if (heldUntilMs > this.loop.nowMs()) {
      this.loop.at(heldUntilMs, () => this.deliver(message));
      return;
    }
    this.inFlight -= 1;
    const target = this.transports.get(message.to);
    if (this.isCut(message.from, message.to) || target?.handler === undefined) {
      this.loop.trace.line(`drop ${describeMessage(message)}`);
      return;
    }
    target.counters.received += 1;
    this.loop.trace.line(`recv ${describeMessage(message)}`);
    target.handler(message);
  }
}
