/*
 * SendBatcher alone, with a fake proposer: concurrent sends share one proposal and each gets
 * its own slice of the entry's dispatch outcome; every way a send can end (placed, a refused
 * proposal, a dispatch outcome of the wrong size, a dispatch lookup that throws, a deadline
 * passed before proposing) settles it exactly once and gives back its share of the pending
 * bound, so `pending` returns to zero.
 */
import { strict as assert } from 'node:assert';
import { asLogIndex, asTerm } from '../../src/common/types';
import { isRaftmqError } from '../../src/common/errors';
import {
  SEND_BATCHER_DEFAULTS,
  SendBatcher,
  type SendBatcherDeps,
} from '../../src/broker/send-batcher';
import type { StoredMessage } from '../../src/store/message-format';
import { DispatchedBatch } from '../../src/store/message-store';

function stored(id: string): StoredMessage {
  return {
    topic: 'T',
    queueId: 0,
    body: Buffer.from(`body-${id}`),
    bodyEncoding: 'IDENTITY',
    keys: [],
    userProperties: new Map(),
    messageId: id,
    bornTimestampMs: 1_700_000_000_000,
    storeTimestampMs: 1_700_000_000_001,
    bornHost: '10.0.0.1:1',
    storeHost: '127.0.0.1:2',
    flags: 0,
    reconsumeCount: 0,
    messageType: 'NORMAL',
    transactionState: 'NONE',
  };
}

/** A batcher whose proposals get indexes from 1 and whose dispatch outcome `outcome` gives. */
function batcher(
  outcome: (index: number, payloads: number) => DispatchedBatch | undefined,
  refuse = false,
): { b: SendBatcher; proposals: number[] } {
  const proposals: number[] = [];
  let next = 1;
  const deps: SendBatcherDeps = {
    propose: (payloads) => {
      proposals.push(payloads.length);
      if (refuse) return Promise.reject(new Error('not leader'));
      const firstIndex = next;
      next += payloads.length;
      return Promise.resolve({
        firstIndex: asLogIndex(firstIndex),
        lastIndex: asLogIndex(next - 1),
        term: asTerm(1),
      });
    },
    nowMs: () => 1_000,
    takeMessages: (index) => outcome(index, proposals.length),
  };
  return { b: new SendBatcher(deps, SEND_BATCHER_DEFAULTS), proposals };
}

describe('SendBatcher', () => {
  it('puts concurrent sends in one proposal, each placed at its slice', async () => {
    const { b, proposals } = batcher(() => new DispatchedBatch(3));
    const [x, y] = await Promise.all([
      b.submit([stored('a'), stored('b')]),
      b.submit([stored('c')]),
    ]);
    assert.deepEqual(proposals, [1]);
    assert.deepEqual([x.index, x.from, x.count, y.index, y.from, y.count], [1, 0, 2, 1, 2, 1]);
    assert.deepEqual(b.pending, { messages: 0, bytes: 0 });
  });

  it('settles every send once and gives its share back, however it ends', async () => {
    const cases: [string, ReturnType<typeof batcher>, RegExp][] = [
      ['refused', batcher(() => new DispatchedBatch(1), true), /not leader/],
      ['wrong size', batcher(() => new DispatchedBatch(5)), /wrong size/],
      ['missing', batcher(() => undefined), /missing/],
      [
        'throwing lookup',
        batcher(() => {
          throw new Error('lookup broke');
        }),
        /lookup broke/,
      ],
    ];
    for (const [what, { b }, reason] of cases) {
      const sends = [b.submit([stored('a')]), b.submit([stored('b')])];
      assert.ok(b.pending.messages > 0, what);
      for (const s of sends) await assert.rejects(s, reason, what);
      assert.deepEqual(b.pending, { messages: 0, bytes: 0 }, what);
    }
    const { b, proposals } = batcher(() => new DispatchedBatch(1));
    await assert.rejects(b.submit([stored('late')], 999), (err: unknown) =>
      isRaftmqError(err, 'TIMEOUT'),
    );
    assert.deepEqual(proposals, [], 'an expired send is not proposed');
    assert.deepEqual(b.pending, { messages: 0, bytes: 0 });
  });
});
