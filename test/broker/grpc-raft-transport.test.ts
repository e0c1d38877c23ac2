// The gRPC Raft transport on real loopback sockets (127.0.0.1). Three transports exchange every
// message type and the decoded messages must equal what was sent (entries with empty and 1 MiB
// data included); thousands of appends keep their per-peer order and the throughput is printed;
// a peer that is down costs bounded, counted drops and is reached again once it comes up; a raw
// gRPC client built from the same proto sends bad input (unknown sender, wrong group or
// addressee, missing body, integers beyond 2^53, bad entry types, undecodable and oversized
// frames), each rejected and counted while good peers keep working; and close() leaves no open
// sockets. Waits poll a condition with a deadline; nothing sleeps for a fixed time.
import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { GrpcRaftTransport } from '../../src/broker/grpc-raft-transport';
import {
  resolveGrpcRaftTransportOptions,
  type GrpcRaftTransportOptions,
} from '../../src/broker/grpc-raft-transport-options';
import { backoffDelayMs, passBuffer } from '../../src/broker/grpc-util';
import {
  frameBatch,
  loadRaftCodecs,
  RAFT_METHOD_PATH,
  toWire,
  type RaftCodecs,
} from '../../src/broker/raft-wire';
import { isRaftmqError } from '../../src/common/errors';
import { silentLogger, type Logger } from '../../src/common/logger';
import { createPrng } from '../../src/common/prng';
import { asLogIndex, asNodeId, asTerm, type NodeId } from '../../src/common/types';
import { LOG_INDEX_MAX, type Entry, type Message } from '../../src/raft/types';
import { APPEND_SHARE_MIN_BYTES, type RecordCrcLookup } from '../../src/broker/raft-append-wire';
import { storeEntryType } from '../../src/broker/raft-entry-codec';
import { recordChecksum } from '../../src/store/log-record';
import { isPayloadVerified } from '../../src/store/verified-payloads';
import { startTcpProxy } from './tcp-proxy';

const GROUP = 'broker-a';
const HOST = '127.0.0.1';
const n = asNodeId;
const log = silentLogger();

/** Resolves once `condition()` holds; polls every few ms, fails after `timeoutMs`. */
async function waitUntil(
  condition: () => boolean,
  what: string,
  timeoutMs = 10_000,
  onPoll?: () => void,
): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadlineMs) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    onPoll?.();
    await new Promise<void>((resolve) => setTimeout(resolve, 2));
  }
}

/** A free loopback port (for a node whose address others must know before it starts). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  await new Promise<void>((resolve, reject) =>
    server.close((err) => (err === undefined ? resolve() : reject(err))),
  );
  return address.port;
}

/** Starts a transport that records what it receives. */
async function startNode(
  options: Partial<GrpcRaftTransportOptions>,
  logger: Logger = log,
  recordCrc?: RecordCrcLookup,
) {
  const inbox: Message[] = [];
  const transport = await GrpcRaftTransport.start({ group: GROUP, ...options }, logger, {
    prng: createPrng(7),
    recordCrc,
  });
  transport.setHandler((message) => inbox.push(message));
  return { transport, inbox };
}

function bytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** {@link bytes} that begin with `seed`: no two seeds give the same payload. */
function unique(length: number, seed: number): Uint8Array {
  const out = bytes(length, seed);
  Buffer.from(out.buffer, out.byteOffset, out.length).writeUInt32BE(seed, 0);
  return out;
}

/** One message of every type from `from` to `to`, with fields away from their defaults. */
function everyMessage(from: NodeId, to: NodeId): Message[] {
  const term = asTerm(7);
  const entries: Entry[] = [
    { index: asLogIndex(11), term: asTerm(6), type: 'noop', data: new Uint8Array(0) },
    { index: asLogIndex(12), term: asTerm(7), type: 'normal', data: bytes(1024 * 1024, 3) },
    { index: asLogIndex(13), term: asTerm(7), type: 'config', data: bytes(5, 9) },
  ];
  // The largest index a peer may send: past 32 bits, so the wire must carry it exactly.
  const big = asLogIndex(LOG_INDEX_MAX);
  return [
    { type: 'PreVote', from, to, term, lastIndex: asLogIndex(10), lastTerm: asTerm(5) },
    { type: 'PreVoteResp', from, to, term, reject: true },
    {
      type: 'Vote',
      from,
      to,
      term,
      lastIndex: asLogIndex(10),
      lastTerm: asTerm(5),
      transfer: true,
    },
    { type: 'VoteResp', from, to, term, reject: false },
    {
      type: 'Append',
      from,
      to,
      term,
      prevIndex: asLogIndex(10),
      prevTerm: asTerm(5),
      entries,
      commit: asLogIndex(9),
    },
    {
      type: 'AppendResp',
      from,
      to,
      term,
      reject: true,
      matchIndex: big,
      rejectedIndex: asLogIndex(4),
      hintTerm: asTerm(3),
      hintIndex: asLogIndex(2),
    },
    { type: 'Heartbeat', from, to, term, commit: asLogIndex(9), context: 2 ** 40 },
    { type: 'HeartbeatResp', from, to, term, context: 1 },
    { type: 'TimeoutNow', from, to, term },
  ];
}

/** The message of `type` from {@link everyMessage}. */
function sample(from: NodeId, to: NodeId, type: Message['type']): Message {
  const message = everyMessage(from, to).find((m) => m.type === type);
  assert.ok(message !== undefined);
  return message;
}

function heartbeat(from: string, to: string, context: number): Message {
  return {
    type: 'Heartbeat',
    from: n(from),
    to: n(to),
    term: asTerm(1),
    commit: asLogIndex(0),
    context,
  };
}

const byKey = (m: Message) => `${m.from}/${m.type}`;
const sorted = (list: readonly Message[]) =>
  [...list].sort((a, b) => (byKey(a) < byKey(b) ? -1 : byKey(a) > byKey(b) ? 1 : 0));

describe('grpc raft transport', () => {
  const open: GrpcRaftTransport[] = [];
  const track = <T extends { transport: GrpcRaftTransport }>(node: T): T => {
    open.push(node.transport);
    return node;
  };

  afterEach(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
  });

  it('resolves options, naming the field at fault', () => {
    const base = { group: GROUP, selfId: 'a', peers: { b: `${HOST}:1` } };
    assert.equal(resolveGrpcRaftTransportOptions(base).queueCountMax, 4096);
    const bad: Partial<GrpcRaftTransportOptions>[] = [
      { ...base, peers: { b: 'no-port' } },
      { ...base, peers: { a: `${HOST}:1` } },
      { ...base, queueCountMax: 0 },
      { ...base, reconnectBackoffMinMs: 10, reconnectBackoffMaxMs: 5 },
      { ...base, selfId: '' },
      { ...base, ...({ bogus: 1 } as object) },
    ];
    for (const input of bad) {
      assert.throws(
        () => resolveGrpcRaftTransportOptions(input),
        (err) => isRaftmqError(err, 'INVALID_OPTION'),
      );
    }
    const random = createPrng(1);
    for (let attempt = 0; attempt < 40; attempt++) {
      const delayMs = backoffDelayMs(attempt, 50, 2000, () => random.nextFloat());
      assert.ok(delayMs >= 50 && delayMs <= 2000, `attempt ${attempt}: ${delayMs}`);
    }
  });

  it('carries every message type between three nodes, equal after decoding', async () => {
    const ids = ['a', 'b', 'c'];
    const ports = await Promise.all(ids.map(() => freePort()));
    const address = (i: number) => `${HOST}:${ports[i]}`;
    const nodes = await Promise.all(
      ids.map((id, i) => {
        const peers: Record<string, string> = {};
        ids.forEach((other, j) => {
          if (j !== i) peers[other] = address(j);
        });
        return startNode({ selfId: id, listenPort: ports[i], peers }).then(track);
      }),
    );
    const expected = new Map<string, Message[]>(ids.map((id) => [id, []]));
    for (const [i, from] of ids.entries()) {
      const node = nodes[i];
      assert.ok(node !== undefined);
      assert.deepEqual(
        [...node.transport.peers()].sort(),
        ids.filter((id) => id !== from),
      );
      for (const to of ids) {
        if (to === from) continue;
        const messages = everyMessage(n(from), n(to));
        expected.get(to)?.push(...messages);
        node.transport.send(messages);
      }
    }
    for (const [i, id] of ids.entries()) {
      const node = nodes[i];
      assert.ok(node !== undefined);
      const want = expected.get(id) ?? [];
      await waitUntil(() => node.inbox.length >= want.length, `${id} to receive`);
      assert.deepStrictEqual(sorted(node.inbox), sorted(want));
      const stats = node.transport.stats();
      assert.equal(stats.received, want.length);
      assert.equal(stats.rejected, 0);
      assert.equal(stats.dropped, 0);
    }
  });

  it('carries record checksums: checked and trusted on receipt; a wrong one is refused', async () => {
    const receiver = track(
      await startNode({ selfId: 'b', peers: { a: `${HOST}:1`, c: `${HOST}:1` } }),
    );
    const to = { b: `${HOST}:${receiver.transport.port}` };
    const crcOf = (e: Entry): number =>
      recordChecksum(e.index, e.term, storeEntryType(e.type), e.data);
    // The sender attaches a checksum to the 1 MiB entry only, as to a verified payload.
    const honest = track(
      await startNode({ selfId: 'a', peers: to }, log, (e) =>
        e.index === 12 ? crcOf(e) : undefined,
      ),
    );
    const append = sample(n('a'), n('b'), 'Append');
    assert.ok(append.type === 'Append');
    honest.transport.send([append]);
    await waitUntil(() => receiver.inbox.length === 1, 'the append');
    const got = receiver.inbox[0];
    assert.ok(got?.type === 'Append');
    assert.deepEqual(
      got.entries.map((e) => e.recordCrc),
      [undefined, crcOf(append.entries[1] as Entry), undefined],
    );
    assert.deepEqual(
      got.entries.map((e) => isPayloadVerified(e.data)),
      [false, true, false],
    );
    assert.equal(receiver.transport.stats().entriesChecked, 1);

    // A sender whose checksum does not match the bytes: the frame is refused whole.
    const liar = track(
      await startNode({ selfId: 'c', peers: to }, log, (e) => (crcOf(e) ^ 0x10) >>> 0),
    );
    liar.transport.send([{ ...append, from: n('c') }]);
    await waitUntil(() => receiver.transport.stats().rejected === 1, 'the rejection');
    assert.equal(receiver.inbox.length, 1);
    assert.equal(receiver.transport.stats().entriesChecked, 1);
  });

  it('keeps per-peer order on the append stream over thousands of messages', async () => {
    const receiver = track(await startNode({ selfId: 'b', peers: { a: `${HOST}:1` } }));
    const sender = track(
      await startNode({ selfId: 'a', peers: { b: `${HOST}:${receiver.transport.port}` } }),
    );
    const total = 20_000;
    const chunk = 200;
    const window = 2000;
    const payload = bytes(100, 1);
    const startMs = Date.now();
    let sentCount = 0;
    for (let round = 0; sentCount < total && round < total; round++) {
      await waitUntil(() => sentCount - receiver.inbox.length < window, 'the window to open');
      const batch: Message[] = [];
      for (let i = 0; i < chunk; i++, sentCount++) {
        const index = asLogIndex(sentCount + 1);
        batch.push({
          type: 'Append',
          from: n('a'),
          to: n('b'),
          term: asTerm(1),
          prevIndex: asLogIndex(sentCount),
          prevTerm: asTerm(sentCount === 0 ? 0 : 1),
          commit: asLogIndex(0),
          entries: [{ index, term: asTerm(1), type: 'normal', data: payload }],
        });
      }
      sender.transport.send(batch);
    }
    await waitUntil(() => receiver.inbox.length >= total, 'all appends');
    const elapsedMs = Math.max(1, Date.now() - startMs);
    receiver.inbox.forEach((message, i) => {
      assert.equal(message.type, 'Append');
      if (message.type === 'Append') assert.equal(message.prevIndex, i);
    });
    assert.equal(sender.transport.stats().dropped, 0);
    assert.ok(sender.transport.stats().batchesSent < total / 10, 'small appends go in batches');
    const perSecond = Math.round((total * 1000) / elapsedMs);
    console.log(
      `      ${total} appends in ${elapsedMs} ms: ${perSecond} messages/s` +
        ` (streams opened: ${sender.transport.stats().streamsOpened})`,
    );
  });

  it('waits for drain when the stream pushes back, losing, reordering and reusing nothing early', async () => {
    const receiver = track(await startNode({ selfId: 'b', peers: { a: `${HOST}:1` } }));
    const sender = track(
      await startNode({
        selfId: 'a',
        peers: { b: `${HOST}:${receiver.transport.port}` },
        messageSizeMaxBytes: 1024 * 1024,
      }),
    );
    const total = 600;
    // Each payload is its own: an Append buffer given back to the pool before HTTP/2 had sent
    // it would be overwritten by a later Append, and the receiver would see the later bytes.
    // Six payloads per Append are copied into its pooled tail; the seventh, over
    // APPEND_SHARE_MIN_BYTES, goes out as a part of its own. Every Append is over 64 KiB.
    const payloadsOf = (i: number): Uint8Array[] => [
      ...[0, 1, 2, 3, 4, 5].map((k) => unique(11 * 1024 + ((i + k) % 7), i * 8 + k)),
      unique(APPEND_SHARE_MIN_BYTES + (i % 5), i * 8 + 7),
    ];
    const sendRound = (from: number, count: number): void => {
      const batch: Message[] = [];
      for (let i = from; i < from + count; i++) {
        batch.push({
          type: 'Append',
          from: n('a'),
          to: n('b'),
          term: asTerm(1),
          prevIndex: asLogIndex(i * 7),
          prevTerm: asTerm(i === 0 ? 0 : 1),
          commit: asLogIndex(0),
          entries: payloadsOf(i).map((data, k) => ({
            index: asLogIndex(i * 7 + k + 1),
            term: asTerm(1),
            type: 'normal',
            data,
          })),
        });
      }
      sender.transport.send(batch);
    };
    // Rounds back to back (backpressure; each round is encoded while the last one's writes are
    // still pending, so a buffer given back at write time would be overwritten), then rounds of
    // a few, each sent once the last arrived, so that buffers given back are taken again.
    // The first round connects the stream; the next ones are written as they are sent.
    sendRound(0, 1);
    await waitUntil(() => receiver.inbox.length >= 1, 'the stream to connect');
    for (let i = 1; i < total / 2; i += 50) sendRound(i, Math.min(50, total / 2 - i));
    await waitUntil(() => receiver.inbox.length >= total / 2, 'the first half');
    for (let i = total / 2; i < total; i += 10) {
      sendRound(i, 10);
      await waitUntil(() => receiver.inbox.length >= i + 10, `appends up to ${i + 10}`);
    }
    receiver.inbox.forEach((message, i) => {
      assert.ok(message.type === 'Append' && message.prevIndex === i * 7, `message ${i} in order`);
      const got = message.entries.map((e) => Buffer.from(e.data));
      const sent = payloadsOf(i).map((p) => Buffer.from(p));
      assert.equal(got.length, sent.length);
      got.forEach((data, k) =>
        assert.ok(data.equals(sent[k] as Buffer), `payload ${i}.${k} intact`),
      );
    });
    const stats = sender.transport.stats();
    assert.equal(stats.dropped, 0);
    assert.equal(stats.sent, total);
    assert.equal(stats.batchesSent, total, 'an element over 64 KiB goes out alone');
    assert.ok(stats.drainWaits > 0, 'write() returned false at least once');
    assert.ok(stats.appendBuffersReused > 0, 'written Append buffers are used again');
  });

  it('recovers from a connection cut while the peer read nothing: later appends arrive whole', async () => {
    const receiver = track(await startNode({ selfId: 'b', peers: { a: `${HOST}:1` } }));
    const proxy = await startTcpProxy(receiver.transport.port);
    try {
      const sender = track(
        await startNode({
          selfId: 'a',
          peers: { b: `${HOST}:${proxy.port}` },
          messageSizeMaxBytes: 1024 * 1024,
          reconnectBackoffMinMs: 10,
          reconnectBackoffMaxMs: 50,
        }),
      );
      // Each Append carries three copied payloads and one shared one, all distinct; its
      // prevIndex says which it is.
      const appendOf = (i: number): Message => ({
        type: 'Append',
        from: n('a'),
        to: n('b'),
        term: asTerm(1),
        prevIndex: asLogIndex(i * 4),
        prevTerm: asTerm(1),
        commit: asLogIndex(0),
        entries: [
          unique(9 * 1024 + (i % 3), i * 4),
          unique(3 * 1024, i * 4 + 1),
          unique(APPEND_SHARE_MIN_BYTES + (i % 5), i * 4 + 2),
          unique(100, i * 4 + 3),
        ].map((data, k) => ({
          index: asLogIndex(i * 4 + k + 1),
          term: asTerm(1),
          type: 'normal',
          data,
        })),
      });
      sender.transport.send([appendOf(0)]);
      await waitUntil(() => receiver.inbox.length >= 1, 'the stream to connect');

      // The proxy stops reading: the sender's writes pile up in the socket buffers, then in
      // HTTP/2 (its 8 MiB window), then in the stream's own buffer (4 MiB), where they wait:
      // 600 Appends of 28 KiB are more than all of that.
      proxy.stall();
      for (let i = 1; i <= 600; i += 10) {
        sender.transport.send(Array.from({ length: 10 }, (_, k) => appendOf(i + k)));
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await waitUntil(() => sender.transport.stats().drainWaits > 0, 'the stream to push back');
      assert.ok(receiver.inbox.length < 601, 'the stall held appends back');
      // The connection goes with writes still pending in it (the stream waits for a drain);
      // then appends flow again.
      proxy.cut();
      let next = 1000;
      await waitUntil(
        () => receiver.inbox.some((m) => m.type === 'Append' && m.prevIndex >= 1000 * 4),
        'appends after the cut',
        10_000,
        () => sender.transport.send([appendOf(next++)]),
      );
      const last = next;
      for (let i = last; i < last + 30; i++) sender.transport.send([appendOf(i)]);
      await waitUntil(
        () => receiver.inbox.some((m) => m.type === 'Append' && m.prevIndex === (last + 29) * 4),
        'the last append',
      );

      // Whatever arrived arrived whole and in order; everything sent after the link came back
      // (once an append got through) arrived.
      const seen: number[] = [];
      for (const message of receiver.inbox) {
        assert.ok(message.type === 'Append');
        const i = message.prevIndex / 4;
        const sent = appendOf(i);
        assert.ok(sent.type === 'Append');
        assert.equal(message.entries.length, sent.entries.length);
        message.entries.forEach((e, k) =>
          assert.ok(
            Buffer.from(e.data).equals(Buffer.from(sent.entries[k]?.data ?? [])),
            `append ${i} entry ${k} intact`,
          ),
        );
        seen.push(i);
      }
      assert.ok(
        seen.every((i, k) => k === 0 || i > (seen[k - 1] ?? 0)),
        'in order, none twice',
      );
      const first = seen.findIndex((i) => i >= 1000);
      assert.deepEqual(
        seen.slice(seen.indexOf(last)),
        Array.from({ length: 30 }, (_, k) => last + k),
      );
      assert.ok(first >= 0);
      assert.ok(sender.transport.stats().streamsOpened >= 2, 'the stream was opened again');
    } finally {
      await proxy.close();
    }
  });

  it('bounds and counts sends to a peer that is down, then reconnects', async () => {
    const port = await freePort();
    const sender = track(
      await startNode({
        selfId: 'a',
        peers: { b: `${HOST}:${port}` },
        queueCountMax: 8,
        reconnectBackoffMinMs: 10,
        reconnectBackoffMaxMs: 100,
        connectTimeoutMs: 500,
      }),
    );
    const burst: Message[] = [];
    for (let i = 0; i < 100; i++) burst.push(heartbeat('a', 'b', i + 1));
    sender.transport.send(burst);
    assert.equal(sender.transport.stats().droppedQueueFull, 92);
    sender.transport.send([sample(n('a'), n('b'), 'Vote')]);
    await waitUntil(
      () => sender.transport.stats().droppedUnreachable >= 9,
      'queued messages and the vote to be dropped as unreachable',
    );
    const down = sender.transport.stats();
    assert.equal(down.sent, 0);
    assert.equal(down.dropped, 101);

    const receiver = track(
      await startNode({ selfId: 'b', listenPort: port, peers: { a: `${HOST}:1` } }),
    );
    let context = 1000;
    await waitUntil(
      () => receiver.inbox.length > 0,
      'the stream to reconnect',
      10_000,
      () => sender.transport.send([heartbeat('a', 'b', context++)]),
    );
    const contexts = receiver.inbox.map((m) => (m.type === 'Heartbeat' ? m.context : -1));
    assert.ok(contexts.every((c, i) => c >= 1000 && (i === 0 || c > (contexts[i - 1] ?? 0))));
    sender.transport.send([sample(n('a'), n('b'), 'Vote')]);
    await waitUntil(() => receiver.inbox.some((m) => m.type === 'Vote'), 'a vote after reconnect');
    assert.ok(sender.transport.stats().streamsOpened >= 1);
  });

  describe('bad input', () => {
    let codecs: RaftCodecs;
    let raw: grpc.Client | undefined;
    before(async () => {
      codecs = await loadRaftCodecs('');
    });
    afterEach(() => raw?.close());

    function unary(route: 'vote' | 'timeoutNow', frame: Buffer): Promise<grpc.ServiceError | null> {
      return new Promise((resolve) => {
        assert.ok(raw !== undefined);
        raw.makeUnaryRequest(
          RAFT_METHOD_PATH[route],
          passBuffer,
          codecs.ack.decode,
          frame,
          (err: grpc.ServiceError | null) => resolve(err),
        );
      });
    }

    function stream(frames: Buffer[]): Promise<grpc.ServiceError | null> {
      return new Promise((resolve) => {
        assert.ok(raw !== undefined);
        const call = raw.makeClientStreamRequest(
          RAFT_METHOD_PATH.append,
          passBuffer,
          codecs.ack.decode,
          (err: grpc.ServiceError | null) => resolve(err),
        );
        for (const frame of frames) call.write(frame);
        call.end();
      });
    }

    it('rejects, counts and survives bad peer messages; good peers keep working', async () => {
      const warnings: string[] = [];
      const capture = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
      const target = track(
        await startNode(
          {
            selfId: 't',
            peers: { g: `${HOST}:1` },
            messageSizeMaxBytes: 64 * 1024,
            queueBytesMax: 64 * 1024,
            rejectLogIntervalMs: 600_000,
          },
          capture,
        ),
      );
      const good = track(
        await startNode({ selfId: 'g', peers: { t: `${HOST}:${target.transport.port}` } }),
      );
      raw = new grpc.Client(`${HOST}:${target.transport.port}`, grpc.credentials.createInsecure());
      const encode = (wire: object) => codecs.peerMessage.encode(wire);
      const vote = toWire(GROUP, sample(n('g'), n('t'), 'PreVote'));
      const append = toWire(GROUP, heartbeat('g', 't', 1));
      const huge = '9007199254740993';
      const appendWith = (entries: object[]) => ({
        ...append,
        heartbeat: undefined,
        append: { prevIndex: 10, prevTerm: 5, commit: 0, entries },
      });
      const entry = { index: 11, term: 6, type: 'ENTRY_TYPE_NORMAL', data: Buffer.alloc(1) };
      const unaryCases: [string, Buffer][] = [
        ['unknown sender', encode({ ...vote, from: 'x' })],
        ['wrong group', encode({ ...vote, group: 'other' })],
        ['wrong addressee', encode({ ...vote, to: 'g' })],
        ['missing body', encode({ group: GROUP, from: 'g', to: 't', term: 1 })],
        ['term beyond 2^53', encode({ ...vote, term: huge })],
        ['index beyond 2^53', encode({ ...vote, preVote: { lastIndex: huge, lastTerm: 1 } })],
        ['append on the vote rpc', encode(appendWith([]))],
        ['undecodable bytes', Buffer.from([0xff, 0xff, 0xff, 0x01])],
      ];
      for (const [what, frame] of unaryCases) {
        const err = await unary('vote', frame);
        assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, what);
      }
      const streamCases: [string, Buffer[]][] = [
        ['bad entry type', [frameBatch([encode(appendWith([{ ...entry, type: 7 }]))])]],
        ['unspecified entry type', [frameBatch([encode(appendWith([{ ...entry, type: 0 }]))])]],
        ['entries out of sequence', [frameBatch([encode(appendWith([{ ...entry, index: 13 }]))])]],
        ['vote on the append stream', [frameBatch([encode(vote)])]],
        [
          'good then unknown sender',
          [frameBatch([encode(append), encode({ ...append, from: 'x' })])],
        ],
        ['empty batch', [Buffer.alloc(0)]],
      ];
      for (const [what, frames] of streamCases) {
        const err = await stream(frames);
        assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, what);
      }
      const oversized = await unary('timeoutNow', Buffer.alloc(100 * 1024, 1));
      assert.equal(oversized?.code, grpc.status.RESOURCE_EXHAUSTED);
      // One per rejected message; the two-message batch counts 2; the oversized frame never
      // reaches the transport (gRPC refuses it), so it is not counted.
      const stats = target.transport.stats();
      assert.equal(stats.rejected, unaryCases.length + streamCases.length + 1);
      assert.equal(stats.received, 0, 'nothing of a rejected frame is delivered');
      assert.equal(target.inbox.length, 0);
      const rejectedLines = warnings.filter((line) => line.includes('peer message rejected'));
      assert.equal(rejectedLines.length, 1, 'rejections are logged rate-limited');
      assert.match(rejectedLines[0] ?? '', /unknown node/);

      good.transport.send([heartbeat('g', 't', 5), sample(n('g'), n('t'), 'TimeoutNow')]);
      await waitUntil(() => target.inbox.length >= 2, 'good messages after bad ones');
      assert.deepEqual(target.inbox.map((m) => m.type).sort(), ['Heartbeat', 'TimeoutNow']);
      const validRaw = await unary('vote', encode(vote));
      assert.equal(validRaw, null);
      assert.equal(target.inbox.length, 3);
    });
  });

  it('refuses to send messages larger than messageSizeMaxBytes', async () => {
    const sender = track(
      await startNode({
        selfId: 'a',
        peers: { b: `${HOST}:1` },
        messageSizeMaxBytes: 64 * 1024,
        queueBytesMax: 64 * 1024,
      }),
    );
    sender.transport.send([sample(n('a'), n('b'), 'Append'), heartbeat('a', 'zz', 1)]);
    const stats = sender.transport.stats();
    assert.equal(stats.droppedOversized, 1);
    assert.equal(stats.droppedUnknownPeer, 1);
    assert.equal(stats.dropped, 2);
  });

  it('close() leaves no open sockets or servers behind', async () => {
    const sockets = () =>
      process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap')
        .length;
    const baseline = sockets();
    const b = track(await startNode({ selfId: 'b', peers: { a: `${HOST}:1` } }));
    const a = track(await startNode({ selfId: 'a', peers: { b: `${HOST}:${b.transport.port}` } }));
    a.transport.send([heartbeat('a', 'b', 1), sample(n('a'), n('b'), 'PreVote')]);
    await waitUntil(() => b.inbox.length === 2, 'delivery');
    assert.ok(sockets() > baseline);
    await Promise.all(open.splice(0).map((t) => t.close()));
    await a.transport.close();
    await waitUntil(() => sockets() <= baseline, 'sockets to close', 5000);
    a.transport.send([heartbeat('a', 'b', 2)]);
    assert.equal(a.transport.stats().droppedUnknownPeer, 1, 'sends after close are dropped');
  });
});
