/*
 * `waitUntil` (src/cli/raft-node-client.ts), the poll many process tests wait with: a value ends
 * the wait; an ordinary error from the check means "not yet" and becomes the timeout's cause; a
 * failed assertion inside the check is rethrown at once, not waited out. Each case counts the
 * calls of the check instead of timing them: a check that fails its assertion on the first call
 * and would return a value on the third tells "rethrown" (one call, rejected) from "ignored"
 * (three calls, resolved).
 */
import { strict as assert, AssertionError } from 'node:assert';
import { RaftmqError } from '../../src/common/errors';
import { waitUntil } from '../../src/cli/raft-node-client';

/** A deadline no case reaches: a wait that does not end by itself fails the test by mocha's. */
const NEVER_MS = 60_000;

describe('waitUntil (raft-node-client)', () => {
  it('returns the first value the check gives, polling through errors', async () => {
    let calls = 0;
    const value = await waitUntil(
      'the third call',
      NEVER_MS,
      () => {
        calls += 1;
        if (calls === 1) return Promise.reject(new Error('node restarting'));
        if (calls === 2) return Promise.reject(new RaftmqError('NOT_LEADER', 'electing'));
        return Promise.resolve(calls === 3 ? 'done' : undefined);
      },
      1,
    );
    assert.equal(value, 'done');
    assert.equal(calls, 3);
  });

  it('rethrows a failed assertion of the check at once', async () => {
    let calls = 0;
    await assert.rejects(
      waitUntil(
        'a check that asserts',
        NEVER_MS,
        async () => {
          calls += 1;
          await Promise.resolve();
          if (calls === 1) assert.equal(calls, 2, 'a node holds a message it must not');
          return calls === 3 ? 'done' : undefined;
        },
        1,
      ),
      (err: unknown) => err instanceof AssertionError && /must not/.test(err.message),
    );
    assert.equal(calls, 1);
  });

  it('times out naming what it waited for, with the last error as the cause', async () => {
    const last = new Error('still restarting');
    await assert.rejects(
      waitUntil('a node that never comes back', 30, () => Promise.reject(last), 1),
      (err: unknown) =>
        err instanceof Error &&
        !(err instanceof AssertionError) &&
        /timed out after 30 ms waiting for a node that never comes back/.test(err.message) &&
        err.cause === last,
    );
  });
});
