/**
 * `npm start`: will launch a NameServer and one 3-node broker group on this machine (issue 4).
 * Until the broker and NameServer exist, it says what is built so far and how to try it, and
 * exits successfully, so the README's first command works on a fresh machine.
 */
const lines = [
  'raftmq is being built; `npm start` will start a NameServer and a 3-node broker group once',
  'the broker exists. What works today:',
  '',
  '  storage engine (src/store)        npm run bench:store     CommitLog, ConsumeQueue, key index',
  '  Raft (src/raft, src/broker)       npm run bench:raft      3 member processes over gRPC',
  '                                    npm run bench:failover  kill -9 of the leader, 20 rounds',
  '  simulator (src/sim)               npm run sim -- --seed 1 a group under seeded faults',
  '',
  'See README.md and docs/ for the design and the state of each part.',
];
process.stdout.write(`${lines.join('\n')}\n`);
