/*
 * A broker node on IPv6 loopback: both of its servers bind `listenHost` `::1` (the client
 * server took the host unbracketed and failed to start), and a client reaches it there.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerNode } from '../../src/broker/broker-node';
import { freePorts } from '../../src/cli/raft-node-client';
import { RmqRawClient } from './rmq-raw-client';
import { startSingleNode } from './single-node';

/** True when this machine has IPv6 loopback (a listener on ::1 can be opened). */
async function hasIpv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
}

describe('a broker node on IPv6', function () {
  this.timeout(30_000);
  let dir = '';
  let node: BrokerNode | undefined;

  after(async () => {
    await node?.stop();
    if (dir !== '') await fs.rm(dir, { recursive: true, force: true });
  });

  it('binds both servers on ::1 and answers there', async function () {
    if (!(await hasIpv6Loopback())) this.skip();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-ipv6-'));
    const [raft, client] = (await freePorts(2)) as [number, number];
    node = await startSingleNode(dir, {
      listenHost: '::1',
      peers: { n1: { raft: `[::1]:${raft}`, client: `[::1]:${client}` } },
    });
    const rmq = await RmqRawClient.connect(`[::1]:${client}`);
    try {
      const res = await rmq.unary('QueryRoute', { topic: { name: 'NoSuchTopic' } });
      assert.ok(res.status !== undefined, 'an answer with a status');
    } finally {
      rmq.close();
    }
  });
});
