/*
 * unaryHandler (src/broker/messaging-call.ts): the response is built while the request is whole,
 * a failure is answered with its status, and once answered the request's bulk (`messages` of a
 * SendMessage, `entries` of an AckMessage) is let go, so that whatever still reaches grpc-js's
 * finished call cannot keep the messages and the request buffer their bodies view alive.
 */
import { strict as assert } from 'node:assert';
import type * as grpc from '@grpc/grpc-js';
import { silentLogger } from '../../src/common/logger';
import { RaftmqError, RmqCode } from '../../src/common/errors';
import { createCallAdmission } from '../../src/broker/call-admission';
import { type ServiceContext, unaryHandler } from '../../src/broker/messaging-call';

const admission = () =>
  createCallAdmission({
    callsInFlightMax: 2,
    pollsInFlightMax: 2,
    answerBytesMax: 1024,
    clientAnswerBytesMax: 1024,
  });
const ctx = { log: silentLogger(), admission: admission() } as unknown as ServiceContext;

/** Runs `handle` as the handler of a call with `request`; resolves to the callback's response. */
function answer(
  request: object,
  handle: (call: grpc.ServerUnaryCall<unknown, unknown>) => Promise<object>,
): Promise<unknown> {
  const call = { request } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
  return new Promise((resolve, reject) => {
    unaryHandler(
      ctx,
      'Test',
      handle,
    )(call, (err, response) => {
      if (err) reject(new Error(`the call ended with a gRPC error: ${err.details ?? err.code}`));
      else resolve(response);
    });
  });
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('unaryHandler (messaging-call.ts)', () => {
  it('answers from the whole request, then empties its messages', async () => {
    const request = { messages: [{ body: Buffer.from('a') }, { body: Buffer.from('b') }] };
    const response = await answer(request, (call) => {
      const { messages } = call.request as typeof request;
      return Promise.resolve({ count: messages.length });
    });
    assert.deepEqual(response, { count: 2 });
    await turn();
    assert.equal(request.messages.length, 0);
  });

  it('empties the entries of a request it answered with an error status', async () => {
    const request = { entries: [{ receiptHandle: 'h1' }, { receiptHandle: 'h2' }] };
    const response = (await answer(request, (call) => {
      assert.equal((call.request as typeof request).entries.length, 2);
      throw new RaftmqError('INVALID_ARGUMENT', 'refused');
    })) as { status: { code: number; message: string } };
    assert.equal(response.status.code, RmqCode.BAD_REQUEST);
    assert.match(response.status.message, /refused/);
    await turn();
    assert.equal(request.entries.length, 0);
  });

  it('leaves every other field of a request as it was', async () => {
    const request = { topic: { name: 't' }, keys: ['k'], messages: 'not an array' };
    await answer(request, () => Promise.resolve({}));
    await turn();
    assert.deepEqual(request, { topic: { name: 't' }, keys: ['k'], messages: 'not an array' });
  });

  it('refuses a call past callsInFlightMax with TOO_MANY_REQUESTS at once, not before', async () => {
    const busyCtx = { log: silentLogger(), admission: admission() } as unknown as ServiceContext;
    const releases: (() => void)[] = [];
    let ran = 0;
    const handler = unaryHandler(busyCtx, 'Test', () => {
      ran++;
      return new Promise<object>((resolve) => releases.push(() => resolve({ ok: true })));
    });
    const responses: unknown[] = [];
    const call = (): void =>
      handler({ request: {} } as unknown as grpc.ServerUnaryCall<unknown, unknown>, (_e, r) =>
        responses.push(r),
      );
    call();
    call();
    await turn();
    assert.equal(ran, 2, 'calls below the bound run');
    call();
    await turn();
    assert.equal(ran, 2, 'the call past the bound does not run');
    assert.equal(responses.length, 1, 'and is answered at once');
    const refused = responses[0] as { status: { code: number; message: string } };
    assert.equal(refused.status.code, RmqCode.TOO_MANY_REQUESTS);
    assert.match(refused.status.message, /2 calls in flight/);
    for (const release of releases) release();
    await turn();
    assert.equal(responses.length, 3);
    assert.equal(busyCtx.admission.calls.count, 0, 'places given back');
    call();
    await turn();
    assert.equal(ran, 3, 'a call runs again once others ended');
  });
});
