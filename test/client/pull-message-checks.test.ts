/*
 * The PullConsumer's PullMessage path (used with `pullProtocol: 'pull-message'`, or against a
 * server without FetchQueue) against a server that answers what no broker should: messages of
 * another queue, offsets out of order, more messages than asked, an OK answer that does not
 * move past the offset asked, and a negative next offset. Each fails the pull with a clear
 * error, as the same answers do on the Fetch path, instead of handing the caller wrong
 * messages or an offset to loop on. GetOffset and QueryOffset answers that cannot be a queue
 * offset (negative, past 2^53) fail the call too.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import { bindServer } from '../../src/broker/grpc-util';
import { oneQueueRoute } from './fake-route';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { PullConsumer } from '../../src/client/pull-consumer';

type Frame = Record<string, unknown>;

function message(offset: number, queueId: number, body = Buffer.from('b')): Frame {
  return {
    message: {
      topic: { name: 'MyTopic', resourceNamespace: '' },
      body,
      systemProperties: {
        messageId: `M${offset}`,
        queueId,
        queueOffset: offset,
        bodyEncoding: 'IDENTITY',
        messageType: 'NORMAL',
      },
    },
  };
}

describe('PullConsumer over PullMessage against a lying server', function () {
  this.timeout(30_000);
  let server: grpc.Server;
  let port = 0;
  /** The frames after the OK status for the next pull. */
  let frames: Frame[] = [];
  /** The offset GetOffset and QueryOffset answer with OK. */
  let offsetAnswer: unknown = 0;

  before(async () => {
    server = new grpc.Server({ 'grpc.max_send_message_length': -1 });
    server.addService(await loadMessagingDefinition(), {
      QueryRoute: (
        call: grpc.ServerUnaryCall<unknown, unknown>,
        done: grpc.sendUnaryData<object>,
      ) => done(null, oneQueueRoute('MyTopic', port)),
      GetOffset: (call: grpc.ServerUnaryCall<unknown, unknown>, done: grpc.sendUnaryData<object>) =>
        done(null, { status: { code: 'OK', message: 'OK' }, offset: offsetAnswer }),
      QueryOffset: (
        call: grpc.ServerUnaryCall<unknown, unknown>,
        done: grpc.sendUnaryData<object>,
      ) => done(null, { status: { code: 'OK', message: 'OK' }, offset: offsetAnswer }),
      PullMessage: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        call.write({ status: { code: 'OK', message: 'OK' } });
        for (const f of frames) call.write(f);
        call.end();
      },
    });
    port = await bindServer(server, '127.0.0.1:0');
  });

  after(() => server.forceShutdown());

  it('refuses what the Fetch path refuses, and takes a sound answer', async () => {
    const consumer = await PullConsumer.create({
      endpoint: `127.0.0.1:${port}`,
      pullProtocol: 'pull-message',
      receiveMessageBytesMax: 1024 * 1024,
    });
    try {
      const cases: [string, Frame[], RegExp][] = [
        ['another queue', [message(10, 7), { nextOffset: 11 }], /queue 7, not 0/],
        ['out of order', [message(11, 0), message(10, 0), { nextOffset: 12 }], /out of order/],
        ['behind the offset asked', [message(9, 0), { nextOffset: 11 }], /out of order/],
        [
          'more than asked',
          [10, 11, 12, 13, 14].map((o) => message(o, 0)).concat([{ nextOffset: 15 }]),
          /5 messages, 4 asked|more than 6 frames/,
        ],
        ['no progress', [{ nextOffset: 10 }], /does not move past 10/],
        ['a negative next offset', [message(10, 0), { nextOffset: -5 }], /next offset -5/],
      ];
      for (const [what, reply, error] of cases) {
        frames = reply;
        await assert.rejects(consumer.pull('MyTopic', 0, 10, 4), error, what);
      }
      frames = [message(10, 0), message(12, 0), { nextOffset: 13 }];
      const ok = await consumer.pull('MyTopic', 0, 10, 4);
      assert.deepEqual(
        ok.messages.map((m) => m.offset),
        [10, 12],
      );
      assert.equal(ok.nextOffset, 13);
    } finally {
      consumer.close();
    }
  });

  it('refuses an offset answer that cannot be a queue offset', async () => {
    const consumer = await PullConsumer.create({ endpoint: `127.0.0.1:${port}` });
    try {
      for (const bad of [-5, '9007199254740993']) {
        offsetAnswer = bad;
        await assert.rejects(consumer.getOffset('G', 'MyTopic', 0), /malformed GetOffset/);
        await assert.rejects(consumer.queryOffset('MyTopic', 0, 'END'), /malformed QueryOffset/);
      }
      offsetAnswer = 42;
      assert.equal(await consumer.getOffset('G', 'MyTopic', 0), 42);
      assert.equal(await consumer.queryOffset('MyTopic', 0, 'BEGINNING'), 42);
    } finally {
      consumer.close();
    }
  });
});
