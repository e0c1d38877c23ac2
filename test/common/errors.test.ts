/*
 * The error registry and its documentation agree: every code in `ERROR_CODES` has a row in
 * docs/errors.md with the same gRPC status, RocketMQ Code and flags, and the doc lists no code
 * the registry lacks. Also checks what a RaftmqError carries.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ERROR_CODES, RaftmqError, isRaftmqError } from '../../src/common/errors';

function docRows(): Map<string, string[]> {
  const root = path.resolve(__dirname, '..', '..', '..');
  const text = fs.readFileSync(path.join(root, 'docs', 'errors.md'), 'utf8');
  const rows = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^\| `([A-Z_]+)` \|(.*)\|\s*$/.exec(line);
    if (m?.[1] && m[2])
      rows.set(
        m[1],
        m[2].split('|').map((c) => c.trim()),
      );
  }
  return rows;
}

describe('error codes', () => {
  const rows = docRows();

  it('documents every registered code with matching numbers and flags', () => {
    for (const [code, info] of Object.entries(ERROR_CODES)) {
      const row = rows.get(code);
      assert.ok(row, `docs/errors.md has no row for ${code}`);
      const [grpc, rmq, retryable, fatal, summary] = row;
      assert.match(grpc ?? '', new RegExp(`\\(${info.grpc}\\)$`), `${code} gRPC status`);
      assert.match(rmq ?? '', new RegExp(`\\(${info.rmq}\\)$`), `${code} RocketMQ Code`);
      assert.equal(retryable, info.retryable ? 'yes' : 'no', `${code} retryable`);
      assert.equal(fatal, info.fatal ? 'yes' : 'no', `${code} fatal`);
      assert.ok((summary ?? '').length > 10, `${code} has a meaning`);
    }
  });

  it('documents no code that is not registered', () => {
    for (const code of rows.keys()) assert.ok(code in ERROR_CODES, `unknown code ${code} in docs`);
  });

  it('carries code, flags, details and cause', () => {
    const cause = new Error('disk on fire');
    const err = new RaftmqError('STORE_FATAL', 'stopped', { cause, details: { file: 'f' } });
    assert.equal(err.code, 'STORE_FATAL');
    assert.equal(err.fatal, true);
    assert.equal(err.retryable, false);
    assert.equal(err.cause, cause);
    assert.deepEqual(err.details, { file: 'f' });
    assert.equal(err.grpcStatus, ERROR_CODES.STORE_FATAL.grpc);
    assert.equal(err.rmqCode, ERROR_CODES.STORE_FATAL.rmq);
    assert.ok(isRaftmqError(err, 'STORE_FATAL'));
    assert.ok(!isRaftmqError(err, 'BUSY'));
    assert.ok(!isRaftmqError(new Error('x')));
  });
});
