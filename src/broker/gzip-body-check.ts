/**
 * A GZIP body is checked before it is stored. The broker keeps bodies as sent, compressed or
 * not, and consumers inflate GZIP ones: the official Node client inflates each with
 * `gunzipSync` and no output bound while it builds a received batch. A body marked GZIP that
 * does not inflate made every receive that included it fail, for the whole batch, until the
 * message was dead-lettered; a small body that inflates to gigabytes (a "gzip bomb") made
 * every such consumer try. So a send is refused (MESSAGE_MALFORMED, BAD_REQUEST) unless each
 * GZIP body inflates, as Node's zlib inflates it, to at most {@link GZIP_INFLATED_BYTES_MAX}
 * (the bound raftmq's own consumers inflate to). The inflated bytes are counted and dropped
 * as they come, on zlib's thread pool: the check holds no more than a chunk of them.
 */
import * as zlib from 'node:zlib';
import { RaftmqError } from '../common/errors';

/** Bytes a GZIP body may inflate to at most (raftmq's consumers inflate no more either). */
export const GZIP_INFLATED_BYTES_MAX = 64 * 1024 * 1024;

/**
 * Resolves when `body` inflates to at most `inflatedBytesMax` bytes; rejects with
 * MESSAGE_MALFORMED (naming the body field) when it does not inflate or inflates to more.
 */
export function checkGzipBody(
  body: Uint8Array,
  inflatedBytesMax = GZIP_INFLATED_BYTES_MAX,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const gunzip = zlib.createGunzip();
    let inflated = 0;
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      gunzip.destroy();
      reject(
        new RaftmqError('MESSAGE_MALFORMED', `body_encoding is GZIP but the body ${why}`, {
          details: { field: 'body' },
        }),
      );
    };
    gunzip.on('data', (chunk: Buffer) => {
      inflated += chunk.length;
      if (inflated > inflatedBytesMax) fail(`inflates to more than ${inflatedBytesMax} bytes`);
    });
    gunzip.on('error', (err: Error) => fail(`does not inflate: ${err.message}`));
    gunzip.on('end', () => {
      if (settled) return;
      settled = true;
      resolve();
    });
    gunzip.end(body);
  });
}
