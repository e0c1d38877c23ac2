// The Append stream's client written on Node's HTTP/2 (raw-grpc-stream.ts) against a grpc-js
// server: messages written in parts arrive whole and in order, the server's status and message
// reach the caller (in trailers, or trailers-only), a cancel ends the call, a peer that ends the
// call without a status or answers as no gRPC server does ends it too, nothing is written after
// the end, a refused connection is reported, a peer that accepts the connection but never
// answers is dropped by the keepalive ping, a GOAWAY finishes the open call after what was
// written, a drain that never ends is bounded, and so is a connection attempt nobody answers.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { RawGrpcSession, type RawCallEnd, type RawClientStream } from '../../src/common/raw-grpc';
import { bytesMethod, connectSession, TEST_SESSION_OPTIONS, waitUntil } from './raw-grpc-harness';

const PATH = '/test.v1.Sink/Collect';
const OPTIONS = TEST_SESSION_OPTIONS;

interface Sink {
  server: grpc.Server;
  port: number;
  received: Buffer[];
  /** Ends the current call with this status once `count` messages arrived. */
  endAfter: { count: number; code: grpc.status; details: string } | null;
  /** Send response headers first, so that the status comes in trailers. */
  headersFirst: boolean;
  /** End a call with OK when the client ends its side (else such a call is left open). */
  okOnEnd: boolean;
}

async function startSink(): Promise<Sink> {
  const server = new grpc.Server();
  const sink: Sink = {
    server,
    port: 0,
    received: [],
    endAfter: null,
    headersFirst: false,
    okOnEnd: false,
  };
  const definition: grpc.ServiceDefinition = { Collect: bytesMethod(PATH, true) };
  server.addService(definition, {
    Collect: (
      call: grpc.ServerReadableStream<Buffer, Buffer>,
      done: grpc.sendUnaryData<Buffer>,
    ) => {
      call.on('data', (message: Buffer) => {
        sink.received.push(message);
        const end = sink.endAfter;
        if (end !== null && sink.received.length >= end.count) {
          done({ code: end.code, details: end.details });
        }
      });
      call.on('end', () => {
        if (sink.okOnEnd) done(null, Buffer.alloc(0));
      });
      call.on('error', () => undefined);
    },
  });
  sink.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err === null ? resolve(port) : reject(err),
    ),
  );
  return sink;
}

const connect = connectSession;

function open(session: RawGrpcSession): { stream: RawClientStream; ended: Promise<RawCallEnd> } {
  let stream: RawClientStream | undefined;
  const ended = new Promise<RawCallEnd>((resolve) => {
    stream = session.openStream(PATH, { onDrain: () => undefined, onEnd: resolve });
  });
  assert.ok(stream !== undefined);
  return { stream, ended };
}

describe('raw gRPC client stream', () => {
  let sink: Sink;
  beforeEach(async () => {
    sink = await startSink();
  });
  afterEach(() => sink.server.forceShutdown());

  it('sends messages written in parts whole and in order, and reports the status', async () => {
    const session = await connect(`127.0.0.1:${sink.port}`, OPTIONS);
    try {
      sink.endAfter = { count: 50, code: grpc.status.INVALID_ARGUMENT, details: 'bad frame: 50%' };
      const { stream, ended } = open(session);
      const written: Buffer[] = [];
      let callbacks = 0;
      for (let i = 0; i < 50; i++) {
        const parts = [Buffer.from([i]), Buffer.alloc(i * 997, i), Buffer.from(`#${i}`)];
        const whole = Buffer.concat(parts);
        written.push(whole);
        stream.write(parts, whole.length, (err) => {
          assert.ok(err === null || err === undefined);
          callbacks += 1;
        });
      }
      const end = await ended;
      assert.deepEqual(end, { code: grpc.status.INVALID_ARGUMENT, details: 'bad frame: 50%' });
      assert.equal(sink.received.length, 50);
      sink.received.forEach((message, i) => assert.ok(message.equals(written[i] as Buffer)));
      await waitUntil(() => callbacks === 50, 'every write callback');
      assert.ok(session.alive, 'a call that ends leaves the session up');
    } finally {
      session.close();
    }
  });

  it('reads the status from trailers sent after the response headers', async () => {
    sink.headersFirst = true;
    const session = await connect(`127.0.0.1:${sink.port}`, OPTIONS);
    try {
      sink.endAfter = { count: 2, code: grpc.status.RESOURCE_EXHAUSTED, details: 'full' };
      const { stream, ended } = open(session);
      stream.write([Buffer.from('a')], 1, () => undefined);
      stream.write([Buffer.from('b'), Buffer.from('c')], 2, () => undefined);
      assert.deepEqual(await ended, { code: grpc.status.RESOURCE_EXHAUSTED, details: 'full' });
      assert.deepEqual(sink.received.map(String), ['a', 'bc']);
      // Nothing is written into an ended call: the write says so and fails.
      assert.equal(stream.writable, false);
      const failed = await new Promise<Error | null | undefined>((resolve) => {
        assert.equal(stream.write([Buffer.from('d')], 1, resolve), false);
      });
      assert.ok(failed instanceof Error);
    } finally {
      session.close();
    }
  });

  it('ends a call the peer ends without a status, or answers as no gRPC server does', async () => {
    let mode: 'no-status' | 'not-found' = 'no-status';
    const plain = http2.createServer();
    plain.on('stream', (stream) => {
      stream.on('error', () => undefined);
      if (mode === 'not-found') {
        stream.respond({ ':status': 404 }, { endStream: true });
      } else {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
        stream.end();
      }
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    const address = plain.address();
    assert.ok(address !== null && typeof address === 'object');
    const session = await connect(`127.0.0.1:${address.port}`, OPTIONS);
    try {
      const first = await open(session).ended;
      assert.equal(first.code, grpc.status.UNKNOWN);
      assert.match(first.details, /without a status/);
      mode = 'not-found';
      const second = await open(session).ended;
      assert.equal(second.code, grpc.status.UNKNOWN);
      assert.match(second.details, /HTTP status 404/);
    } finally {
      session.close();
      await new Promise<void>((resolve) => plain.close(() => resolve()));
    }
  });

  it('ends a cancelled call with CANCELLED', async () => {
    const session = await connect(`127.0.0.1:${sink.port}`, OPTIONS);
    try {
      const { stream, ended } = open(session);
      stream.write([Buffer.from('x')], 1, () => undefined);
      await waitUntil(() => sink.received.length === 1, 'the first message');
      stream.cancel();
      assert.equal((await ended).code, grpc.status.CANCELLED);
    } finally {
      session.close();
    }
  });

  it('ends the call with UNAVAILABLE when the server goes away', async () => {
    const session = await connect(`127.0.0.1:${sink.port}`, OPTIONS);
    const { ended } = open(session);
    sink.server.forceShutdown();
    const end = await ended;
    assert.ok(end.code === grpc.status.UNAVAILABLE || end.code === grpc.status.CANCELLED);
    await waitUntil(() => !session.alive, 'the session to close');
  });

  it('reports an abandoned connection attempt once, without a session', async () => {
    const results: [Error | null, RawGrpcSession | null][] = [];
    const abandon = RawGrpcSession.connect(`127.0.0.1:${sink.port}`, OPTIONS, (err, session) => {
      results.push([err, session]);
      session?.close();
    });
    abandon();
    abandon();
    await waitUntil(() => results.length === 1, 'the attempt to be reported');
    await new Promise<void>((resolve) => setTimeout(resolve, 50));
    assert.equal(results.length, 1, 'reported once');
    assert.match(String(results[0]?.[0]?.message), /abandoned/);
    assert.equal(results[0]?.[1], null);
  });

  it('reports a refused connection', async () => {
    const port = sink.port;
    sink.server.forceShutdown();
    await assert.rejects(connect(`127.0.0.1:${port}`, OPTIONS), /ECONNREFUSED/);
  });

  it('drops a session whose peer stops answering pings', async () => {
    // A TCP server that accepts and then never says a word: no SETTINGS, no PING ack.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => {
      sockets.push(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const address = silent.address();
      assert.ok(address !== null && typeof address === 'object');
      const session = await connect(`127.0.0.1:${address.port}`, {
        ...OPTIONS,
        keepaliveTimeMs: 50,
        keepaliveTimeoutMs: 100,
      });
      // Open, and unanswered: only the keepalive can end it.
      const { ended } = open(session);
      assert.ok(session.alive);
      const end = await ended;
      assert.equal(end.code, grpc.status.UNAVAILABLE);
      assert.equal(session.alive, false);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('finishes the open call on a GOAWAY: what was written arrives, the server ends it', async () => {
    sink.okOnEnd = true;
    const session = await connect(`127.0.0.1:${sink.port}`, OPTIONS);
    const { stream, ended } = open(session);
    const message = (n: number): Buffer => Buffer.alloc(100_000 + n, n);
    stream.write([message(0)], 100_000, () => undefined);
    await waitUntil(() => sink.received.length === 1, 'the first message');
    // 4 MB more, far beyond the server's 64 KiB window: most of it is still on our side when
    // the server drains its connections (a GOAWAY) and waits for the open call.
    const total = 40;
    for (let i = 1; i < total; i++) stream.write([message(i)], 100_000 + i, () => undefined);
    const receivedAtGoaway = sink.received.length;
    const shutDown = new Promise<void>((resolve) => sink.server.tryShutdown(() => resolve()));
    const end = await ended;
    assert.equal(end.code, grpc.status.OK);
    assert.ok(receivedAtGoaway < total / 2, `${receivedAtGoaway} of ${total} in before the GOAWAY`);
    assert.equal(sink.received.length, total);
    sink.received.forEach((m, i) => assert.ok(m.equals(message(i)), `message ${i}`));
    assert.equal(stream.writable, false);
    assert.equal(session.alive, false);
    await shutDown;
    // A stream opened on the draining session would never be served: the owner connects anew.
    session.close();
  });

  it('bounds a drain the server never finishes, though Node sends no pings in it', async () => {
    // The server keeps the call open after our side ended (okOnEnd is off): only the bound on
    // the drain (keepalive time plus timeout) ends it.
    const session = await connect(`127.0.0.1:${sink.port}`, {
      ...OPTIONS,
      keepaliveTimeMs: 40,
      keepaliveTimeoutMs: 100,
    });
    const { stream, ended } = open(session);
    stream.write([Buffer.from('one')], 3, () => undefined);
    await waitUntil(() => sink.received.length === 1, 'the first message');
    const goawayAt = Date.now();
    sink.server.tryShutdown(() => undefined);
    const end = await ended;
    const elapsedMs = Date.now() - goawayAt;
    assert.equal(end.code, grpc.status.UNAVAILABLE);
    assert.ok(elapsedMs >= 100 && elapsedMs < 5000, `ended ${elapsedMs} ms after the GOAWAY`);
    assert.equal(session.alive, false);
  });

  it('gives up a connection attempt nobody answers after connectTimeoutMs', async () => {
    // A process that listens with a backlog of 1 and then blocks its thread: the kernel
    // completes two connections into the backlog and leaves later SYNs unanswered.
    const listener = spawn(
      process.execPath,
      [
        '-e',
        "const s = require('node:net').createServer();" +
          "s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {" +
          '  process.stdout.write(String(s.address().port) + "\\n");' +
          '  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000);' +
          '});',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const fillers: net.Socket[] = [];
    try {
      const port = await new Promise<number>((resolve, reject) => {
        listener.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
        listener.once('error', reject);
        listener.once('exit', (code) => reject(new Error(`the listener exited (${code})`)));
      });
      for (let i = 0; i < 4; i++) {
        const filler = net.connect(port, '127.0.0.1');
        filler.on('error', () => undefined);
        fillers.push(filler);
      }
      await new Promise<void>((resolve) => setTimeout(resolve, 100));
      const startedAt = Date.now();
      await assert.rejects(
        connect(`127.0.0.1:${port}`, { ...OPTIONS, connectTimeoutMs: 300 }),
        /connect timeout/,
      );
      const elapsedMs = Date.now() - startedAt;
      assert.ok(elapsedMs >= 290 && elapsedMs < 3000, `gave up after ${elapsedMs} ms`);
    } finally {
      for (const filler of fillers) filler.destroy();
      listener.kill('SIGKILL');
    }
  });
});
