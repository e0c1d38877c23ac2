/*
 * Model-based test of TermRuns, the in-memory run-length map from log index to term. fast-check
 * draws a starting base (index and term) and a sequence of appends (same term or a higher one),
 * suffix truncations and prefix trims, and applies them both to TermRuns and to a plain array
 * holding one term per index. After every step, termAt agrees with the array over the whole range
 * and a little beyond it on both sides (the base answers with its term, anything outside
 * [base, last] with undefined), lastIndex and lastTerm agree, and the number of runs equals the
 * number of term changes in the array (memory stays proportional to elections, not entries).
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { TermRuns } from '../../src/store/term-runs';
import { fcParams } from '../fc-params';

/** The plain model: `terms[k]` is the term of index `baseIndex + 1 + k`. */
interface Model {
  baseIndex: number;
  baseTerm: number;
  terms: number[];
}

type Op =
  | { kind: 'append'; count: number; bump: number }
  | { kind: 'truncateAfter'; pick: number }
  | { kind: 'trimBefore'; pick: number };

function lastIndexOf(m: Model): number {
  return m.baseIndex + m.terms.length;
}

function modelTermAt(m: Model, index: number): number | undefined {
  if (index === m.baseIndex) return m.baseTerm;
  if (index < m.baseIndex || index > lastIndexOf(m)) return undefined;
  return m.terms[index - m.baseIndex - 1];
}

function modelRunCount(m: Model): number {
  let runs = 0;
  m.terms.forEach((t, k) => {
    if (k === 0 || m.terms[k - 1] !== t) runs++;
  });
  return runs;
}

function apply(runs: TermRuns, m: Model, op: Op): void {
  const last = lastIndexOf(m);
  switch (op.kind) {
    case 'append': {
      let term = (m.terms[m.terms.length - 1] ?? m.baseTerm) + op.bump;
      for (let k = 0; k < op.count; k++) {
        // Terms may also rise inside one batch, as when a follower takes entries of two terms.
        if (op.bump > 0 && k > 0 && k % 3 === 0) term++;
        runs.append(last + 1 + k, term);
        m.terms.push(term);
      }
      return;
    }
    case 'truncateAfter': {
      const keep = m.baseIndex + (op.pick % (m.terms.length + 1));
      runs.truncateAfter(keep);
      m.terms.length = keep - m.baseIndex;
      return;
    }
    case 'trimBefore': {
      const newBase = m.baseIndex + (op.pick % (last - m.baseIndex + 1));
      const term = modelTermAt(m, newBase);
      assert.ok(term !== undefined);
      runs.trimBefore(newBase);
      m.terms = m.terms.slice(newBase - m.baseIndex);
      m.baseIndex = newBase;
      m.baseTerm = term;
      return;
    }
  }
}

function check(runs: TermRuns, m: Model, step: string): void {
  const last = lastIndexOf(m);
  assert.equal(runs.lastIndex(), last, `lastIndex after ${step}`);
  assert.equal(
    runs.lastTerm(),
    m.terms[m.terms.length - 1] ?? m.baseTerm,
    `lastTerm after ${step}`,
  );
  for (let i = m.baseIndex - 3; i <= last + 3; i++) {
    assert.equal(runs.termAt(i), modelTermAt(m, i), `termAt(${i}) after ${step}`);
  }
  assert.equal(runs.runCount(), modelRunCount(m), `runCount after ${step}`);
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('append' as const),
      count: fc.integer({ min: 1, max: 12 }),
      bump: fc.integer({ min: 0, max: 2 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('truncateAfter' as const), pick: fc.nat() }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('trimBefore' as const), pick: fc.nat() }) },
);

describe('TermRuns', () => {
  it('agrees with a plain array of terms through appends, truncations and trims', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.integer({ min: 0, max: 1_000 }),
        fc.array(opArb, { maxLength: 60 }),
        (baseIndex, baseTerm, ops) => {
          const runs = new TermRuns(baseIndex, baseTerm);
          const m: Model = { baseIndex, baseTerm, terms: [] };
          check(runs, m, 'construction');
          ops.forEach((op, k) => {
            apply(runs, m, op);
            check(runs, m, `step ${k} ${JSON.stringify(op)}`);
          });
        },
      ),
      fcParams(300),
    );
  });

  it('answers the base and refuses out-of-range indexes of an empty log', () => {
    const runs = new TermRuns(10, 4);
    assert.equal(runs.termAt(10), 4);
    assert.equal(runs.termAt(9), undefined);
    assert.equal(runs.termAt(11), undefined);
    assert.equal(runs.lastTerm(), 4);
    runs.append(11, 4);
    runs.append(12, 6);
    runs.trimBefore(12);
    assert.equal(runs.termAt(12), 6);
    assert.equal(runs.termAt(11), undefined);
    assert.equal(runs.lastTerm(), 6);
    assert.equal(runs.runCount(), 0);
    runs.append(13, 6);
    assert.equal(runs.runCount(), 1);
    assert.equal(runs.termAt(13), 6);
  });

  it('refuses appends that skip an index or lower the term', () => {
    const runs = new TermRuns(0, 0);
    runs.append(1, 2);
    assert.throws(() => runs.append(3, 2));
    assert.throws(() => runs.append(2, 1));
    assert.throws(() => runs.trimBefore(5));
    assert.equal(runs.lastIndex(), 1);
  });
});
