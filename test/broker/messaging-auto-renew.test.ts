/*
 * Auto-renewal through the RocketMQ protocol on a one-node group whose auto-renew invisibility
 * is 4 s, with raw gRPC calls: a receive with `auto_renew` (as push consumers send it) keeps its
 * message from a second consumer well past one lease while its client lives; the client's
 * NotifyClientTermination makes the message visible again within about a second (the last
 * lease still had over 2.6 s to run), delivered with attempt 2; and the original receipt
 * handle of a renewed delivery still acknowledges.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { BrokerNode } from '../../src/broker/broker-node';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { produceMessage, startSingleNode } from './single-node';

const TOPIC = 'Renewed';
const GROUP = 'RenewG';
const INVISIBLE_MS = 4_000;

type Decoded = Record<string, unknown>;

interface Received {
  status: string;
  readonly messages: { body: string; attempt: number; receiptHandle: string }[];
}

describe('auto-renewal through ReceiveMessage and NotifyClientTermination', function () {
  this.timeout(60_000);
  let dir = '';
  let node: BrokerNode;
  let client: grpc.Client;
  let service: grpc.ServiceDefinition;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'raftmq-auto-renew-'));
    node = await startSingleNode(dir, {
      autoCreateTopics: true,
      defaultQueueCount: 1,
      autoRenewInvisibleMs: INVISIBLE_MS,
    });
    service = await loadMessagingDefinition();
    client = new grpc.Client(node.broker.clientEndpoint, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await node?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  function metadata(clientId: string): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('x-mq-client-id', clientId);
    return md;
  }

  /** One ReceiveMessage: its status and messages. */
  function receive(clientId: string, autoRenew: boolean, pollMs: number): Promise<Received> {
    const method = service.ReceiveMessage as grpc.MethodDefinition<object, Decoded>;
    const request = {
      group: { name: GROUP },
      messageQueue: { topic: { name: TOPIC }, id: -1 },
      filterExpression: { type: 'TAG', expression: '*' },
      batchSize: 1,
      autoRenew,
      ...(autoRenew ? {} : { invisibleDuration: { seconds: 30 } }),
      longPollingTimeout: { seconds: Math.floor(pollMs / 1000), nanos: (pollMs % 1000) * 1e6 },
    };
    const call = client.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      metadata(clientId),
      { deadline: Date.now() + pollMs + 5_000 },
    );
    const got: Received = { status: '', messages: [] };
    return new Promise((resolve, reject) => {
      call.on('data', (frame: Decoded) => {
        const status = frame.status as { code?: string } | null | undefined;
        if (status?.code !== undefined) got.status = status.code;
        const m = frame.message as Decoded | null | undefined;
        if (m !== undefined && m !== null) {
          const props = m.systemProperties as Decoded;
          got.messages.push({
            body: Buffer.from(m.body as Uint8Array).toString(),
            attempt: Number(props.deliveryAttempt),
            receiptHandle: String(props.receiptHandle),
          });
        }
      });
      call.on('error', reject);
      call.on('end', () => resolve(got));
    });
  }

  function unary(rpc: string, clientId: string, request: object): Promise<Decoded> {
    const method = service[rpc] as grpc.MethodDefinition<object, Decoded>;
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        metadata(clientId),
        { deadline: Date.now() + 5_000 },
        (err, response) => (err === null ? resolve(response as Decoded) : reject(err)),
      );
    });
  }

  const statusOf = (response: Decoded): string => String((response.status as Decoded).code);

  it('renews while the client lives, releases on termination, keeps the handle valid', async () => {
    await node.broker.send([produceMessage(TOPIC, 'm1')], Date.now() + 5_000);
    await node.broker.send([produceMessage(TOPIC, 'm2')], Date.now() + 5_000);
    const first = await receive('push@1', true, 1_000);
    const second = await receive('push@2', true, 1_000);
    assert.deepEqual(
      [...first.messages, ...second.messages].map((m) => [m.body, m.attempt]),
      [
        ['m1', 1],
        ['m2', 1],
      ],
    );
    // Another consumer waits 1.5 leases for them in vain: the leader renewed them.
    const meanwhile = await receive('other@1', false, INVISIBLE_MS * 1.5);
    assert.equal(meanwhile.status, 'MESSAGE_NOT_FOUND');

    // A renewed delivery's original handle acknowledges.
    const acked = await unary('AckMessage', 'push@2', {
      group: { name: GROUP },
      topic: { name: TOPIC },
      entries: [{ messageId: 'x', receiptHandle: second.messages[0]?.receiptHandle }],
    });
    assert.equal(statusOf(acked), 'OK');

    // The other push consumer terminates: its message comes back after about a second.
    const terminatedMs = Date.now();
    const bye = await unary('NotifyClientTermination', 'push@1', { group: { name: GROUP } });
    assert.equal(statusOf(bye), 'OK');
    const again = await receive('other@1', false, 5_000);
    const tookMs = Date.now() - terminatedMs;
    assert.deepEqual(
      again.messages.map((m) => [m.body, m.attempt]),
      [['m1', 2]],
    );
    assert.ok(tookMs < 2_400, `visible again after ${tookMs} ms, not at its lease's end`);
    const settled = await unary('AckMessage', 'other@1', {
      group: { name: GROUP },
      topic: { name: TOPIC },
      entries: [{ messageId: 'x', receiptHandle: again.messages[0]?.receiptHandle }],
    });
    assert.equal(statusOf(settled), 'OK');
    assert.equal(node.broker.pop.progress(GROUP)[0]?.inflightCount, 0);
  });
});
