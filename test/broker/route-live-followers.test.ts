/*
 * A follower that goes down leaves its group's routes within seconds, from the NameServer and
 * from the leader used as access point, instead of staying listed until the NameServer expires
 * it (120 s): official clients send to every route endpoint (a FIFO message group hashed onto a
 * dead follower failed every attempt, and their shutdown failed notifying it). Back up, it is
 * listed again. Three BrokerNodes and a NameServer in this process, on loopback.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import type { NameServer } from '../../src/namesrv/namesrv-server';
import { startNameServer } from '../namesrv/namesrv-harness';
import { InProcessGroup, waitFor } from './in-process-group';
import { produceMessage } from './single-node';

const TOPIC = 'LiveRoute';

describe('routes list the followers the leader hears from', function () {
  this.timeout(60_000);
  let dir: string;
  let namesrv: NameServer;
  let group: InProcessGroup;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-live-route-'));
    namesrv = await startNameServer();
    group = await InProcessGroup.start(dir, {
      autoCreateTopics: true,
      namesrvAddrs: [`127.0.0.1:${namesrv.port}`],
    });
  });

  after(async () => {
    await group.stop();
    await namesrv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('drops a follower that went down and lists it again once back', async () => {
    const leader = await group.leader();
    await leader.broker.send([produceMessage(TOPIC, 'm')], Date.now() + 5_000);
    const fromNamesrv = (): string[] =>
      namesrv.registry.route(TOPIC)?.groups[0]?.followers.map((f) => f.nodeId) ?? [];
    const fromLeader = (): string[] =>
      leader.broker.localRoute(TOPIC)?.groups[0]?.followers.map((f) => f.nodeId) ?? [];
    const all = group
      .others(leader)
      .map((n) => n.config.nodeId)
      .sort();
    await waitFor('both followers routed', () => fromNamesrv().length === 2);
    assert.deepEqual(fromLeader(), all);

    const [down] = group.others(leader) as [BrokerNode];
    const downId = down.config.nodeId;
    await down.stop();
    group.running.delete(downId);
    const rest = all.filter((id) => id !== downId);
    await waitFor('the dead follower out of the routes', () => {
      return fromNamesrv().join() === rest.join() && fromLeader().join() === rest.join();
    });

    await group.startNode(downId);
    await waitFor('the follower back in the routes', () => {
      return fromNamesrv().join() === all.join() && fromLeader().join() === all.join();
    });
  });
});
