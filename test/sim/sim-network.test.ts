/*
 * The simulator's event loop and network on their own: events run in time order and, at one
 * time, in the order they were scheduled; a killed owner's timers never fire and a paused
 * owner's wait; one-way cuts, isolation and splits drop exactly the messages they should, also
 * those in flight when the cut happens; held messages reach a paused node when it resumes;
 * duplication delivers twice; and a fenced transport neither sends nor receives.
 */
import { strict as assert } from 'node:assert';
import { ManualClock } from '../../src/common/clock';
import { createPrng } from '../../src/common/prng';
import { asNodeId, asTerm, type NodeId } from '../../src/common/types';
import type { Message } from '../../src/raft/types';
import { SimLoop, SimTimers } from '../../src/sim/sim-loop';
import { CALM_NETWORK, SimNetwork, type SimTransport } from '../../src/sim/sim-network';
import { SimTrace } from '../../src/sim/sim-trace';

const [A, B, C] = ['a', 'b', 'c'].map(asNodeId) as [NodeId, NodeId, NodeId];

function world(): {
  loop: SimLoop;
  network: SimNetwork;
  got: string[];
  t: Map<NodeId, SimTransport>;
} {
  const clock = new ManualClock();
  const loop = new SimLoop(clock, new SimTrace(() => clock.monotonicMs()));
  const network = new SimNetwork(loop, createPrng(1), [A, B, C]);
  const got: string[] = [];
  const t = new Map<NodeId, SimTransport>();
  for (const id of [A, B, C]) {
    const transport = network.attach(id);
    transport.setHandler((m) => got.push(`${m.from}>${m.to}`));
    t.set(id, transport);
  }
  return { loop, network, got, t };
}

function heartbeat(from: NodeId, to: NodeId): Message {
  return { type: 'Heartbeat', from, to, term: asTerm(1), commit: 0 as never, context: 0 };
}

function send(t: Map<NodeId, SimTransport>, from: NodeId, to: NodeId): void {
  t.get(from)?.send([heartbeat(from, to)]);
}

async function run(loop: SimLoop, ms: number): Promise<void> {
  assert.equal(await loop.runUntil(loop.nowMs() + ms, () => true, 10_000), 'done');
}

describe('SimLoop', () => {
  it('runs events by time, then by scheduling order; honours kill and pause', async () => {
    const { loop } = world();
    const order: string[] = [];
    loop.at(5, () => order.push('t5-first'));
    loop.at(3, () => order.push('t3'));
    loop.at(5, () => order.push('t5-second'));
    const killed = new SimTimers(loop);
    killed.every(1, () => order.push('killed'));
    killed.kill();
    const paused = new SimTimers(loop);
    paused.pauseUntil(20);
    const stop = paused.every(4, () => order.push(`paused@${loop.nowMs()}`));
    await run(loop, 21);
    stop();
    assert.deepEqual(order, ['t3', 't5-first', 't5-second', 'paused@20']);
    await assert.rejects(killed.sleep(1));
  });
});

describe('SimNetwork', () => {
  it('delivers on a calm network and cuts one way only', async () => {
    const { loop, network, got, t } = world();
    network.setConditions(CALM_NETWORK);
    network.cutLink(A, B);
    send(t, A, B);
    send(t, B, A);
    send(t, A, C);
    await run(loop, 10);
    assert.deepEqual(got.sort(), ['a>c', 'b>a']);
  });

  it('isolates, splits, heals, and loses what was in flight when cut', async () => {
    const { loop, network, got, t } = world();
    send(t, A, B);
    network.isolate(A);
    send(t, C, A);
    await run(loop, 10);
    assert.deepEqual(got, []);
    network.heal();
    network.split([[A], [B, C]]);
    send(t, B, C);
    send(t, A, C);
    await run(loop, 10);
    assert.deepEqual(got, ['b>c']);
  });

  it('holds messages for a paused node and duplicates when told to', async () => {
    const { loop, network, got, t } = world();
    network.holdUntil(B, 50);
    send(t, A, B);
    await run(loop, 40);
    assert.deepEqual(got, []);
    await run(loop, 20);
    assert.deepEqual(got, ['a>b']);
    network.setConditions({ ...CALM_NETWORK, duplicateProbability: 1 });
    send(t, A, C);
    await run(loop, 10);
    assert.deepEqual(got, ['a>b', 'a>c', 'a>c']);
  });

  it('fences a detached transport both ways', async () => {
    const { loop, network, got, t } = world();
    network.detach(A);
    send(t, A, B);
    send(t, B, A);
    await run(loop, 10);
    assert.deepEqual(got, []);
    assert.equal(t.get(B)?.stats().sent, 1);
  });
});
