/*
 * The broker's configuration as the binary reads it: `resolveBrokerNodeConfig` (the JSON file's
 * fields, checked, with defaults) and `brokerArgs` (a file and flags over it). Each refusal is
 * an INVALID_OPTION error naming the field's path in the file, and the flag when a flag set it;
 * nothing here starts a server.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isRaftmqError } from '../../src/common/errors';
import {
  BROKER_NODE_DEFAULTS,
  parseEndpoint,
  resolveBrokerNodeConfig,
} from '../../src/broker/broker-node-config';
import { COMMIT_LOG_DEFAULTS } from '../../src/store/commit-log-options';
import { brokerArgs } from '../../src/cli/broker';
import { LocalCluster } from '../../src/cli/local-cluster';

const PEERS = {
  n1: { raft: '127.0.0.1:7001', client: '127.0.0.1:8001' },
  n2: { raft: '127.0.0.1:7002', client: '127.0.0.1:8002' },
  n3: { raft: '127.0.0.1:7003', client: '127.0.0.1:8003' },
};
const MINIMAL = { group: 'broker-a', nodeId: 'n1', peers: PEERS, dataDir: '/var/raftmq/n1' };

/** Asserts that `fn` throws INVALID_OPTION whose message matches `pattern`. */
function refused(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isRaftmqError(err, 'INVALID_OPTION'), `INVALID_OPTION, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('broker configuration', () => {
  describe('resolveBrokerNodeConfig', () => {
    it('fills every default and freezes the result', () => {
      const config = resolveBrokerNodeConfig(MINIMAL);
      assert.equal(config.cluster, BROKER_NODE_DEFAULTS.cluster);
      assert.equal(config.flushMode, 'SYNC');
      assert.equal(config.pageCacheKeepBytes, COMMIT_LOG_DEFAULTS.pageCacheKeepBytes);
      assert.equal(config.timing.electionTimeoutTicks, 50);
      assert.equal(config.timing.registerIntervalMs, 30_000);
      assert.equal(
        resolveBrokerNodeConfig({ ...MINIMAL, timing: { registerIntervalMs: 60_000 } }).timing
          .registerIntervalMs,
        60_000,
      );
      assert.deepEqual(config.namesrvAddrs, []);
      assert.ok(Object.isFrozen(config) && Object.isFrozen(config.peers));
      assert.equal('seed' in config, false);
    });

    it("binds this node's host in peers unless told otherwise, and refuses one port for both", () => {
      assert.equal(resolveBrokerNodeConfig(MINIMAL).listenHost, '127.0.0.1');
      const elsewhere = {
        ...PEERS,
        n1: { raft: '127.0.0.2:7001', client: '127.0.0.2:8001' },
      };
      assert.equal(
        resolveBrokerNodeConfig({ ...MINIMAL, peers: elsewhere }).listenHost,
        '127.0.0.2',
      );
      const v6 = { ...PEERS, n1: { raft: '[::1]:7001', client: '[::1]:8001' } };
      assert.equal(resolveBrokerNodeConfig({ ...MINIMAL, peers: v6 }).listenHost, '::1');
      assert.equal(
        resolveBrokerNodeConfig({ ...MINIMAL, peers: elsewhere, listenHost: '0.0.0.0' }).listenHost,
        '0.0.0.0',
      );
      const twoHosts = { ...PEERS, n1: { raft: '127.0.0.2:7001', client: '127.0.0.3:8001' } };
      refused(
        () => resolveBrokerNodeConfig({ ...MINIMAL, peers: twoHosts }),
        /listenHost: must be given when this node's raft and client hosts differ/,
      );
      assert.equal(
        resolveBrokerNodeConfig({ ...MINIMAL, peers: twoHosts, listenHost: '0.0.0.0' }).listenHost,
        '0.0.0.0',
      );
      // Both servers bind listenHost: one port for both cannot work, whatever the hosts say.
      const samePort = { ...PEERS, n1: { raft: '127.0.0.2:7001', client: '127.0.0.3:7001' } };
      refused(
        () => resolveBrokerNodeConfig({ ...MINIMAL, peers: samePort, listenHost: '0.0.0.0' }),
        /peers\.n1.*different ports/,
      );
    });

    it('takes every optional field given', () => {
      const config = resolveBrokerNodeConfig({
        ...MINIMAL,
        cluster: 'prod',
        flushMode: 'ASYNC',
        pageCacheKeepBytes: -1,
        autoCreateTopics: true,
        defaultQueueCount: 16,
        preferredLeader: 'n2',
        namesrvAddrs: ['[::1]:9876', 'ns.example:9876'],
        timing: { tickIntervalMs: 20 },
        seed: 7,
      });
      assert.equal(config.pageCacheKeepBytes, -1);
      assert.equal(config.preferredLeader, 'n2');
      assert.deepEqual(config.namesrvAddrs, ['[::1]:9876', 'ns.example:9876']);
      assert.equal(config.timing.tickIntervalMs, 20);
      assert.equal(config.timing.heartbeatIntervalTicks, 5);
      assert.equal(config.seed, 7);
    });

    it('refuses bad fields, naming each by its path', () => {
      const cases: Array<[Record<string, unknown>, RegExp]> = [
        [{ ...MINIMAL, group: undefined }, /config\.group: is required/],
        [{ ...MINIMAL, group: 'a b' }, /config\.group/],
        [{ ...MINIMAL, nodeId: 'n9' }, /config\.nodeId: must be one of the peers/],
        [{ ...MINIMAL, colour: 'red' }, /config\.colour: unknown option/],
        [{ ...MINIMAL, flushMode: 'sometimes' }, /config\.flushMode/],
        [{ ...MINIMAL, pageCacheKeepBytes: -2 }, /config\.pageCacheKeepBytes/],
        [{ ...MINIMAL, pageCacheKeepBytes: 1.5 }, /config\.pageCacheKeepBytes/],
        [{ ...MINIMAL, defaultQueueCount: 0 }, /config\.defaultQueueCount/],
        [{ ...MINIMAL, preferredLeader: 'n9' }, /config\.preferredLeader/],
        [{ ...MINIMAL, timing: { heartbeatIntervalTicks: 50 } }, /heartbeatIntervalTicks/],
        [{ ...MINIMAL, timing: { tickMs: 5 } }, /config\.timing\.tickMs: unknown option/],
        // NameServers drop a broker silent for 120 s: it must register several times per expiry.
        [
          { ...MINIMAL, timing: { registerIntervalMs: 60_001 } },
          /config\.timing\.registerIntervalMs: must be at most 60000.*brokerExpiryMs/,
        ],
        [{ ...MINIMAL, timing: { registerIntervalMs: 99 } }, /registerIntervalMs/],
        [{ ...MINIMAL, namesrvAddrs: ['localhost:0'] }, /config\.namesrvAddrs/],
        [
          { ...MINIMAL, peers: { ...PEERS, n2: { raft: '127.0.0.1:7001', client: 'h:1' } } },
          /config\.peers/,
        ],
        [{ ...MINIMAL, dataDir: '' }, /config\.dataDir/],
      ];
      for (const [input, pattern] of cases) refused(() => resolveBrokerNodeConfig(input), pattern);
      refused(() => resolveBrokerNodeConfig([]), /config: must be an object/);
    });

    it('parses endpoints strictly', () => {
      assert.deepEqual(parseEndpoint('[::1]:9876', 'e'), { host: '::1', port: 9876 });
      assert.deepEqual(parseEndpoint('broker-1.example:80', 'e'), {
        host: 'broker-1.example',
        port: 80,
      });
      for (const bad of ['h:0080', 'h:65536', '::1:9876', 'h', ':80', 'h:-1', 7]) {
        refused(() => parseEndpoint(bad, 'x.endpoint'), /x\.endpoint/);
      }
    });
  });

  describe('brokerArgs', () => {
    let dir: string;

    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-broker-args-'));
    });

    afterEach(() => {
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('reads the file, lays the flags over it and resolves the data directory', () => {
      const file = path.join(dir, 'n1.json');
      fs.writeFileSync(
        file,
        JSON.stringify({ ...MINIMAL, dataDir: 'rel/n1', pageCacheKeepBytes: 0 }),
      );
      const args = brokerArgs(['--config', file, '--flush-mode', 'ASYNC', '--namesrv', 'h:1,h:2']);
      assert.equal(args.help, false);
      assert.equal(args.config?.flushMode, 'ASYNC');
      assert.equal(args.config?.pageCacheKeepBytes, 0);
      assert.deepEqual(args.config?.namesrvAddrs, ['h:1', 'h:2']);
      assert.equal(args.config?.dataDir, path.resolve('rel/n1'));
    });

    it('takes the whole configuration from flags', () => {
      const args = brokerArgs([
        '--group',
        'g',
        '--node-id',
        'n2',
        '--peers',
        'n1=127.0.0.1:7001/127.0.0.1:8001,n2=127.0.0.1:7002/127.0.0.1:8002',
        '--data-dir',
        '/d',
      ]);
      assert.equal(args.config?.nodeId, 'n2');
      assert.equal(args.config?.peers.n2?.client, '127.0.0.1:8002');
    });

    it('names the flag that set a refused field', () => {
      const file = path.join(dir, 'n1.json');
      fs.writeFileSync(file, JSON.stringify(MINIMAL));
      refused(
        () => brokerArgs(['--config', file, '--flush-mode', 'LATER']),
        /config\.flushMode.*\(set by --flush-mode\)/,
      );
      refused(
        () => brokerArgs(['--config', file, '--peers', 'n1=127.0.0.1:7001']),
        /n1=127\.0\.0\.1:7001/,
      );
    });

    it('answers --help without reading a configuration', () => {
      assert.deepEqual(brokerArgs(['--help']), {
        help: true,
        config: undefined,
        logLevel: undefined,
      });
    });
  });
});

describe('broker process start-up errors', () => {
  it('answers a log level pino does not know as a usage error, not a crash', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-loglevel-'));
    try {
      const script = path.join(__dirname, '..', '..', 'src', 'cli', 'broker.js');
      const run = spawnSync(
        process.execPath,
        [
          script,
          '--group',
          'g1',
          '--node-id',
          'n1',
          '--peers',
          'n1=127.0.0.1:1/127.0.0.1:2',
          '--data-dir',
          dir,
        ],
        { env: { ...process.env, RAFTMQ_LOG_LEVEL: 'verbose' }, encoding: 'utf8', timeout: 20_000 },
      );
      assert.equal(run.status, 2, run.stderr);
      assert.match(run.stderr, /RAFTMQ_LOG_LEVEL "verbose"/);
      assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names the file of a cluster directory that holds broken JSON', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-conf-'));
    try {
      fs.mkdirSync(path.join(dir, 'conf'));
      fs.writeFileSync(path.join(dir, 'conf', 'namesrv.json'), '{"port": 9876}');
      fs.writeFileSync(path.join(dir, 'conf', 'n1.json'), '{"group": "g1", "pe');
      assert.throws(
        () => LocalCluster.describe(dir),
        (err: unknown) =>
          isRaftmqError(err, 'INVALID_OPTION') &&
          /conf\/n1\.json is not readable JSON/.test(err.message),
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
