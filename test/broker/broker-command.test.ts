/*
 * Broker command payloads: what encodeCommands writes, decodeCommands reads back as the same
 * commands in the same order, whatever mix of acknowledgements (packed into `pop.acks` runs of
 * one group and topic) and other commands an entry carries; a packed run is a fraction of the
 * JSON the commands would take one by one; and a malformed `pop.acks` is refused with
 * CORRUPT_RECORD, as every malformed command is (a `pop.change` with a guard `renewHandle` that
 * is not a natural number too).
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import {
  type BrokerCommand,
  decodeCommands,
  encodeCommands,
  PAYLOAD_KIND_COMMANDS,
} from '../../src/broker/broker-command';
import { isRaftmqError } from '../../src/common/errors';
import { fcParams } from '../fc-params';

const nat = fc.oneof(fc.nat(1000), fc.maxSafeNat());
const name = fc.constantFrom('G1', 'G2', '%RETRY%G1');
const topic = fc.constantFrom('T1', 'T2');

type PopAck = Extract<BrokerCommand, { op: 'pop.ack' }>;

const ackArb: fc.Arbitrary<PopAck> = fc.record({
  op: fc.constant('pop.ack' as const),
  group: name,
  topic,
  queueId: fc.nat(1023),
  offset: nat,
  handle: nat,
});

const otherArb: fc.Arbitrary<BrokerCommand> = fc.oneof(
  fc.record({
    op: fc.constant('offset.commit' as const),
    group: name,
    topic,
    queueId: fc.nat(1023),
    offset: nat,
  }),
  fc.record(
    {
      op: fc.constant('pop.change' as const),
      group: name,
      topic,
      queueId: fc.nat(1023),
      offset: nat,
      handle: nat,
      nowMs: nat,
      invisibleMs: fc.nat(100_000),
      renewHandle: nat,
    },
    {
      requiredKeys: ['op', 'group', 'topic', 'queueId', 'offset', 'handle', 'nowMs', 'invisibleMs'],
    },
  ),
  fc.record({ op: fc.constant('topic.delete' as const), name }),
);

/** Runs of acknowledgements (often of one group and topic) between other commands. */
const commandsArb = fc
  .array(
    fc.oneof(
      fc.array(ackArb, { minLength: 1, maxLength: 8 }).map((acks): BrokerCommand[] => acks),
      fc
        .tuple(name, topic, fc.array(ackArb, { minLength: 1, maxLength: 8 }))
        .map(([g, t, acks]): BrokerCommand[] => acks.map((a) => ({ ...a, group: g, topic: t }))),
      otherArb.map((c): BrokerCommand[] => [c]),
    ),
    { minLength: 1, maxLength: 10 },
  )
  .map((runs) => runs.flat());

function payload(elements: unknown[]): Buffer {
  return Buffer.concat([
    Buffer.from([PAYLOAD_KIND_COMMANDS]),
    Buffer.from(JSON.stringify(elements), 'utf8'),
  ]);
}

describe('broker command payloads', () => {
  it('decode to the commands encoded, acknowledgements packed or not', () => {
    fc.assert(
      fc.property(commandsArb, (commands) => {
        const plain = commands.map((c) => ({ ...c }));
        assert.deepEqual(decodeCommands(encodeCommands(commands)), plain);
      }),
      fcParams(300),
    );
  });

  it('pack a run of acknowledgements into a fraction of the JSON', () => {
    const acks: BrokerCommand[] = Array.from({ length: 1000 }, (_, i) => ({
      op: 'pop.ack',
      group: 'BenchGroup',
      topic: 'BenchTopic',
      queueId: i % 8,
      offset: 100_000 + i,
      handle: 5_000_000 + i,
    }));
    const packed = encodeCommands(acks).length;
    const oneByOne = Buffer.byteLength(JSON.stringify(acks), 'utf8');
    assert.ok(packed * 3 < oneByOne, `${packed} bytes packed, ${oneByOne} one by one`);
  });

  it('refuses a malformed pop.acks with CORRUPT_RECORD', () => {
    const good = { op: 'pop.acks', group: 'G', topic: 'T', acks: [1, 2, 3] };
    assert.deepEqual(decodeCommands(payload([good])), [
      { op: 'pop.ack', group: 'G', topic: 'T', queueId: 1, offset: 2, handle: 3 },
    ]);
    const bad: unknown[] = [
      { ...good, acks: [] },
      { ...good, acks: [1, 2] },
      { ...good, acks: [1, 2, -3] },
      { ...good, acks: [1, 2, 3.5] },
      { ...good, acks: [1, '2', 3] },
      { ...good, acks: 'x' },
      { ...good, group: 7 },
      { ...good, topic: null },
      { ...good, acks: Array.from({ length: 3 * 4097 }, () => 1) },
    ];
    for (const element of bad) {
      assert.throws(
        () => decodeCommands(payload([element])),
        (err: unknown) => isRaftmqError(err, 'CORRUPT_RECORD'),
        JSON.stringify(element).slice(0, 80),
      );
    }
    const many = { ...good, acks: Array.from({ length: 3 * 4096 }, () => 1) };
    assert.throws(
      () => decodeCommands(payload([many, { op: 'topic.delete', name: 'T' }])),
      (err: unknown) => isRaftmqError(err, 'CORRUPT_RECORD'),
      'more than COMMANDS_PER_ENTRY_MAX after unpacking',
    );
  });

  it('reads a pop.change with or without its renewHandle guard, and refuses a bad one', () => {
    const change = {
      op: 'pop.change',
      group: 'G',
      topic: 'T',
      queueId: 1,
      offset: 2,
      handle: 3,
      nowMs: 4,
      invisibleMs: 5,
    };
    assert.deepEqual(decodeCommands(payload([change])), [change]);
    assert.deepEqual(decodeCommands(payload([{ ...change, renewHandle: 0 }])), [
      { ...change, renewHandle: 0 },
    ]);
    for (const renewHandle of [-1, 1.5, '7', null]) {
      assert.throws(
        () => decodeCommands(payload([{ ...change, renewHandle }])),
        (err: unknown) => isRaftmqError(err, 'CORRUPT_RECORD'),
        String(renewHandle),
      );
    }
  });
});
