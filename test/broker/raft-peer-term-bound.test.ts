/*
 * A peer's term above TERM_MAX (2^52), on the wire and in a running group. The transport's
 * decoder rejects one in the envelope or in any term field of the body as MESSAGE_MALFORMED;
 * TERM_MAX itself still passes. On the simulator (drivers over real stores), one forged message
 * of term 2^53 - 1 from a member, sent past the wire checks straight to a node's handler, once
 * made the receiver adopt that term durably and then ask the hard state codec for 2^53 in its
 * next campaign: the driver stopped, or the whole group was left without a leader for good.
 * Now the core drops it and the group keeps its leader and its term.
 */
import { strict as assert } from 'node:assert';
import { decodeInbound, loadRaftCodecs, toWire, type RaftCodecs } from '../../src/broker/raft-wire';
import { isRaftmqError } from '../../src/common/errors';
import { asLogIndex, asNodeId, asTerm, type NodeId } from '../../src/common/types';
import type { Message } from '../../src/raft/types';
import { SimCluster } from '../../src/sim/sim-cluster';
import { SimTransport } from '../../src/sim/sim-network';

const TICK_MS = 10;
const BOUND = 2 ** 52;
const n = asNodeId;

async function runUntil(cluster: SimCluster, done: () => boolean, msMax: number): Promise<void> {
  for (let elapsedMs = 0; elapsedMs < msMax; elapsedMs += TICK_MS) {
    if (done()) return;
    await cluster.runFor(TICK_MS);
  }
  assert.ok(done(), `condition not reached within ${msMax} simulated ms`);
}

/** The decoder's verdict on `message` sent to n1 of group g, with peers n2 and n3. */
function decode(codecs: RaftCodecs, message: Message): ReturnType<typeof decodeInbound> {
  const bytes = codecs.peerMessage.encode(toWire('g', message));
  return decodeInbound(codecs.peerMessage.decode(bytes), {
    group: 'g',
    selfId: n('n1'),
    peers: new Set(['n2', 'n3']),
    route: message.type === 'TimeoutNow' ? 'timeoutNow' : 'vote',
  });
}

/** A group of three with a leader, and a transport that sends as `from` (a forging member). */
async function groupWithLeader(seed: number): Promise<{ cluster: SimCluster; leader: NodeId }> {
  const cluster = new SimCluster({ seed, nodeCount: 3, tickIntervalMs: TICK_MS, syncMsMax: 2 });
  for (const id of cluster.ids) cluster.start(id);
  let leader: NodeId | undefined;
  await runUntil(cluster, () => (leader = cluster.leader()) !== undefined, 5_000);
  assert.ok(leader !== undefined);
  return { cluster, leader };
}

function forge(cluster: SimCluster, message: Message): void {
  new SimTransport(message.from, cluster.network).send([message]);
}

describe('raft peer terms above TERM_MAX', () => {
  let codecs: RaftCodecs;
  before(async () => {
    codecs = await loadRaftCodecs('');
  });

  it('the wire decoder rejects them in the envelope and in the body', () => {
    const from = n('n2');
    const to = n('n1');
    for (const term of [Number.MAX_SAFE_INTEGER, BOUND + 1]) {
      const big = asTerm(term);
      const bad: Message[] = [
        { type: 'TimeoutNow', from, to, term: big },
        { type: 'VoteResp', from, to, term: big, reject: true },
        {
          type: 'Vote',
          from,
          to,
          term: asTerm(1),
          lastIndex: asLogIndex(1),
          lastTerm: big,
          transfer: false,
        },
      ];
      for (const message of bad) {
        const result = decode(codecs, message);
        assert.ok(!result.ok, `${message.type} with ${term} accepted`);
        assert.ok(isRaftmqError(result.error, 'MESSAGE_MALFORMED'));
        assert.match(result.error.message, /TERM_MAX/);
      }
    }
    const atBound = decode(codecs, { type: 'TimeoutNow', from, to, term: asTerm(BOUND) });
    assert.ok(atBound.ok);
  });

  it('a TimeoutNow of term 2^53 - 1 from a member does not stop its receiver', async () => {
    const { cluster, leader } = await groupWithLeader(7);
    const [victim, sender] = cluster.ids.filter((id) => id !== leader) as [NodeId, NodeId];
    const term = cluster.status(leader)?.term;
    forge(cluster, {
      type: 'TimeoutNow',
      from: sender,
      to: victim,
      term: asTerm(Number.MAX_SAFE_INTEGER),
    });
    await cluster.runFor(500);
    assert.deepEqual(cluster.unexpectedFailures, [], 'a node stopped on a peer message');
    assert.equal(cluster.leader(), leader);
    assert.equal(cluster.status(victim)?.term, term);
  });

  it('a HeartbeatResp of term 2^53 - 1 to the leader leaves the group its leader', async () => {
    const { cluster, leader } = await groupWithLeader(8);
    const follower = cluster.ids.find((id) => id !== leader) as NodeId;
    const term = cluster.status(leader)?.term;
    forge(cluster, {
      type: 'HeartbeatResp',
      from: follower,
      to: leader,
      term: asTerm(Number.MAX_SAFE_INTEGER),
      context: 0,
    });
    await cluster.runFor(5_000);
    const terms = cluster.ids.map((id) => cluster.status(id)?.term);
    assert.deepEqual(cluster.unexpectedFailures, [], 'a node stopped');
    assert.equal(cluster.leader(), leader, `terms ${terms.join(',')}`);
    assert.deepEqual(terms, [term, term, term]);
  });
});
