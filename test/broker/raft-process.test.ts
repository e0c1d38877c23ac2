/*
 * Three Raft nodes as separate OS processes (dist/src/cli/raft-node.js) over gRPC on loopback,
 * each with the real CommitLog (SYNC flush) and LevelDB metadata in a temporary directory. The
 * test proposes entries through the leader, kills the leader with SIGKILL, waits for a new
 * leader, proposes more, restarts the killed node on its own data directory, and then checks
 * that all three applied the same entries: the same last index, the same digest of entries
 * 1..last, and at every acknowledged index the checksum of exactly the payload acknowledged.
 * Every wait polls a condition under a deadline; every child is stopped by its pid afterwards.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalRaftGroup, type RaftNodeProcess } from '../../src/cli/raft-node-client';
import type { AckedEntry } from '../../src/cli/raft-node-protocol';

const ENTRY_SIZE_BYTES = 256;
const BEFORE_CRASH_COUNT = 300;
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

describe('Raft group as three real processes (gRPC on loopback, real store)', function () {
  this.timeout(90_000);
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

  it('loses no acknowledged entry when the leader is killed with SIGKILL', async () => {
    group = await LocalRaftGroup.start({ rootDir, node: { logLevel: 'info' } });
    const first = await group.waitForLeader(LEADER_TIMEOUT_MS);
    const acked = await proposeAll(running(group, first.id), BEFORE_CRASH_COUNT);

    await group.crash(first.id);
    const second = await group.waitForLeader(LEADER_TIMEOUT_MS, first.term);
    assert.notEqual(second.id, first.id);
    acked.push(...(await proposeAll(running(group, second.id), AFTER_CRASH_COUNT)));

    await group.start(first.id);
    const lastAcked = Math.max(...acked.map((a) => a.index));
    const last = await group.waitForConvergence(CONVERGE_TIMEOUT_MS, lastAcked);
    assert.equal(group.running().length, 3);

    const indexes = acked.map((a) => a.index);
    for (const proc of group.running()) {
      const status = await proc.status();
      assert.equal(status.appliedIndex, last, `${proc.id} applied index`);
      assert.equal(status.appliedCount, BEFORE_CRASH_COUNT + AFTER_CRASH_COUNT, proc.id);
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
  });
});
