/*
 * What the tests of raftmq's own gRPC calls share (raw-grpc.test.ts, raw-grpc-unary.test.ts,
 * test/client/raw-unary-channel.test.ts): session options, a grpc-js method that passes bytes
 * through, connecting a session, and waiting for a condition.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
import { passBuffer } from '../../src/broker/grpc-util';
import { RawGrpcSession, type RawSessionOptions } from '../../src/common/raw-grpc';

/** Session options of the tests: a long keepalive, a window of 1 MiB. */
export const TEST_SESSION_OPTIONS: RawSessionOptions = {
  connectTimeoutMs: 2000,
  keepaliveTimeMs: 10_000,
  keepaliveTimeoutMs: 5000,
  windowBytes: 1024 * 1024,
};

/** A grpc-js method at `path` whose requests and responses are the bytes as they are. */
export function bytesMethod(
  path: string,
  requestStream: boolean,
): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream,
    responseStream: false,
    requestSerialize: passBuffer,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: passBuffer,
    responseDeserialize: (b: Buffer) => b,
  };
}

/** A session connected to `address`, or the connection error. */
export function connectSession(
  address: string,
  options: RawSessionOptions = TEST_SESSION_OPTIONS,
): Promise<RawGrpcSession> {
  return new Promise((resolve, reject) => {
    RawGrpcSession.connect(address, options, (err, session) => {
      if (err !== null || session === null) reject(err ?? new Error('no session'));
      else resolve(session);
    });
  });
}

/** Waits until `condition()` holds, checking every few ms; fails after 10 s. */
export async function waitUntil(condition: () => boolean, what: string): Promise<void> {
  const deadlineMs = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadlineMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise<void>((resolve) => setTimeout(resolve, 2));
  }
}
