// The producer's SendMessage channel (raw-unary-channel.ts): a refused connection is a
// result with UNAVAILABLE, not a rejection; the channel connects again once the server is back,
// after a restart and after a GOAWAY (the call in flight still gets its answer); `close()` ends
// the calls in flight and refuses later ones; and an idle channel does not keep the process
// alive.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { RawUnaryChannel } from '../../src/client/raw-unary-channel';
import type { RawUnaryRequest, RawUnaryResult } from '../../src/common/raw-grpc';
import { bytesMethod, TEST_SESSION_OPTIONS, waitUntil } from '../common/raw-grpc-harness';

const PATH = '/test.v1.Echo/Call';
const OPTIONS = TEST_SESSION_OPTIONS;

interface Echo {
  server: grpc.Server;
  port: number;
  /** Answers are held until this resolves. */
  hold: Promise<void>;
  calls: number;
}

async function startEcho(port = 0): Promise<Echo> {
  const server = new grpc.Server();
  const echo: Echo = { server, port: 0, hold: Promise.resolve(), calls: 0 };
  server.addService(
    { Call: bytesMethod(PATH, false) },
    {
      Call: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
        echo.calls += 1;
        void echo.hold.then(() => done(null, call.request));
      },
    },
  );
  echo.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err === null ? resolve(p) : reject(err),
    ),
  );
  return echo;
}

function request(text: string): RawUnaryRequest {
  return {
    path: PATH,
    metadata: {},
    message: Buffer.from(text),
    timeoutMs: 5000,
    responseBytesMax: 1024,
  };
}

function text(result: RawUnaryResult): string {
  assert.ok(result.ok, result.ok ? '' : `${result.end.code} ${result.end.details}`);
  return result.message.toString();
}

describe('raw unary channel', () => {
  const servers: grpc.Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.forceShutdown();
  });
  const started = async (port = 0): Promise<Echo> => {
    const echo = await startEcho(port);
    servers.push(echo.server);
    return echo;
  };

  it('answers UNAVAILABLE while refused, and connects once the server is there', async () => {
    const first = await started();
    const port = first.port;
    first.server.forceShutdown();
    const channel = new RawUnaryChannel(`127.0.0.1:${port}`, OPTIONS);
    try {
      const refused = await channel.call(request('a'));
      assert.ok(!refused.ok);
      assert.equal(refused.end.code, grpc.status.UNAVAILABLE);
      assert.match(refused.end.details, new RegExp(`127.0.0.1:${port}`));
      await started(port);
      assert.equal(text(await channel.call(request('b'))), 'b');
      assert.equal(text(await channel.call(request('c'))), 'c');
    } finally {
      channel.close();
    }
  });

  it('connects again after the server restarts', async () => {
    const first = await started();
    const channel = new RawUnaryChannel(`127.0.0.1:${first.port}`, OPTIONS);
    try {
      assert.equal(text(await channel.call(request('a'))), 'a');
      first.server.forceShutdown();
      const second = await started(first.port);
      // The old session may still look open for a moment: its one call may fail, not more.
      let answered = 0;
      for (let i = 0; i < 3; i++) if ((await channel.call(request('b'))).ok) answered += 1;
      assert.ok(answered >= 2, `answered ${answered} of 3`);
      assert.ok(second.calls >= 2);
    } finally {
      channel.close();
    }
  });

  it('finishes the call in flight on a GOAWAY, and takes a new session for the next', async () => {
    const first = await started();
    let release = (): void => undefined;
    first.hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    const channel = new RawUnaryChannel(`127.0.0.1:${first.port}`, OPTIONS);
    try {
      const inFlight = channel.call(request('held'));
      await waitUntil(() => first.calls === 1, 'the call to arrive');
      let shutDown = false;
      first.server.tryShutdown(() => {
        shutDown = true;
      });
      await new Promise<void>((resolve) => setTimeout(resolve, 50));
      release();
      assert.equal(text(await inFlight), 'held');
      await waitUntil(() => shutDown, 'the graceful shutdown');
      const second = await started(first.port);
      assert.equal(text(await channel.call(request('next'))), 'next');
      assert.equal(second.calls, 1);
    } finally {
      channel.close();
    }
  });

  it('ends the calls in flight on close() and refuses later ones', async () => {
    const echo = await started();
    echo.hold = new Promise<void>(() => undefined); // never answers
    const channel = new RawUnaryChannel(`127.0.0.1:${echo.port}`, OPTIONS);
    const inFlight = channel.call(request('a'));
    await waitUntil(() => echo.calls === 1, 'the call to arrive');
    channel.close();
    const ended = await inFlight;
    assert.ok(!ended.ok);
    assert.equal(ended.end.code, grpc.status.UNAVAILABLE);
    const later = await channel.call(request('b'));
    assert.ok(!later.ok);
    assert.match(later.end.details, /closed/);
  });

  it('lets the process exit while no call is in flight', async () => {
    const echo = await started();
    // A child makes one call and does not close the channel: it must exit by itself.
    const module = path.join(__dirname, '..', '..', 'src', 'client', 'raw-unary-channel.js');
    const script = `
      const { RawUnaryChannel } = require(${JSON.stringify(module)});
      const channel = new RawUnaryChannel('127.0.0.1:${echo.port}', ${JSON.stringify(OPTIONS)});
      channel.call({ path: '${PATH}', metadata: {}, message: Buffer.from('x'), timeoutMs: 5000,
        responseBytesMax: 1024 }).then((r) => console.log(r.ok ? 'answered' : 'failed'));`;
    // Not spawnSync: the server answering the child runs in this process.
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.on('exit', (c, s) => resolve([c, s])),
    );
    clearTimeout(timer);
    assert.equal(signal, null, 'the child did not exit by itself');
    assert.equal(code, 0, stderr);
    assert.equal(stdout.trim(), 'answered');
  });
});
