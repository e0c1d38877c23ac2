/**
 * The Node.js (V8) flags raftmq's server processes run with. The launchers here (`npm start`,
 * LocalCluster, the benchmarks' raft nodes) pass them; a broker started by hand should be too
 * (`node --initial-old-space-size=256 --no-allocation-site-pretenuring dist/src/cli/broker.js
 * ...`, docs/operations.md).
 *
 * `--initial-old-space-size`: V8 counts the bytes of Buffers allocated since its last full
 * collection against the old generation's limit, and with the small heap of a broker (about
 * 20 MB) that limit sits a few tens of MB above it. Every socket read, gRPC message and record
 * is such a Buffer, so under a steady replication load a follower ran a full mark-compact five
 * times a second, each holding its thread 10-30 ms (`--trace-gc`); commits waited for them. With
 * a 256 MB initial old space the limit starts high and those collections stopped: at 2,000
 * entries/s `bench:raft`'s p99 commit latency fell from 20-53 ms to 7-12 ms. The flag raises
 * where collection starts, not how much the heap may hold, and the process's memory rises only
 * by garbage not yet collected. It must be given on the command line: V8 reads it when the heap
 * is created, so `v8.setFlagsFromString` at start-up is too late (measured: no effect).
 *
 * `--no-allocation-site-pretenuring`: V8 watches how many objects of each object literal survive
 * young-generation collections, and once nearly all of a literal's objects have survived it
 * allocates that literal's objects directly in the old generation from then on. A follower's
 * Raft entries (one literal per entry decoded from an Append) survive while the follower
 * catches up at start-up, so in 7 of 14 `bench:raft --rate 50000` runs one follower had every
 * entry born old (V8's `%InYoungGeneration` at decoding) for the rest of its life: entries that
 * live a few milliseconds then needed full collections, 16 or 17 per run on that follower (110
 * to 150 ms of pauses in 18 s), against 0 to 2 on the others. With the flag: 0 of 5 runs
 * (docs/performance.md, "What the leader promoted").
 */
export const SERVER_NODE_FLAGS: readonly string[] = [
  '--initial-old-space-size=256',
  '--no-allocation-site-pretenuring',
];
