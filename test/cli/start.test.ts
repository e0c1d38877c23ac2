/*
 * `npm start`'s launcher (dist/src/cli/start.js), stopped the two ways it must stop, each
 * checked by the pids its banner prints: the launcher's children, the NameServer and the three
 * brokers, and the launcher itself must all be gone within a few seconds.
 *
 * 1. Whatever started it goes away. npm 11 passes no SIGTERM on to its script: it exits, and
 *    the script, orphaned, kept the whole cluster running. Here a shell stands in for npm
 *    (`sh -c 'node start.js & ...; wait'`); the shell is killed with SIGKILL.
 * 2. Ctrl-C. The launcher runs again on the same data (same endpoints) in a process group of
 *    its own, and the group gets SIGINT, as a terminal sends it to every process in the
 *    foreground: the launcher says `stopped` and exits 0.
 *
 * The lock on ./data: the second run finds a lock left by a launcher that no longer runs and
 * takes it over; while it runs, a third launcher in the same directory exits 1 at once, naming
 * the running one, and leaves `conf/` as it was (two launchers both rewrote it, and one ran its
 * brokers on the other's ports); after Ctrl-C the lock is gone.
 *
 * The launcher runs in a temporary directory (its ./data); every process it started is killed
 * by its pid in `after` if the test failed to see it stop.
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

/** What the banner says. */
interface Banner {
  readonly namesrv: { readonly endpoint: string; readonly pid: number };
  readonly brokers: ReadonlyArray<{ readonly endpoint: string; readonly pid: number }>;
}

/** Reads the NameServer's and the brokers' endpoints and pids from the banner in `out`. */
function parseBanner(out: string): Banner {
  const ns = /^ {2}NameServer +(\S+) +pid (\d+)$/m.exec(out);
  assert.ok(ns !== null, `the NameServer's endpoint and pid in: ${out}`);
  const brokers = [...out.matchAll(/^ {2}broker \S+ +client (\S+) .*pid (\d+)/gm)].map((m) => ({
    endpoint: m[1] ?? '',
    pid: Number(m[2]),
  }));
  assert.equal(brokers.length, 3, `three brokers in: ${out}`);
  const banner = { namesrv: { endpoint: ns[1] ?? '', pid: Number(ns[2]) }, brokers };
  for (const { pid } of [banner.namesrv, ...brokers]) {
    assert.ok(Number.isSafeInteger(pid) && pid > 0, `a pid in: ${out}`);
  }
  return banner;
}

/** Collects a child's stdout and stderr. */
function collect(child: ChildProcess): { text: () => string } {
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  return { text: () => out };
}

function waitForBanner(out: { text: () => string }): Promise<true> {
  return waitUntil(
    'the launcher to print its banner',
    RUNNING_TIMEOUT_MS,
    () => Promise.resolve(out.text().includes('raftmq is running') ? true : undefined),
    100,
  );
}

/** A launcher started in `dir` while `holderPid`'s runs there: refused, `conf/` untouched. */
async function refusesSecondLauncher(dir: string, holderPid: number): Promise<void> {
  const confDir = path.join(dir, 'data', 'conf');
  const confBefore = fs.readdirSync(confDir).map((f) => fs.readFileSync(path.join(confDir, f)));
  const second = spawn(process.execPath, [START], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = collect(second);
  const code = await new Promise<number | null>((resolve) => second.once('exit', resolve));
  assert.equal(code, 1, `the second launcher's exit code; its output: ${out.text()}`);
  const dataDir = path.join(fs.realpathSync(dir), 'data');
  assert.ok(
    out.text().includes(`another npm start (pid ${holderPid}) runs in ${dataDir}`),
    out.text(),
  );
  const confAfter = fs.readdirSync(confDir).map((f) => fs.readFileSync(path.join(confDir, f)));
  assert.deepEqual(confAfter, confBefore, 'conf/ untouched');
}

describe('npm start launcher', function () {
  this.timeout(RUNNING_TIMEOUT_MS + STOP_TIMEOUT_MS + 10_000);
  let dir: string | undefined;
  const spawned: ChildProcess[] = [];
  let pids: number[] = [];
  let firstBanner: Banner | undefined;

  before(function () {
    if (process.platform !== 'linux') this.skip();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-start-'));
  });

  after(() => {
    for (const pid of [...pids, ...spawned.map((c) => c.pid)]) {
      if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stops every node when its parent dies without passing a signal on', async () => {
    const script = `${JSON.stringify(process.execPath)} ${JSON.stringify(START)} & echo "launcher $!"; wait`;
    const shell = spawn('sh', ['-c', script], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    spawned.push(shell);
    const out = collect(shell);
    await waitForBanner(out);
    const launcher = Number(/launcher (\d+)/.exec(out.text())?.[1]);
    assert.ok(Number.isSafeInteger(launcher) && launcher > 0, `launcher pid in: ${out.text()}`);
    const banner = parseBanner(out.text());
    firstBanner = banner;
    pids = [launcher, banner.namesrv.pid, ...banner.brokers.map((b) => b.pid)];
    assert.ok(pids.every(alive), 'everything runs');
    process.kill(shell.pid ?? 0, 'SIGKILL');
    await waitUntil(
      'the launcher, the NameServer and the brokers to stop',
      STOP_TIMEOUT_MS,
      () => Promise.resolve(pids.every((pid) => !alive(pid)) ? true : undefined),
      200,
    );
  });

  it('stops every node on Ctrl-C, after restarting on the same data', async () => {
    const lockFile = path.join(dir ?? '', 'data', '.lock');
    // A lock left by a launcher that is gone (killed with -9, say) is taken over.
    const gone = spawn(process.execPath, ['-e', '']);
    await new Promise((resolve) => gone.once('exit', resolve));
    fs.writeFileSync(lockFile, `${gone.pid ?? 0}\n`);
    // A process group of its own, so that SIGINT reaches it and its children, as from a terminal.
    const launcher = spawn(process.execPath, [START], {
      cwd: dir,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    spawned.push(launcher);
    const exited = new Promise<number | null>((resolve) => launcher.once('exit', resolve));
    const out = collect(launcher);
    await waitForBanner(out);
    const banner = parseBanner(out.text());
    if (firstBanner !== undefined) {
      assert.equal(banner.namesrv.endpoint, firstBanner.namesrv.endpoint, 'same NameServer');
      assert.deepEqual(
        banner.brokers.map((b) => b.endpoint),
        firstBanner.brokers.map((b) => b.endpoint),
        'same brokers',
      );
    }
    const launcherPid = launcher.pid ?? 0;
    pids = [launcherPid, banner.namesrv.pid, ...banner.brokers.map((b) => b.pid)];
    assert.ok(pids.every(alive), 'everything runs');
    assert.equal(fs.readFileSync(lockFile, 'utf8'), `${launcherPid}\n`, 'the lock taken over');
    await refusesSecondLauncher(dir ?? '', launcherPid);
    // Negative: the process group the launcher leads (its pid), which holds its children.
    process.kill(-launcherPid, 'SIGINT');
    assert.equal(await exited, 0, `the launcher's exit code; its output: ${out.text()}`);
    assert.match(out.text(), /SIGINT: stopping every node\.\.\.\nstopped\n/);
    assert.ok(!fs.existsSync(lockFile), 'the lock released');
    await waitUntil(
      'the NameServer and the brokers to stop',
      STOP_TIMEOUT_MS,
      () => Promise.resolve(pids.every((pid) => !alive(pid)) ? true : undefined),
      200,
    );
  });
});
