/**
 * The one logger factory. Components take a child with `{ component, group, node }`; messages are
 * constant strings with the facts in the object (`log.info({ term }, 'became leader')`).
 */
import pino from 'pino';

export type Logger = pino.Logger;

export interface LoggerOptions {
  /** pino level name; `RAFTMQ_LOG_LEVEL` overrides the default of `info`. */
  level?: string;
  /** Where to write (a file descriptor); standard output by default. */
  destinationFd?: number;
  /** Name of the process (`broker`, `namesrv`, `cli`). */
  name?: string;
}

/** The root logger of a process. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.RAFTMQ_LOG_LEVEL ?? 'info';
  return pino(
    { level, name: options.name, base: { pid: process.pid } },
    pino.destination({ fd: options.destinationFd ?? 1, sync: false }),
  );
}

/** A logger that drops everything; the default for components built in tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

export interface LogContext {
  component: string;
  group?: string;
  node?: string;
}

/** A child logger carrying the component, group and node of every line. */
export function componentLogger(parent: Logger, context: LogContext): Logger {
  return parent.child(context);
}
