/*
 * The `raftmq` admin tool end to end: the built CLI (dist/src/cli/raftmq.js) runs as a child
 * process against one real LocalCluster (a NameServer and a 3-node broker group as processes on
 * 127.0.0.1, in a temporary directory, started once for the file). It checks `status` as a
 * table and as JSON, the default endpoint taken from ./data, topic and consumer-group create,
 * list, update and delete, refusals by the broker printed as one `error CODE: message` line
 * with exit code 1, bad usage exiting 2 with the usage, an unreachable or wrong endpoint named
 * clearly, and a leadership transfer that `status` then shows. `--help` of every command and
 * the usage errors of the grammar run in-process through `runAdminCli` (same code, no spawn).
 * The cluster is stopped and the directory removed in `after`, whatever happened.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AdminClient, ClusterStatus } from '../../src/broker/admin-client';
import type { GroupConfig, TopicConfig } from '../../src/broker/broker-types';
import { COMMANDS } from '../../src/cli/admin-cli-commands';
import { parseAdminCommandLine } from '../../src/cli/admin-cli-parse';
import { LocalCluster, type LocalLeader } from '../../src/cli/local-cluster';
import { freePorts, waitUntil } from '../../src/cli/raft-node-client';
import { runAdminCli } from '../../src/cli/raftmq';
import { canTimeSyncs } from '../../src/store/timed-sync';

const CLI = path.join(__dirname, '..', '..', 'src', 'cli', 'raftmq.js');
const CLI_TIMEOUT_MS = 20_000;
const LEADER_TIMEOUT_MS = 20_000;

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the built CLI in `cwd`; a run longer than CLI_TIMEOUT_MS is killed by its pid. */
function runCli(args: readonly string[], cwd: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
    }, CLI_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs `raftmq` in-process; resolves with the exit code and what it printed. */
async function runInProcess(args: readonly string[], cwd: string): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const code = await runAdminCli(args, {
    out: (t) => (stdout += t),
    err: (t) => (stderr += t),
    cwd,
  });
  return { code, stdout, stderr };
}

function assertOk(r: CliResult, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${String(r.code)}, stderr: ${r.stderr}`);
  assert.equal(r.stderr, '', what);
}

/** A refusal: exit 1, nothing on stdout, one line `error CODE: ...` on stderr. */
function assertRefused(r: CliResult, code: string, message: RegExp): void {
  assert.equal(r.code, 1, `exit code; stdout: ${r.stdout} stderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^error [A-Z_]+: [^\n]+\n$/, 'one line');
  assert.ok(r.stderr.startsWith(`error ${code}: `), r.stderr);
  assert.match(r.stderr, message);
}

function assertUsage(r: CliResult, message: RegExp, usage: string): void {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, message);
  assert.ok(r.stderr.includes(`usage: raftmq ${usage}`), r.stderr);
}

function json<T>(r: CliResult): T {
  assertOk(r, 'json');
  return JSON.parse(r.stdout) as T;
}

describe('raftmq CLI against a 3-node LocalCluster', function () {
  this.timeout(60_000);
  let tmp = '';
  /** A directory without ./data, where commands run unless a test says otherwise. */
  let elsewhere = '';
  let cluster: LocalCluster | undefined;
  let leader: LocalLeader;
  let endpoints: string[] = [];

  const live = (): LocalCluster => {
    assert.ok(cluster !== undefined, 'cluster not started');
    return cluster;
  };
  const cliAt = (endpoint: string, ...args: string[]): Promise<CliResult> =>
    runCli([...args, '--endpoint', endpoint], elsewhere);
  const cli = (...args: string[]): Promise<CliResult> => cliAt(endpoints[0] as string, ...args);
  /** An admin client of n1, to check what the CLI did by other means. */
  const oracle = (): Promise<AdminClient> => live().admin('n1');
  const followerEndpoint = (): string =>
    live().brokers.find((b) => b.id !== leader.nodeId)?.clientEndpoint as string;

  before(async function () {
    this.timeout(60_000);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-cli-'));
    elsewhere = path.join(tmp, 'elsewhere');
    fs.mkdirSync(elsewhere);
    cluster = await LocalCluster.start({ dir: path.join(tmp, 'data'), logLevel: 'warn' });
    const started = cluster;
    leader = await started.waitForLeader(LEADER_TIMEOUT_MS);
    endpoints = started.brokers.map((b) => b.clientEndpoint);
    // A majority agreeing is enough for waitForLeader; the status test wants all three.
    await waitUntil('every node following the leader', LEADER_TIMEOUT_MS, async () => {
      const statuses = await Promise.all(
        started.nodeIds.map(async (id) => (await started.admin(id)).nodeStatus()),
      );
      const agree = statuses.every((s) => s.leaderId === leader.nodeId && s.commitIndex >= 1);
      return agree ? true : undefined;
    });
  });

  after(async function () {
    this.timeout(30_000);
    try {
      if (cluster !== undefined) {
        await cluster.stopAll();
        assert.deepEqual(cluster.pids(), [], 'every node stopped');
      }
    } finally {
      if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('status prints every node with role, term, leader, commit and apply index', async () => {
    const [text, asJson] = await Promise.all([cli('status'), cli('status', '--json')]);
    assertOk(text, 'status');
    const lines = text.stdout.split('\n');
    assert.match(lines[0] ?? '', new RegExp(`^group broker-a: leader ${leader.nodeId} in term`));
    assert.match(
      text.stdout,
      /NODE +ROLE +TERM +LEADER +LAST +COMMIT +APPLIED +TOPICS +FSYNC-MS +DISK-MS +SLOW +CLIENT/,
    );
    for (const [i, id] of ['n1', 'n2', 'n3'].entries()) {
      const row = lines.find((l) => l.startsWith(`${id} `));
      assert.ok(row !== undefined, `a row for ${id}`);
      const role = id === leader.nodeId ? 'leader' : 'follower';
      // With the timed-sync addon built, the calls' own times and the slow ones among them.
      const disk = canTimeSyncs ? '[\\d.]+/[\\d.]+' : '-';
      const slow = canTimeSyncs ? '\\d+/\\d+' : '\\d+';
      assert.match(
        row,
        new RegExp(
          `^${id} +${role} +\\d+ +${leader.nodeId} +\\d+ +\\d+ +\\d+ +\\d+ +[\\d.]+/[\\d.]+ +${disk} +${slow} `,
        ),
      );
      assert.ok(row.includes(endpoints[i] as string), row);
    }

    const status = json<ClusterStatus>(asJson);
    assert.equal(status.group, 'broker-a');
    assert.equal(status.leaderId, leader.nodeId);
    assert.deepEqual(
      status.members.map((m) => [m.nodeId, m.reachable, m.clientEndpoint]),
      ['n1', 'n2', 'n3'].map((id, i) => [id, true, endpoints[i]]),
    );
    for (const m of status.members) {
      assert.ok((m.status?.commitIndex ?? 0) >= 1, m.nodeId);
      // Every node made its log durable at least once, and says how long that took.
      assert.ok((m.status?.syncCount ?? 0) >= 1, `${m.nodeId} syncs`);
      assert.ok((m.status?.syncMsMax ?? 0) > 0, `${m.nodeId} longest sync`);
      // Where the addon is built every round is timed, and a round's calls never take longer
      // than the round; without it none is.
      const s = m.status;
      assert.ok(s !== null && s !== undefined, m.nodeId);
      assert.equal(s.timedSyncs, canTimeSyncs ? s.syncCount : 0, `${m.nodeId} timed syncs`);
      if (canTimeSyncs) assert.ok(s.syncCallMsMax > 0, `${m.nodeId} a call took time`);
      assert.ok(s.syncCallMsMax <= s.syncMsMax, `${m.nodeId} longest call`);
      assert.ok(s.syncCallMsTotal <= s.syncMsTotal, `${m.nodeId} calls in all`);
      assert.ok(s.slowSyncCalls <= s.slowSyncs, `${m.nodeId} slow calls`);
    }
  });

  it('without --endpoint, talks to the first broker of ./data; elsewhere needs one', async () => {
    const status = json<ClusterStatus>(await runCli(['status', '--json'], tmp));
    assert.equal(status.answeredBy, 'n1');
    assertUsage(await runInProcess(['status'], elsewhere), /--endpoint: is required/, 'status');
  });

  it('creates, lists, updates (through a follower) and deletes a topic', async () => {
    const created = await cli(
      'topic',
      'create',
      'Orders',
      '--queues',
      '4',
      '--types',
      'NORMAL,FIFO',
    );
    assertOk(created, 'create');
    assert.equal(created.stdout, 'created topic Orders: 4 queues, READ_WRITE, types NORMAL,FIFO\n');
    const orders: TopicConfig = {
      name: 'Orders',
      queueCount: 4,
      perm: 'READ_WRITE',
      messageTypes: ['NORMAL', 'FIFO'],
    };
    const [listed, table] = await Promise.all([
      cli('topic', 'list', '--json'),
      cli('topic', 'list'),
    ]);
    assert.deepEqual(json<TopicConfig[]>(listed), [orders]);
    assertOk(table, 'list');
    assert.match(table.stdout, /^NAME +QUEUES +PERM +TYPES\nOrders +4 +READ_WRITE +NORMAL,FIFO\n$/);

    const updated = await cliAt(
      followerEndpoint(),
      ...['topic', 'update', 'Orders', '--queues', '8', '--perm', 'read', '--json'],
    );
    const orders8 = { ...orders, queueCount: 8, perm: 'READ' as const };
    assert.deepEqual(json<TopicConfig>(updated), orders8);

    // Refusals by the broker: one line, the broker's code, exit 1; the topic is unchanged.
    const [exists, shrink, illegal] = await Promise.all([
      cli('topic', 'create', 'Orders', '--queues', '8'),
      cli('topic', 'update', 'Orders', '--queues', '2'),
      cli('topic', 'create', 'bad name!', '--queues', '1'),
    ]);
    assertRefused(exists, 'TOPIC_EXISTS', /Orders/);
    assertRefused(shrink, 'INVALID_ARGUMENT', /queue count may only grow \(8 -> 2\)/);
    assertRefused(illegal, 'ILLEGAL_TOPIC', /bad name!/);
    assert.deepEqual(await (await oracle()).listTopics(), [orders8]);

    const deleted = await cli('topic', 'delete', 'Orders');
    assertOk(deleted, 'delete');
    assert.equal(deleted.stdout, 'deleted topic Orders\n');
    assert.deepEqual(await (await oracle()).listTopics(), []);
    assertRefused(await cli('topic', 'delete', 'Orders'), 'TOPIC_NOT_FOUND', /Orders/);
  });

  it('creates, lists, updates and deletes a consumer group', async () => {
    const [created, plain] = await Promise.all([
      cli('group', 'create', 'Workers', '--max-delivery-attempts', '5', '--fifo'),
      cli('group', 'create', 'Plain', '--json'),
    ]);
    assertOk(created, 'create');
    assert.equal(
      created.stdout,
      'created consumer group Workers: max delivery attempts 5, fifo true\n',
    );
    assert.deepEqual(json<GroupConfig>(plain), {
      name: 'Plain',
      maxDeliveryAttempts: 17,
      fifo: false,
    });

    const updated = await cli('group', 'update', 'Workers', '--fifo', 'false', '--json');
    assert.deepEqual(json<GroupConfig>(updated), {
      name: 'Workers',
      maxDeliveryAttempts: 5,
      fifo: false,
    });
    const table = await cli('group', 'list');
    assertOk(table, 'list');
    assert.match(
      table.stdout,
      /^NAME +MAX-DELIVERY-ATTEMPTS +FIFO\nPlain +17 +false\nWorkers +5 +false\n$/,
    );

    const deletes = await Promise.all(['Plain', 'Workers'].map((n) => cli('group', 'delete', n)));
    for (const r of deletes) assertOk(r, 'delete');
    assert.equal(deletes[1]?.stdout, 'deleted consumer group Workers\n');
    assert.deepEqual(await (await oracle()).listGroups(), []);
    assertRefused(await cli('group', 'delete', 'Workers'), 'GROUP_NOT_FOUND', /Workers/);
  });

  it('exits 2 on bad usage, 1 naming an unreachable endpoint or one that is no broker', async () => {
    const [port] = await freePorts(1);
    const down = `127.0.0.1:${String(port)}`;
    const [usage, unreachable, namesrv] = await Promise.all([
      cli('topic', 'create', 'X'),
      cliAt(down, 'topic', 'list'),
      cliAt(live().namesrvEndpoint, 'status'),
    ]);
    assertUsage(usage, /--queues: is required/, 'topic create');
    assertRefused(
      unreachable,
      'TIMEOUT',
      new RegExp(`cannot reach a broker at ${down} \\(.*ECONNREFUSED`),
    );
    assertRefused(namesrv, 'INTERNAL', /does not serve the raftmq admin protocol/);
  });

  it('transfers leadership; status then shows the new leader', async () => {
    const target = live().nodeIds.find((id) => id !== leader.nodeId) as string;
    const [unknown, moved] = await Promise.all([
      cli('leader', 'transfer', '--to', 'n9'),
      cli('leader', 'transfer', '--to', target),
    ]);
    assertRefused(unknown, 'INVALID_ARGUMENT', /n1, n2, n3/);
    assertOk(moved, 'transfer');
    assert.equal(moved.stdout, `leader is now ${target}\n`);
    const [asJson, text] = await Promise.all([cli('status', '--json'), cli('status')]);
    const status = json<ClusterStatus>(asJson);
    assert.equal(status.leaderId, target);
    assert.equal(status.members.find((m) => m.nodeId === target)?.status?.role, 'leader');
    assert.ok(status.term > leader.term, 'a new term');
    assert.match(
      text.stdout,
      new RegExp(`^group broker-a: leader ${target} in term ${status.term}`),
    );
  });
});

describe('raftmq CLI grammar (in-process, no broker)', () => {
  const cwd = os.tmpdir();

  it('--help of every command prints its usage on stdout and exits 0', async () => {
    const names = [...COMMANDS.map((c) => c.name), 'topic', 'group', 'leader'];
    for (const name of names) {
      const r = await runInProcess([...name.split(' '), '--help'], cwd);
      assert.equal(r.code, 0, name);
      assert.equal(r.stderr, '', name);
      assert.ok(r.stdout.startsWith(`usage: raftmq ${name} `), r.stdout);
    }
    for (const args of [['--help'], ['help'], ['-h']]) {
      const r = await runInProcess(args, cwd);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /^usage: raftmq <command>/);
      for (const c of COMMANDS) assert.ok(r.stdout.includes(`  ${c.name}`), c.name);
    }
    const r = await runInProcess(['help', 'topic', 'create'], cwd);
    assert.match(r.stdout, /^usage: raftmq topic create NAME --queues N/);
  });

  it('refuses bad usage with exit 2, naming the argument or flag', async () => {
    const cases: [string[], RegExp][] = [
      [['frob'], /unknown command frob/],
      [['topic'], /topic needs a command/],
      [['topic', 'create', '--queues', '2'], /NAME is required/],
      [['topic', 'create', 'X', '--queues', 'abc'], /--queues: must be an integer in \[1, 1024\]/],
      [['topic', 'create', 'X', '--queues', '2', 'Y'], /unexpected argument "Y"/],
      [['topic', 'create', 'X', '--queues', '2', '--perm', 'ALL'], /--perm: must be one of/],
      [['topic', 'create', 'X', '--queues', '2', '--types', 'NORMAL,BOGUS'], /--types: BOGUS/],
      [['topic', 'update', 'X'], /nothing to change/],
      [['group', 'update', 'G'], /nothing to change/],
      [['group', 'create', 'G', '--max-delivery-attempts', '0'], /--max-delivery-attempts/],
      [['leader', 'transfer'], /--to: is required/],
      [['status', '--queues', '3'], /--queues: unknown flag/],
      [['status', '--endpoint', 'nope'], /--endpoint: must be "host:port"/],
      [['status', '--timeout-ms', '0'], /--timeout-ms: must be an integer/],
    ];
    for (const [args, message] of cases) {
      const r = await runInProcess(args, cwd);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, message, args.join(' '));
      assert.match(r.stderr, /\n\nusage: raftmq /, args.join(' '));
    }
  });

  it('takes command words anywhere between flags', () => {
    const line = parseAdminCommandLine([
      '--timeout-ms',
      '500',
      'topic',
      '--queues',
      '3',
      'create',
      '--json',
      'Orders',
      '--fifo=false',
    ]);
    assert.equal(line.kind, 'usage-error', 'topic create has no --fifo');
    const ok = parseAdminCommandLine(['--json', 'topic', '--queues', '3', 'create', 'Orders']);
    assert.deepEqual(ok, {
      kind: 'run',
      command: {
        name: 'topic create',
        endpoint: undefined,
        timeoutMs: 10_000,
        json: true,
        topic: { name: 'Orders', queueCount: 3 },
      },
    });
    const transfer = parseAdminCommandLine(['leader', '--to', 'n2', 'transfer', '--endpoint=h:1']);
    assert.equal(transfer.kind === 'run' && transfer.command.name, 'leader transfer');
    // Every command's value flags, group progress's --group among them, may come first.
    const progress = parseAdminCommandLine(['--group', 'billing', 'group', 'progress']);
    assert.equal(progress.kind === 'run' && progress.command.name, 'group progress');
    assert.equal(
      progress.kind === 'run' && progress.command.name === 'group progress'
        ? progress.command.groupName
        : undefined,
      'billing',
    );
  });
});
