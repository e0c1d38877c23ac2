/*
 * RaftDriver on the simulator: three nodes, each a real CommitLog and MemMetaStore over a
 * simulated disk, on simulated time and network. Checks that a group elects a leader and
 * replicates, that proposals resolve only once committed and applied, that a failing fsync or
 * metadata write stops a node before it acknowledges or votes, that a vote survives a power
 * loss right after it was sent, and that a restarted node catches up; that a leader's new
 * entries reach its CommitLog (and so have their checksums) before the Appends that carry them
 * are sent. Also the hard state codec.
 */
import { strict as assert } from 'node:assert';
import { hardStateCodec } from '../../src/broker/raft-hard-state';
import { isRaftmqError } from '../../src/common/errors';
import { asLogIndex, asNodeId, asTerm, type NodeId } from '../../src/common/types';
import type { Message } from '../../src/raft/types';
import { getMeta, MetaKeys } from '../../src/store/meta';
import { SimCluster } from '../../src/sim/sim-cluster';
import { SimDiskError } from '../../src/sim/sim-disk';
import type { SimTransport } from '../../src/sim/sim-network';

const TICK_MS = 10;

function newCluster(seed: number): SimCluster {
  const cluster = new SimCluster({ seed, nodeCount: 3, tickIntervalMs: TICK_MS, syncMsMax: 2 });
  for (const id of cluster.ids) cluster.start(id);
  return cluster;
}

/** Runs until `done()` holds, failing after `msMax` simulated milliseconds. */
async function runUntil(cluster: SimCluster, done: () => boolean, msMax: number): Promise<void> {
  for (let elapsedMs = 0; elapsedMs < msMax; elapsedMs += TICK_MS) {
    if (done()) return;
    await cluster.runFor(TICK_MS);
  }
  assert.ok(done(), `condition not reached within ${msMax} simulated ms`);
}

async function electLeader(cluster: SimCluster): Promise<NodeId> {
  let leader: NodeId | undefined;
  await runUntil(cluster, () => (leader = cluster.leader()) !== undefined, 5_000);
  assert.ok(leader !== undefined);
  return leader;
}

function noViolations(cluster: SimCluster): void {
  assert.deepEqual(cluster.history.violations, []);
  assert.deepEqual(cluster.unexpectedFailures, []);
}

const encoder = new TextEncoder();

/** A new cluster with a leader and one acknowledged write. */
async function clusterWithAWrite(seed: number): Promise<{ cluster: SimCluster; leader: NodeId }> {
  const cluster = newCluster(seed);
  const leader = await electLeader(cluster);
  let acked = false;
  cluster.propose(leader, encoder.encode('x'), (ok) => {
    acked = ok;
  });
  await runUntil(cluster, () => acked, 2_000);
  return { cluster, leader };
}

describe('RaftDriver', () => {
  it('elects a leader, replicates, and resolves proposals after commit and apply', async () => {
    const cluster = newCluster(1);
    const leader = await electLeader(cluster);
    const acks: number[] = [];
    for (const text of ['a', 'b', 'c']) {
      cluster.propose(leader, encoder.encode(text), (acked) => {
        if (acked) acks.push(1);
      });
    }
    await runUntil(cluster, () => acks.length === 3, 2_000);
    const maxAcked = cluster.history.maxAckedIndex;
    // Acknowledged means applied on the leader; the followers follow within a few ticks.
    assert.ok((cluster.history.appliedIndexOf.get(leader) ?? 0) >= maxAcked);
    await runUntil(
      cluster,
      () => cluster.ids.every((id) => (cluster.history.appliedIndexOf.get(id) ?? 0) >= maxAcked),
      1_000,
    );
    const payloads = [...cluster.history.acked.values()].map((a) => a.payloadHex);
    assert.deepEqual(payloads.sort(), ['61', '62', '63']);
    noViolations(cluster);
  });

  it("hands a leader's new entries to its CommitLog before the Appends that carry them leave", async () => {
    // So that an Append can carry each entry's record checksum (raft-append-wire.ts), which
    // appending computes: at every send, the sender's CommitLog knows each entry's checksum.
    const cluster = newCluster(5);
    const leader = await electLeader(cluster);
    let appendsWithEntries = 0;
    const unknown: string[] = [];
    cluster.network.onSend = (m: Message) => {
      if (m.type !== 'Append' || m.entries.length === 0) return;
      appendsWithEntries++;
      const log = cluster.node(m.from).commitLog;
      for (const e of m.entries) {
        if (log?.recentRecordCrc(e.index, e.term, e.data.length) === undefined) {
          unknown.push(`${m.from}->${m.to} ${e.index}`);
        }
      }
    };
    let acked = 0;
    for (let i = 0; i < 20; i++) {
      cluster.propose(leader, encoder.encode(`p${i}`), (ok) => {
        if (ok) acked++;
      });
      await cluster.runFor(TICK_MS);
    }
    await runUntil(cluster, () => acked === 20, 2_000);
    assert.ok(appendsWithEntries >= 20, `${appendsWithEntries} appends with entries`);
    assert.deepEqual(unknown, []);
    noViolations(cluster);
  });

  it("appends a new term's first entries only after that term is durable", async () => {
    // The early append above is skipped when the Ready also changes the term or vote: those are
    // written (synced) first, or a power loss could leave a log holding a term the hard state
    // does not know, and the node would not start. The case: a leader elected without this
    // follower sends it its first Append, whose term and entries come in one Ready.
    const { cluster, leader } = await clusterWithAWrite(11);
    const follower = cluster.ids.find((id) => id !== leader);
    assert.ok(follower !== undefined);
    const node = cluster.node(follower);
    const log = node.commitLog;
    assert.ok(log !== undefined);
    await runUntil(
      cluster,
      () => log.lastIndex() === cluster.node(leader).commitLog?.lastIndex(),
      1_000,
    );
    const stored = async (): Promise<number> =>
      (await getMeta(node.meta, MetaKeys.raftHardState, hardStateCodec))?.term ?? 0;
    const term = await stored();
    const events: string[] = [];
    const batch = node.meta.batch.bind(node.meta);
    node.meta.batch = async (ops, options) => {
      await batch(ops, options);
      const put = ops.find((op) => op.key === MetaKeys.raftHardState);
      if (options.sync && put?.value !== undefined) {
        events.push(`hard state t${hardStateCodec.decode(put.value).term}`);
      }
    };
    const append = log.append.bind(log);
    log.append = (entries) => {
      events.push(`append t${Math.max(...entries.map((e) => e.term))}`);
      return append(entries);
    };
    const last = log.lastIndex();
    const message: Message = {
      type: 'Append',
      from: leader,
      to: follower,
      term: asTerm(term + 1),
      prevIndex: asLogIndex(last),
      prevTerm: asTerm(log.termAt(last) ?? 0),
      entries: [
        {
          index: asLogIndex(last + 1),
          term: asTerm(term + 1),
          type: 'noop',
          data: new Uint8Array(0),
        },
      ],
      commit: asLogIndex(0),
    };
    const transports = (cluster.network as unknown as { transports: Map<NodeId, SimTransport> })
      .transports;
    transports.get(follower)?.handler?.(message);
    await runUntil(cluster, () => events.includes(`append t${term + 1}`), 1_000);
    assert.deepEqual(events.slice(0, 2), [`hard state t${term + 1}`, `append t${term + 1}`]);
  });

  it('answers readIndex with a point that covers acknowledged writes', async () => {
    const { cluster, leader } = await clusterWithAWrite(2);
    cluster.readIndex(leader);
    await runUntil(cluster, () => cluster.history.readsServed === 1, 2_000);
    noViolations(cluster);
  });

  it('stops a node whose fsync fails, without acknowledging the entries', async () => {
    const cluster = newCluster(3);
    const leader = await electLeader(cluster);
    const [failing, crashed] = cluster.ids.filter((id) => id !== leader) as [NodeId, NodeId];
    cluster.crash(crashed, 'keep');
    cluster.node(failing).disk.setHook((op) => {
      if (op === 'sync') throw new SimDiskError('EIO', 'injected fsync failure');
    });
    let outcome: boolean | undefined;
    cluster.propose(leader, encoder.encode('never'), (ok) => {
      outcome = ok;
    });
    const index = cluster.status(leader)?.lastIndex ?? 0;
    await runUntil(cluster, () => cluster.node(failing).fatal !== undefined, 1_000);
    const fatal = cluster.node(failing).fatal;
    assert.ok(isRaftmqError(fatal, 'STORE_FATAL'), String(fatal));
    await cluster.runFor(1_000);
    // Without the failed node no majority holds the entry durably: it must not be acknowledged.
    assert.notEqual(outcome, true);
    const match = cluster.status(leader)?.progress.get(failing)?.match ?? 0;
    assert.ok(match < index, `leader counts ${failing} at ${match}, entry at ${index}`);
    assert.deepEqual(cluster.history.violations, []);
    assert.equal(cluster.unexpectedFailures.length, 1);
  });

  it('fails a proposal in doubt, not definitely, when the leader stops on a store error', async () => {
    const cluster = newCluster(3);
    const leader = await electLeader(cluster);
    const driver = cluster.driver(leader);
    assert.ok(driver !== undefined);
    cluster.node(leader).disk.setHook((op) => {
      if (op === 'sync') throw new SimDiskError('EIO', 'injected fsync failure');
    });
    let outcome: unknown;
    driver.propose([encoder.encode('replicated, then the leader stops')]).then(
      () => (outcome = 'acknowledged'),
      (err: unknown) => (outcome = err),
    );
    await runUntil(cluster, () => outcome !== undefined, 1_000);
    // The followers hold the entry (it may commit under the next leader): a definite error
    // made clients send it again, and it was stored twice behind one acknowledgement.
    assert.ok(
      isRaftmqError(outcome, 'TIMEOUT') &&
        outcome.details.maybeCommitted === true &&
        typeof outcome.details.term === 'number' &&
        /may or may not have taken effect/.test(outcome.message),
      String(outcome),
    );
    assert.ok(isRaftmqError(cluster.node(leader).fatal, 'STORE_FATAL'));
  });

  it('never grants a vote it could not persist', async () => {
    const cluster = new SimCluster({
      seed: 4,
      nodeCount: 3,
      tickIntervalMs: TICK_MS,
      syncMsMax: 2,
    });
    const failing = asNodeId('n2');
    cluster.node(failing).meta.setHook((op) => {
      if (op === 'batch') throw new Error('injected metadata write failure');
    });
    const granted: Message[] = [];
    cluster.network.onSend = (m) => {
      if (m.from === failing && m.type === 'VoteResp' && !m.reject) granted.push(m);
    };
    for (const id of cluster.ids) cluster.start(id);
    await electLeader(cluster);
    await cluster.runFor(500);
    assert.deepEqual(granted, []);
    assert.deepEqual(cluster.history.violations, []);
  });

  it('persists term and vote before the vote leaves (power loss right after)', async () => {
    const cluster = new SimCluster({
      seed: 5,
      nodeCount: 3,
      tickIntervalMs: TICK_MS,
      syncMsMax: 3,
    });
    const votes: Array<{ voter: NodeId; candidate: NodeId; term: number }> = [];
    cluster.network.onSend = (m) => {
      if (m.type !== 'VoteResp' || m.reject) return;
      votes.push({ voter: m.from, candidate: m.to, term: m.term });
      cluster.crash(m.from, 'lose');
    };
    for (const id of cluster.ids) cluster.start(id);
    await runUntil(cluster, () => votes.length > 0, 5_000);
    for (const vote of votes) {
      const stored = await getMeta(
        cluster.node(vote.voter).meta,
        MetaKeys.raftHardState,
        hardStateCodec,
      );
      assert.ok(stored !== undefined, `${vote.voter} lost its hard state`);
      assert.equal(stored.term, vote.term);
      assert.equal(stored.vote, vote.candidate);
    }
    cluster.network.onSend = undefined;
    for (const vote of votes) cluster.start(vote.voter);
    await electLeader(cluster);
    noViolations(cluster);
  });

  it('restarts a node after a power loss and catches it up', async () => {
    const cluster = newCluster(6);
    const leader = await electLeader(cluster);
    const follower = cluster.ids.find((id) => id !== leader) as NodeId;
    let acks = 0;
    for (let i = 0; i < 20; i++) {
      cluster.propose(leader, encoder.encode(`e${i}`), (ok) => {
        if (ok) acks += 1;
      });
      await cluster.runFor(TICK_MS);
    }
    cluster.crash(follower, 'tear');
    await runUntil(cluster, () => acks === 20, 2_000);
    cluster.start(follower);
    const maxAcked = cluster.history.maxAckedIndex;
    await runUntil(
      cluster,
      () =>
        (cluster.history.appliedIndexOf.get(follower) ?? 0) >= maxAcked &&
        cluster.status(follower) !== undefined,
      3_000,
    );
    noViolations(cluster);
  });
});

describe('RaftDriver.close', () => {
  it('stops the node, fails later calls with STORE_CLOSED, and the rest elect', async () => {
    const cluster = newCluster(8);
    const leader = await electLeader(cluster);
    const driver = cluster.driver(leader);
    assert.ok(driver !== undefined);
    const closing = driver.close();
    await cluster.runFor(50);
    await closing;
    assert.equal(await driver.stopped, undefined);
    await assert.rejects(driver.propose([encoder.encode('late')]), (err: unknown) =>
      isRaftmqError(err, 'STORE_CLOSED'),
    );
    await runUntil(
      cluster,
      () => {
        const next = cluster.leader();
        return next !== undefined && next !== leader;
      },
      5_000,
    );
    noViolations(cluster);
  });
});

describe('hardStateCodec', () => {
  it('round-trips and refuses damaged values as META_CORRUPT', async () => {
    const value = { term: asTerm(7), vote: asNodeId('n2'), commit: asLogIndex(42) };
    assert.deepEqual(hardStateCodec.decode(hardStateCodec.encode(value)), value);
    const none = { term: asTerm(0), vote: null, commit: asLogIndex(0) };
    assert.deepEqual(hardStateCodec.decode(hardStateCodec.encode(none)), none);
    const bytes = hardStateCodec.encode(value);
    const cluster = new SimCluster({
      seed: 7,
      nodeCount: 3,
      tickIntervalMs: TICK_MS,
      syncMsMax: 0,
    });
    const meta = cluster.node(asNodeId('n1')).meta;
    for (const bad of [
      bytes.subarray(0, 19),
      Buffer.concat([bytes, Buffer.from([0])]),
      Buffer.from([2, ...bytes.subarray(1)]),
    ]) {
      await meta.batch([{ type: 'put', key: MetaKeys.raftHardState, value: bad }], { sync: true });
      await assert.rejects(getMeta(meta, MetaKeys.raftHardState, hardStateCodec), (err: unknown) =>
        isRaftmqError(err, 'META_CORRUPT'),
      );
    }
  });
});
