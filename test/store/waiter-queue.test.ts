/*
 * WaiterQueue (src/store/waiter-queue.ts): waiters settle in index order, whatever order they
 * were added in; a truncation rejects those at and above its index; and a settled waiter is let
 * go at once (it used to stay referenced until a thousand more had settled).
 */
import { strict as assert } from 'node:assert';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { WaiterQueue } from '../../src/store/waiter-queue';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Records which of `promises` settled, and how, by the next turn. */
async function outcomes(promises: Promise<void>[]): Promise<string[]> {
  const seen = promises.map(() => 'pending');
  promises.forEach((p, i) => {
    p.then(
      () => (seen[i] = 'resolved'),
      (err: Error) => (seen[i] = `rejected: ${err.message}`),
    );
  });
  await turn();
  return seen;
}

describe('WaiterQueue (waiter-queue.ts)', () => {
  it('resolves the waiters up to an index, in index order', async () => {
    const q = new WaiterQueue();
    const waits = [5, 2, 9, 2].map((i) => q.wait(i));
    q.resolveUpTo(5);
    assert.deepEqual(await outcomes(waits), ['resolved', 'resolved', 'pending', 'resolved']);
    assert.equal(q.size(), 1);
    q.resolveUpTo(9);
    assert.deepEqual(await outcomes(waits), ['resolved', 'resolved', 'resolved', 'resolved']);
    assert.equal(q.size(), 0);
  });

  it('rejects the waiters at and above a truncation, and keeps the others', async () => {
    const q = new WaiterQueue();
    const waits = [1, 2, 3, 4].map((i) => q.wait(i));
    q.resolveUpTo(1);
    q.rejectFrom(3, new Error('truncated'));
    assert.deepEqual(await outcomes(waits), [
      'resolved',
      'pending',
      'rejected: truncated',
      'rejected: truncated',
    ]);
    q.rejectAll(new Error('closed'));
    assert.deepEqual((await outcomes(waits))[1], 'rejected: closed');
    assert.equal(q.size(), 0);
  });

  it('lets go of a settled waiter at once', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const q = new WaiterQueue();
    let first: Promise<void> | undefined = q.wait(1);
    const settled = new WeakRef(first);
    const later = q.wait(2);
    q.resolveUpTo(1);
    await first;
    first = undefined;
    // A WeakRef target stays alive until the current job ends.
    await turn();
    gc();
    assert.equal(settled.deref(), undefined);
    q.resolveUpTo(2);
    await later;
  });
});
