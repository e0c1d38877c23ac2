/** The GZIP body check of a send (src/broker/gzip-body-check.ts). */
import { strict as assert } from 'node:assert';
import * as zlib from 'node:zlib';
import { checkGzipBody } from '../../src/broker/gzip-body-check';
import { isRaftmqError } from '../../src/common/errors';

function refused(reason: RegExp): (err: unknown) => boolean {
  return (err) =>
    isRaftmqError(err, 'MESSAGE_MALFORMED') &&
    err.details.field === 'body' &&
    reason.test(err.message);
}

describe('checkGzipBody', () => {
  it('accepts a body that inflates within the bound, up to the bound exactly', async () => {
    await checkGzipBody(zlib.gzipSync(Buffer.from('hello')));
    await checkGzipBody(zlib.gzipSync(Buffer.alloc(100_000, 7)), 100_000);
    // Concatenated members inflate as one body, as Node's gunzip (and so the Node client) reads it.
    const two = Buffer.concat([zlib.gzipSync(Buffer.from('a')), zlib.gzipSync(Buffer.from('b'))]);
    await checkGzipBody(two);
  });

  it('refuses a body that inflates past the bound, without holding what it inflated', async () => {
    await assert.rejects(
      checkGzipBody(zlib.gzipSync(Buffer.alloc(100_001, 7)), 100_000),
      refused(/inflates to more than 100000 bytes/),
    );
  });

  it('refuses bodies that do not inflate: not gzip, truncated, damaged', async () => {
    const good = zlib.gzipSync(Buffer.from('a body that is long enough to damage'));
    const damaged = Buffer.from(good);
    damaged[damaged.length - 6] = (damaged[damaged.length - 6] ?? 0) ^ 0xff; // the CRC32
    for (const body of [
      Buffer.from('plain text'),
      good.subarray(0, 15),
      damaged,
      Buffer.alloc(0),
    ]) {
      await assert.rejects(checkGzipBody(body), refused(/does not inflate/));
    }
  });
});
