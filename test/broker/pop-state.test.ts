/*
 * Checks the pop consumption state (src/broker/pop-state.ts) against a plain model: one map of
 * offset -> {in flight | settled, attempt, visible-at, valid handles}. fast-check draws clock
 * advances, receives (fresh messages with a random filter, redeliveries of expired ones, some
 * with a stale cursor or attempt), acks and invisibility changes with current, renewed, stale
 * and forged handles (changes also with a guard naming the latest change or another), dead-letter
 * settles, reloads from the metadata the state wrote, and
 * leader changes (a second replica applies every command, must answer alike, and takes over).
 * After every step the state agrees with the model, so: an acknowledged message is never
 * handed out again, an unsettled one is handed out again once its time runs out, attempts
 * count up by one, stale handles are refused, and what was written reloads to the same state.
 * The writes persist across commands as the broker keeps them, and the store never keeps a
 * record below the window (a settled record once written is deleted, also after a reload).
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { MetaKeys, type MetaBatchOp } from '../../src/store/meta';
import { type PopCommand, type PopResult, PopState, PopWrites } from '../../src/broker/pop-state';
import { fcParams } from '../fc-params';

const REF = { group: 'G', topic: 'T', queueId: 3 } as const;

interface ModelRecord {
  settled: boolean;
  attempt: number;
  visibleAtMs: number;
  delivery: number;
  renew: number;
  /** Every handle ever issued for this offset. */
  issued: number[];
}

class Model {
  nowMs = 1_000;
  cursor = 0;
  handleNext = 1;
  started = false;
  readonly records = new Map<number, ModelRecord>();

  frontier(): number {
    let f = 0;
    while (f < this.cursor && this.records.get(f)?.settled !== false) f += 1;
    return f;
  }

  take(): number {
    return this.handleNext++;
  }
}

type Op =
  | { t: 'tick'; ms: number }
  | {
      t: 'receive';
      invisibleMs: number;
      fresh: boolean[];
      again: number[];
      staleCursor: boolean;
      wrongAttempt: boolean;
    }
  | {
      t: 'ack' | 'change';
      pick: number;
      handle: 'delivery' | 'renew' | 'stale' | 'forged';
      /** A change's renewHandle guard: none, the record's latest change, or another. */
      guard: 'none' | 'current' | 'other';
    }
  | { t: 'settle'; pick: number; wrongAttempt: boolean }
  | { t: 'reload' }
  | { t: 'leaderChange' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    t: fc.constant('tick' as const),
    // Small steps reach a visibility deadline exactly; large ones pass several at once.
    ms: fc.oneof(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 3_000 })),
  }),
  fc.record({
    t: fc.constant('receive' as const),
    invisibleMs: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 2_000 })),
    fresh: fc.array(fc.boolean(), { maxLength: 5 }),
    again: fc.array(fc.nat(30), { maxLength: 3 }),
    staleCursor: fc.boolean(),
    wrongAttempt: fc.boolean(),
  }),
  fc.record({
    t: fc.constantFrom('ack' as const, 'change' as const),
    pick: fc.nat(30),
    handle: fc.constantFrom(
      'delivery' as const,
      'renew' as const,
      'stale' as const,
      'forged' as const,
    ),
    guard: fc.constantFrom('none' as const, 'current' as const, 'other' as const),
  }),
  fc.record({ t: fc.constant('settle' as const), pick: fc.nat(30), wrongAttempt: fc.boolean() }),
  fc.record({ t: fc.constant('reload' as const) }),
  fc.record({ t: fc.constant('leaderChange' as const) }),
);

/** Applies a command and writes its metadata into `store`, as BrokerState does per apply. */
/**
 * A second node of the group: it applies every command the state under test applies, and must
 * answer the same; a leader change makes it the state under test.
 */
let follower = new PopState();

/**
 * The writes of the state under test, kept across commands as BrokerState keeps them (they know
 * which records the store holds, so that only those are deleted); made anew from the store
 * whenever another state starts writing to it.
 */
let writes = new PopWrites();

function writerOf(store: Map<string, Uint8Array>): PopWrites {
  const w = new PopWrites();
  for (const key of store.keys()) {
    if (key.startsWith(MetaKeys.popRecordPrefix)) {
      w.markStored(REF.group, REF.topic, REF.queueId, recordOffset(key));
    }
  }
  return w;
}

function recordOffset(key: string): number {
  return parseInt(key.slice(key.lastIndexOf('\0') + 1), 16);
}

function applyTo(state: PopState, store: Map<string, Uint8Array>, c: PopCommand): PopResult {
  const result = state.apply(c, writes);
  assert.deepEqual(follower.apply(c, new PopWrites()), result, 'the follower agrees');
  const ops: MetaBatchOp[] = [];
  writes.flushTo(ops);
  for (const op of ops) {
    if (op.type === 'put') store.set(op.key, op.value as Uint8Array);
    else store.delete(op.key);
  }
  return result;
}

function reload(store: Map<string, Uint8Array>): PopState {
  const state = new PopState();
  const parse = (v: Uint8Array): unknown => JSON.parse(Buffer.from(v).toString('utf8'));
  const handle = store.get(MetaKeys.popHandleNext);
  if (handle !== undefined) state.loadHandleNext(parse(handle));
  const sorted = [...store.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [key, value] of sorted) {
    if (key.startsWith(MetaKeys.popQueuePrefix)) {
      state.loadQueue(REF.group, REF.topic, REF.queueId, parse(value));
    }
  }
  for (const [key, value] of sorted) {
    if (!key.startsWith(MetaKeys.popRecordPrefix)) continue;
    state.loadRecord(REF.group, REF.topic, REF.queueId, recordOffset(key), parse(value));
  }
  state.checkLoaded();
  return state;
}

function pickHandle(r: ModelRecord | undefined, kind: string, m: Model): number {
  if (r === undefined || kind === 'forged') return m.handleNext + 7;
  if (kind === 'delivery') return r.delivery;
  if (kind === 'renew') return r.renew;
  return r.issued.find((h) => h !== r.delivery && h !== r.renew) ?? 0;
}

/** What the state must answer for an ack or change with `handle` on `offset`. */
function handleValid(m: Model, offset: number, handle: number): 'settled' | 'live' | 'invalid' {
  if (offset >= m.cursor || handle <= 0 || handle >= m.handleNext) return 'invalid';
  const r = m.records.get(offset);
  if (r === undefined || r.settled) return 'settled';
  return handle === r.delivery || (r.renew !== 0 && handle === r.renew) ? 'live' : 'invalid';
}

function step(op: Op, m: Model, state: PopState, store: Map<string, Uint8Array>): PopState {
  switch (op.t) {
    case 'tick':
      m.nowMs += op.ms;
      return state;
    case 'reload':
      writes = writerOf(store);
      return reload(store);
    case 'leaderChange': {
      const next = follower;
      follower = state;
      writes = writerOf(store);
      return next;
    }
    case 'receive':
      receive(op, m, state, store);
      return state;
    case 'settle': {
      const offset = op.pick % Math.max(1, m.cursor);
      const r = m.records.get(offset);
      const attempt = (r?.attempt ?? 1) + (op.wrongAttempt ? 1 : 0);
      const res = applyTo(state, store, {
        op: 'pop.settle',
        ...REF,
        offset,
        attempt,
        reason: 'dlq',
      });
      const expectOk = r !== undefined && !r.settled && !op.wrongAttempt;
      assert.equal(res.ok, expectOk, `settle ${offset}`);
      if (expectOk) r.settled = true;
      return state;
    }
    case 'ack':
    case 'change': {
      const offset = op.pick % Math.max(1, m.cursor);
      const r = m.records.get(offset);
      const handle = pickHandle(r, op.handle, m);
      const expected = handleValid(m, offset, handle);
      if (op.t === 'ack') {
        const res = applyTo(state, store, { op: 'pop.ack', ...REF, offset, handle });
        assert.equal(res.ok, expected !== 'invalid', `ack ${offset} with ${handle}: ${expected}`);
        if (expected === 'live' && r !== undefined) r.settled = true;
        return state;
      }
      const invisibleMs = 500;
      const latest = r?.renew ?? 0;
      const c = {
        op: 'pop.change' as const,
        ...REF,
        offset,
        handle,
        nowMs: m.nowMs,
        invisibleMs,
        ...(op.guard === 'none' ? {} : { renewHandle: latest + (op.guard === 'other' ? 1 : 0) }),
      };
      const res = applyTo(state, store, c);
      const applies = expected === 'live' && op.guard !== 'other';
      assert.equal(res.ok, applies, `change ${offset} with ${handle} (${op.guard}): ${expected}`);
      if (applies && r !== undefined && res.ok) {
        r.visibleAtMs = m.nowMs + invisibleMs;
        r.renew = m.take();
        r.issued.push(r.renew);
        assert.equal(res.handle, r.renew);
      }
      return state;
    }
  }
}

function receive(
  op: Extract<Op, { t: 'receive' }>,
  m: Model,
  state: PopState,
  store: Map<string, Uint8Array>,
): void {
  const live = [...m.records.entries()].filter(([, r]) => !r.settled);
  const again = op.again
    .map((i) => live[i % Math.max(1, live.length)])
    .filter((x): x is [number, ModelRecord] => x !== undefined)
    .filter(([o], i, all) => all.findIndex(([p]) => p === o) === i)
    .map(([offset, r]) => ({ offset, attempt: r.attempt + (op.wrongAttempt ? 1 : 0) }));
  const from = op.staleCursor && m.cursor > 0 ? m.cursor - 1 : m.cursor;
  const to = from + op.fresh.length;
  const fresh = op.fresh
    .map((handOut, i) => ({ handOut, offset: from + i }))
    .filter((f) => f.handOut)
    .map((f) => ({ offset: f.offset, messageGroup: '' }));
  const c: PopCommand = {
    op: 'pop.receive',
    ...REF,
    nowMs: m.nowMs,
    invisibleMs: op.invisibleMs,
    from,
    to,
    fresh,
    again,
  };
  const res = applyTo(state, store, c);
  assert.ok(res.ok);
  const expected: { offset: number; attempt: number; handle: number }[] = [];
  const visibleAtMs = m.nowMs + op.invisibleMs;
  for (const a of again) {
    const r = m.records.get(a.offset);
    if (r === undefined || r.settled || r.attempt !== a.attempt || r.visibleAtMs > m.nowMs)
      continue;
    r.attempt += 1;
    r.visibleAtMs = visibleAtMs;
    r.delivery = m.take();
    r.renew = 0;
    r.issued.push(r.delivery);
    expected.push({ offset: a.offset, attempt: r.attempt, handle: r.delivery });
  }
  if (!m.started || from === m.cursor) {
    m.started = true;
    for (let offset = from; offset < to; offset++) {
      const handOut = fresh.some((f) => f.offset === offset);
      const handle = handOut ? m.take() : 0;
      m.records.set(offset, {
        settled: !handOut,
        attempt: handOut ? 1 : 0,
        visibleAtMs,
        delivery: handle,
        renew: 0,
        issued: handOut ? [handle] : [],
      });
      if (handOut) expected.push({ offset, attempt: 1, handle });
    }
    m.cursor = Math.max(m.cursor, to);
  }
  assert.deepEqual(
    (res.grants ?? []).map((g) => ({ offset: g.offset, attempt: g.attempt, handle: g.handle })),
    expected,
  );
}

/** The store holds records only inside the window: every settled one below it was deleted. */
function checkStoreTight(store: Map<string, Uint8Array>, state: PopState): void {
  const q = state.queue(REF.group, REF.topic, REF.queueId);
  for (const key of store.keys()) {
    if (!key.startsWith(MetaKeys.popRecordPrefix)) continue;
    const offset = recordOffset(key);
    assert.ok(
      q !== undefined && offset >= q.frontier && offset < q.cursor,
      `record ${offset} stored outside the window [${q?.frontier}, ${q?.cursor})`,
    );
  }
}

function checkAgrees(m: Model, state: PopState): void {
  const q = state.queue(REF.group, REF.topic, REF.queueId);
  if (!m.started) {
    assert.equal(q, undefined);
    return;
  }
  assert.ok(q !== undefined);
  assert.equal(q.cursor, m.cursor, 'cursor');
  assert.equal(q.frontier, m.frontier(), 'frontier');
  assert.equal(state.nextHandle, m.handleNext, 'handle counter');
  for (let offset = q.frontier; offset < q.cursor; offset++) {
    const r = m.records.get(offset);
    assert.ok(r !== undefined);
    const got = q.inflight.get(offset);
    if (r.settled) {
      assert.equal(got, undefined, `offset ${offset} settled`);
      assert.ok(q.settled.has(offset));
    } else {
      assert.ok(got !== undefined, `offset ${offset} in flight`);
      assert.equal(got.attempt, r.attempt);
      assert.equal(got.visibleAtMs, r.visibleAtMs);
      assert.equal(got.deliveryHandle, r.delivery);
      assert.equal(got.renewHandle, r.renew);
    }
  }
}

describe('pop state', () => {
  it('agrees with a plain model through receives, acks, changes, settles and reloads', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), (ops) => {
        const m = new Model();
        const store = new Map<string, Uint8Array>();
        let state = new PopState();
        follower = new PopState();
        writes = new PopWrites();
        for (const op of ops) {
          state = step(op, m, state, store);
          checkAgrees(m, state);
          checkStoreTight(store, state);
        }
        checkAgrees(m, reload(store));
      }),
      fcParams(300),
    );
  });

  /** A pop state that has handed out the message at offset 0 of REF: its delivery handle. */
  const oneDelivered = (): { state: PopState; w: PopWrites; delivery: number } => {
    const state = new PopState();
    const w = new PopWrites();
    const got = state.apply(
      {
        op: 'pop.receive',
        ...REF,
        nowMs: 0,
        invisibleMs: 100,
        from: 0,
        to: 1,
        fresh: [{ offset: 0, messageGroup: '' }],
        again: [],
      },
      w,
    );
    assert.ok(got.ok);
    return { state, w, delivery: got.grants?.[0]?.handle ?? 0 };
  };

  it('keeps the delivery handle valid across renewals and refuses the superseded renewal', () => {
    const { state, w, delivery } = oneDelivered();
    const first = state.apply(
      { op: 'pop.change', ...REF, offset: 0, handle: delivery, nowMs: 0, invisibleMs: 100 },
      w,
    );
    const second = state.apply(
      { op: 'pop.change', ...REF, offset: 0, handle: delivery, nowMs: 0, invisibleMs: 100 },
      w,
    );
    assert.ok(first.ok && second.ok);
    const stale = state.apply({ op: 'pop.ack', ...REF, offset: 0, handle: first.handle ?? 0 }, w);
    assert.deepEqual(stale.ok, false);
    assert.ok(state.apply({ op: 'pop.ack', ...REF, offset: 0, handle: delivery }, w).ok);
    assert.equal(state.queue(REF.group, REF.topic, REF.queueId)?.frontier, 1);
  });

  it('applies a guarded change only while the latest change is the one it names', () => {
    const { state, w, delivery } = oneDelivered();
    const change = (nowMs: number, renewHandle?: number): PopResult =>
      state.apply(
        {
          op: 'pop.change',
          ...REF,
          offset: 0,
          handle: delivery,
          nowMs,
          invisibleMs: 100,
          ...(renewHandle === undefined ? {} : { renewHandle }),
        },
        w,
      );
    const record = () => state.currentRecord(REF.group, REF.topic, REF.queueId, 0, delivery);
    // A renewal guarded by "no change since the delivery", then one guarded by its own handle.
    const first = change(10, 0);
    assert.ok(first.ok && first.handle !== undefined);
    const second = change(20, first.handle);
    assert.ok(second.ok && second.handle !== undefined);
    assert.equal(record()?.visibleAtMs, 120);
    // The consumer's own change (unguarded) comes in; a renewal proposed before it is refused
    // and leaves its deadline alone.
    const nack = change(30);
    assert.ok(nack.ok);
    assert.equal(change(40, second.handle).ok, false);
    assert.equal(change(40, 0).ok, false);
    assert.equal(record()?.visibleAtMs, 130);
    assert.equal(record()?.renewHandle, nack.handle);
    // The delivery handle still acknowledges.
    assert.ok(state.apply({ op: 'pop.ack', ...REF, offset: 0, handle: delivery }, w).ok);
  });

  it('refuses out-of-range invisibility and fresh offsets beyond the window', () => {
    const state = new PopState({ windowMax: 4, invisibleMsMax: 1_000 });
    const w = new PopWrites();
    const base = { op: 'pop.receive' as const, ...REF, nowMs: 0, from: 0, again: [] };
    assert.equal(state.apply({ ...base, invisibleMs: 1_001, to: 0, fresh: [] }, w).ok, false);
    const wide = state.apply(
      { ...base, invisibleMs: 10, to: 5, fresh: [{ offset: 4, messageGroup: '' }] },
      w,
    );
    assert.deepEqual(wide.ok && wide.grants, []);
    assert.equal(state.queue(REF.group, REF.topic, REF.queueId)?.cursor, 0);
  });
});
