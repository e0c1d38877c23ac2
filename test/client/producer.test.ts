/*
 * The SDK Producer against a broker that misbehaves: a route from a grpc-js QueryRoute, and
 * SendMessage answered by a bare HTTP/2 server with scripted bytes. An OK answer that does not
 * account for every message sent (no status, too few or too many entries, an entry without a
 * status or naming another message) fails the send with INTERNAL instead of reporting it
 * stored; close() ends a send in flight with STORE_CLOSED and opens nothing after; and a send
 * ends by its sendTimeoutMs even when one attempt could take longer; and the session to a former
 * leader is closed once sends go to the new one.
 */
import { strict as assert } from 'node:assert';
import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { bindServer } from '../../src/broker/grpc-util';
import { oneQueueRoute } from './fake-route';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';
import { Producer } from '../../src/client/producer';
import { isRaftmqError } from '../../src/common/errors';
import { Writer } from '../../src/common/proto-writer';

const OK = 20000;

/** A SendMessageResponse: top status (omitted when undefined) and entries. */
function reply(top: number | undefined, entries: { code?: number; id?: string }[]): Buffer {
  const bytes = (fill: (w: Writer) => void): Buffer => {
    const w = new Writer(Buffer.alloc(1024));
    fill(w);
    return w.buf.subarray(0, w.pos);
  };
  const status = (code: number): Buffer => bytes((w) => w.varintField(1, code));
  return bytes((w) => {
    if (top !== undefined) w.bytesField(1, status(top));
    for (const e of entries) {
      w.bytesField(
        2,
        bytes((ew) => {
          if (e.code !== undefined) ew.bytesField(1, status(e.code));
          if (e.id !== undefined) ew.stringField(2, e.id, Buffer.byteLength(e.id));
          ew.varintField(4, 7);
        }),
      );
    }
  });
}

/** The ids of the three messages every send here carries. */
const IDS = ['ID-A', 'ID-B', 'ID-C'];

describe('SDK Producer against a misbehaving broker', function () {
  this.timeout(30_000);
  let routeServer: grpc.Server;
  let routePort = 0;
  let sendServer: http2.Http2Server;
  let sendPort = 0;
  let sessionsOpened = 0;
  /** False: QueryRoute never answers. */
  let routeAnswers = true;
  /** The leader QueryRoute names: the send server's port unless a test says otherwise. */
  let leaderPort: (() => number) | undefined;
  /** How SendMessage is answered: the message ids sent, in order, and the stream. */
  let answer: (ids: string[], stream: http2.ServerHttp2Stream) => void;

  before(async () => {
    sendServer = http2.createServer();
    sendServer.on('session', (s) => {
      sessionsOpened += 1;
      s.on('error', () => undefined);
    });
    sendServer.on('stream', (stream) => {
      stream.on('error', () => undefined);
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => answer(IDS, stream));
    });
    await new Promise<void>((resolve) => sendServer.listen(0, '127.0.0.1', resolve));
    sendPort = (sendServer.address() as { port: number }).port;
    routeServer = new grpc.Server();
    const definition = await loadMessagingDefinition();
    routeServer.addService(definition, {
      QueryRoute: (
        call: grpc.ServerUnaryCall<unknown, unknown>,
        done: grpc.sendUnaryData<object>,
      ) => !routeAnswers || done(null, oneQueueRoute('T', leaderPort?.() ?? sendPort)),
    });
    routePort = await bindServer(routeServer, '127.0.0.1:0');
  });

  after(() => {
    routeServer.forceShutdown();
    sendServer.close();
  });

  const answered =
    (bytes: Buffer) =>
    (stream: http2.ServerHttp2Stream): void => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(bytes.length, 1);
      stream.end(Buffer.concat([prefix, bytes]));
    };

  const create = (over: { sendTimeoutMs?: number; attemptTimeoutMs?: number } = {}) =>
    Producer.create({ endpoint: `127.0.0.1:${routePort}`, ...over });
  const three = IDS.map((messageId) => ({ body: Buffer.from(messageId), messageId }));

  it('refuses an OK answer that does not account for every message', async () => {
    const producer = await create();
    try {
      const cases: [string, (ids: string[]) => Buffer, RegExp][] = [
        [
          'a well-formed answer',
          (ids) =>
            reply(
              OK,
              ids.map((id) => ({ code: OK, id })),
            ),
          /^$/,
        ],
        ['no status', () => reply(undefined, []), /no status/],
        ['no entries', () => reply(OK, []), /0 entries for 3 messages/],
        [
          'too many',
          (ids) =>
            reply(
              OK,
              [...ids, ids[0]!].map((id) => ({ code: OK, id })),
            ),
          /4 entries/,
        ],
        [
          'an entry without status',
          (ids) =>
            reply(
              OK,
              ids.map((id, i) => ({ code: i === 1 ? undefined : OK, id })),
            ),
          /entry 1 has no status/,
        ],
        [
          'another message',
          (ids) =>
            reply(
              OK,
              ids.map((id, i) => ({ code: OK, id: i === 2 ? ids[0] : id })),
            ),
          /entry 2 names message/,
        ],
      ];
      for (const [what, bytes, error] of cases) {
        answer = (ids, stream) => answered(bytes(ids))(stream);
        if (what === 'a well-formed answer') {
          const results = await producer.send('T', three);
          assert.equal(results.length, 3);
          continue;
        }
        await assert.rejects(
          producer.send('T', three),
          (err: unknown) => isRaftmqError(err, 'INTERNAL') && error.test((err as Error).message),
          what,
        );
      }
    } finally {
      producer.close();
    }
  });

  it('refuses a message id that UTF-8 would change before sending it', async () => {
    const producer = await create();
    try {
      await assert.rejects(
        producer.send('T', [{ body: Buffer.from('x'), messageId: 'id-\ud800' }]),
        (err: unknown) => isRaftmqError(err, 'INVALID_ARGUMENT') && /well-formed/.test(String(err)),
      );
    } finally {
      producer.close();
    }
  });

  it('ends a send in flight on close(), opening nothing after it', async () => {
    const producer = await create();
    let arrived = 0;
    answer = () => {
      arrived += 1; // never answered
    };
    const pending = producer.send('T', three);
    const until = Date.now() + 5000;
    while (arrived === 0 && Date.now() < until) {
      await new Promise<void>((resolve) => setTimeout(resolve, 5));
    }
    const opened = sessionsOpened;
    producer.close();
    await assert.rejects(pending, (err: unknown) => isRaftmqError(err, 'STORE_CLOSED'));
    await assert.rejects(producer.send('T', three), (err: unknown) =>
      isRaftmqError(err, 'STORE_CLOSED'),
    );
    await new Promise<void>((resolve) => setTimeout(resolve, 200));
    assert.equal(sessionsOpened, opened, 'no session opened after close()');
  });

  it('closes its session to a former leader once it sends to the new one', async () => {
    // A second broker, the new leader once the first refuses sends.
    const next = http2.createServer();
    let nextSessions = 0;
    next.on('session', () => (nextSessions += 1));
    next.on('stream', (stream) => {
      stream.on('data', () => undefined);
      stream.on('end', () =>
        answered(
          reply(
            OK,
            IDS.map((id) => ({ code: OK, id })),
          ),
        )(stream),
      );
    });
    await new Promise<void>((resolve) => next.listen(0, '127.0.0.1', resolve));
    const nextPort = (next.address() as { port: number }).port;
    const formerClosed: Promise<void>[] = [];
    const onSession = (s: http2.ServerHttp2Session): void => {
      formerClosed.push(new Promise<void>((resolve) => s.once('close', resolve)));
    };
    sendServer.on('session', onSession);
    const producer = await create();
    try {
      const ok = answered(
        reply(
          OK,
          IDS.map((id) => ({ code: OK, id })),
        ),
      );
      answer = (_ids, stream) => ok(stream);
      await producer.send('T', three);
      assert.equal(formerClosed.length, 1, 'one session to the first leader');
      // The first broker stops being leader: its calls fail, and the route names the second.
      answer = (_ids, stream) => {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' });
        stream.end();
      };
      leaderPort = () => nextPort;
      await producer.send('T', three);
      assert.equal(nextSessions, 1);
      const closed = await Promise.race([
        Promise.all(formerClosed).then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5000)),
      ]);
      assert.ok(closed, 'the session to the former leader was closed');
    } finally {
      producer.close();
      leaderPort = undefined;
      sendServer.off('session', onSession);
      next.close();
    }
  });

  it('ends a send by sendTimeoutMs, though one attempt could take longer', async () => {
    // The send's answer never comes; then the route query's either (before, the route query
    // had a whole attemptTimeoutMs of its own: 3 s past a send's 300 ms).
    for (const routeHangs of [false, true]) {
      routeAnswers = !routeHangs;
      const producer = await create({ sendTimeoutMs: 300, attemptTimeoutMs: 3000 });
      answer = () => undefined;
      const started = Date.now();
      try {
        await assert.rejects(producer.send('T', three));
        const tookMs = Date.now() - started;
        assert.ok(tookMs < 1500, `route hangs ${routeHangs}: took ${tookMs} ms`);
      } finally {
        producer.close();
        routeAnswers = true;
      }
    }
  });
});
