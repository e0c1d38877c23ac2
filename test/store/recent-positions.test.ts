/*
 * RecentPositions, the in-memory ring of the latest appended entries' positions and record
 * CRCs: random appends (continuing or starting a new run), truncations and clears against a Map
 * model, with a small capacity so the ring wraps. It must answer every range and CRC the model
 * holds (the latest run of appends, at most `capacity` of them), exactly, and nothing else.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { RecentPositions } from '../../src/store/recent-positions';

type Step =
  | { kind: 'append'; count: number; jump: number }
  | { kind: 'truncate'; back: number }
  | { kind: 'clear' };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('append' as const),
    count: fc.integer({ min: 1, max: 9 }), jump: fc.oneof(fc.constant(0), fc.integer({ min: -5,
      max: 5 })) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const),
    back: fc.integer({ min: 0, max: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const) }) },
);

/** A stand-in for the record CRC of entry i appended in step `step`: differs between both. */
const crcOf = (i: number, step: number): number => Math.imul(i + step * 1_000, 0x9e3779b1) >>> 0;

describe('RecentPositions', () => {
  it('answers exactly what was recorded for the latest run, and nothing it lost', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 16 }), fc.array(stepArb, { maxLength: 40 }),
      (capacity, steps) => {
        const ring = new RecentPositions(capacity);
        // The model: the latest contiguous run (index -> [position, size, term, crc]).
        let run = new Map<number, [number, number, number, number]>();
        let next = 1;
        let position = 0;
        for (const [stepNo, step] of steps.entries()) {
          if (step.kind === 'append') {
            const from = Math.max(1, next + step.jump);
            if (from !== next) run = new Map();
            for (let i = from; i < from + step.count; i++) {
              const size = 10 + (i % 7);
              const crc = crcOf(i, stepNo);
              ring.record(i, position, size, 1 + (i >> 3), crc);
              run.set(i, [position, size, 1 + (i >> 3), crc]);
              // The ring keeps the latest `capacity` entries only.
              if (run.size > capacity) run.delete(Math.min(...run.keys()));
              position += size;
            }
            next = from + step.count;
          } else if (step.kind === 'truncate') {
            const at = Math.max(1, next - step.back);
            ring.truncateFrom(at);
            for (const i of [...run.keys()]) if (i >= at) run.delete(i);
            next = at;
          } else {
            ring.clear();
            run = new Map();
          }
          for (let i = next - 20; i <= next; i++) {
            const held = run.get(i);
            const [, size, term, crc] = held ?? [0, 10 + (i % 7), 1 + (i >> 3), 0];
            assert.equal(ring.crcAt(i, term, size), held ? crc : undefined, `crc of ${i}`);
            // Asked with another term or size, it does not answer.
            assert.equal(ring.crcAt(i, term + 1, size), undefined, `crc of ${i}, other term`);
            assert.equal(ring.crcAt(i, term, size + 1), undefined, `crc of ${i}, other size`);
          }
          for (let from = next - 20; from <= next; from++) {
            for (let count = 1; count <= 6; count++) {
              const got = ring.locate(from, count);
              const covered = Array.from({ length: count }, (_, k) => run.has(from + k))
                .every(Boolean);
              if (!covered) {
                if (got !== undefined) {
                  // Answering is allowed only with what the model holds.
                  for (let k = 0; k < count; k++) assert.ok(run.has(from + k), `${from + k}`);
                }
                continue;
              }
              assert.ok(got !== undefined, `[${from}, ${from + count}) is covered`);
              for (let k = 0; k < count; k++) {
                const [p, s, t] = run.get(from + k) as [number, number, number, number];
                assert.deepEqual([got.positions[k], got.sizes[k], got.terms[k]], [p, s, t]);
              }
            }
          }
        }
      }), { numRuns: 300 });
  });
});
