/*
 * readSpans over a fake segment (every byte a function of its position, reads finishing in
 * later turns so that many runs are in flight at once): many sparse runs at once return the
 * right bytes and allocate no more than the runs themselves plus the four kept scratch buffers
 * (before, each sparse run in flight took a 4 MiB buffer of its own), on a second call too.
 */
import { strict as assert } from 'node:assert';
import { type ByteSpan, readSpans } from '../../src/store/commit-log-reader';
import type { CommitLogState } from '../../src/store/commit-log-state';

const SEGMENT_BYTES = 1 << 30;
const MIB = 1024 * 1024;
/** What the kept scratch buffers may hold in all (four of 4 MiB). */
const SCRATCH_TOTAL_BYTES = 4 * 4 * MIB;

const byteAt = (position: number): number => (position * 31 + (position >> 8)) & 0xff;

/** The parts of a CommitLogState that readSpans uses, over one large segment. */
function fakeLog(): CommitLogState {
  const file = {
    read: async (buf: Buffer, offset: number, length: number, position: number) => {
      await new Promise((resolve) => setImmediate(resolve));
      for (let i = 0; i < length; i++) buf[offset + i] = byteAt(position + i);
      return length;
    },
  };
  const fake = {
    usable: () => undefined,
    firstPos: 0,
    endPos: SEGMENT_BYTES,
    writtenEndPos: SEGMENT_BYTES,
    last: 0,
    written: { wait: () => Promise.resolve() },
    options: { segmentSizeBytes: SEGMENT_BYTES },
    segmentStartOf: (p: number) => Math.floor(p / SEGMENT_BYTES) * SEGMENT_BYTES,
    segmentPath: (start: number) => `segment-${start}`,
    files: {
      use: (_path: string, _create: boolean, fn: (f: typeof file) => Promise<number>) => fn(file),
    },
  };
  return fake as unknown as CommitLogState;
}

/** Runs `body`, counting the bytes Buffer.allocUnsafe hands out meanwhile. */
async function allocatedDuring(body: () => Promise<void>): Promise<number> {
  // Kept as it is to be put back unchanged; called only through `allocate`.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const original = Buffer.allocUnsafe;
  const allocate = original.bind(Buffer);
  let bytes = 0;
  Buffer.allocUnsafe = (size: number) => {
    bytes += size;
    return allocate(size);
  };
  try {
    await body();
  } finally {
    Buffer.allocUnsafe = original;
  }
  return bytes;
}

describe('readSpans', () => {
  it('reads many sparse runs at once within their own size and the kept buffers', async () => {
    // 128 runs, each two 1 KiB spans 61 KiB apart (under the 64 KiB gap: one sparse run of
    // 62 KiB), the runs 200 KiB apart.
    const spans: ByteSpan[] = [];
    for (let run = 0; run < 128; run++) {
      const base = run * 200 * 1024;
      spans.push(
        { position: base, sizeBytes: 1024 },
        { position: base + 61 * 1024, sizeBytes: 1024 },
      );
    }
    const wanted = spans.length * 1024;
    const runs = 128 * 62 * 1024;
    const log = fakeLog();
    for (const call of [1, 2]) {
      let got: Buffer[] = [];
      const allocated = await allocatedDuring(async () => {
        got = await readSpans(log, spans);
      });
      for (const [i, sp] of spans.entries()) {
        const b = got[i];
        assert.ok(b !== undefined && b.length === sp.sizeBytes, `span ${i}`);
        for (let k = 0; k < b.length; k += 97) assert.equal(b[k], byteAt(sp.position + k));
      }
      assert.ok(
        allocated <= runs + SCRATCH_TOTAL_BYTES + wanted,
        `call ${call}: ${allocated} bytes allocated for ${runs} bytes of runs`,
      );
    }
  });
});
