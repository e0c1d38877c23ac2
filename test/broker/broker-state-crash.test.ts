/*
 * Crash consistency of the broker state machine's deferred metadata (broker-state.ts writes pop
 * state, offsets and topics only at checkpoints, coalesced): two nodes apply the same random
 * entries (messages; pop receive, ack, change and settle; offset commits), one never crashes and
 * writes at every apply, the other checkpoints at a random interval with a small random bound
 * on waiting keys. The second is crashed at random (process kill, power loss, torn write) or
 * closed and reopened; after it replays its log it must hold exactly the first one's state: pop
 * queues, in-flight records, settled offsets, the handle counter, offsets, topics and queue
 * ranges. Each seed is one run; a failing one names its seed.
 */
import { strict as assert } from 'node:assert';
import { BrokerState } from '../../src/broker/broker-state';
import { encodeCommands, type BrokerCommand } from '../../src/broker/broker-command';
import { createPrng } from '../../src/common/prng';
import { encodeMessageBatch } from '../../src/store/message-batch';
import { StateNode, TOPIC, message } from './broker-state-node';
import type { CrashMode } from '../../src/sim/sim-disk';

const CRASH_MODES: readonly CrashMode[] = ['keep', 'lose', 'tear'];

/** A node checkpointing every `interval` ms or at `opsMax` waiting keys. */
class Node extends StateNode {
  constructor(seed: number, interval: number, opsMax: number) {
    super(seed, { checkpointIntervalMs: interval, pendingOpsMax: opsMax });
  }
}

function snapshot(s: BrokerState): unknown {
  const pop: unknown[] = [];
  for (const [g, t, q, st] of s.pop.entries()) {
    pop.push({
      g,
      t,
      q,
      frontier: st.frontier,
      cursor: st.cursor,
      inflight: [...st.inflight.entries()].sort((a, b) => a[0] - b[0]),
      settled: [...st.settled].sort((a, b) => a - b),
    });
  }
  pop.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  return {
    pop,
    handle: s.pop.nextHandle,
    topics: s.listTopics(),
    groups: s.listGroups(),
    off0: s.getOffset('g', 'orders', 0),
    off1: s.getOffset('g', 'orders', 1),
    r0: s.queueRange('orders', 0),
    r1: s.queueRange('orders', 1),
  };
}

describe('BrokerState: crashes and replays against a node that never crashed', () => {
  for (let seed = 1; seed <= 60; seed++) {
    it(`seed ${seed}`, async () => {
      const prng = createPrng(seed);
      const ref = new Node(seed, 0, 1_000_000);
      const node = new Node(seed + 1000, 50 + prng.nextInt(0, 500), 1 + prng.nextInt(0, 20));
      await ref.open();
      await node.open();
      const both = async (payloads: Uint8Array[]): Promise<void> => {
        await ref.commit(payloads);
        await node.commit(payloads);
      };
      await both([encodeCommands([{ op: 'topic.put', topic: TOPIC, mode: 'create' }])]);
      let n = 0;
      for (let step = 0; step < 300; step++) {
        const r = prng.nextInt(0, 100);
        const nowMs = ref.clock.nowMs();
        const payloads: Uint8Array[] = [];
        if (r < 25) {
          const q = prng.nextInt(0, 2);
          const k = 1 + prng.nextInt(0, 4);
          const ms = Array.from({ length: k }, () => message(n++, 'orders', q));
          payloads.push(encodeMessageBatch(ms));
        } else {
          const cmds: BrokerCommand[] = [];
          const count = 1 + prng.nextInt(0, 4);
          for (let c = 0; c < count; c++) {
            const q = prng.nextInt(0, 2);
            const pq = ref.state.pop.queue('G', 'orders', q);
            const range = ref.state.queueRange('orders', q);
            const kind = prng.nextInt(0, 10);
            const inflight = [...(pq?.inflight ?? [])];
            const picked = inflight[prng.nextInt(0, Math.max(1, inflight.length))];
            if (kind < 4) {
              const from = pq?.cursor ?? range.min;
              const to = Math.min(range.max, from + prng.nextInt(0, 5));
              const fresh = [];
              for (let o = from; o < to; o++)
                if (prng.nextInt(0, 3) > 0) fresh.push({ offset: o, messageGroup: '' });
              const again = [];
              for (const [o, rec] of pq?.inflight ?? []) {
                if (rec.visibleAtMs <= nowMs && prng.nextInt(0, 2) === 0)
                  again.push({ offset: o, attempt: rec.attempt });
              }
              cmds.push({
                op: 'pop.receive',
                group: 'G',
                topic: 'orders',
                queueId: q,
                nowMs,
                invisibleMs: prng.nextInt(0, 300),
                from,
                to,
                fresh,
                again,
              });
            } else if (kind < 9 && picked !== undefined) {
              const [offset, rec] = picked;
              const ref = { group: 'G', topic: 'orders', queueId: q, offset };
              if (kind < 7) {
                const renewed = prng.nextInt(0, 2) === 1 && rec.renewHandle !== 0;
                const handle = renewed ? rec.renewHandle : rec.deliveryHandle;
                cmds.push({ op: 'pop.ack', ...ref, handle });
              } else if (kind < 8) {
                const invisibleMs = prng.nextInt(0, 300);
                cmds.push({
                  op: 'pop.change',
                  ...ref,
                  handle: rec.deliveryHandle,
                  nowMs,
                  invisibleMs,
                });
              } else {
                cmds.push({ op: 'pop.settle', ...ref, attempt: rec.attempt, reason: 'dlq' });
              }
            } else {
              cmds.push({
                op: 'offset.commit',
                group: 'g',
                topic: 'orders',
                queueId: q,
                offset: prng.nextInt(0, 50),
              });
            }
          }
          payloads.push(encodeCommands(cmds));
        }
        await both(payloads);
        const adv = prng.nextInt(0, 120);
        ref.clock.advance(adv);
        node.clock.advance(adv);
        if (prng.nextInt(0, 40) === 0) {
          const mode = CRASH_MODES[prng.nextInt(0, CRASH_MODES.length)] ?? 'keep';
          // Applied entries are committed, so durable: only the metadata may be lost.
          if (mode !== 'keep') await node.store.commitLog.flush();
          node.crash(mode);
          await node.open();
          await node.replay();
          assert.deepEqual(
            snapshot(node.state),
            snapshot(ref.state),
            `after crash ${mode} at step ${step}`,
          );
        } else if (prng.nextInt(0, 60) === 0) {
          await node.close();
          await node.open();
          assert.deepEqual(
            snapshot(node.state),
            snapshot(ref.state),
            `after reopen at step ${step}`,
          );
        }
      }
      assert.deepEqual(snapshot(node.state), snapshot(ref.state), 'end');
      await node.close();
      await node.open();
      await node.replay();
      assert.deepEqual(snapshot(node.state), snapshot(ref.state), 'end reopen');
      await node.close();
      await ref.close();
    });
  }
});
