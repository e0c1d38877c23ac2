/**
 * `transferLeadership` to a node that is down: Raft abandons the transfer after one election
 * timeout and the leader keeps leading, so the call fails then with an error saying so, instead
 * of waiting out the caller's whole deadline (10 s for `raftmq leader transfer`). Runs a group
 * of three in process, stops one follower and asks the leader to hand over to it.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isRaftmqError } from '../../src/common/errors';
import { InProcessGroup } from './in-process-group';

describe('leader transfer to a node that is down', function () {
  this.timeout(60_000);
  let dir = '';
  let group: InProcessGroup | undefined;

  afterEach(async () => {
    await group?.stop();
    group = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('fails soon after Raft abandons it, not at the deadline', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'leader-transfer-'));
    group = await InProcessGroup.start(dir);
    const leader = await group.leader();
    const down = group.others(leader)[0];
    assert.ok(down !== undefined);
    const downId = down.broker.nodeId;
    await down.stop();
    group.running.delete(downId);
    const { electionTimeoutTicks, tickIntervalMs } = leader.broker.config.timing;
    const electionTimeoutMs = electionTimeoutTicks * tickIntervalMs;
    const startedMs = Date.now();
    await assert.rejects(leader.broker.transferLeadership(downId, Date.now() + 30_000), (err) => {
      assert.ok(isRaftmqError(err, 'TIMEOUT'), String(err));
      assert.match(err.message, new RegExp(`transfer to ${downId} abandoned`));
      return true;
    });
    const tookMs = Date.now() - startedMs;
    // One election timeout, then a check every tenth of it; far below the 30 s deadline.
    assert.ok(tookMs < 3 * electionTimeoutMs + 1_000, `took ${tookMs} ms`);
    assert.equal(leader.broker.roleView().role, 'leader', 'the leader kept leading');
  });
});
