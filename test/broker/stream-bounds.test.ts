/*
 * Read calls whose clients do not take the answer (messaging-pull.ts, messaging-pop.ts,
 * call-watch.ts, call-admission.ts). A one-node group holds four messages of 1 MB; a
 * MessagingService over it runs on a loopback server of its own with small bounds: requests
 * time out after 1.5 s at most, and the answers held are bounded by 8 MiB across calls and
 * 6 MiB per client id (two 4 MiB pulls, one per client). A raw HTTP/2 client opens PullMessage
 * and ReceiveMessage calls with a 64 KiB window and never reads them. Checked: such a call is
 * reset by its deadline (before, it stayed open, holding its answer, for as long as the client
 * liked); while one holds its answer, a second pull of the same client is refused with
 * TOO_MANY_REQUESTS before it reads the store and another client's is served; while two hold
 * theirs, a third client's is refused; once they are reset a pull is served again and no
 * answer bytes are held. A service allowing one long-polling read refuses a pull with
 * TOO_MANY_REQUESTS at once while a long poll holds the place. Every wait has a deadline; the
 * servers, the node and the directory are removed after.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { BrokerNode } from '../../src/broker/broker-node';
import { bindServer, shutdownServer } from '../../src/broker/grpc-util';
import { MESSAGING_SERVER_OPTIONS } from '../../src/broker/messaging-options';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { createMessagingService, type MessagingService } from '../../src/broker/messaging-service';
import { silentLogger } from '../../src/common/logger';
import { clientHeaders, CODE, type RawStatus, RmqRawClient } from './rmq-raw-client';
import { produceMessage, startSingleNode } from './single-node';

const TOPIC = 'BoundsTopic';
const MIB = 1024 * 1024;
const REQUEST_TIMEOUT_MS_MAX = 1_500;
/** Long enough for a reset at 1.5 s, short of the time a paused call was held before. */
const RESET_WAIT_MS = 6_000;

/** Resolves once `test()` holds; rejects after `timeoutMs`. */
function waitFor(what: string, test: () => boolean, timeoutMs: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const poll = (): void => {
      if (test()) resolve();
      else if (Date.now() > deadlineMs) reject(new Error(`${what}: not within ${timeoutMs} ms`));
      else setTimeout(poll, 10);
    };
    poll();
  });
}

/** A call opened by hand and never read. */
interface PausedCall {
  /** Resolves once the answer's headers came: the broker has read the store and answered. */
  readonly answered: Promise<void>;
  readonly closed: Promise<{ rstCode: number | undefined }>;
}

describe('read calls whose answers are not taken (stream bounds)', function () {
  this.timeout(60_000);
  let dir: string;
  let node: BrokerNode;
  let service: MessagingService;
  let server: grpc.Server;
  let endpoint: string;
  let definition: grpc.ServiceDefinition;
  const sessions: http2.ClientHttp2Session[] = [];

  /** Opens `rpc` with `request` on a fresh connection of 64 KiB windows, and never reads. */
  function openPaused(rpc: string, request: object, clientId?: string): PausedCall {
    const method = definition[rpc];
    assert.ok(method !== undefined);
    const session = http2.connect(`http://${endpoint}`, {
      settings: { initialWindowSize: 65_535 },
    });
    session.on('error', () => undefined); // reset streams are what the test waits for
    sessions.push(session);
    const body = method.requestSerialize(request);
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(body.length, 1);
    const stream = session.request({
      ':method': 'POST',
      ':path': method.path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...clientHeaders(clientId),
    });
    stream.on('error', () => undefined);
    stream.end(Buffer.concat([prefix, body]));
    stream.pause();
    const closed = new Promise<{ rstCode: number | undefined }>((resolve) =>
      stream.on('close', () => resolve({ rstCode: stream.rstCode })),
    );
    const answered = new Promise<void>((resolve) => stream.once('response', () => resolve()));
    return { answered, closed };
  }

  const pullRequest = {
    group: { name: 'g', resourceNamespace: '' },
    messageQueue: { topic: { name: TOPIC, resourceNamespace: '' }, id: 0 },
    offset: 0,
    batchSize: 32,
    longPollingTimeout: { seconds: 0, nanos: 0 },
  };

  /** Resolves to 'open' when `call` is still open after `ms`, else to how it closed. */
  async function stateAfter(call: PausedCall, ms: number): Promise<unknown> {
    const timeout = new Promise((resolve) => setTimeout(() => resolve('open'), ms));
    return Promise.race([call.closed, timeout]);
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-stream-bounds-'));
    node = await startSingleNode(dir, { autoCreateTopics: true, defaultQueueCount: 1 });
    for (let i = 0; i < 4; i++) {
      const body = Buffer.alloc(1_000_000, 65 + i);
      await node.broker.send([produceMessage(TOPIC, `m${i}`, { body })], Date.now() + 10_000);
    }
    definition = await loadMessagingDefinition();
    service = await createMessagingService(
      node.broker,
      {
        requestTimeoutMsMax: REQUEST_TIMEOUT_MS_MAX,
        pullBytesMax: 4 * MIB,
        answerBytesMax: 8 * MIB,
        clientAnswerBytesMax: 6 * MIB,
      },
      silentLogger(),
    );
    server = new grpc.Server(MESSAGING_SERVER_OPTIONS);
    server.addService(service.definition, service.handlers);
    const port = await bindServer(server, '127.0.0.1:0');
    endpoint = `127.0.0.1:${port}`;
  });

  afterEach(() => {
    for (const session of sessions.splice(0)) session.destroy();
  });

  after(async () => {
    await service?.close();
    if (server !== undefined) await shutdownServer(server, 2_000, silentLogger());
    await node?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('resets a PullMessage whose answer is not read by its deadline', async () => {
    const paused = openPaused('PullMessage', pullRequest);
    const state = await stateAfter(paused, RESET_WAIT_MS);
    assert.deepEqual(state, { rstCode: http2.constants.NGHTTP2_CANCEL });
  });

  it('resets a ReceiveMessage whose answer is not read by its deadline', async () => {
    const paused = openPaused('ReceiveMessage', {
      group: { name: 'receivers', resourceNamespace: '' },
      messageQueue: { topic: { name: TOPIC, resourceNamespace: '' }, id: -1 },
      batchSize: 32,
      invisibleDuration: { seconds: 60, nanos: 0 },
      autoRenew: false,
      filterExpression: { type: 'TAG', expression: '*' },
      longPollingTimeout: { seconds: 0, nanos: 0 },
    });
    const state = await stateAfter(paused, RESET_WAIT_MS);
    assert.deepEqual(state, { rstCode: http2.constants.NGHTTP2_CANCEL });
  });

  /** One PullMessage of one message at offset 0 as `clientId`: its status. */
  async function pullAs(client: RmqRawClient, clientId: string): Promise<RawStatus> {
    const method = definition.PullMessage;
    assert.ok(method !== undefined);
    const metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(clientHeaders(clientId))) metadata.set(k, v);
    const channel = new grpc.Client(endpoint, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 * MIB,
    });
    try {
      const frames = await new Promise<Record<string, unknown>[]>((resolve, reject) => {
        const out: Record<string, unknown>[] = [];
        const call = channel.makeServerStreamRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize,
          { ...pullRequest, batchSize: 1 },
          metadata,
          { deadline: Date.now() + 10_000 },
        );
        call.on('data', (frame: Record<string, unknown>) => out.push(frame));
        call.on('error', reject);
        call.on('end', () => resolve(out));
      });
      return client.status(frames[0]?.status);
    } finally {
      channel.close();
    }
  }

  it('refuses a pull with TOO_MANY_REQUESTS while unread answers fill a bound', async () => {
    const client = await RmqRawClient.connect(endpoint);
    try {
      // Client a holds a 4 MB answer: past its 6 MiB share, not past the 8 MiB of all.
      const pausedA = openPaused('PullMessage', pullRequest, 'a');
      await pausedA.answered;
      const refusedA = await pullAs(client, 'a');
      assert.equal(refusedA.code, CODE.TOO_MANY_REQUESTS, refusedA.message);
      assert.match(refusedA.message, /this client/);
      assert.equal((await pullAs(client, 'b')).code, CODE.OK, 'another client is served');
      // With b's answer held too, the 8 MiB of all are taken.
      const pausedB = openPaused('PullMessage', pullRequest, 'b');
      await pausedB.answered;
      const refusedC = await pullAs(client, 'c');
      assert.equal(refusedC.code, CODE.TOO_MANY_REQUESTS, refusedC.message);
      assert.match(refusedC.message, /its clients have not taken/);
      await Promise.all([pausedA.closed, pausedB.closed]);
      assert.equal((await pullAs(client, 'c')).code, CODE.OK, 'served once both were reset');
      assert.equal(service.admission.answerBytes.held, 0, 'every answer released');
    } finally {
      client.close();
    }
  });

  it('refuses a long-polling read past pollsInFlightMax with TOO_MANY_REQUESTS at once', async () => {
    const small = await createMessagingService(
      node.broker,
      { pollsInFlightMax: 1 },
      silentLogger(),
    );
    const smallServer = new grpc.Server(MESSAGING_SERVER_OPTIONS);
    smallServer.addService(small.definition, small.handlers);
    const port = await bindServer(smallServer, '127.0.0.1:0');
    const client = await RmqRawClient.connect(`127.0.0.1:${port}`);
    try {
      // A long poll at the queue's end holds the only place until it times out (2 s).
      const end = await client.queueOffset(TOPIC, 0, 'END');
      const method = definition.PullMessage;
      assert.ok(method !== undefined);
      const metadata = new grpc.Metadata();
      for (const [k, v] of Object.entries(clientHeaders())) metadata.set(k, v);
      const polling = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      const poll = polling.makeServerStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        { ...pullRequest, offset: end, longPollingTimeout: { seconds: 2, nanos: 0 } },
        metadata,
        { deadline: Date.now() + 10_000 },
      );
      const pollDone = new Promise<void>((resolve) => {
        poll.on('data', () => undefined);
        poll.on('error', () => resolve());
        poll.on('end', () => resolve());
      });
      await waitFor('the long poll in flight', () => small.admission.polls.count === 1, 5_000);
      const startedMs = Date.now();
      const refused = (await client.pull(TOPIC, 0, 0, 1)).status;
      assert.equal(refused.code, CODE.TOO_MANY_REQUESTS, refused.message);
      assert.ok(Date.now() - startedMs < 1_500, 'refused at once, not after the long poll');
      await pollDone;
      polling.close();
      const served = await client.pull(TOPIC, 0, 0, 1);
      assert.equal(served.status.code, CODE.OK, 'served once the long poll ended');
    } finally {
      client.close();
      await small.close();
      await shutdownServer(smallServer, 2_000, silentLogger());
    }
  });
});
