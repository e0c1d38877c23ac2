/*
 * Three Raft nodes as separate OS processes (dist/src/cli/raft-node.js) over gRPC on loopback,
 * each with the real CommitLog (SYNC flush) and LevelDB metadata in a temporary directory. The
 * leader runs a load of concurrent proposals, reporting each acknowledgement to the test as it
 * happens (`acked` events); once some are acknowledged, and while proposals are still in
 * flight, the test kills the leader with SIGKILL. A new leader takes over and takes more
 * proposals, the killed node restarts on its own data directory, and all three must converge.
 *
 * What the test was told is what counts: every acknowledged entry must be on every node, at its
 * index with its term and payload (the record checksum the proposer computed), exactly once
 * (no other entry holds its payload), and in the order it was proposed; the entries in flight
 * at the kill may or may not be there. Checked through the running nodes (applied index, the
 * checksums they applied, their digests) and then in each node's CommitLog itself, read back
 * once the nodes are stopped. Every wait polls a condition under a deadline; every child is
 * stopped by its pid afterwards.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalRaftGroup, waitUntil, type RaftNodeProcess } from '../../src/cli/raft-node-client';
import { payloadHash, type AckedEntry } from '../../src/cli/raft-node-protocol';
import { systemClock, systemScheduler } from '../../src/common/clock';
import { silentLogger } from '../../src/common/logger';
import { CommitLog } from '../../src/store/commit-log';
import { LevelMetaStore } from '../../src/store/level-meta-store';
import { EntryType, recordChecksum } from '../../src/store/log-record';
import { NodeDisk } from '../../src/store/node-disk';

const ENTRY_SIZE_BYTES = 256;
/** The load on the first leader: more than it can commit before the kill. */
const LOAD_COUNT = 100_000;
const LOAD_INFLIGHT = 8;
const LOAD_BATCH_ENTRIES = 4;
/** Acknowledged entries the test waits for before the kill. */
const ACKED_BEFORE_KILL = 400;
const AFTER_CRASH_COUNT = 200;
const LEADER_TIMEOUT_MS = 15_000;
const CONVERGE_TIMEOUT_MS = 20_000;

function running(group: LocalRaftGroup, id: string): RaftNodeProcess {
  const proc = group.node(id);
  assert.ok(proc !== undefined, `node ${id} is not running`);
  return proc;
}

async function proposeAll(proc: RaftNodeProcess, count: number): Promise<AckedEntry[]> {
  const { acked, errors } = await proc.request('propose', {
    count,
    sizeBytes: ENTRY_SIZE_BYTES,
  });
  assert.deepEqual(errors, {}, `proposals failed on ${proc.id}`);
  assert.equal(acked.length, count);
  return acked;
}

/** One stored entry, as the check needs it. */
interface StoredEntry {
  readonly term: number;
  readonly type: number;
  readonly checksum: number;
  readonly payloadHash: string;
}

/** Reads node `id`'s whole CommitLog from its data directory (the node must be stopped). */
async function readLog(dataDir: string): Promise<Map<number, StoredEntry>> {
  const meta = await LevelMetaStore.open(path.join(dataDir, 'meta'));
  try {
    const log = await CommitLog.open(dataDir, {
      disk: new NodeDisk(),
      meta,
      clock: systemClock,
      scheduler: systemScheduler,
      logger: silentLogger(),
    });
    try {
      const out = new Map<number, StoredEntry>();
      for (let from = log.firstIndex(); from <= log.lastIndex();) {
        const entries = await log.readRange(from, 1024, 8 << 20);
        for (const e of entries) {
          out.set(e.index, {
            term: e.term,
            type: e.type,
            checksum: recordChecksum(e.index, e.term, e.type, e.payload),
            payloadHash: payloadHash(e.payload),
          });
          from = e.index + 1;
        }
      }
      return out;
    } finally {
      await log.close();
    }
  } finally {
    await meta.close();
  }
}

/**
 * Checks one node's stored log against what was acknowledged (in the order it was proposed):
 * each entry at its index with its term and checksum, its payload nowhere else, and the
 * indexes increasing in the order of the proposals.
 */
function checkStored(id: string, stored: Map<number, StoredEntry>, acked: AckedEntry[]): void {
  const places = new Map<string, number[]>();
  for (const [index, e] of stored) {
    if (e.type !== EntryType.NORMAL) continue;
    const list = places.get(e.payloadHash) ?? [];
    list.push(index);
    places.set(e.payloadHash, list);
  }
  let previous = 0;
  for (const a of acked) {
    const e = stored.get(a.index);
    assert.ok(e !== undefined, `${id}: acknowledged entry ${a.index} is missing`);
    assert.deepEqual(
      { term: e.term, checksum: e.checksum, payloadHash: e.payloadHash },
      { term: a.term, checksum: a.checksum, payloadHash: a.payloadHash },
      `${id}: entry ${a.index}`,
    );
    assert.deepEqual(places.get(a.payloadHash), [a.index], `${id}: places of entry ${a.index}`);
    assert.ok(a.index > previous, `${id}: entry ${a.index} after ${previous}, out of order`);
    previous = a.index;
  }
}

describe('Raft group as three real processes (gRPC on loopback, real store)', function () {
  this.timeout(120_000);
  let rootDir = '';
  let group: LocalRaftGroup | undefined;

  before(() => {
    rootDir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-proc-'));
  });

  after(async () => {
    await group?.stopAll();
    fs.rmSync(rootDir, { recursive: true, force: true });
  });

  afterEach(function () {
    if (this.currentTest?.state !== 'failed' || group === undefined) return;
    for (const id of group.ids) {
      const logPath = path.join(rootDir, `${id}.log`);
      const tail = fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8').slice(-3000) : '';
      console.error(`---- ${id} log tail ----\n${tail}`);
    }
  });

  it('loses no acknowledged entry when the leader is killed with proposals in flight', async () => {
    group = await LocalRaftGroup.start({ rootDir, node: { logLevel: 'info' } });
    const first = await group.waitForLeader(LEADER_TIMEOUT_MS);
    const leader = running(group, first.id);

    // What the test is told, as it is told: the load's own answer dies with the leader. The
    // kill follows the acknowledgement that reaches the threshold at once, while the proposals
    // after it are in flight (the load keeps LOAD_INFLIGHT of them going until it is done).
    const ackedBeforeKill: AckedEntry[] = [];
    let killed: Promise<void> | undefined;
    leader.onEvent((e) => {
      if (e.event !== 'acked' || killed !== undefined) return;
      ackedBeforeKill.push(...e.entries);
      if (ackedBeforeKill.length >= ACKED_BEFORE_KILL) killed = group?.crash(first.id);
    });
    const load = leader
      .request(
        'propose',
        {
          count: LOAD_COUNT,
          sizeBytes: ENTRY_SIZE_BYTES,
          inflightMax: LOAD_INFLIGHT,
          batchEntries: LOAD_BATCH_ENTRIES,
          ackEvents: true,
        },
        CONVERGE_TIMEOUT_MS * 5,
      )
      .then(
        () => 'finished',
        (err: unknown) => `failed: ${String(err)}`,
      );
    await waitUntil(`${ACKED_BEFORE_KILL} entries acknowledged`, LEADER_TIMEOUT_MS, () =>
      Promise.resolve(killed !== undefined ? true : undefined),
    );
    await killed;
    // The load never answered: it was still proposing when the leader died.
    assert.match(await load, /^failed: .*exited/);
    ackedBeforeKill.sort((a, b) => a.seq - b.seq);

    const second = await group.waitForLeader(LEADER_TIMEOUT_MS, first.term);
    assert.notEqual(second.id, first.id);
    const ackedAfter = await proposeAll(running(group, second.id), AFTER_CRASH_COUNT);
    const acked = [...ackedBeforeKill, ...ackedAfter];

    await group.start(first.id);
    const lastAcked = Math.max(...acked.map((a) => a.index));
    const last = await group.waitForConvergence(CONVERGE_TIMEOUT_MS, lastAcked);
    assert.equal(group.running().length, 3);

    const indexes = acked.map((a) => a.index);
    for (const proc of group.running()) {
      const status = await proc.status();
      assert.equal(status.appliedIndex, last, `${proc.id} applied index`);
      assert.ok(status.appliedCount >= acked.length, `${proc.id} applied count`);
      const { checksums } = await proc.request('appliedChecksums', { indexes });
      checksums.forEach((checksum, i) => {
        const want = acked[i];
        assert.equal(checksum, want?.checksum, `${proc.id}: entry at ${want?.index}`);
      });
    }
    const digests = await Promise.all(
      group.running().map(async (p) => (await p.request('appliedDigest', { upTo: last })).digest),
    );
    assert.equal(new Set(digests).size, 1, `digests differ: ${digests.join(', ')}`);

    await group.stopAll();
    for (const id of group.ids) {
      const stored = await readLog(path.join(rootDir, id));
      checkStored(id, stored, acked);
    }
  });
});
