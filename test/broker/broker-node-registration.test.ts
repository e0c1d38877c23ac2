/*
 * What a broker node registers reaches a NameServer's route table, end to end: a one-node group
 * and a NameServer on 127.0.0.1, the node's BrokerRegistrar between them. A topic created on
 * the node must appear in the NameServer's routes, a topic named `__proto__` included: the
 * registration was built on plain objects (`topics[name] = ...` in broker-node.ts and on both
 * sides of namesrv-wire.ts), where that key sets the object's prototype instead of adding the
 * topic, so the topic was never routed. Every wait polls a condition with a deadline; the node
 * and the NameServer are stopped by the test.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import type { NameServer } from '../../src/namesrv/namesrv-server';
import { RawClients, startNameServer, waitUntil } from '../namesrv/namesrv-harness';
import { startSingleNode } from './single-node';

describe('a broker node registering with a NameServer', function () {
  this.timeout(30_000);
  let dir = '';
  let namesrv: NameServer | undefined;
  let node: BrokerNode | undefined;

  afterEach(async () => {
    await node?.stop();
    await namesrv?.stop();
    if (dir !== '') await fs.rm(dir, { recursive: true, force: true });
  });

  it('gets every topic routed, one named __proto__ included', async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-registration-'));
    const ns = await startNameServer();
    namesrv = ns;
    node = await startSingleNode(dir, { namesrvAddrs: [`127.0.0.1:${ns.port}`] });
    const deadlineMs = Date.now() + 10_000;
    for (const name of ['orders', '__proto__']) {
      const topic = { name, queueCount: 2, perm: 'READ_WRITE', messageTypes: ['NORMAL'] } as const;
      await node.broker.createTopic(topic, deadlineMs);
    }
    // A topic change registers at once; the route table then holds both.
    await waitUntil(() => ns.registry.route('orders') !== undefined, 'orders routed');
    await waitUntil(() => ns.registry.route('__proto__') !== undefined, '__proto__ routed');
    assert.equal(ns.registry.clusterView()[0]?.nodes[0]?.topicCount, 2);

    const clients = await RawClients.open(ns.port);
    try {
      const route = await clients.namesrvCall('GetRoute', { topic: '__proto__' });
      assert.equal(route.found, true);
      const query = await clients.messagingCall('QueryRoute', { topic: { name: '__proto__' } });
      assert.equal((query.status as { code: string }).code, 'OK');
    } finally {
      clients.close();
    }
  });
});
