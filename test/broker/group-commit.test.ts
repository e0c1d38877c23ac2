/*
 * GroupCommitQueue (src/broker/group-commit.ts) and the CommandBatcher on top of it, with a
 * fake proposer whose proposals the test settles by hand: items of one turn go together; items
 * that arrive while the bound of flushes is reached wait and go out together, in order; never
 * more flushes outstanding than the bound; a failed flush does not stall the queue; every item
 * is flushed exactly once (a property over random interleavings). The CommandBatcher gives each
 * submitter the result of its own command from the shared entry.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { isRaftmqError } from '../../src/common/errors';
import { COMMAND_ENTRY_BYTES_MAX, CommandBatcher } from '../../src/broker/command-batcher';
import { GroupCommitQueue } from '../../src/broker/group-commit';
import type { BrokerCommand, CommandResult } from '../../src/broker/broker-command';
import { decodeCommands } from '../../src/broker/broker-command';
import type { ProposeAck } from '../../src/broker/raft-waiters';
import { fcParams } from '../fc-params';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A flush function whose calls the test settles. */
class FakeFlush<T> {
  readonly groups: T[][] = [];
  readonly open: { resolve: () => void; reject: (e: Error) => void }[] = [];
  maxOutstanding = 0;

  readonly fn = (items: T[]): Promise<void> => {
    this.groups.push(items);
    return new Promise<void>((resolve, reject) => {
      this.open.push({ resolve, reject });
      this.maxOutstanding = Math.max(this.maxOutstanding, this.open.length);
    });
  };

  settle(i: number, ok = true): void {
    const [p] = this.open.splice(i, 1);
    assert.ok(p !== undefined);
    if (ok) p.resolve();
    else p.reject(new Error('injected'));
  }
}

/**
 * Files, for each proposed entry from `firstIndex`, a result per command that names the
 * command's group, so that a result handed to the wrong submitter shows.
 */
function namedResults(
  results: Map<number, CommandResult[]>,
  firstIndex: number,
  payloads: readonly Uint8Array[],
): void {
  payloads.forEach((p, k) => {
    const commands = decodeCommands(Buffer.from(p));
    results.set(
      firstIndex + k,
      commands.map((c) => ({ ok: false, code: 'INVALID_ARGUMENT' as const, message: groupOf(c) })),
    );
  });
}

describe('group commit', () => {
  it('refuses a bound below one', () => {
    for (const bound of [0, -1, 1.5, Number.NaN]) {
      assert.throws(
        () => new GroupCommitQueue(() => Promise.resolve(), bound),
        (e) => isRaftmqError(e, 'INVALID_OPTION'),
      );
    }
  });

  it('sends one turn together and holds later items while the bound is reached', async () => {
    const f = new FakeFlush<number>();
    const q = new GroupCommitQueue(f.fn, 1);
    q.push(1);
    q.push(2);
    await turn();
    assert.deepEqual(f.groups, [[1, 2]]);
    q.push(3);
    await turn();
    q.push(4);
    await turn();
    assert.deepEqual(f.groups, [[1, 2]], 'nothing while one flush is out');
    assert.equal(q.waiting, 2);
    f.settle(0, false);
    await turn();
    await turn();
    assert.deepEqual(
      f.groups,
      [
        [1, 2],
        [3, 4],
      ],
      'a failed flush does not stall the queue',
    );
    f.settle(0);
    await turn();
    await turn();
    assert.equal(q.flushing, 0);
    assert.equal(q.waiting, 0);
  });

  it('flushes every item once, in order, never beyond the bound (random interleavings)', () =>
    fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.constantFrom('push', 'turn', 'settle', 'fail'), { maxLength: 60 }),
        async (bound, ops) => {
          const f = new FakeFlush<number>();
          const q = new GroupCommitQueue(f.fn, bound);
          let next = 0;
          for (const op of ops) {
            if (op === 'push') q.push(next++);
            else if (op === 'turn') await turn();
            else if (f.open.length > 0) f.settle(0, op === 'settle');
          }
          // Drain.
          for (let round = 0; round < 200 && (q.waiting > 0 || f.open.length > 0); round++) {
            while (f.open.length > 0) f.settle(0);
            await turn();
            await turn();
          }
          assert.equal(q.waiting, 0);
          assert.deepEqual(
            f.groups.flat(),
            Array.from({ length: next }, (_, i) => i),
          );
          assert.ok(f.groups.every((g) => g.length > 0));
          assert.ok(f.maxOutstanding <= bound, `outstanding ${f.maxOutstanding} > ${bound}`);
        },
      ),
      fcParams(100),
    ));

  it('CommandBatcher: commands that wait for a proposal share the next entry', async () => {
    const proposals: { payloads: readonly Uint8Array[]; resolve: () => void }[] = [];
    const results = new Map<number, CommandResult[]>();
    let nextIndex = 1;
    const batcher = new CommandBatcher(
      {
        propose: (payloads) =>
          new Promise((resolve) => {
            const firstIndex = nextIndex;
            nextIndex += payloads.length;
            namedResults(results, firstIndex, payloads);
            proposals.push({
              payloads,
              resolve: () =>
                resolve({ firstIndex, lastIndex: nextIndex - 1, term: 1 } as ProposeAck),
            });
          }),
        takeResults: (index) => results.get(index),
        nowMs: () => 0,
      },
      { commandsPerEntryMax: 1024, pendingMax: 100, proposalsInFlightMax: 1 },
    );
    const submit = (name: string): Promise<CommandResult> =>
      batcher.submit({ op: 'group.delete', name });
    const first = submit('a');
    await turn();
    assert.equal(proposals.length, 1);
    const later = [submit('b')];
    await turn();
    later.push(submit('c'));
    await turn();
    assert.equal(proposals.length, 1, 'b and c wait for the proposal in flight');
    proposals[0]?.resolve();
    assert.equal(messageOf(await first), 'a');
    await turn();
    await turn();
    assert.equal(proposals.length, 2);
    assert.equal(proposals[1]?.payloads.length, 1, 'b and c share one entry');
    proposals[1]?.resolve();
    assert.deepEqual((await Promise.all(later)).map(messageOf), ['b', 'c']);
  });
});

describe('CommandBatcher: entry size', () => {
  it('splits commands gathered together into entries under the byte bound, in order', async () => {
    const payloadSizes: number[] = [];
    const results = new Map<number, CommandResult[]>();
    let nextIndex = 1;
    const batcher = new CommandBatcher(
      {
        propose: (payloads) => {
          const firstIndex = nextIndex;
          nextIndex += payloads.length;
          for (const p of payloads) payloadSizes.push(p.length);
          namedResults(results, firstIndex, payloads);
          return Promise.resolve({ firstIndex, lastIndex: nextIndex - 1, term: 1 } as ProposeAck);
        },
        takeResults: (index) => results.get(index),
        nowMs: () => 0,
      },
      { commandsPerEntryMax: 1024, pendingMax: 10_000, proposalsInFlightMax: 1 },
    );
    // 600 commands of about 20 KB each, submitted in one turn: 12 MB, one entry by count.
    const big = 'g'.repeat(20_000);
    const all = Array.from({ length: 600 }, (_, i) =>
      batcher.submit({ op: 'group.delete', name: `${i}-${big}` }),
    );
    const got = (await Promise.all(all)).map(messageOf);
    assert.deepEqual(
      got.map((name) => name.split('-')[0]),
      Array.from({ length: 600 }, (_, i) => String(i)),
    );
    assert.ok(payloadSizes.length > 1, 'split into several entries');
    assert.ok(
      payloadSizes.every((n) => n <= COMMAND_ENTRY_BYTES_MAX),
      `entries of ${payloadSizes.join(', ')} bytes`,
    );
  });
});

describe('group commit: failures', () => {
  it('refuses with TIMEOUT, unproposed, what waited past its deadline', async () => {
    let nowMs = 0;
    const proposed: number[] = [];
    const opens: (() => void)[] = [];
    const batcher = new CommandBatcher(
      {
        propose: (payloads) => {
          proposed.push(payloads.length);
          return new Promise((resolve) => {
            opens.push(() => resolve({ firstIndex: 1, lastIndex: 1, term: 1 } as ProposeAck));
          });
        },
        takeResults: () => [{ ok: true }],
        nowMs: () => nowMs,
      },
      { commandsPerEntryMax: 1024, pendingMax: 100, proposalsInFlightMax: 1 },
    );
    const first = batcher.submit({ op: 'group.delete', name: 'a' }, 100);
    await turn();
    const late = batcher.submit({ op: 'group.delete', name: 'b' }, 50);
    await turn();
    nowMs = 60;
    opens[0]?.();
    assert.deepEqual(await first, { ok: true });
    await assert.rejects(late, (e) => isRaftmqError(e, 'TIMEOUT'));
    await turn();
    await turn();
    assert.deepEqual(proposed, [1], 'the late command was never proposed');
    assert.equal(batcher.pendingCount, 0);
  });

  it('rejects a group whose proposal throws, and goes on with the next', async () => {
    let calls = 0;
    const batcher = new CommandBatcher(
      {
        propose: () => {
          calls++;
          if (calls === 1) throw new Error('injected: propose threw');
          return Promise.resolve({ firstIndex: 1, lastIndex: 1, term: 1 } as ProposeAck);
        },
        takeResults: () => [{ ok: true }],
        nowMs: () => 0,
      },
      { commandsPerEntryMax: 1024, pendingMax: 100, proposalsInFlightMax: 1 },
    );
    await assert.rejects(batcher.submit({ op: 'group.delete', name: 'a' }), /injected/);
    assert.deepEqual(await batcher.submit({ op: 'group.delete', name: 'b' }), { ok: true });
    assert.equal(batcher.pendingCount, 0);
  });
});

describe('group commit: submitAll', () => {
  /** A batcher whose every command's result names it, proposals answered at once. */
  function namingBatcher(pendingMax: number, commandsPerEntryMax: number, failAt = 0) {
    const results = new Map<number, CommandResult[]>();
    let nextIndex = 1;
    let proposals = 0;
    const batcher = new CommandBatcher(
      {
        propose: (payloads) => {
          proposals++;
          if (proposals === failAt) return Promise.reject(new Error('injected: propose failed'));
          const firstIndex = nextIndex;
          nextIndex += payloads.length;
          payloads.forEach((p, k) => {
            const commands = decodeCommands(Buffer.from(p));
            results.set(
              firstIndex + k,
              commands.map((c) => ({ ok: false, code: 'INVALID_ARGUMENT', message: groupOf(c) })),
            );
          });
          return Promise.resolve({ firstIndex, lastIndex: nextIndex - 1, term: 1 } as ProposeAck);
        },
        takeResults: (index) => results.get(index),
        nowMs: () => 0,
      },
      { commandsPerEntryMax, pendingMax, proposalsInFlightMax: 1 },
    );
    return { batcher, proposals: () => proposals };
  }
  const names = (n: number, prefix: string): BrokerCommand[] =>
    Array.from({ length: n }, (_, i) => ({ op: 'group.delete', name: `${prefix}${i}` }));

  it('resolves every result in order, across entries, with one proposal', async () => {
    const { batcher, proposals } = namingBatcher(100, 7);
    const got = await batcher.submitAll(names(20, 'g'));
    assert.deepEqual(got.map(messageOf), names(20, 'g').map(groupOf));
    assert.equal(proposals(), 1, 'three entries of one proposal');
    assert.deepEqual(await batcher.submitAll([]), []);
    assert.equal(batcher.pendingCount, 0);
  });

  it('refuses as a whole with BUSY beyond pendingMax, and rejects as a whole on a failure', async () => {
    const { batcher } = namingBatcher(10, 1024, 1);
    await assert.rejects(batcher.submitAll(names(11, 'x')), (e) => isRaftmqError(e, 'BUSY'));
    assert.equal(batcher.pendingCount, 0);
    await assert.rejects(batcher.submitAll(names(3, 'y')), /injected/);
    assert.equal(batcher.pendingCount, 0);
    assert.deepEqual(
      (await batcher.submitAll(names(10, 'z'))).map(messageOf),
      names(10, 'z').map(groupOf),
    );
  });
});

function groupOf(c: BrokerCommand): string {
  return c.op === 'group.delete' ? c.name : c.op;
}

function messageOf(r: CommandResult): string {
  return r.ok ? 'ok' : r.message;
}
