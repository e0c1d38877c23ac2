/*
 * How a server process treats its configuration and its signals before it serves: a key given
 * twice in a config file, a data directory that cannot be used, a stray word on the command line
 * and a NameServer protoDir without the files are refused as bad configuration (exit 2, one line
 * naming the cause); a SIGTERM during a start that never ends exits 1 within the stop bound.
 * grpc-js's own log lines come out as JSON lines like every other (not on stderr).
 * The binaries run as child processes from `dist/`; the hanging start is a small script calling
 * `runProcess` with a start that never resolves.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { isRaftmqError } from '../../src/common/errors';
import { findDuplicateJsonKey } from '../../src/cli/json-duplicate-keys';
import { readConfigFile } from '../../src/cli/process-main';
import { BROKER_USAGE } from '../../src/cli/broker';

const CLI_DIR = path.join(__dirname, '..', '..', 'src', 'cli');
const PEERS_FLAG = 'n1=127.0.0.1:1/127.0.0.1:2';

/** Runs a binary of `dist/src/cli` to its end (bounded) and returns its status and stderr. */
function runCli(
  script: string,
  args: string[],
): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [path.join(CLI_DIR, script), ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    killSignal: 'SIGKILL', // a process hung in its start ignored SIGTERM
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe('server process configuration errors', () => {
  let dir = '';
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-process-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('finds a key given twice at any depth, with its path', () => {
    assert.equal(findDuplicateJsonKey('{"a": 1, "b": {"c": [1, {"d": 2}]}}'), undefined);
    assert.equal(findDuplicateJsonKey('{"a": 1, "a": 2}'), 'a');
    assert.equal(findDuplicateJsonKey('{"p": {"n1": {"raft": "x", "raft": "y"}}}'), 'p.n1.raft');
    assert.equal(findDuplicateJsonKey('{"l": [{"k": 1}, {"k": 1, "k": 2}]}'), 'l[1].k');
    // The same key in two objects is no duplicate; escapes are compared decoded.
    assert.equal(findDuplicateJsonKey('{"x": {"k": 1}, "y": {"k": 1}}'), undefined);
    assert.equal(findDuplicateJsonKey('{"k\\u0031": 1, "k1": 2}'), 'k1');
    assert.equal(findDuplicateJsonKey('{"s": "a \\" } \\\\", "s": 1}'), 's');
  });

  it('refuses a config file with a key given twice, naming the key (exit 2)', () => {
    const file = path.join(dir, 'namesrv.json');
    fs.writeFileSync(file, '{"port": 0, "routeTable": {"topicsMax": 5, "topicsMax": 6}}');
    assert.throws(
      () => readConfigFile(file),
      (err: unknown) =>
        isRaftmqError(err, 'INVALID_OPTION') && /routeTable\.topicsMax twice/.test(err.message),
    );
    const run = runCli('namesrv.js', ['--config', file]);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /has the key routeTable\.topicsMax twice/);
  });

  it('refuses a data directory that cannot be created, at once (exit 2)', () => {
    // Node's recursive mkdir of this path never returns; the broker hung in it.
    const args = ['--group', 'g1', '--node-id', 'n1', '--peers', PEERS_FLAG, '--data-dir'];
    const proc = runCli('broker.js', [...args, '/proc/raftmq-not-a-dir']);
    assert.equal(proc.status, 2, proc.stderr);
    assert.match(proc.stderr, /--data-dir: cannot create \/proc\/raftmq-not-a-dir/);
    const file = path.join(dir, 'plain-file');
    fs.writeFileSync(file, '');
    const plain = runCli('broker.js', [...args, path.join(file, 'n1')]);
    assert.equal(plain.status, 2, plain.stderr);
    assert.match(plain.stderr, /plain-file exists and is not a directory/);
  });

  it('names a stray word as given, without dashes', () => {
    const run = runCli('broker.js', ['--auto-create-topics', 'yes']);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /unexpected argument "yes"/);
    assert.doesNotMatch(run.stderr, /--yes/);
  });

  it('refuses a NameServer protoDir without the .proto files as bad configuration', () => {
    const file = path.join(dir, 'namesrv.json');
    fs.writeFileSync(file, JSON.stringify({ port: 0, protoDir: dir }));
    const run = runCli('namesrv.js', ['--config', file]);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /has no namesrv\.proto/);
  });

  it("documents --listen-host's default as this node's host in --peers", () => {
    assert.match(BROKER_USAGE, /--listen-host.*this node's host in --peers/);
    assert.doesNotMatch(BROKER_USAGE, /--listen-host.*127\.0\.0\.1/);
  });
});

describe('server process logs', () => {
  it("writes grpc-js's own log lines as JSON, not on stderr", async () => {
    // A port taken: grpc-js logs `No address added ...` itself, and the start fails (exit 1).
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const run = runCli('namesrv.js', ['--port', String(port)]);
      assert.equal(run.status, 1, run.stderr);
      assert.equal(run.stderr, '', 'nothing but JSON lines: stderr, appended to logs/, is empty');
      const lines = run.stdout.trim().split('\n');
      const events = lines.map((l) => JSON.parse(l) as { component?: string; text?: string });
      const grpcLine = events.find((e) => e.component === 'grpc-js');
      assert.match(grpcLine?.text ?? '', /No address added/, run.stdout);
    } finally {
      taken.close();
    }
  });
});

describe('server process signals during start-up', () => {
  it('exits 1 within the stop bound when a SIGTERM arrives during a start that never ends', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-hang-'));
    const script = path.join(dir, 'hang.js');
    const main = path.join(CLI_DIR, 'process-main.js');
    fs.writeFileSync(
      script,
      `require(${JSON.stringify(main)}).runProcess('hang', '', () => ({
        logLevel: 'silent',
        start: () => new Promise(() => {
          setInterval(() => {}, 1000); // a start that hangs, keeping the loop alive
          process.stdout.write('starting\\n');
        }),
      }), { stopTimeoutMs: 500 });\n`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          if (chunk.toString().includes('starting')) resolve();
        });
        child.on('exit', () => reject(new Error('exited before starting')));
      });
      child.kill('SIGTERM');
      const deadline = new Promise<string>((resolve) => {
        setTimeout(() => resolve('still running 10 s after SIGTERM'), 10_000).unref();
      });
      assert.equal(await Promise.race([exited, deadline]), 1);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
