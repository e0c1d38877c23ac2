// The pool of Append buffers: power-of-two classes, reuse of what was given back, the bound on
// what it keeps, and fresh buffers (never kept) outside the classes.
import { strict as assert } from 'node:assert';
import {
  BUFFER_POOL_MAX_BYTES,
  BUFFER_POOL_MIN_BYTES,
  BufferPool,
} from '../../src/broker/buffer-pool';

describe('BufferPool', () => {
  it('hands out a buffer of the class that holds the request, and reuses it once given back', () => {
    const pool = new BufferPool();
    const a = pool.take(100 * 1024);
    assert.equal(a.length, 128 * 1024);
    assert.ok(pool.pooled(a));
    pool.give(a);
    assert.equal(pool.stats().retainedBytes, 128 * 1024);
    const b = pool.take(65 * 1024);
    assert.equal(b, a, 'the same class gives the same buffer back');
    const c = pool.take(65 * 1024);
    assert.notEqual(c, a, 'a buffer taken and not given back is not handed out twice');
    assert.deepEqual(pool.stats(), { reused: 1, allocated: 2, retainedBytes: 0 });
  });

  it('gives fresh buffers outside its classes and keeps none of them', () => {
    const pool = new BufferPool();
    const small = pool.take(1000);
    assert.equal(small.length, 1000);
    const large = pool.take(BUFFER_POOL_MAX_BYTES + 1);
    assert.equal(large.length, BUFFER_POOL_MAX_BYTES + 1);
    pool.give(small);
    pool.give(large);
    pool.give(pool.take(BUFFER_POOL_MIN_BYTES).subarray(0, 10));
    assert.equal(pool.stats().retainedBytes, 0);
  });

  it('keeps at most retainBytesMax', () => {
    const pool = new BufferPool(3 * BUFFER_POOL_MIN_BYTES);
    const taken = [1, 2, 3, 4].map(() => pool.take(BUFFER_POOL_MIN_BYTES));
    for (const buf of taken) pool.give(buf);
    assert.equal(pool.stats().retainedBytes, 3 * BUFFER_POOL_MIN_BYTES);
    assert.throws(() => new BufferPool(-1));
  });
});
