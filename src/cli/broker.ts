#!/usr/bin/env node
/**
 * `raftmq-broker`: one broker node (one Raft member of one broker group) as a process.
 *
 *   node dist/src/cli/broker.js --config node.json [--flag value ...]
 *
 * Flags override the file's fields; the result is checked by `resolveBrokerNodeConfig`. Logs
 * are pino JSON lines on stdout. Once serving, the process prints one line
 * `{"event":"ready","pid":...,"nodeId":...,"client":"host:port","raft":"host:port"}` on stdout
 * and, when started with an IPC channel (as `LocalCluster` does), sends the same object over it.
 * SIGTERM and SIGINT (and the IPC channel closing) stop the node cleanly and exit 0; a fatal
 * error stops it and exits 1; a bad configuration exits 2 before anything starts.
 */
import * as path from 'node:path';
import { isRaftmqError, RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { oneOf } from '../common/options';
import { BrokerNode } from '../broker/broker-node';
import { resolveBrokerNodeConfig, type BrokerNodeConfig } from '../broker/broker-node-config';
import type { PeerEndpoints } from '../broker/broker-types';
import {
  flagError,
  formatFlagHelp,
  parseFlags,
  refusePositionals,
  splitList,
  type FlagSpecs,
} from './flags';
import { prepareDataDir } from './data-dir';
import { LOG_LEVELS, readConfigFile, runProcess, type RunningServer } from './process-main';

export const BROKER_FLAGS = {
  config: { type: 'string', valueName: 'file', description: 'JSON configuration file' },
  cluster: { type: 'string', valueName: 'name', description: 'cluster name (DefaultCluster)' },
  group: { type: 'string', valueName: 'name', description: 'broker group name' },
  'node-id': { type: 'string', valueName: 'id', description: "this node's id, one of --peers" },
  peers: {
    type: 'string',
    valueName: 'id=raftHost:port/clientHost:port,...',
    description: 'every node of the group',
  },
  'listen-host': {
    type: 'string',
    valueName: 'host',
    description: "address to bind (this node's host in --peers)",
  },
  'data-dir': { type: 'string', valueName: 'dir', description: 'data directory' },
  namesrv: { type: 'string', valueName: 'host:port,...', description: 'NameServers' },
  'flush-mode': { type: 'string', valueName: 'SYNC|ASYNC', description: 'CommitLog flush (SYNC)' },
  'auto-create-topics': { type: 'boolean', description: 'create unknown topics on first use' },
  'log-level': { type: 'string', valueName: 'level', description: 'pino level (info)' },
  help: { type: 'boolean', description: 'print this help' },
} as const satisfies FlagSpecs;

export const BROKER_USAGE = `usage: raftmq-broker [--config file.json] [flags]\n\n${formatFlagHelp(BROKER_FLAGS)}\n`;

/** Which configuration field each flag sets. */
const FLAG_FIELDS: Readonly<Record<string, string>> = {
  cluster: 'cluster',
  group: 'group',
  'node-id': 'nodeId',
  peers: 'peers',
  'listen-host': 'listenHost',
  'data-dir': 'dataDir',
  namesrv: 'namesrvAddrs',
  'flush-mode': 'flushMode',
  'auto-create-topics': 'autoCreateTopics',
};

/** What the command line asks for. */
export interface BrokerArgs {
  readonly help: boolean;
  readonly config: BrokerNodeConfig | undefined;
  readonly logLevel: string | undefined;
}

/**
 * Parses `--peers n1=127.0.0.1:7001/127.0.0.1:8001,n2=...` into id -> endpoints (the endpoints
 * themselves are checked by the configuration resolver).
 */
export function parsePeersFlag(value: string): Record<string, PeerEndpoints> {
  const peers: Record<string, PeerEndpoints> = {};
  for (const item of splitList(value, 'peers')) {
    const match = /^([^=]+)=([^/]+)\/([^/]+)$/.exec(item);
    if (match === null)
      flagError('peers', `${JSON.stringify(item)} is not id=raftHost:port/clientHost:port`);
    const [, id, raft, client] = match as unknown as [string, string, string, string];
    if (Object.hasOwn(peers, id)) flagError('peers', `node ${id} is listed twice`);
    peers[id] = { raft, client };
  }
  return peers;
}

/**
 * The node's configuration from `argv`: the file's fields, then the flags over them, checked.
 * A relative `dataDir` is taken from the current directory. An error about a field that a flag
 * set names the flag too.
 */
export function brokerArgs(argv: readonly string[]): BrokerArgs {
  const { flags, positionals } = parseFlags(argv, BROKER_FLAGS);
  if (flags.help === true) return { help: true, config: undefined, logLevel: undefined };
  refusePositionals(positionals);
  if (flags['log-level'] !== undefined) oneOf(...LOG_LEVELS)(flags['log-level'], '--log-level');
  const input = flags.config === undefined ? {} : readConfigFile(flags.config);
  const overrides: Record<string, unknown> = {
    cluster: flags.cluster,
    group: flags.group,
    nodeId: flags['node-id'],
    peers: flags.peers === undefined ? undefined : parsePeersFlag(flags.peers),
    listenHost: flags['listen-host'],
    dataDir: flags['data-dir'],
    namesrvAddrs: flags.namesrv === undefined ? undefined : splitList(flags.namesrv, 'namesrv'),
    flushMode: flags['flush-mode'],
    autoCreateTopics: flags['auto-create-topics'],
  };
  for (const [key, value] of Object.entries(overrides)) {
    if (value !== undefined) input[key] = value;
  }
  if (typeof input.dataDir === 'string' && input.dataDir !== '') {
    input.dataDir = path.resolve(input.dataDir);
  }
  let config: BrokerNodeConfig;
  try {
    config = resolveBrokerNodeConfig(input);
  } catch (err) {
    throw withFlagName(err, flags);
  }
  return { help: false, config, logLevel: flags['log-level'] };
}

function withFlagName(err: unknown, flags: Record<string, unknown>): unknown {
  if (!isRaftmqError(err)) return err;
  const raw = err.details.option;
  const option = typeof raw === 'string' ? raw : '';
  const flag = Object.keys(FLAG_FIELDS).find((f) => {
    const field = `config.${FLAG_FIELDS[f] ?? ''}`;
    return (
      flags[f] !== undefined &&
      (option === field || option.startsWith(`${field}.`) || option.startsWith(`${field}[`))
    );
  });
  if (flag === undefined) return err;
  return new RaftmqError(err.code, `${err.message} (set by --${flag})`, {
    cause: err,
    details: { ...err.details, flag: `--${flag}` },
  });
}

async function startBroker(config: BrokerNodeConfig, logger: Logger): Promise<RunningServer> {
  const node = await BrokerNode.start(config, logger);
  const self = config.peers[config.nodeId] as PeerEndpoints;
  return {
    ready: {
      event: 'ready',
      pid: process.pid,
      cluster: config.cluster,
      group: config.group,
      nodeId: config.nodeId,
      client: self.client,
      raft: self.raft,
    },
    stop: () => node.stop(),
    // `stopped` resolves with undefined after a clean stop: only an error is fatal.
    fatal: node.stopped.then((err) => (err === undefined ? new Promise<Error>(() => {}) : err)),
  };
}

if (require.main === module) {
  runProcess('raftmq-broker', BROKER_USAGE, () => {
    const args = brokerArgs(process.argv.slice(2));
    if (args.help || args.config === undefined) return undefined;
    const config = args.config;
    // A data directory that cannot be used is bad configuration (exit 2), found before any start.
    prepareDataDir(config.dataDir, '--data-dir');
    return { logLevel: args.logLevel, start: (logger) => startBroker(config, logger) };
  });
}
