/*
 * Record checksums across a real group: three BrokerNodes in this process, on loopback, with
 * their real stores. Messages sent to the leader reach each follower's CommitLog with the
 * leader's record checksum, checked on receipt (`entriesChecked`) and handed to the CommitLog
 * (`LogEntry.recordCrc`); no frame is refused, every node's log reads back with valid checksums
 * and holds the same records, and every message is filed on every node. A follower that was
 * down catches up (from the leader's cache or its disk: entries read back from disk carry no
 * checksum and are checked message by message); its log reads back valid and it files every
 * message.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveBrokerNodeConfig } from '../../src/broker/broker-node-config';
import { BrokerNode } from '../../src/broker/broker-node';
import { freePorts } from '../../src/cli/raft-node-client';
import { silentLogger } from '../../src/common/logger';
import type { CommitLog } from '../../src/store/commit-log';
import type { LogEntry } from '../../src/store/log-record';
import { produceMessage } from './single-node';

const IDS = ['n1', 'n2', 'n3'] as const;
const WAIT_MS = 15_000;

async function waitFor(what: string, done: () => boolean): Promise<void> {
  const deadlineMs = Date.now() + WAIT_MS;
  while (!done()) {
    if (Date.now() > deadlineMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function commitLogOf(node: BrokerNode): CommitLog {
  return node.broker.state.store.commitLog;
}

/** Messages filed in `topic`'s queues on `node` (the sum of their end offsets). */
function filedIn(node: BrokerNode, topic: string): number {
  const state = node.broker.state;
  const queueCount = state.getTopic(topic)?.queueCount ?? 0;
  let filed = 0;
  for (let q = 0; q < queueCount; q++) filed += state.queueRange(topic, q).max;
  return filed;
}

/** Every record of `log`, read back from disk (each record's checksum is checked on read). */
async function readAll(log: CommitLog): Promise<LogEntry[]> {
  const first = log.firstIndex();
  return log.readRange(first, log.lastIndex() - first + 1, Number.MAX_SAFE_INTEGER);
}

describe('record checksums in a three-node group', () => {
  let dir: string;
  let peers: Record<string, { raft: string; client: string }>;
  const running = new Map<string, BrokerNode>();

  const start = async (id: string): Promise<BrokerNode> => {
    const config = resolveBrokerNodeConfig({
      group: 'g1',
      nodeId: id,
      peers,
      dataDir: path.join(dir, id),
      autoCreateTopics: true,
    });
    const node = await BrokerNode.start(config, silentLogger());
    running.set(id, node);
    return node;
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-crc-group-'));
    const ports = await freePorts(IDS.length * 2);
    peers = Object.fromEntries(
      IDS.map((id, i) => [
        id,
        { raft: `127.0.0.1:${ports[2 * i]}`, client: `127.0.0.1:${ports[2 * i + 1]}` },
      ]),
    );
  });

  after(async () => {
    await Promise.all([...running.values()].map((n) => n.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('checks each message entry once on every follower and stores the same records', async () => {
    await Promise.all(IDS.map((id) => start(id)));
    let leader: BrokerNode | undefined;
    await waitFor('a leader', () => {
      leader = [...running.values()].find((n) => n.broker.roleView().leaderReady);
      return leader !== undefined;
    });
    assert.ok(leader !== undefined);
    const followers = [...running.values()].filter((n) => n !== leader);
    // What each follower's CommitLog is handed: entries with a checksum, and without.
    const handed = new Map<BrokerNode, { withCrc: number; without: number }>();
    for (const f of followers) {
      const counts = { withCrc: 0, without: 0 };
      handed.set(f, counts);
      const log = commitLogOf(f);
      const append = log.append.bind(log);
      log.append = (entries) => {
        for (const e of entries) {
          if (e.recordCrc === undefined) counts.without++;
          else counts.withCrc++;
        }
        return append(entries);
      };
    }

    const sends = 40;
    for (let k = 0; k < sends; k++) {
      const batch = [0, 1, 2].map((j) => produceMessage('crc-topic', `m${k}-${j}`));
      await leader.broker.send(batch, Date.now() + 5_000);
    }
    const last = commitLogOf(leader).lastIndex();
    await waitFor('the followers to apply', () =>
      followers.every((f) => f.broker.state.appliedIndex >= last),
    );

    for (const f of followers) {
      const stats = f.raftTransportStats();
      assert.equal(stats.rejected, 0);
      const counts = handed.get(f);
      assert.ok(counts !== undefined);
      // Each send is an entry of its own (sent one after the other). A retransmitted Append is
      // checked again but not appended again, so the log may see fewer than were checked.
      assert.ok(counts.withCrc >= sends, `${counts.withCrc} entries reached the log with one`);
      assert.ok(stats.entriesChecked >= counts.withCrc, `${stats.entriesChecked} checked`);
    }
    const reference = await readAll(commitLogOf(leader));
    for (const f of followers) {
      const records = await readAll(commitLogOf(f));
      assert.equal(records.length, reference.length);
      records.forEach((r, i) => {
        const want = reference[i];
        assert.ok(want !== undefined);
        assert.equal(r.term, want.term);
        assert.ok(Buffer.from(r.payload).equals(Buffer.from(want.payload)), `record ${r.index}`);
      });
    }
    for (const n of running.values()) {
      assert.equal(filedIn(n, 'crc-topic'), sends * 3, `messages filed on ${n.config.nodeId}`);
    }
  });

  it('a follower that was down catches up, with valid records and every message filed', async () => {
    const leader = [...running.values()].find((n) => n.broker.roleView().leaderReady);
    assert.ok(leader !== undefined);
    const down = [...running.entries()].find(([, n]) => n !== leader);
    assert.ok(down !== undefined);
    const [downId, downNode] = down;
    await downNode.stop();
    running.delete(downId);
    for (let k = 0; k < 20; k++) {
      await leader.broker.send([produceMessage('crc-topic', `late${k}`)], Date.now() + 5_000);
    }
    const back = await start(downId);
    const last = commitLogOf(leader).lastIndex();
    await waitFor('the restarted follower to apply', () => back.broker.state.appliedIndex >= last);
    const records = await readAll(commitLogOf(back));
    assert.equal(records[records.length - 1]?.index, last);
    assert.equal(back.raftTransportStats().rejected, 0);
    assert.equal(filedIn(back, 'crc-topic'), 40 * 3 + 20);
  });
});
