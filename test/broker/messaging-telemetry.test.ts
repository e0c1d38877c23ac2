/*
 * The broker's Telemetry streams are bounded: one over `telemetryStreamsMax` is refused with
 * RESOURCE_EXHAUSTED, a stream on which no Settings were served within
 * `telemetrySettingsWaitMs` (nothing sent, or nothing valid) is ended with INVALID_ARGUMENT and
 * frees its place, and a stream whose Settings were served stays open until its client
 * half-closes it.
 *
 * A consumer's Settings that subscribe with a SQL92 filter are refused with a status-only
 * ILLEGAL_FILTER_EXPRESSION, sent again after the re-send delay (the Node client would lose a
 * refusal that arrives during its startup route queries); tag filters are served.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { bindServer, shutdownServer } from '../../src/broker/grpc-util';
import {
  MESSAGING_SERVER_OPTIONS,
  type MessagingServiceOptions,
} from '../../src/broker/messaging-options';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { createMessagingService, type MessagingService } from '../../src/broker/messaging-service';
import { silentLogger } from '../../src/common/logger';
import { startSingleNode } from './single-node';

const WAIT_MS = 400;

interface Stream {
  call: grpc.ClientDuplexStream<object, Record<string, unknown>>;
  replies: Record<string, unknown>[];
  /** How the call ended: its status code. */
  ended: Promise<number>;
}

type MessagingClient = grpc.Client & Record<string, (md: grpc.Metadata) => unknown>;

function openStream(client: MessagingClient, clientId: string): Stream {
  const md = new grpc.Metadata();
  md.set('x-mq-client-id', clientId);
  const call = (client.Telemetry as (md: grpc.Metadata) => Stream['call'])(md);
  const replies: Record<string, unknown>[] = [];
  call.on('data', (reply: Record<string, unknown>) => replies.push(reply));
  const ended = new Promise<number>((resolve) => {
    call.on('error', (err: grpc.ServiceError) => resolve(err.code));
    call.on('status', (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) resolve(status.code);
    });
  });
  return { call, replies, ended };
}

/** Polls `check` every 10 ms until it holds; fails after `timeoutMs`. */
async function until(what: string, timeoutMs: number, check: () => boolean): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadlineMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise<void>((resolve) => setTimeout(resolve, 10));
  }
}

/** A one-node group and a messaging service of `options` over it on its own server. */
interface ServedNode {
  readonly client: MessagingClient;
  readonly service: MessagingService;
  stop(): Promise<void>;
}

async function serveNode(
  dirPrefix: string,
  options: Partial<MessagingServiceOptions>,
): Promise<ServedNode> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), dirPrefix));
  const node = await startSingleNode(dir);
  const service = await createMessagingService(node.broker, options, silentLogger());
  const server = new grpc.Server(MESSAGING_SERVER_OPTIONS);
  server.addService(service.definition, service.handlers);
  const endpoint = `127.0.0.1:${await bindServer(server, '127.0.0.1:0')}`;
  const Ctor = grpc.makeGenericClientConstructor(await loadMessagingDefinition(), 'Messaging');
  const client = new Ctor(endpoint, grpc.credentials.createInsecure()) as MessagingClient;
  return {
    client,
    service,
    stop: async () => {
      client.close();
      await service.close();
      await shutdownServer(server, 5_000, silentLogger());
      await node.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

describe('Telemetry stream bounds', function () {
  this.timeout(30_000);
  let served: ServedNode;
  let client: MessagingClient;

  before(async () => {
    served = await serveNode('raftmq-telemetry-', {
      telemetryStreamsMax: 2,
      telemetrySettingsWaitMs: WAIT_MS,
    });
    client = served.client;
  });

  after(() => served?.stop());

  const open = (clientId: string): Stream => openStream(client, clientId);

  const settings = {
    settings: {
      clientType: 'PRODUCER',
      requestTimeout: { seconds: 3 },
      publishing: { topics: [] },
    },
  };

  it('refuses a stream over the bound, ends silent ones after the wait, keeps served ones', async () => {
    const served = open('served@1');
    served.call.write(settings);
    const silent = open('silent@1');
    // Over the bound: two are open.
    await new Promise<void>((resolve) => setTimeout(resolve, 50));
    const third = open('third@1');
    assert.equal(await third.ended, grpc.status.RESOURCE_EXHAUSTED);
    // The silent one is ended after the wait; the served one is not.
    const started = Date.now();
    assert.equal(await silent.ended, grpc.status.INVALID_ARGUMENT);
    assert.ok(Date.now() - started < WAIT_MS + 2_000);
    await new Promise<void>((resolve) => setTimeout(resolve, WAIT_MS));
    assert.equal((served.replies[0]?.status as { code?: string } | undefined)?.code, 'OK');
    // Its place is free again: a stream sending garbage (no Settings) is taken, then ended.
    const garbage = open('garbage@1');
    garbage.call.write({ status: { code: 'OK' } });
    assert.equal(await garbage.ended, grpc.status.INVALID_ARGUMENT);
    // The served stream was open all along, and ends with OK when its client half-closes.
    served.call.end();
    assert.equal(await served.ended, grpc.status.OK);
  });
});

describe('Telemetry: subscription filters', function () {
  this.timeout(30_000);
  const RESEND_MS = 200;
  let served: ServedNode;
  let client: MessagingClient;

  before(async () => {
    served = await serveNode('raftmq-telemetry-filter-', {
      registry: { settingsResendDelaysMs: [RESEND_MS] },
    });
    client = served.client;
  });

  after(() => served?.stop());

  const consumerSettings = (type: string, expression: string) => ({
    settings: {
      clientType: 'SIMPLE_CONSUMER',
      requestTimeout: { seconds: 3 },
      subscription: {
        group: { name: 'G' },
        subscriptions: [{ topic: { name: 'T' }, expression: { type, expression } }],
      },
    },
  });

  it('refuses a SQL92 subscription with ILLEGAL_FILTER_EXPRESSION, and says so again', async () => {
    const stream = openStream(client, 'sql@1');
    stream.call.write(consumerSettings('SQL', 'a = 1'));
    await until('the refusal and its re-send', 5_000, () => stream.replies.length >= 2);
    for (const reply of stream.replies) {
      const status = reply.status as { code?: string; message?: string } | undefined;
      assert.equal(status?.code, 'ILLEGAL_FILTER_EXPRESSION');
      assert.match(status?.message ?? '', /SQL92/);
      assert.equal(reply.settings ?? undefined, undefined, 'status only');
    }
    assert.equal(served.service.registry.get('sql@1'), undefined, 'the client was not recorded');
    stream.call.end();
    assert.equal(await stream.ended, grpc.status.OK);
  });

  it('serves a tag-filtered subscription', async () => {
    const stream = openStream(client, 'tag@1');
    stream.call.write(consumerSettings('TAG', 'a||b'));
    await until('the Settings reply', 5_000, () => stream.replies.length >= 1);
    const first = stream.replies[0] as { status?: { code?: string }; settings?: unknown };
    assert.equal(first.status?.code, 'OK');
    assert.ok(first.settings !== undefined && first.settings !== null);
    stream.call.end();
    assert.equal(await stream.ended, grpc.status.OK);
  });
});
