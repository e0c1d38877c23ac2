/**
 * `npm start`: a NameServer and one 3-node broker group on this machine, as child processes
 * (`LocalCluster`), with their data, configuration and logs under `./data`. SYNC flush (every
 * acknowledged message is fsync'd on a majority) and topic auto-creation, so the official
 * RocketMQ 5 clients can send to any topic at once. Ctrl-C stops everything cleanly; running it
 * again restarts the same nodes on the same ports and data. So does the end of the process that
 * started this one: npm passes no SIGTERM on to its script (npm 11 exits and leaves the script
 * running), so the launcher checks once a second that its parent is still the one it had.
 * A second launcher in the same directory stops at once (`data/.lock`, dir-lock.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DirLock } from './dir-lock';
import { LocalCluster } from './local-cluster';

const DATA_DIR = path.resolve('data');
const LEADER_TIMEOUT_MS = 30_000;
/** How often the launcher checks that its parent (npm, a shell) is still there. */
const PARENT_CHECK_MS = 1_000;

function banner(cluster: LocalCluster, leaderId: string, term: number): string {
  const brokers = cluster.brokers;
  const first = brokers[0]?.clientEndpoint ?? '';
  const lines = [
    '',
    `raftmq is running (data, configuration and logs in ${DATA_DIR})`,
    '',
    `  NameServer   ${cluster.namesrvEndpoint}  pid ${cluster.namesrvPid ?? '-'}`,
    ...brokers.map(
      (b) =>
        `  broker ${b.id}    client ${b.clientEndpoint}  raft ${b.raftEndpoint}  pid ${b.pid ?? '-'}` +
        (b.id === leaderId ? `  leader (term ${term})` : ''),
    ),
    '',
    'Send and receive with the official RocketMQ 5 client (npm i rocketmq-client-nodejs):',
    '',
    "  const { Producer, SimpleConsumer } = require('rocketmq-client-nodejs');",
    // One access point: the Node client cannot take a list. A NameServer or any broker works.
    `  const endpoints = '${cluster.namesrvEndpoint}';`,
    "  const producer = new Producer({ endpoints, namespace: '' });",
    '  await producer.startup();',
    "  await producer.send({ topic: 'TopicTest', tag: 'demo', body: Buffer.from('hello') });",
    '  const consumer = new SimpleConsumer({',
    "    endpoints, namespace: '', consumerGroup: 'demo-group',",
    "    subscriptions: new Map([['TopicTest', '*']]),",
    '  });',
    '  await consumer.startup();',
    '  for (const m of await consumer.receive(16)) await consumer.ack(m);',
    '',
    'Consumption progress: npm run raftmq -- group progress',
    '',
    'Administer it:',
    '',
    `  npm run raftmq -- status --endpoint ${first}`,
    `  npm run raftmq -- topic create Orders --queues 8 --endpoint ${first}`,
    '',
    'Ctrl-C stops everything; npm start again resumes on the same data.',
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  let stopping = false;
  // One launcher per directory, taken before conf/ is read or written; released at exit (every
  // way out of this process goes through process.exit or the end of the loop).
  fs.mkdirSync(DATA_DIR, { recursive: true });
  const lock = DirLock.acquire(DATA_DIR, 'npm start');
  process.on('exit', () => lock.release());
  const cluster = await LocalCluster.start({
    dir: DATA_DIR,
    flushMode: 'SYNC',
    autoCreateTopics: true,
    onUnexpectedExit: (name, exit) => {
      if (stopping) return;
      const how = exit.signal ?? `code ${String(exit.code)}`;
      process.stderr.write(`${name} exited (${how}); its log: ${path.join(DATA_DIR, 'logs')}\n`);
    },
  });
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${signal}: stopping every node...\n`);
    cluster.stopAll().then(
      () => {
        process.stdout.write('stopped\n');
        process.exit(0);
      },
      (err: unknown) => {
        process.stderr.write(`stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // An orphan is adopted by init or a subreaper: its parent id changes.
  const parentPid = process.ppid;
  setInterval(() => {
    if (process.ppid !== parentPid) stop('parent gone');
  }, PARENT_CHECK_MS).unref();
  const leader = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
  process.stdout.write(banner(cluster, leader.nodeId, leader.term));
}

main().catch((err: unknown) => {
  // LocalCluster.start stops whatever it started before failing; nothing is left running.
  process.stderr.write(`npm start failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
