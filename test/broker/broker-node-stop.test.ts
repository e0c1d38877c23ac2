/*
 * Stopping a leader (SIGTERM) while a client holds a Telemetry stream open on it, in a 3-node
 * group of processes: the leader hands leadership to a follower before it stops, and its
 * services end the stream before the server's graceful shutdown, which no longer waits out its
 * bound. (Before, the stream kept the shutdown waiting 2 s while the node still led: the group
 * had no working leader for 2.6 s.)
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LocalCluster } from '../../src/cli/local-cluster';

describe('stopping a leader with a client connected', function () {
  this.timeout(60_000);
  let dir = '';
  let cluster: LocalCluster | undefined;

  after(async () => {
    await cluster?.stopAll();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('hands leadership off and ends the Telemetry stream before shutting the server', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-stop-'));
    cluster = await LocalCluster.start({ dir, flushMode: 'SYNC', logLevel: 'info' });
    const leader = await cluster.waitForLeader(20_000);
    const client = new grpc.Client(leader.clientEndpoint, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set('x-mq-client-id', 'stop-test@1');
    const stream = client.makeBidiStreamRequest(
      '/apache.rocketmq.v2.MessagingService/Telemetry',
      (b: Buffer) => b,
      (b: Buffer) => b,
      metadata,
    );
    stream.on('error', () => undefined);
    stream.on('data', () => undefined);
    try {
      await new Promise<void>((resolve) => setTimeout(resolve, 300));
      const exit = await cluster.kill(leader.nodeId, 'SIGTERM');
      assert.equal(exit?.code, 0);
      const next = await cluster.waitForLeader(10_000, leader.term);
      assert.notEqual(next.nodeId, leader.nodeId);
      const log = fs.readFileSync(path.join(dir, 'logs', `${leader.nodeId}.log`), 'utf8');
      assert.match(log, /leadership handed off before stopping/);
      assert.doesNotMatch(log, /graceful server shutdown timed out/);
    } finally {
      stream.cancel();
      client.close();
    }
  });
});
