/*
 * Checks that auto-creation is bounded (`groupsMax`, `topicsMax`), against a one-node group with
 * bounds of a few: first uses (UpdateOffset of a new group, QueryRoute of a new topic) create
 * until the bound, then are refused with FORBIDDEN (PERMISSION_DENIED, not retryable) and a
 * message naming the option, while existing names keep working and the admin may still create
 * beyond the bound. Many first uses at once do not overshoot the bound. The options are
 * validated like the others.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveBrokerNodeConfig } from '../../src/broker/broker-node-config';
import type { BrokerNode } from '../../src/broker/broker-node';
import { isRaftmqError } from '../../src/common/errors';
import { startSingleNode } from './single-node';
import { CODE, RmqRawClient } from './rmq-raw-client';

const TOPIC = 'BoundTopic';
const GROUPS_MAX = 4;
const TOPICS_MAX = 3;
/** RocketMQ `Code.FORBIDDEN`: the official clients hand it to the application, no retry. */
const FORBIDDEN = 40300;

describe('auto-creation bounds', function () {
  this.timeout(60_000);
  let dir: string;
  let node: BrokerNode;
  let raw: RmqRawClient;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-auto-create-bound-'));
    node = await startSingleNode(dir, {
      autoCreateTopics: true,
      autoCreateGroups: true,
      defaultQueueCount: 1,
      groupsMax: GROUPS_MAX,
      topicsMax: TOPICS_MAX,
    });
    await node.broker.createTopic(
      { name: TOPIC, queueCount: 1, perm: 'READ_WRITE', messageTypes: ['NORMAL'] },
      Date.now() + 5_000,
    );
    raw = await RmqRawClient.connect(node.broker.clientEndpoint);
  });

  after(async () => {
    raw.close();
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const updateOffset = async (group: string): Promise<{ code: number; message: string }> => {
    const res = await raw.unary('UpdateOffset', {
      group: { name: group, resourceNamespace: '' },
      messageQueue: { topic: { name: TOPIC, resourceNamespace: '' }, id: 0 },
      offset: 0,
    });
    return raw.status(res.status);
  };

  it('refuses auto-created groups past groupsMax, even many at once', async () => {
    const codes = await Promise.all(
      Array.from({ length: 3 * GROUPS_MAX }, (_, i) => updateOffset(`G${i}`)),
    );
    const ok = codes.filter((s) => s.code === CODE.OK).length;
    assert.equal(ok, GROUPS_MAX, JSON.stringify(codes));
    assert.equal(node.broker.state.groupCount, GROUPS_MAX);
    const refused = codes.find((s) => s.code !== CODE.OK);
    assert.equal(refused?.code, FORBIDDEN);
    assert.match(refused.message, /groupsMax is 4/);
    assert.match(refused.message, /raftmq group create/);

    const known = node.broker.listGroups()[0]?.name ?? '';
    assert.equal((await updateOffset(known)).code, CODE.OK, 'an existing group still works');
    assert.equal((await updateOffset('OneMore')).code, FORBIDDEN);
    await assert.rejects(node.broker.ensureGroup('OneMore', Date.now() + 5_000), (err) => {
      assert.ok(isRaftmqError(err));
      assert.equal(err.code, 'PERMISSION_DENIED');
      assert.equal(err.retryable, false);
      assert.equal(err.details.option, 'groupsMax');
      return true;
    });

    await node.broker.createGroup(
      { name: 'OneMore', maxDeliveryAttempts: 17, fifo: false },
      Date.now() + 5_000,
    );
    assert.equal((await updateOffset('OneMore')).code, CODE.OK, 'admin creation is not bounded');
  });

  it('refuses auto-created topics past topicsMax', async () => {
    const route = async (topic: string): Promise<number> => {
      const res = await raw.unary('QueryRoute', { topic: { name: topic } });
      return raw.status(res.status).code;
    };
    const codes = await Promise.all(
      Array.from({ length: 3 * TOPICS_MAX }, (_, i) => route(`T${i}`)),
    );
    // BoundTopic (admin-created) counts: TOPICS_MAX - 1 more are auto-created.
    assert.equal(codes.filter((c) => c === CODE.OK).length, TOPICS_MAX - 1, String(codes));
    assert.ok(
      codes.every((c) => c === CODE.OK || c === FORBIDDEN),
      String(codes),
    );
    assert.equal(node.broker.state.topicCount, TOPICS_MAX);
    assert.equal(await route(TOPIC), CODE.OK);
    await assert.rejects(node.broker.ensureTopic('NewTopic', Date.now() + 5_000), (err) => {
      assert.ok(isRaftmqError(err));
      assert.equal(err.code, 'PERMISSION_DENIED');
      assert.match(err.message, /topicsMax is 3/);
      return true;
    });
  });

  it('validates groupsMax and topicsMax', () => {
    const base = {
      group: 'g1',
      nodeId: 'n1',
      peers: { n1: { raft: '127.0.0.1:1', client: '127.0.0.1:2' } },
      dataDir: '/tmp/x',
    };
    const resolved = resolveBrokerNodeConfig(base);
    assert.equal(resolved.groupsMax, 20_000);
    assert.equal(resolved.topicsMax, 5_000);
    assert.equal(resolveBrokerNodeConfig({ ...base, groupsMax: 0 }).groupsMax, 0);
    for (const [option, value] of [
      ['groupsMax', -1],
      ['groupsMax', 1.5],
      ['topicsMax', '10'],
      ['topicsMax', 2_000_000],
    ] as const) {
      assert.throws(
        () => resolveBrokerNodeConfig({ ...base, [option]: value }),
        (err) => isRaftmqError(err) && err.message.includes(`config.${option}`),
      );
    }
  });
});
