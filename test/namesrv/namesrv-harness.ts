/**
 * Shared pieces of the NameServer service tests: start a NameServer on 127.0.0.1 port 0, raw
 * gRPC clients of both services it serves (built from the same .proto files, so requests can
 * be anything, malformed included), registrations, and a bounded wait on a condition.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { silentLogger } from '../../src/common/logger';
import { methodOf, serviceOf } from '../../src/namesrv/namesrv-grpc';
import { NameServer, type NameServerConfig } from '../../src/namesrv/namesrv-server';
import {
  loadMessagingProto,
  loadNamesrvProto,
  MESSAGING_SERVICE,
  NAMESRV_SERVICE,
  type NodeRegistration,
} from '../../src/namesrv/namesrv-wire';

export const HOST = '127.0.0.1';

/** Resolves once `condition()` holds; polls every 10 ms, fails after `timeoutMs`. */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadlineMs) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise<void>((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * A stalled NameServer on 127.0.0.1: it accepts every call of the NameServer service and never
 * answers, so callers wait out their deadlines. `stop()` ends it (and the calls).
 */
export async function startHangingNameServer(): Promise<{
  port: number;
  stop: () => void;
  /** Calls received so far. */
  callCount: () => number;
}> {
  const service = serviceOf(await loadNamesrvProto(), NAMESRV_SERVICE);
  const server = new grpc.Server();
  let callCount = 0;
  const never = (): void => {
    // Accepted, never answered: the call ends at its deadline or when the server stops.
    callCount += 1;
  };
  const handlers = { Register: never, Unregister: never, GetRoute: never, GetCluster: never };
  server.addService(service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${HOST}:0`, grpc.ServerCredentials.createInsecure(), (err, bound) =>
      err === null ? resolve(bound) : reject(err),
    ),
  );
  return { port, stop: () => server.forceShutdown(), callCount: () => callCount };
}

/** Starts a silent NameServer on 127.0.0.1, port 0 unless given. */
export function startNameServer(config: Partial<NameServerConfig> = {}): Promise<NameServer> {
  return NameServer.start({ listenHost: HOST, port: 0, ...config }, silentLogger());
}

/** A registration of node `nodeId` of group g1 (cluster c1), topic `orders` with 4 queues. */
export function registration(over: Partial<NodeRegistration> = {}): NodeRegistration {
  return {
    cluster: 'c1',
    group: 'g1',
    nodeId: 'n1',
    endpoint: '127.0.0.1:8081',
    role: 'leader',
    term: 2,
    topics: { orders: { queueCount: 4, perm: 'READ_WRITE', messageTypes: ['NORMAL', 'FIFO'] } },
    ...over,
  };
}

/** A gRPC error as a test sees it. */
export type CallError = grpc.ServiceError;

/** Raw clients of a NameServer's two services. */
export class RawClients {
  private constructor(
    private readonly client: grpc.Client,
    private readonly namesrv: protoLoader.ServiceDefinition,
    private readonly messaging: protoLoader.ServiceDefinition,
  ) {}

  static async open(port: number): Promise<RawClients> {
    const namesrv = serviceOf(await loadNamesrvProto(), NAMESRV_SERVICE);
    const messaging = serviceOf(await loadMessagingProto(), MESSAGING_SERVICE);
    const client = new grpc.Client(`${HOST}:${port}`, grpc.credentials.createInsecure());
    return new RawClients(client, namesrv, messaging);
  }

  /** Calls a NameServer RPC; rejects with the gRPC error. */
  namesrvCall(rpc: string, request: object): Promise<Record<string, unknown>> {
    return this.unary(methodOf(this.namesrv, rpc), request);
  }

  /** Calls a unary MessagingService RPC with optional headers. */
  messagingCall(
    rpc: string,
    request: object,
    headers: Record<string, string> = {},
  ): Promise<Record<string, unknown>> {
    return this.unary(methodOf(this.messaging, rpc), request, headers);
  }

  /** Sends raw bytes to a unary method of either service; rejects with the gRPC error. */
  rawCall(service: 'namesrv' | 'messaging', rpc: string, bytes: Buffer): Promise<unknown> {
    const method = methodOf(service === 'namesrv' ? this.namesrv : this.messaging, rpc);
    return this.unary({ ...method, requestSerialize: (b: object) => b as Buffer }, bytes);
  }

  /** Reads a server-streaming MessagingService RPC to its end. */
  serverStream(rpc: string, request: object): Promise<Record<string, unknown>[]> {
    const method = methodOf(this.messaging, rpc);
    return new Promise((resolve, reject) => {
      const out: Record<string, unknown>[] = [];
      const call = this.client.makeServerStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
      );
      call.on('data', (m: Record<string, unknown>) => out.push(m));
      call.on('error', reject);
      call.on('end', () => resolve(out));
    });
  }

  /** Opens a Telemetry stream; replies are collected in `replies`. */
  telemetry(): {
    call: grpc.ClientDuplexStream<object, Record<string, unknown>>;
    replies: Record<string, unknown>[];
    ended: Promise<grpc.StatusObject>;
  } {
    const method = methodOf(this.messaging, 'Telemetry');
    const call = this.client.makeBidiStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      new grpc.Metadata(),
      {},
    ) as grpc.ClientDuplexStream<object, Record<string, unknown>>;
    const replies: Record<string, unknown>[] = [];
    call.on('data', (m: Record<string, unknown>) => replies.push(m));
    call.on('error', () => {
      // The status is reported through `ended`.
    });
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    return { call, replies, ended };
  }

  close(): void {
    this.client.close();
  }

  private unary(
    method: protoLoader.MethodDefinition<object, object>,
    request: object,
    headers: Record<string, string> = {},
  ): Promise<Record<string, unknown>> {
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        metadata,
        { deadline: Date.now() + 5_000 },
        (err, response) => {
          if (err === null) resolve(response as Record<string, unknown>);
          else reject(err);
        },
      );
    });
  }
}

/** Asserts that `promise` rejects with gRPC status `code` and details matching `details`. */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: grpc.status,
  details: RegExp,
): Promise<void> {
  await assert.rejects(promise, (err: CallError) => {
    assert.equal(err.code, code, `${err.code} ${err.details}`);
    assert.match(err.details, details);
    return true;
  });
}

/** The wire form of a registration, written out by hand (not via the code under test). */
export function wireRegistration(over: Record<string, unknown> = {}): object {
  return {
    cluster: 'c1',
    group: 'g1',
    nodeId: 'n1',
    endpoint: '127.0.0.1:8081',
    role: 'ROLE_LEADER',
    term: 2,
    topics: {
      orders: { queueCount: 4, perm: 'PERM_READ_WRITE', messageTypes: ['NORMAL', 'FIFO'] },
    },
    ...over,
  };
}
