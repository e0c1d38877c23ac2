#!/usr/bin/env node
/**
 * `raftmq-namesrv`: a NameServer as a process.
 *
 *   node dist/src/cli/namesrv.js [--config namesrv.json] [--host 127.0.0.1] [--port 9876]
 *
 * Flags override the file's fields (`listenHost`, `port`, `routeTable`, `protoDir`); the result
 * is checked by `resolveNameServerConfig`. Readiness, signals and exit codes are those of every
 * raftmq server process (`process-main.ts`): one `{"event":"ready",...,"endpoint":"host:port"}`
 * line on stdout once serving, SIGTERM/SIGINT stop it cleanly and exit 0.
 */
import { NameServer, resolveNameServerConfig } from '../namesrv/namesrv-server';
import { MESSAGING_PROTO_FILE, NAMESRV_PROTO_FILE } from '../namesrv/namesrv-wire';
import { findProtoDir } from '../common/proto-files';
import { formatEndpoint } from '../broker/broker-node-config';
import { oneOf } from '../common/options';
import type { Logger } from '../common/logger';
import { formatFlagHelp, parseFlags, refusePositionals, type FlagSpecs } from './flags';
import { LOG_LEVELS, readConfigFile, runProcess, type RunningServer } from './process-main';

export const NAMESRV_FLAGS = {
  config: { type: 'string', valueName: 'file', description: 'JSON configuration file' },
  host: { type: 'string', valueName: 'host', description: 'address to bind (127.0.0.1)' },
  port: { type: 'int', min: 0, max: 65_535, description: 'port to bind (9876; 0 picks one)' },
  'log-level': { type: 'string', valueName: 'level', description: 'pino level (info)' },
  help: { type: 'boolean', description: 'print this help' },
} as const satisfies FlagSpecs;

export const NAMESRV_USAGE = `usage: raftmq-namesrv [--config file.json] [flags]\n\n${formatFlagHelp(NAMESRV_FLAGS)}\n`;

/** The NameServer's configuration input from `argv` (resolved, so errors surface early). */
export function namesrvArgs(argv: readonly string[]): {
  readonly help: boolean;
  readonly config: Record<string, unknown>;
  readonly logLevel: string | undefined;
} {
  const { flags, positionals } = parseFlags(argv, NAMESRV_FLAGS);
  if (flags.help === true) return { help: true, config: {}, logLevel: undefined };
  refusePositionals(positionals);
  if (flags['log-level'] !== undefined) oneOf(...LOG_LEVELS)(flags['log-level'], '--log-level');
  const config = flags.config === undefined ? {} : readConfigFile(flags.config);
  if (flags.host !== undefined) config.listenHost = flags.host;
  if (flags.port !== undefined) config.port = flags.port;
  // Refuses a bad configuration before anything starts, a protoDir without the files included.
  const { protoDir } = resolveNameServerConfig(config);
  for (const file of [NAMESRV_PROTO_FILE, MESSAGING_PROTO_FILE]) findProtoDir(file, protoDir);
  return { help: false, config, logLevel: flags['log-level'] };
}

async function startNameServer(
  config: Record<string, unknown>,
  logger: Logger,
): Promise<RunningServer> {
  const { listenHost } = resolveNameServerConfig(config);
  const server = await NameServer.start(config, logger);
  return {
    ready: {
      event: 'ready',
      pid: process.pid,
      port: server.port,
      endpoint: formatEndpoint({ host: listenHost, port: server.port }),
    },
    stop: () => server.stop(),
    // A NameServer holds nothing that can fail on its own; it only stops when asked.
    fatal: new Promise<Error>(() => {}),
  };
}

if (require.main === module) {
  runProcess('raftmq-namesrv', NAMESRV_USAGE, () => {
    const args = namesrvArgs(process.argv.slice(2));
    if (args.help) return undefined;
    return { logLevel: args.logLevel, start: (logger) => startNameServer(args.config, logger) };
  });
}
