// Unary calls written on Node's HTTP/2 (raw-grpc.ts `RawGrpcSession.unary`) against a grpc-js
// server, and against plain HTTP/2 servers that answer as no gRPC server should: the answer
// comes back whole, metadata and the deadline reach the server, a status and its message come
// back (in trailers, or trailers-only), a deadline passes as DEADLINE_EXCEEDED and cancels the
// call on the server, an oversized, compressed, missing or doubled answer is refused, a server
// that goes away ends the call with UNAVAILABLE, and so does a call on a closed session.
import { strict as assert } from 'node:assert';
import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import {
  RawGrpcSession,
  grpcTimeoutHeader,
  type RawCallEnd,
  type RawUnaryRequest,
  type RawUnaryResult,
} from '../../src/common/raw-grpc';
import { bytesMethod, connectSession } from './raw-grpc-harness';

const PATH = '/test.v1.Echo/Call';
interface Seen {
  request: Buffer;
  clientId: string | undefined;
  deadlineInMs: number;
}

interface Echo {
  server: grpc.Server;
  port: number;
  seen: Seen[];
  cancelled: number;
  /** How the server answers a request. */
  answer: (request: Buffer, callback: grpc.sendUnaryData<Buffer>) => void;
}

async function startEcho(): Promise<Echo> {
  const server = new grpc.Server();
  const echo: Echo = {
    server,
    port: 0,
    seen: [],
    cancelled: 0,
    answer: (request, callback) => callback(null, Buffer.concat([Buffer.from('re:'), request])),
  };
  const definition: grpc.ServiceDefinition = { Call: bytesMethod(PATH, false) };
  server.addService(definition, {
    Call: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const deadline = call.getDeadline();
      echo.seen.push({
        request: call.request,
        clientId: call.metadata.get('x-mq-client-id')[0] as string | undefined,
        deadlineInMs: (deadline instanceof Date ? deadline.getTime() : deadline) - Date.now(),
      });
      call.on('cancelled', () => {
        echo.cancelled += 1;
      });
      echo.answer(call.request, callback);
    },
  });
  echo.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err === null ? resolve(port) : reject(err),
    ),
  );
  return echo;
}

const connect = (address: string): Promise<RawGrpcSession> => connectSession(address);

function request(message: Buffer, over: Partial<RawUnaryRequest> = {}): RawUnaryRequest {
  return {
    path: PATH,
    metadata: { 'x-mq-client-id': 'c1' },
    message,
    timeoutMs: 5000,
    responseBytesMax: 1024 * 1024,
    ...over,
  };
}

function call(session: RawGrpcSession, req: RawUnaryRequest): Promise<RawUnaryResult> {
  return new Promise((resolve) => session.unary(req, resolve));
}

function failed(result: RawUnaryResult): RawCallEnd {
  assert.ok(!result.ok, 'the call should have failed');
  return result.end;
}

/** A plain HTTP/2 server whose streams `handle` answers; closed by the returned function. */
async function plainServer(
  handle: (stream: http2.ServerHttp2Stream) => void,
): Promise<{ address: string; close: () => Promise<void> }> {
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.on('error', () => undefined);
    handle(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    address: `127.0.0.1:${address.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A gRPC frame: flag byte, 32-bit length, message. */
function frame(message: Buffer, flag = 0): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = flag;
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

describe('raw gRPC unary call', () => {
  let echo: Echo;
  beforeEach(async () => {
    echo = await startEcho();
  });
  afterEach(() => echo.server.forceShutdown());

  it('returns the answer, with metadata and the deadline seen by the server', async () => {
    const session = await connect(`127.0.0.1:${echo.port}`);
    try {
      const big = Buffer.alloc(300 * 1024, 7);
      const results = await Promise.all([
        call(session, request(Buffer.from('hello'), { timeoutMs: 4000 })),
        call(session, request(big)),
      ]);
      const [small, large] = results;
      assert.ok(small?.ok && large?.ok);
      assert.equal(small.message.toString(), 're:hello');
      assert.deepEqual(large.message, Buffer.concat([Buffer.from('re:'), big]));
      const first = echo.seen.find((s) => s.request.length === 5);
      assert.equal(first?.clientId, 'c1');
      assert.ok(first !== undefined && first.deadlineInMs > 3000 && first.deadlineInMs <= 4000);
    } finally {
      session.close();
    }
  });

  it('returns a status and its message, in trailers or trailers-only', async () => {
    const session = await connect(`127.0.0.1:${echo.port}`);
    try {
      echo.answer = (_req, callback) =>
        callback({ code: grpc.status.FAILED_PRECONDITION, details: 'no leader: 100% sure, é' });
      const end = failed(await call(session, request(Buffer.from('x'))));
      assert.equal(end.code, grpc.status.FAILED_PRECONDITION);
      assert.equal(end.details, 'no leader: 100% sure, é');
    } finally {
      session.close();
    }
  });

  it('ends with DEADLINE_EXCEEDED when no answer comes in time, and cancels the call', async () => {
    const session = await connect(`127.0.0.1:${echo.port}`);
    try {
      echo.answer = () => undefined; // never answers
      const started = Date.now();
      const end = failed(await call(session, request(Buffer.from('x'), { timeoutMs: 150 })));
      assert.equal(end.code, grpc.status.DEADLINE_EXCEEDED);
      assert.ok(Date.now() - started < 2000);
      // The server learns of it (its own deadline, from grpc-timeout, or the reset).
      const until = Date.now() + 5000;
      while (echo.cancelled === 0 && Date.now() < until) {
        await new Promise<void>((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(echo.cancelled, 1);
      // The session goes on serving calls.
      echo.answer = (req, callback) => callback(null, req);
      const next = await call(session, request(Buffer.from('y')));
      assert.ok(next.ok && next.message.toString() === 'y');
    } finally {
      session.close();
    }
  });

  it('refuses an answer over responseBytesMax with RESOURCE_EXHAUSTED', async () => {
    const session = await connect(`127.0.0.1:${echo.port}`);
    try {
      echo.answer = (_req, callback) => callback(null, Buffer.alloc(64 * 1024));
      const end = failed(
        await call(session, request(Buffer.from('x'), { responseBytesMax: 1000 })),
      );
      assert.equal(end.code, grpc.status.RESOURCE_EXHAUSTED);
      const fits = await call(session, request(Buffer.from('x'), { responseBytesMax: 64 * 1024 }));
      assert.ok(fits.ok && fits.message.length === 64 * 1024);
    } finally {
      session.close();
    }
  });

  it('ends with UNAVAILABLE when the server goes away, and on a closed session', async () => {
    const session = await connect(`127.0.0.1:${echo.port}`);
    echo.answer = () => undefined;
    const pending = call(session, request(Buffer.from('x')));
    const until = Date.now() + 5000;
    while (echo.seen.length === 0 && Date.now() < until) {
      await new Promise<void>((resolve) => setTimeout(resolve, 5));
    }
    echo.server.forceShutdown();
    const end = failed(await pending);
    assert.ok(end.code === grpc.status.UNAVAILABLE || end.code === grpc.status.CANCELLED);
    session.close();
    assert.equal(session.acceptsCalls, false);
    const after = failed(await call(session, request(Buffer.from('y'))));
    assert.equal(after.code, grpc.status.UNAVAILABLE);
  });

  it('refuses answers no gRPC server gives', async () => {
    type Mode = 'not-found' | 'no-status' | 'compressed' | 'two' | 'none' | 'short';
    let mode: Mode = 'not-found';
    const plain = await plainServer((stream) => {
      stream.on('data', () => undefined);
      stream.on('end', () => {
        if (mode === 'not-found') {
          stream.respond({ ':status': 404 }, { endStream: true });
          return;
        }
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc' },
          {
            waitForTrailers: mode !== 'no-status',
          },
        );
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        const body = Buffer.from('answer');
        if (mode === 'compressed') stream.end(frame(body, 1));
        else if (mode === 'two') stream.end(Buffer.concat([frame(body), frame(body)]));
        else if (mode === 'short') stream.end(frame(body).subarray(0, 8));
        else if (mode === 'none' || mode === 'no-status') stream.end();
      });
    });
    const session = await connect(plain.address);
    try {
      const expect: [Mode, number, RegExp][] = [
        ['not-found', grpc.status.UNKNOWN, /HTTP status 404/],
        ['no-status', grpc.status.UNKNOWN, /without a status/],
        ['compressed', grpc.status.INTERNAL, /compressed/],
        ['two', grpc.status.INTERNAL, /not one message/],
        ['short', grpc.status.INTERNAL, /not one message/],
        ['none', grpc.status.INTERNAL, /without a message/],
      ];
      for (const [m, code, details] of expect) {
        mode = m;
        const end = failed(await call(session, request(Buffer.from('x'))));
        assert.equal(end.code, code, m);
        assert.match(end.details, details, m);
      }
    } finally {
      session.close();
      await plain.close();
    }
  });

  it('writes grpc-timeout in milliseconds, or whole seconds past eight digits', () => {
    assert.equal(grpcTimeoutHeader(0), '1m');
    assert.equal(grpcTimeoutHeader(1.2), '2m');
    assert.equal(grpcTimeoutHeader(3000), '3000m');
    assert.equal(grpcTimeoutHeader(99_999_999), '99999999m');
    assert.equal(grpcTimeoutHeader(100_000_000), '100000S');
    assert.equal(grpcTimeoutHeader(1e15), '99999999S');
  });
});
