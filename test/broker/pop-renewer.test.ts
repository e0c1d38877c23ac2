/*
 * The leader's renewal of auto-renewing deliveries (src/broker/pop-renewer.ts), on simulated
 * time: a ManualClock and ManualScheduler drive the renewer, whose proposals go through a real
 * CommandBatcher to a real PopState (the pop state every node applies), so what is checked is
 * the state a consumer would see. Checked: a delivery is renewed shortly before each lease
 * ends and never becomes visible while its client lives, and its original handle still
 * acknowledges; one round's renewals are one proposal of one entry; renewal stops on ack or
 * release, when the client goes silent, at the total cap, on a change of leadership, and when
 * the consumer's own nack came first (its guard); a terminated client's deliveries come back
 * after a second; the per-client and total bounds cut or refuse receives; options derive and
 * check their timing.
 */
import { strict as assert } from 'node:assert';
import { decodeCommands, type CommandResult } from '../../src/broker/broker-command';
import { CommandBatcher } from '../../src/broker/command-batcher';
import {
  type ClientContact,
  PopRenewer,
  type RenewableDelivery,
} from '../../src/broker/pop-renewer';
import {
  type PopRenewerOptions,
  resolvePopRenewerOptions,
} from '../../src/broker/pop-renewer-options';
import {
  type PopChangeCommand,
  type PopCommand,
  PopState,
  PopWrites,
} from '../../src/broker/pop-state';
import type { ProposeAck } from '../../src/broker/raft-waiters';
import { ManualClock, ManualScheduler } from '../../src/common/clock';
import { isRaftmqError, RaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';

/** One turn of the event loop (the command batcher proposes on the next). */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const GROUP = 'G';
const TOPIC = 'T';
const QUEUE = 0;

/** A leader's pop state behind a command batcher, a renewer on top, on simulated time. */
class Harness {
  readonly clock = new ManualClock();
  readonly scheduler = new ManualScheduler(this.clock);
  readonly state = new PopState();
  private readonly writes = new PopWrites();
  private readonly results = new Map<number, CommandResult[]>();
  private nextIndex = 1;
  /** Payload (entry) counts of each proposal. */
  readonly proposals: number[] = [];
  /** Commands of each proposal. */
  readonly proposedCommands: number[] = [];
  /** While set, proposals wait (in order) for `commit()`. */
  hold = false;
  private readonly held: (() => void)[] = [];
  term: number | undefined = 1;
  readonly contacts = new Map<string, ClientContact>();
  readonly renewer: PopRenewer;
  private readonly batcher: CommandBatcher;

  constructor(options: Partial<PopRenewerOptions> = {}) {
    this.batcher = new CommandBatcher({
      propose: (payloads) => this.propose(payloads),
      takeResults: (index) => this.results.get(index),
      nowMs: () => this.clock.nowMs(),
    });
    this.renewer = new PopRenewer(
      {
        clock: this.clock,
        scheduler: this.scheduler,
        log: silentLogger(),
        leaderTerm: () => this.term,
        changeAll: (commands, deadlineMs) => this.changeAll(commands, deadlineMs),
        clientContact: (clientId) => this.contacts.get(clientId),
        currentRecord: (group, topic, queueId, offset, handle) =>
          this.state.currentRecord(group, topic, queueId, offset, handle),
      },
      resolvePopRenewerOptions(options),
    );
  }

  private propose(payloads: readonly Uint8Array[]): Promise<ProposeAck> {
    this.proposals.push(payloads.length);
    return new Promise((resolve) => {
      const commit = (): void => {
        const firstIndex = this.nextIndex;
        for (const payload of payloads) {
          const commands = decodeCommands(payload);
          this.proposedCommands.push(commands.length);
          this.results.set(
            this.nextIndex++,
            commands.map((c) => this.state.apply(c as PopCommand, this.writes)),
          );
        }
        resolve({ firstIndex, lastIndex: this.nextIndex - 1, term: 1 } as ProposeAck);
      };
      if (this.hold) this.held.push(commit);
      else commit();
    });
  }

  /** While above 0, a round's renewals are applied but its call fails with TIMEOUT. */
  timeouts = 0;

  /** The renewer's changeAll: the batcher, or a timed-out answer to an applied round. */
  private changeAll(
    commands: readonly PopChangeCommand[],
    deadlineMs: number,
  ): Promise<CommandResult[]> {
    const results = this.batcher.submitAll(commands, deadlineMs);
    if (this.timeouts <= 0) return results;
    this.timeouts -= 1;
    return results.then(() => {
      throw new RaftmqError('TIMEOUT', 'not committed in time');
    });
  }

  /** Commits the held proposals, in order. */
  commit(): void {
    this.hold = false;
    for (const commit of this.held.splice(0)) commit();
  }

  /** Hands out `count` fresh messages now, with the renewer's invisibility. */
  deliver(count: number): RenewableDelivery[] {
    const q = this.state.queue(GROUP, TOPIC, QUEUE);
    const from = q?.cursor ?? 0;
    const fresh = Array.from({ length: count }, (_, i) => ({ offset: from + i, messageGroup: '' }));
    const result = this.apply({
      op: 'pop.receive',
      group: GROUP,
      topic: TOPIC,
      queueId: QUEUE,
      nowMs: this.clock.nowMs(),
      invisibleMs: this.renewer.options.invisibleMs,
      from,
      to: from + count,
      fresh,
      again: [],
    });
    assert.ok(result.ok);
    return (result.grants ?? []).map((g) => ({
      receiptHandle: `handle-${g.handle}`,
      queueId: QUEUE,
      offset: g.offset,
      handleId: g.handle,
      visibleAtMs: g.visibleAtMs,
    }));
  }

  /** Delivers `count` messages to `clientId` through a reservation, as a receive does. */
  receive(clientId: string, count: number): RenewableDelivery[] {
    const room = this.renewer.reserve(clientId, count);
    const got = this.deliver(room.count);
    room.track(GROUP, TOPIC, got);
    return got;
  }

  apply(command: PopCommand): ReturnType<PopState['apply']> {
    return this.state.apply(command, this.writes);
  }

  /** The in-flight record of a delivery, if it is still that delivery's. */
  record(d: RenewableDelivery) {
    return this.state.currentRecord(GROUP, TOPIC, QUEUE, d.offset, d.handleId);
  }

  ack(d: RenewableDelivery): boolean {
    const ok = this.apply({
      op: 'pop.ack',
      group: GROUP,
      topic: TOPIC,
      queueId: QUEUE,
      offset: d.offset,
      handle: d.handleId,
    }).ok;
    this.renewer.release(GROUP, TOPIC, d.receiptHandle);
    return ok;
  }

  /** Moves time on by `ms` in scan-interval steps, running what is due and its rounds. */
  async advance(ms: number, each?: () => void): Promise<void> {
    const step = this.renewer.options.scanIntervalMs;
    for (let done = 0; done < ms; done += step) {
      this.clock.advance(Math.min(step, ms - done));
      this.scheduler.runDue();
      await this.renewer.roundDone();
      each?.();
    }
  }

  /** Seen alive by the registry: a Telemetry stream is open. */
  connect(clientId: string): void {
    this.contacts.set(clientId, { streamOpen: true, lastSeenMs: this.clock.monotonicMs() });
  }
}

describe('PopRenewer: renewal of auto-renewing deliveries', () => {
  it('renews shortly before each lease ends, for as long as the client lives', async () => {
    const h = new Harness();
    h.connect('c1');
    const [d] = h.receive('c1', 1) as [RenewableDelivery];
    assert.equal(h.record(d)?.visibleAtMs, h.clock.nowMs() + 60_000);
    // 49 s on, 11 s are left: not yet.
    await h.advance(49_000);
    assert.equal(h.proposals.length, 0);
    // At 50 s, 10 s are left: renewed for 60 s from then.
    await h.advance(1_000);
    assert.equal(h.proposals.length, 1);
    assert.equal(h.record(d)?.visibleAtMs, h.clock.nowMs() + 60_000);
    // Ten minutes later it has never been visible, and was renewed about every 50 s.
    await h.advance(10 * 60_000, () => {
      const r = h.record(d);
      assert.ok(r !== undefined && r.visibleAtMs > h.clock.nowMs(), 'still invisible');
    });
    assert.equal(h.proposals.length, 13);
    assert.equal(h.record(d)?.attempt, 1);
    // The original handle acknowledges after all those renewals.
    assert.ok(h.ack(d));
    assert.equal(h.renewer.size, 0);
    await h.advance(120_000);
    assert.equal(h.proposals.length, 13, 'nothing renewed after the ack');
  });

  it("proposes one round's renewals as one entry, soonest first, at most renewalsPerRoundMax", async () => {
    const h = new Harness({ renewalsPerRoundMax: 1_000 });
    h.connect('c1');
    const early = h.receive('c1', 900);
    h.clock.advance(500);
    const late = h.receive('c1', 300);
    // Both batches are due in the same round (10 s left for the first, 10.5 s for the second).
    await h.advance(50_000);
    assert.deepEqual(h.proposals, [1], 'one proposal of one entry');
    assert.deepEqual(h.proposedCommands, [1_000]);
    const renewedAtMs = h.clock.nowMs();
    for (const d of early) assert.equal(h.record(d)?.visibleAtMs, renewedAtMs + 60_000);
    const renewedLate = late.filter((d) => h.record(d)?.visibleAtMs === renewedAtMs + 60_000);
    assert.equal(renewedLate.length, 100, 'the soonest 1,000 of 1,200');
    // The other 200 go in the next round, before their lease ends.
    await h.advance(1_000);
    assert.deepEqual(h.proposedCommands, [1_000, 200]);
    for (const d of late) assert.ok((h.record(d)?.visibleAtMs ?? 0) > h.clock.nowMs() + 50_000);
  });

  it('stops renewing a silent client; its messages come back when their lease ends', async () => {
    const h = new Harness();
    // Known to the registry by a Heartbeat only, at the delivery.
    h.contacts.set('c1', { streamOpen: false, lastSeenMs: h.clock.monotonicMs() });
    const [d] = h.receive('c1', 1) as [RenewableDelivery];
    await h.advance(50_000);
    assert.equal(h.proposals.length, 0, 'silent for over 30 s: not renewed');
    assert.equal(h.renewer.size, 0);
    await h.advance(10_000);
    assert.ok((h.record(d)?.visibleAtMs ?? Infinity) <= h.clock.nowMs(), 'visible again');

    // Heartbeats every 10 s keep another one renewed.
    const [e] = h.receive('c2', 1) as [RenewableDelivery];
    await h.advance(5 * 60_000, () => {
      if (h.clock.monotonicMs() % 10_000 === 0) {
        h.contacts.set('c2', { streamOpen: false, lastSeenMs: h.clock.monotonicMs() });
      }
    });
    assert.ok((h.record(e)?.visibleAtMs ?? 0) > h.clock.nowMs());
  });

  it('goes on renewing after a round that timed out yet was applied', async () => {
    const h = new Harness();
    h.connect('c1');
    const [d] = h.receive('c1', 1) as [RenewableDelivery];
    h.timeouts = 1;
    await h.advance(50_000);
    assert.equal(h.proposals.length, 1, 'renewed, though its caller heard TIMEOUT');
    // Before, the next renewal named the superseded handle, was refused, and renewal ended:
    // the message came back while the client still worked on it.
    await h.advance(5 * 60_000, () => {
      const r = h.record(d);
      assert.ok(r !== undefined && r.visibleAtMs > h.clock.nowMs(), 'still invisible');
    });
    assert.equal(h.renewer.size, 1);
    assert.ok(h.ack(d));
  });

  it('gives no lease past renewTotalMsMax after the delivery', async () => {
    const h = new Harness({ renewTotalMsMax: 150_000 });
    h.connect('c1');
    const startMs = h.clock.nowMs();
    const [d] = h.receive('c1', 1) as [RenewableDelivery];
    await h.advance(140_000);
    assert.equal(h.record(d)?.visibleAtMs, startMs + 150_000, 'the last lease is cut to the cap');
    await h.advance(10_000);
    assert.equal(h.renewer.size, 0);
    assert.ok((h.record(d)?.visibleAtMs ?? Infinity) <= h.clock.nowMs(), 'visible at the cap');
  });

  it("lets the consumer's nack win over a renewal proposed before it applied", async () => {
    const h = new Harness();
    h.connect('c1');
    const [d] = h.receive('c1', 1) as [RenewableDelivery];
    h.hold = true;
    h.clock.advance(50_000);
    h.scheduler.runDue();
    await turn();
    assert.equal(h.proposals.length, 1, 'a renewal is proposed, not yet committed');
    // The consumer's nack (ChangeInvisibleDuration to 1 ms) commits first.
    const nack = h.apply({
      op: 'pop.change',
      group: GROUP,
      topic: TOPIC,
      queueId: QUEUE,
      offset: d.offset,
      handle: d.handleId,
      nowMs: h.clock.nowMs(),
      invisibleMs: 1,
    });
    assert.ok(nack.ok);
    h.commit();
    await h.renewer.roundDone();
    assert.equal(h.record(d)?.visibleAtMs, h.clock.nowMs() + 1, 'the nack stands');
    assert.equal(h.renewer.size, 0, 'no longer renewed');
  });

  it("makes a terminated client's messages visible soon, after a round in progress", async () => {
    const h = new Harness();
    h.connect('c1');
    h.connect('c2');
    const mine = h.receive('c1', 3);
    const theirs = h.receive('c2', 2);
    h.hold = true;
    h.clock.advance(50_000);
    h.scheduler.runDue();
    await turn();
    assert.equal(h.proposals.length, 1);
    const terminated = h.renewer.terminate('c1');
    // The round renews all five; the release names the renewal it made.
    h.commit();
    await terminated;
    for (const d of mine) assert.equal(h.record(d)?.visibleAtMs, h.clock.nowMs() + 1_000);
    for (const d of theirs) assert.equal(h.record(d)?.visibleAtMs, h.clock.nowMs() + 60_000);
    assert.equal(h.renewer.countOf('c1'), 0);
    assert.equal(h.renewer.countOf('c2'), 2);
    await h.renewer.terminate('unknown');
  });

  it('forgets everything when leadership moves; the messages come back at their lease end', async () => {
    const h = new Harness();
    h.connect('c1');
    const [d] = h.receive('c1', 1) as [RenewableDelivery];
    h.term = 2;
    await h.advance(50_000);
    assert.equal(h.proposals.length, 0);
    assert.equal(h.renewer.size, 0);
    // Leading again in a later term, it starts empty: the delivery keeps its first lease.
    await h.advance(10_000);
    assert.ok((h.record(d)?.visibleAtMs ?? Infinity) <= h.clock.nowMs());
    // A receive in progress when leadership is lost renews nothing.
    const room = h.renewer.reserve('c1', 1);
    const got = h.deliver(1);
    h.term = undefined;
    room.track(GROUP, TOPIC, got);
    assert.equal(h.renewer.size, 0);
  });

  it('bounds deliveries per client and in all: cuts a receive to the room, BUSY at none', () => {
    const h = new Harness({ deliveriesPerClientMax: 5, deliveriesMax: 8 });
    const room = h.renewer.reserve('c1', 4);
    assert.equal(room.count, 4);
    assert.equal(h.renewer.reserve('c1', 4).count, 1, 'room held by a receive in progress');
    assert.throws(
      () => h.renewer.reserve('c1', 1),
      (err: unknown) => isRaftmqError(err, 'BUSY'),
    );
    room.cancel();
    const held = h.renewer.reserve('c1', 2);
    assert.equal(held.count, 2, 'a cancelled receive frees its room');
    // c1 holds 1 + 2; c2 gets the 5 that are left of the 8 in all.
    assert.equal(h.receive('c2', 6).length, 5);
    assert.equal(h.renewer.countOf('c2'), 5);
    assert.throws(
      () => h.renewer.reserve('c3', 1),
      (err: unknown) => isRaftmqError(err, 'BUSY'),
    );
    held.track(GROUP, TOPIC, []);
    assert.equal(h.renewer.reserve('c3', 5).count, 2, 'a receive that got nothing frees its room');
  });

  it('derives its timing from a short invisibility and checks the options', () => {
    const short = resolvePopRenewerOptions({ invisibleMs: 3_000 });
    assert.deepEqual(
      [short.renewAheadMs, short.scanIntervalMs, short.roundTimeoutMs],
      [1_000, 250, 1_000],
    );
    const byDefault = resolvePopRenewerOptions();
    assert.deepEqual(
      [byDefault.invisibleMs, byDefault.renewAheadMs, byDefault.scanIntervalMs],
      [60_000, 10_000, 1_000],
    );
    assert.equal(byDefault.renewTotalMsMax, 3 * 3600 * 1000);
    const refused = (input: Partial<PopRenewerOptions>, field: string): void =>
      assert.throws(
        () => resolvePopRenewerOptions(input),
        (err: unknown) => isRaftmqError(err, 'INVALID_OPTION') && err.message.includes(field),
      );
    refused({ invisibleMs: 500 }, 'autoRenew.invisibleMs');
    refused({ invisibleMs: 13 * 3600 * 1000 }, 'autoRenew.invisibleMs');
    refused({ invisibleMs: 10_000, renewAheadMs: 10_000 }, 'autoRenew.renewAheadMs');
    refused({ renewAheadMs: 1_000, scanIntervalMs: 600 }, 'autoRenew.scanIntervalMs');
    refused({ renewalsPerRoundMax: 5_000 }, 'autoRenew.renewalsPerRoundMax');
    refused({ unknown: 1 } as Partial<PopRenewerOptions>, 'autoRenew.unknown');
  });
});
