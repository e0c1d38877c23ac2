/*
 * `npm start`'s launcher (dist/src/cli/start.js) when whatever started it goes away. npm 11
 * passes no SIGTERM on to its script: it exits, and the script, orphaned, kept the whole cluster
 * running. Here a shell stands in for npm (`sh -c 'node start.js; true'`, so that the shell
 * waits for the launcher instead of becoming it); the shell is killed with SIGKILL, and the
 * launcher, the NameServer and the three brokers must all be gone within a few seconds. The
 * launcher runs in a temporary directory (its ./data); every process it started is killed by
 * its pid in `after` if the test failed to see it stop.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { waitUntil } from '../../src/cli/raft-node-client';

const START = path.join(__dirname, '..', '..', 'src', 'cli', 'start.js');
const RUNNING_TIMEOUT_MS = 40_000;
const STOP_TIMEOUT_MS = 15_000;

/** Whether `pid` runs (a zombie, exited but not yet reaped by its new parent, does not). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('npm start launcher', function () {
  this.timeout(RUNNING_TIMEOUT_MS + STOP_TIMEOUT_MS + 10_000);
  let dir: string | undefined;
  let shell: ChildProcess | undefined;
  let pids: number[] = [];

  before(function () {
    if (process.platform !== 'linux') this.skip();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-start-'));
  });

  after(() => {
    for (const pid of [...pids, shell?.pid]) {
      if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stops every node when its parent dies without passing a signal on', async () => {
    const script = `${JSON.stringify(process.execPath)} ${JSON.stringify(START)} & echo "launcher $!"; wait`;
    shell = spawn('sh', ['-c', script], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    shell.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    shell.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
    await waitUntil(
      'the launcher to print its banner',
      RUNNING_TIMEOUT_MS,
      () => Promise.resolve(out.includes('raftmq is running') ? true : undefined),
      100,
    );
    const launcher = Number(/launcher (\d+)/.exec(out)?.[1]);
    const brokers = [...out.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    assert.ok(Number.isSafeInteger(launcher) && launcher > 0, `launcher pid in: ${out}`);
    assert.equal(brokers.length, 3, `three broker pids in: ${out}`);
    pids = [launcher, ...brokers];
    assert.ok(pids.every(alive), 'everything runs');
    process.kill(shell.pid ?? 0, 'SIGKILL');
    await waitUntil(
      'the launcher and the brokers to stop',
      STOP_TIMEOUT_MS,
      () => Promise.resolve(pids.every((pid) => !alive(pid)) ? true : undefined),
      200,
    );
  });
});
