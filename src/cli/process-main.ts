/**
 * The life of a raftmq server process (`raftmq-broker`, `raftmq-namesrv`): read the command
 * line, start, announce readiness, stop cleanly on a signal, stop and fail on a fatal error.
 *
 * - A bad command line prints one line naming the flag or field on stderr and exits 2.
 * - Once serving, one JSON line `{"event":"ready",...}` goes to stdout, and the same object
 *   over the IPC channel when the parent opened one (`LocalCluster` does).
 * - SIGTERM, SIGINT or the IPC channel closing (the parent went away, even by kill -9) stop the
 *   server cleanly and exit 0; a second signal while stopping is ignored (Ctrl-C in a terminal
 *   reaches the launcher and its children together, and the launcher then asks again).
 * - A fatal error, a failed start or a stop that fails or outlasts its bound exits 1. A signal
 *   during start-up waits for the start to end, then stops; the bound (30 s) counts from the
 *   signal, so a start that hangs cannot keep the process from exiting.
 */
import * as fs from 'node:fs';
import { format } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { RaftmqError } from '../common/errors';
import { createLogger, type Logger } from '../common/logger';
import { findDuplicateJsonKey } from './json-duplicate-keys';

/** pino's levels, for `--log-level`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * Reads a JSON configuration file holding an object; errors name `--config` and the file. A key
 * given twice in one object, at any depth, is refused with its path (`JSON.parse` would keep the
 * last one silently).
 */
export function readConfigFile(file: string): Record<string, unknown> {
  const fail = (message: string, cause?: unknown): never => {
    throw new RaftmqError('INVALID_OPTION', `--config: ${file} ${message}`, {
      cause,
      details: { option: '--config', file },
    });
  };
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    fail(`cannot be read: ${String(err)}`, err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    fail(`is not JSON: ${String(err)}`, err);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    fail('must hold a JSON object');
  }
  let duplicate: string | undefined;
  try {
    duplicate = findDuplicateJsonKey(text);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err), err);
  }
  if (duplicate !== undefined) fail(`has the key ${duplicate} twice`);
  return parsed as Record<string, unknown>;
}

/**
 * Sends grpc-js's own log lines (it writes `E No address added ...` to stderr by default) into
 * `logger`, as JSON lines like every other: `{"component":"grpc-js","text":...,"msg":"grpc-js
 * log"}`. Its verbosity stays grpc-js's (errors only, unless `GRPC_VERBOSITY` says otherwise).
 */
export function routeGrpcLogs(logger: Logger): void {
  const log = logger.child({ component: 'grpc-js' });
  const line = (message: unknown, params: unknown[]): { text: string } => ({
    text: format(message, ...params),
  });
  grpc.setLogger({
    error: (message: unknown, ...params: unknown[]) =>
      log.error(line(message, params), 'grpc-js log'),
    info: (message: unknown, ...params: unknown[]) =>
      log.info(line(message, params), 'grpc-js log'),
    debug: (message: unknown, ...params: unknown[]) =>
      log.debug(line(message, params), 'grpc-js log'),
  });
}

/** The readiness announcement. */
export interface ReadyEvent {
  readonly event: 'ready';
  readonly pid: number;
  readonly [field: string]: unknown;
}

/** A started server, as the process sees it. */
export interface RunningServer {
  readonly ready: ReadyEvent;
  stop(): Promise<void>;
  /** Settles only if the server fails on its own. */
  readonly fatal: Promise<Error>;
}

/** What to run: built from the command line (undefined: `--help` was answered). */
export interface ProcessPlan {
  readonly logLevel: string | undefined;
  start(logger: Logger): Promise<RunningServer>;
}

/**
 * A clean stop longer than this exits 1 (every stop step is bounded well below it); counted
 * from the first signal, so a start still running then must end and stop within it too.
 */
export const STOP_TIMEOUT_MS = 30_000;
/** How long an exiting process gives its log destination to drain. */
const EXIT_FLUSH_MS_MAX = 500;
const EXIT_USAGE = 2;

/** Options of {@link runProcess}. */
export interface RunProcessOptions {
  /** Bound of a clean stop, counted from the first stop request (default STOP_TIMEOUT_MS). */
  readonly stopTimeoutMs?: number;
}

/** Runs a server process; see the file comment. Never returns an error: it exits. */
export function runProcess(
  name: string,
  usage: string,
  plan: () => ProcessPlan | undefined,
  options: RunProcessOptions = {},
): void {
  const stopTimeoutMs = options.stopTimeoutMs ?? STOP_TIMEOUT_MS;
  let built: ProcessPlan | undefined;
  try {
    built = plan();
  } catch (err) {
    process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.stderr.write(`run ${name} --help for the flags\n`);
    process.exitCode = EXIT_USAGE;
    return;
  }
  if (built === undefined) {
    process.stdout.write(usage);
    return;
  }
  let logger: ReturnType<typeof createLogger>;
  try {
    logger = createLogger({ name, level: built.logLevel });
  } catch (err) {
    // A level pino does not know (RAFTMQ_LOG_LEVEL, --log-level): a usage error, not a crash.
    const source =
      built.logLevel !== undefined
        ? `log level ${JSON.stringify(built.logLevel)}`
        : `RAFTMQ_LOG_LEVEL ${JSON.stringify(process.env.RAFTMQ_LOG_LEVEL)}`;
    const why = err instanceof Error ? err.message : String(err);
    process.stderr.write(
      `${name}: ${source}: ${why} (levels: trace, debug, info, warn, error, fatal)\n`,
    );
    process.exitCode = EXIT_USAGE;
    return;
  }
  const log = logger.child({ component: 'process' });
  routeGrpcLogs(logger);
  let exiting = false;
  const exit = (code: number): void => {
    if (exiting) return;
    exiting = true;
    setTimeout(() => process.exit(code), EXIT_FLUSH_MS_MAX).unref();
    logger.flush(() => process.exit(code));
  };
  let server: RunningServer | undefined;
  let stopping: Promise<void> | undefined;
  let stopWhy: string | undefined;
  // One bound from the first stop request: a start still pending then (a disk that hangs) must
  // finish and stop within it too, or a signal would wait on it for ever.
  let bound: NodeJS.Timeout | undefined;
  const stopAndExit = (why: string, code: number): void => {
    stopWhy ??= why;
    bound ??= setTimeout(() => {
      const msg = server === undefined ? 'start did not end in time after a stop request' : '';
      log.fatal({ timeoutMs: stopTimeoutMs }, msg !== '' ? msg : 'clean stop took too long');
      exit(1);
    }, stopTimeoutMs);
    if (server === undefined) {
      log.info({ why, timeoutMs: stopTimeoutMs }, 'stopping once started');
      return; // started below, then stopped at once
    }
    if (stopping !== undefined) {
      log.info({ why }, 'already stopping');
      return;
    }
    log.info({ why }, 'stopping');
    const stopBound = bound;
    stopping = server.stop().then(
      () => {
        clearTimeout(stopBound);
        exit(code);
      },
      (err: unknown) => {
        clearTimeout(stopBound);
        log.fatal({ err }, 'clean stop failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stopAndExit('SIGTERM', 0));
  process.on('SIGINT', () => stopAndExit('SIGINT', 0));
  if (process.send !== undefined) process.on('disconnect', () => stopAndExit('parent gone', 0));

  built.start(logger).then(
    (started) => {
      server = started;
      process.stdout.write(`${JSON.stringify(started.ready)}\n`);
      if (process.send !== undefined && process.connected) {
        process.send(started.ready, undefined, undefined, (err: Error | null) => {
          // The parent went away: `disconnect` stops the server.
          if (err !== null) log.debug({ err }, 'ready not delivered over ipc');
        });
      }
      void started.fatal.then((err) => {
        log.fatal({ err }, 'stopping on a fatal error');
        stopAndExit('fatal error', 1);
      });
      if (stopWhy !== undefined) stopAndExit(stopWhy, 0);
    },
    (err: unknown) => {
      log.fatal({ err }, 'failed to start');
      exit(1);
    },
  );
}
