/*
 * The service's bounds (src/broker/call-admission.ts) without a server: a gate refuses past its
 * bound and lets in again once a place is given back; while a gate is full, the requests of
 * its RPCs are left undecoded (the handler answers BUSY) and Telemetry's never are; an answer
 * hold reserves within the bounds across calls and per client, and gives everything back once.
 */
import { strict as assert } from 'node:assert';
import {
  AnswerBytesBudget,
  CallGate,
  createCallAdmission,
  gatedDecoding,
  UNDECODED_BUSY,
} from '../../src/broker/call-admission';
import { loadMessagingDefinition } from '../../src/broker/messaging-proto';

describe('call admission (call-admission.ts)', () => {
  it('a gate refuses past its bound and lets in again once a place is given back', () => {
    const gate = new CallGate('calls', 2);
    assert.ok(gate.tryEnter() && gate.tryEnter());
    assert.ok(gate.full);
    assert.equal(gate.tryEnter(), false);
    assert.equal(gate.busy().code, 'BUSY');
    gate.leave();
    assert.ok(gate.tryEnter());
    assert.equal(gate.count, 2);
  });

  it('leaves requests undecoded while their gate is full, never Telemetry', async () => {
    const admission = createCallAdmission({
      callsInFlightMax: 1,
      pollsInFlightMax: 1,
      answerBytesMax: 10,
      clientAnswerBytesMax: 10,
    });
    const definition = gatedDecoding(await loadMessagingDefinition(), admission);
    const method = (rpc: string) => {
      const m = definition[rpc];
      assert.ok(m !== undefined, rpc);
      return m;
    };
    const route = method('QueryRoute');
    const bytes = route.requestSerialize({ topic: { name: 'T', resourceNamespace: '' } });
    assert.notEqual(route.requestDeserialize(bytes), UNDECODED_BUSY);
    assert.ok(admission.calls.tryEnter());
    assert.equal(route.requestDeserialize(bytes), UNDECODED_BUSY, 'calls gate full');
    const pull = method('PullMessage');
    const pullBytes = pull.requestSerialize({ offset: 1 });
    assert.notEqual(pull.requestDeserialize(pullBytes), UNDECODED_BUSY, 'its own gate is open');
    assert.ok(admission.polls.tryEnter());
    assert.equal(pull.requestDeserialize(pullBytes), UNDECODED_BUSY, 'polls gate full');
    const telemetry = method('Telemetry');
    assert.notEqual(telemetry.requestDeserialize(telemetry.requestSerialize({})), UNDECODED_BUSY);
    admission.calls.leave();
    assert.notEqual(route.requestDeserialize(bytes), UNDECODED_BUSY, 'decoded again');
  });

  it('holds answer bytes within the bounds across calls and per client', () => {
    const budget = new AnswerBytesBudget(100, 60);
    const a1 = budget.hold('a');
    a1.reserve(50);
    const a2 = budget.hold('a');
    assert.throws(() => a2.reserve(20), /this client/);
    assert.equal(budget.held, 50, 'a refused reservation takes nothing');
    const b = budget.hold('b');
    b.reserve(50);
    const c = budget.hold('c');
    assert.throws(() => c.reserve(1), /its clients have not taken/);
    a1.set(10);
    c.reserve(30);
    assert.equal(budget.held, 90);
    for (const hold of [a1, a2, b, c]) {
      hold.release();
      hold.release();
    }
    assert.equal(budget.held, 0);
    assert.equal(budget.heldBy('a'), 0);
    a1.set(5);
    assert.equal(budget.held, 0, 'a released hold changes nothing');
  });
});
