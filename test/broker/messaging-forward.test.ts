/*
 * runOrForward (src/broker/messaging-forward.ts) on follower n2 of a three-node group, with a
 * fake backend whose role view the test changes by hand (firing its role-change listeners, as
 * Broker does), a local handler that refuses with NOT_LEADER naming the leader of that view, a
 * fake forwarder whose answers and failures the test scripts, a fake in-doubt settler and a
 * manual clock. Checks: a local answer is returned without forwarding; a refusal is forwarded
 * to the named leader with the caller's deadline less the reserve and the leader's answer
 * relayed; a request already forwarded once is refused naming the leader; a send whose leader
 * proved unreachable is never sent blindly again: once another leader is named, `inDoubt`
 * (given the term of the forward) answers it, has it sent to the new leader, or the send
 * fails; an idempotent RPC, and a send that certainly was not sent, go to the next leader; the
 * wait for that leader ends at the deadline or when the service closes (or does not start when
 * it is closing already); the same endpoint leading in a newer term counts as another leader;
 * forwards are bounded.
 * Each wait is ended by a role change the test fires; the only timer that runs out is 5 ms.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import type { RoleView } from '../../src/broker/broker-types';
import { FORWARDED_HEADER, type ServiceContext } from '../../src/broker/messaging-call';
import {
  type ForwardedRpc,
  type Forwarder,
  type InDoubt,
  runOrForward,
} from '../../src/broker/messaging-forward';
import type { ResolvedMessagingOptions, ServiceBackend } from '../../src/broker/messaging-options';
import { ManualClock } from '../../src/common/clock';
import { isRaftmqError, RaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import { notLeader } from '../../src/broker/raft-waiters';

const GROUP = 'group-a';
const SELF = 'n2';
const NOW_MS = 1_700_000_000_000;
const RESERVE_MS = 100;
/** The caller's deadline. Waits it bounds are ended by the test long before it. */
const DEADLINE_MS = NOW_MS + 2_000;
const FORWARD_DEADLINE_MS = DEADLINE_MS - RESERVE_MS;

const LOCAL_ANSWER = { answeredBy: 'local' };
const STORED_ANSWER = { answeredBy: 'in-doubt settler' };
const answerOf = (leaderId: string): object => ({ answeredBy: leaderId });

/** A node's client endpoint. */
const endpoint = (nodeId: string): string => `${nodeId}:8081`;

/** What n2 knows when `leaderId` leads (null: none known) in `term`. */
function viewOf(leaderId: string | null, term: number): RoleView {
  return {
    group: GROUP,
    nodeId: SELF,
    role: leaderId === SELF ? 'leader' : leaderId === null ? 'candidate' : 'follower',
    term,
    leaderId,
    leaderEndpoint: leaderId === null ? undefined : endpoint(leaderId),
    leaderReady: leaderId === SELF,
  };
}

/** The error Forwarder.call throws for a leader it cannot reach (as forwardFailure builds it). */
function unreachable(leaderId: string, notSent = false): RaftmqError {
  const leaderEndpoint = endpoint(leaderId);
  return new RaftmqError('NOT_LEADER', `leader ${leaderEndpoint} is unreachable`, {
    details: { leaderEndpoint, grpcCode: grpc.status.UNAVAILABLE, notSent },
  });
}

type BackendPart = Pick<
  ServiceBackend,
  'groupName' | 'nodeId' | 'clientEndpoint' | 'roleView' | 'waitForLeader' | 'onRoleChange'
>;

/** n2's backend: a role view the test moves with `elect`. */
class FakeBackend implements BackendPart {
  readonly groupName = GROUP;
  readonly nodeId = SELF;
  readonly clientEndpoint = endpoint(SELF);
  /** The deadline of each waitForLeader call. */
  readonly leaderWaitsMs: number[] = [];
  /** Role-change listeners registered so far, removed or not. */
  subscriptionCount = 0;
  private view: RoleView;
  private readonly listeners = new Set<() => void>();
  private readonly leaderWaiters: ((view: RoleView) => void)[] = [];

  constructor(leaderId: string | null, term: number) {
    this.view = viewOf(leaderId, term);
  }

  /** Role-change listeners registered and not removed. */
  get listenerCount(): number {
    return this.listeners.size;
  }

  roleView(): RoleView {
    return this.view;
  }

  waitForLeader(deadlineMs: number): Promise<RoleView | undefined> {
    this.leaderWaitsMs.push(deadlineMs);
    if (this.view.leaderId !== null) return Promise.resolve(this.view);
    return new Promise((resolve) => this.leaderWaiters.push(resolve));
  }

  onRoleChange(listener: () => void): () => void {
    this.subscriptionCount++;
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Moves the view to `leaderId` (null: none known) in `term` and tells the listeners. */
  elect(leaderId: string | null, term: number): void {
    this.view = viewOf(leaderId, term);
    for (const listener of [...this.listeners]) listener();
    if (leaderId === null) return;
    for (const resolve of this.leaderWaiters.splice(0)) resolve(this.view);
  }
}

/** The local handler: answers as the leader, else refuses naming the leader, as Broker does. */
class FakeLocal {
  callCount = 0;

  constructor(private readonly backend: FakeBackend) {}

  readonly run = (): Promise<object> => {
    this.callCount++;
    const { leaderId, leaderEndpoint } = this.backend.roleView();
    if (leaderId === SELF) return Promise.resolve(LOCAL_ANSWER);
    return Promise.reject(
      new RaftmqError('NOT_LEADER', `${SELF} is not the leader`, {
        details: { leaderId, leaderEndpoint },
      }),
    );
  };
}

interface ForwardCall {
  readonly endpoint: string;
  readonly rpc: ForwardedRpc;
  readonly request: unknown;
  readonly metadata: grpc.Metadata;
  readonly deadlineMs: number;
}

/** A forwarder whose outcomes, in order, the test scripts: an answer or an error to throw. */
class FakeForwarder implements Pick<Forwarder, 'call'> {
  readonly calls: ForwardCall[] = [];
  private readonly outcomes: (object | Error)[] = [];

  script(...outcomes: (object | Error)[]): void {
    this.outcomes.push(...outcomes);
  }

  /** The endpoints forwarded to, in order. */
  get targets(): string[] {
    return this.calls.map((c) => c.endpoint);
  }

  call(
    endpoint: string,
    rpc: ForwardedRpc,
    request: unknown,
    metadata: grpc.Metadata,
    deadlineMs: number,
  ): Promise<object> {
    this.calls.push({ endpoint, rpc, request, metadata, deadlineMs });
    const outcome = this.outcomes.shift();
    if (outcome === undefined) return Promise.reject(new Error(`unscripted forward: ${endpoint}`));
    return outcome instanceof Error ? Promise.reject(outcome) : Promise.resolve(outcome);
  }
}

/** An in-doubt settler that records its calls and settles as told. */
class FakeInDoubt {
  readonly calls: { sinceTerm: number; deadlineMs: number }[] = [];

  constructor(private readonly settle: () => Promise<object | 'resend' | undefined>) {}

  readonly fn: InDoubt<object> = (sinceTerm, deadlineMs) => {
    this.calls.push({ sinceTerm, deadlineMs });
    return this.settle();
  };
}

/** n2 following `leaderId` in `term`, with everything runOrForward uses. */
function scene(leaderId: string | null, term: number) {
  const backend = new FakeBackend(leaderId, term);
  const forwarder = new FakeForwarder();
  const local = new FakeLocal(backend);
  const closing = new AbortController();
  const used: Pick<ServiceContext, 'log' | 'clock' | 'closing'> & {
    backend: BackendPart;
    forwarder: Pick<Forwarder, 'call'>;
    options: Pick<ResolvedMessagingOptions, 'forwardReserveMs'>;
  } = {
    backend,
    forwarder,
    options: { forwardReserveMs: RESERVE_MS },
    log: silentLogger(),
    clock: new ManualClock(NOW_MS),
    closing: closing.signal,
  };
  // Only the fields above are used; the rest of the context (registry, sessions) is not.
  const ctx = used as unknown as ServiceContext;
  const call = { request: { messages: ['m-1'] }, metadata: new grpc.Metadata() };
  call.metadata.set('x-mq-client-id', 'client-1');
  const run = (
    rpc: ForwardedRpc,
    options: { inDoubt?: InDoubt<object>; deadlineMs?: number } = {},
  ): Promise<object> =>
    runOrForward(ctx, call, rpc, options.deadlineMs ?? DEADLINE_MS, local.run, options.inDoubt);
  return { backend, forwarder, local, closing, call, run, ctx };
}

/** Waits (a bounded number of event-loop turns) until `check()` holds. */
async function until(check: () => boolean, what: string): Promise<void> {
  for (let turn = 0; turn < 1_000; turn++) {
    if (check()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Waits until runOrForward waits for another leader, then elects `leaderId` in `term`. */
async function electOnceWaiting(backend: FakeBackend, leaderId: string, term: number) {
  await until(() => backend.listenerCount === 1, 'runOrForward to wait for another leader');
  backend.elect(leaderId, term);
}

describe('runOrForward', () => {
  it('returns the local answer without forwarding', async () => {
    const s = scene(SELF, 5);
    assert.equal(await s.run('SendMessage'), LOCAL_ANSWER);
    assert.equal(s.local.callCount, 1);
    assert.equal(s.forwarder.calls.length, 0);
  });

  it('forwards a refusal to the leader it names, within the deadline less the reserve', async () => {
    const s = scene('n1', 5);
    s.forwarder.script(answerOf('n1'));
    assert.deepEqual(await s.run('SendMessage'), answerOf('n1'));
    assert.deepEqual(s.forwarder.calls, [
      {
        endpoint: endpoint('n1'),
        rpc: 'SendMessage',
        request: s.call.request,
        metadata: s.call.metadata,
        deadlineMs: FORWARD_DEADLINE_MS,
      },
    ]);
    assert.equal(s.forwarder.calls[0]?.request, s.call.request, 'the request itself');
    assert.equal(s.local.callCount, 1);
  });

  it('runs locally again when this node is elected while it waits for a leader', async () => {
    const s = scene(null, 5);
    const result = s.run('SendMessage');
    await until(() => s.backend.leaderWaitsMs.length === 1, 'a wait for a leader');
    assert.deepEqual(s.backend.leaderWaitsMs, [FORWARD_DEADLINE_MS]);
    s.backend.elect(SELF, 6);
    assert.equal(await result, LOCAL_ANSWER);
    assert.equal(s.local.callCount, 2);
    assert.equal(s.forwarder.calls.length, 0);
  });

  it('refuses a request already forwarded once, naming the leader', async () => {
    const s = scene('n1', 5);
    s.call.metadata.set(FORWARDED_HEADER, '1');
    await assert.rejects(s.run('SendMessage'), (err) => {
      assert.ok(isRaftmqError(err, 'NOT_LEADER'));
      assert.match(err.message, /already forwarded/);
      assert.match(err.message, /leader: n1 \(n1:8081\)/);
      assert.equal(err.details.leaderId, 'n1');
      assert.equal(err.details.leaderEndpoint, endpoint('n1'));
      return true;
    });
    assert.equal(s.forwarder.calls.length, 0);
  });

  it('fails a send whose leader proved unreachable when nothing can settle it', async () => {
    const s = scene('n1', 5);
    const lost = unreachable('n1');
    s.forwarder.script(lost);
    await assert.rejects(s.run('SendMessage'), (err) => err === lost);
    assert.deepEqual(s.forwarder.targets, [endpoint('n1')]);
    assert.equal(s.backend.subscriptionCount, 0, 'did not wait for another leader');
  });

  it('answers a send the unreachable leader stored from inDoubt, once another leads', async () => {
    const s = scene('n1', 5);
    s.forwarder.script(unreachable('n1'));
    const inDoubt = new FakeInDoubt(() => Promise.resolve(STORED_ANSWER));
    const result = s.run('SendMessage', { inDoubt: inDoubt.fn });
    await until(() => s.backend.listenerCount === 1, 'a wait for another leader');
    assert.equal(inDoubt.calls.length, 0, 'not settled while n1 is still named leader');
    s.backend.elect('n3', 6);
    assert.equal(await result, STORED_ANSWER);
    assert.deepEqual(inDoubt.calls, [{ sinceTerm: 5, deadlineMs: FORWARD_DEADLINE_MS }]);
    assert.deepEqual(s.forwarder.targets, [endpoint('n1')]);
    assert.equal(s.backend.listenerCount, 0, 'the role listener is removed');
  });

  it('sends to the new leader a send inDoubt found the old one did not store', async () => {
    const s = scene('n1', 5);
    s.forwarder.script(unreachable('n1'), answerOf('n3'));
    const inDoubt = new FakeInDoubt(() => Promise.resolve('resend' as const));
    const result = s.run('SendMessage', { inDoubt: inDoubt.fn });
    await electOnceWaiting(s.backend, 'n3', 6);
    assert.deepEqual(await result, answerOf('n3'));
    assert.deepEqual(inDoubt.calls, [{ sinceTerm: 5, deadlineMs: FORWARD_DEADLINE_MS }]);
    assert.deepEqual(s.forwarder.targets, [endpoint('n1'), endpoint('n3')]);
    assert.equal(s.forwarder.calls[1]?.deadlineMs, FORWARD_DEADLINE_MS);
  });

  for (const [why, settle] of [
    ['cannot tell', () => Promise.resolve(undefined)],
    ['fails', () => Promise.reject(new RaftmqError('TIMEOUT', 'no newer term applied'))],
  ] as const) {
    it(`fails a send with the forward error when inDoubt ${why}`, async () => {
      const s = scene('n1', 5);
      const lost = unreachable('n1');
      s.forwarder.script(lost);
      const inDoubt = new FakeInDoubt(settle);
      const result = s.run('SendMessage', { inDoubt: inDoubt.fn });
      await electOnceWaiting(s.backend, 'n3', 6);
      await assert.rejects(result, (err) => err === lost);
      assert.equal(inDoubt.calls.length, 1);
      assert.deepEqual(s.forwarder.targets, [endpoint('n1')], 'not sent again');
    });
  }

  it('sends an idempotent RPC again to the next leader, without inDoubt', async () => {
    const s = scene('n1', 5);
    s.forwarder.script(unreachable('n1'), answerOf('n3'));
    const result = s.run('AckMessage');
    await electOnceWaiting(s.backend, 'n3', 6);
    assert.deepEqual(await result, answerOf('n3'));
    assert.deepEqual(s.forwarder.targets, [endpoint('n1'), endpoint('n3')]);
    assert.deepEqual(
      s.forwarder.calls.map((c) => [c.rpc, c.deadlineMs]),
      [
        ['AckMessage', FORWARD_DEADLINE_MS],
        ['AckMessage', FORWARD_DEADLINE_MS],
      ],
    );
    assert.equal(s.local.callCount, 2);
  });

  it('retries at the next leader a send that certainly was not sent, without inDoubt', async () => {
    const s = scene('n1', 5);
    s.forwarder.script(unreachable('n1', true), answerOf('n3'));
    const inDoubt = new FakeInDoubt(() => Promise.resolve(STORED_ANSWER));
    const result = s.run('SendMessage', { inDoubt: inDoubt.fn });
    await electOnceWaiting(s.backend, 'n3', 6);
    assert.deepEqual(await result, answerOf('n3'));
    assert.deepEqual(s.forwarder.targets, [endpoint('n1'), endpoint('n3')]);
    assert.equal(inDoubt.calls.length, 0);
  });

  it('tries a leader it could not connect to again shortly, though no other is named', async () => {
    // n1 was down before; this node's channel to it waits out a reconnect backoff.
    const s = scene('n1', 5);
    s.forwarder.script(unreachable('n1', true), unreachable('n1', true), answerOf('n1'));
    const inDoubt = new FakeInDoubt(() => Promise.resolve(STORED_ANSWER));
    assert.deepEqual(await s.run('SendMessage', { inDoubt: inDoubt.fn }), answerOf('n1'));
    assert.deepEqual(s.forwarder.targets, [endpoint('n1'), endpoint('n1'), endpoint('n1')]);
    assert.equal(inDoubt.calls.length, 0, 'nothing was sent, so nothing is in doubt');
    assert.equal(s.backend.listenerCount, 0, 'the role listener is removed');
  });

  it('fails with the forward error when no other leader is named by the deadline', async () => {
    const s = scene('n1', 5);
    const lost = unreachable('n1');
    s.forwarder.script(lost);
    const inDoubt = new FakeInDoubt(() => Promise.resolve(STORED_ANSWER));
    // The forward deadline is 5 ms ahead of the (manual) clock: the wait lasts 5 real ms.
    const deadlineMs = NOW_MS + RESERVE_MS + 5;
    await assert.rejects(s.run('SendMessage', { inDoubt: inDoubt.fn, deadlineMs }), (err) => {
      return err === lost;
    });
    assert.deepEqual(
      s.forwarder.calls.map((c) => c.deadlineMs),
      [NOW_MS + 5],
    );
    assert.equal(s.backend.subscriptionCount, 1);
    assert.equal(s.backend.listenerCount, 0, 'the role listener is removed');
    assert.equal(inDoubt.calls.length, 0);
  });

  it('stops waiting for another leader when the service closes', async () => {
    const s = scene('n1', 5);
    const lost = unreachable('n1');
    s.forwarder.script(lost);
    let failure: unknown;
    void s.run('AckMessage').then(
      (answer) => {
        failure = new Error(`resolved to ${JSON.stringify(answer)}`);
      },
      (err: unknown) => {
        failure = err;
      },
    );
    await until(() => s.backend.listenerCount === 1, 'a wait for another leader');
    s.closing.abort();
    await until(() => failure !== undefined, 'the call to fail once the service closes');
    assert.equal(failure, lost);
    assert.equal(s.backend.listenerCount, 0, 'the role listener is removed');
    assert.equal(s.forwarder.calls.length, 1);
  });

  it('does not wait for another leader once the service is closing', async () => {
    const s = scene('n1', 5);
    const lost = unreachable('n1');
    s.forwarder.script(lost);
    s.closing.abort();
    await assert.rejects(s.run('AckMessage'), (err) => err === lost);
    assert.equal(s.backend.subscriptionCount, 0, 'no wait at all');
  });

  it('counts the same endpoint leading in a newer term as another leader', async () => {
    // n1 was killed and restarted at the same address, then won the next election.
    const s = scene('n1', 5);
    s.forwarder.script(unreachable('n1'), answerOf('n1'));
    const result = s.run('AckMessage');
    await electOnceWaiting(s.backend, 'n1', 6);
    assert.deepEqual(await result, answerOf('n1'));
    assert.deepEqual(s.forwarder.targets, [endpoint('n1'), endpoint('n1')]);
  });

  it('gives up after three forwards to leaders that each prove unreachable', async () => {
    const s = scene('n1', 5);
    const last = unreachable('n1');
    s.forwarder.script(unreachable('n1'), unreachable('n3'), last);
    const result = s.run('AckMessage');
    await electOnceWaiting(s.backend, 'n3', 6);
    await electOnceWaiting(s.backend, 'n1', 7);
    await assert.rejects(result, (err) => err === last);
    assert.deepEqual(s.forwarder.targets, [endpoint('n1'), endpoint('n3'), endpoint('n1')]);
    assert.equal(s.backend.subscriptionCount, 2, 'no wait after the third forward');
    assert.equal(s.local.callCount, 3);
  });

  /** A local run that fails once as RaftWaiters fails a send whose leadership was lost. */
  function lostOnce(s: ReturnType<typeof scene>, then: () => void): () => Promise<object> {
    let first = true;
    return () => {
      if (!first) return s.local.run();
      first = false;
      then();
      return Promise.reject(notLeader(null, 'leadership lost', true, 5));
    };
  }

  it('answers from the store a send proposed here whose leadership was lost', async () => {
    const s = scene(SELF, 5);
    const inDoubt = new FakeInDoubt(() => Promise.resolve(STORED_ANSWER));
    const local = lostOnce(s, () => s.backend.elect('n1', 6));
    const call = runOrForward(s.ctx, s.call, 'SendMessage', DEADLINE_MS, local, inDoubt.fn);
    assert.deepEqual(await call, STORED_ANSWER);
    assert.deepEqual(inDoubt.calls, [{ sinceTerm: 5, deadlineMs: FORWARD_DEADLINE_MS }]);
    assert.deepEqual(s.forwarder.targets, [], 'not sent again');
    assert.equal(s.local.callCount, 0, 'not run here again');
  });

  it('runs again a send proposed here that the store shows was not kept', async () => {
    const s = scene(SELF, 5);
    const inDoubt = new FakeInDoubt(() => Promise.resolve('resend'));
    s.forwarder.script(answerOf('n1'));
    const local = lostOnce(s, () => s.backend.elect('n1', 6));
    const call = runOrForward(s.ctx, s.call, 'SendMessage', DEADLINE_MS, local, inDoubt.fn);
    assert.deepEqual(await call, answerOf('n1'));
    assert.deepEqual(s.forwarder.targets, [endpoint('n1')]);
  });

  it('times out a send proposed here when the store cannot settle it', async () => {
    const s = scene(SELF, 5);
    const inDoubt = new FakeInDoubt(() => Promise.resolve(undefined));
    const local = lostOnce(s, () => s.backend.elect('n1', 6));
    const call = runOrForward(s.ctx, s.call, 'SendMessage', DEADLINE_MS, local, inDoubt.fn);
    await assert.rejects(call, (err) => isRaftmqError(err, 'TIMEOUT'));
    assert.deepEqual(s.forwarder.targets, [], 'never sent again blindly');
  });

  it('sends an idempotent RPC proposed here again without settling it', async () => {
    const s = scene(SELF, 5);
    s.forwarder.script(answerOf('n1'));
    const local = lostOnce(s, () => s.backend.elect('n1', 6));
    const call = runOrForward(s.ctx, s.call, 'AckMessage', DEADLINE_MS, local);
    assert.deepEqual(await call, answerOf('n1'));
  });

  it('waits out a leadership hand-off from this node, then forwards to the new leader', async () => {
    const s = scene(SELF, 5);
    s.forwarder.script(answerOf('n1'));
    let refusals = 0;
    const local = (): Promise<object> => {
      if (s.backend.roleView().leaderId === SELF) {
        refusals++;
        return Promise.reject(
          new RaftmqError('BUSY', 'raft: leadership transfer in progress', {
            details: { leaderId: SELF, transferring: true },
          }),
        );
      }
      return s.local.run();
    };
    const call = runOrForward(s.ctx, s.call, 'SendMessage', DEADLINE_MS, local);
    await until(() => s.backend.listenerCount === 1, 'runOrForward to wait for the hand-off');
    s.backend.elect('n1', 6);
    assert.deepEqual(await call, answerOf('n1'));
    assert.equal(refusals, 1);
    assert.deepEqual(s.forwarder.targets, [endpoint('n1')]);
  });

  it('passes on a BUSY that is not a hand-off', async () => {
    const s = scene(SELF, 5);
    const busy = new RaftmqError('BUSY', 'raft: too many uncommitted bytes', {
      details: { leaderId: SELF },
    });
    const call = runOrForward(s.ctx, s.call, 'SendMessage', DEADLINE_MS, () =>
      Promise.reject(busy),
    );
    await assert.rejects(call, (err) => err === busy);
  });
});
