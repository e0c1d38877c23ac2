/**
 * `raft-node`: one {@link RaftMember} as its own OS process, driven by its parent over the Node
 * IPC channel (`child_process.fork`). Real-process tests and the Raft benchmarks start three of
 * these on loopback (see `raft-node-client.ts`) and kill them with SIGKILL; SIGTERM, a `stop`
 * command or the parent going away stop it cleanly.
 *
 * Start: `node raft-node.js '<RaftNodeConfig as JSON>'` (or the JSON in `$RAFTMQ_NODE_CONFIG`).
 * The protocol is in `raft-node-protocol.ts`; `main` runs only when this file is the entry.
 */
import { randomFillSync } from 'node:crypto';
import { isRaftmqError, RaftmqError } from '../common/errors';
import { createLogger, type Logger } from '../common/logger';
import { RaftMember } from '../broker/raft-member';
import { EntryType, recordChecksum } from '../store/log-record';
import { runLoad } from './raft-load';
import {
  checkInt,
  ENTRY_SIZE_BYTES_MAX,
  payloadHash,
  wallMs,
  type AckedEntry,
  type ProposeSpec,
  type RaftNodeCommand,
  type RaftNodeCommands,
  type RaftNodeConfig,
  type RaftNodeEvent,
  type RaftNodeReply,
  type RaftNodeRequest,
  type RaftNodeStatus,
} from './raft-node-protocol';

/** Largest `propose` count. */
const PROPOSE_COUNT_MAX = 100_000;
/** Entries per proposal in `propose`, by default and at most. */
const PROPOSE_BATCH_ENTRIES = 64;
const PROPOSE_BATCH_ENTRIES_MAX = 4096;
/** Proposals in flight at once in `propose`, at most. */
const PROPOSE_INFLIGHT_MAX = 256;
/** How long an exiting node waits for its log to drain. */
const EXIT_FLUSH_MS_MAX = 500;
/** Indexes per `appliedChecksums` request. */
const CHECKSUM_INDEXES_MAX = 100_000;

type Handlers = {
  [C in RaftNodeCommand]: (
    args: RaftNodeCommands[C]['args'],
  ) => Promise<RaftNodeCommands[C]['result']>;
};

function statusOf(member: RaftMember): RaftNodeStatus {
  const s = member.status();
  const cpu = process.cpuUsage();
  return {
    id: member.id,
    pid: process.pid,
    role: s.raft.role,
    term: s.raft.term,
    leaderId: s.raft.leaderId,
    commitIndex: s.raft.commitIndex,
    lastIndex: s.raft.lastIndex,
    appliedIndex: s.appliedIndex,
    appliedCount: s.appliedCount,
    digest: s.digest,
    stopped: s.raft.stopped,
    fatal: s.raft.fatal,
    progress: Object.fromEntries(s.raft.progress),
    cpuMs: (cpu.user + cpu.system) / 1000,
    sync: s.sync,
  };
}

/**
 * The `propose` command: `count` distinct random entries, in proposals of `batchEntries`, with
 * `inflightMax` of them in flight at once (their indexes follow the order they were proposed
 * in). Each acknowledged proposal's entries go to `onAcked` at once.
 */
async function proposeDistinct(
  member: RaftMember,
  spec: ProposeSpec,
  onAcked: (entries: AckedEntry[]) => void,
): Promise<RaftNodeCommands['propose']['result']> {
  const count = checkInt(spec.count, 1, PROPOSE_COUNT_MAX, 'count');
  const sizeBytes = checkInt(spec.sizeBytes, 0, ENTRY_SIZE_BYTES_MAX, 'sizeBytes');
  const inflightMax = checkInt(spec.inflightMax ?? 1, 1, PROPOSE_INFLIGHT_MAX, 'inflightMax');
  const batchEntries = checkInt(
    spec.batchEntries ?? PROPOSE_BATCH_ENTRIES,
    1,
    PROPOSE_BATCH_ENTRIES_MAX,
    'batchEntries',
  );
  const acked: AckedEntry[] = [];
  const errors: Record<string, number> = {};
  let proposed = 0;
  const worker = async (): Promise<void> => {
    while (proposed < count) {
      const firstSeq = proposed;
      const payloads: Buffer[] = [];
      for (; proposed < Math.min(count, firstSeq + batchEntries); proposed++) {
        payloads.push(randomFillSync(Buffer.alloc(sizeBytes)));
      }
      try {
        const ack = await member.propose(payloads);
        const entries = payloads.map((payload, i): AckedEntry => {
          const index = ack.firstIndex + i;
          return {
            seq: firstSeq + i,
            index,
            term: ack.term,
            checksum: recordChecksum(index, ack.term, EntryType.NORMAL, payload),
            payloadHash: payloadHash(payload),
          };
        });
        acked.push(...entries);
        onAcked(entries);
      } catch (err) {
        // Reported to the caller, which decides: a failed proposal may or may not be committed.
        const code = isRaftmqError(err) ? err.code : 'UNEXPECTED';
        errors[code] = (errors[code] ?? 0) + payloads.length;
      }
    }
  };
  await Promise.all(Array.from({ length: inflightMax }, worker));
  acked.sort((a, b) => a.seq - b.seq);
  return { acked, errors };
}

function handlersFor(
  member: RaftMember,
  shutdown: () => Promise<void>,
  event: (e: RaftNodeEvent) => void,
): Handlers {
  return {
    status: () => Promise.resolve(statusOf(member)),
    propose: (spec) =>
      proposeDistinct(member, spec, (entries) => {
        if (spec.ackEvents === true) event({ event: 'acked', atMs: wallMs(), entries });
      }),
    load: (spec) => runLoad(member, spec),
    appliedDigest: ({ upTo }) => {
      const digest = member.state.digestUpTo(checkInt(upTo, 0, Number.MAX_SAFE_INTEGER, 'upTo'));
      if (digest === undefined) {
        const applied = member.state.appliedIndex;
        throw new RaftmqError('OUT_OF_RANGE', `upTo ${upTo} not recent (applied ${applied})`);
      }
      return Promise.resolve({ upTo, digest });
    },
    appliedChecksums: ({ indexes }) => {
      if (!Array.isArray(indexes) || indexes.length > CHECKSUM_INDEXES_MAX) {
        throw new RaftmqError('INVALID_ARGUMENT', `indexes: up to ${CHECKSUM_INDEXES_MAX}`);
      }
      const checksums = indexes.map((i) => member.state.checksumAt(i) ?? null);
      return Promise.resolve({ checksums });
    },
    transferLeadership: ({ to }) => {
      member.transferLeadership(to);
      return Promise.resolve({});
    },
    stop: async () => {
      await shutdown();
      return {};
    },
  };
}

function send(message: RaftNodeReply | RaftNodeEvent, log: Logger, then?: () => void): void {
  if (process.send === undefined || !process.connected) {
    then?.();
    return;
  }
  process.send(message, undefined, undefined, (err: Error | null) => {
    // The parent went away: nobody is left to tell, and `disconnect` stops the node.
    if (err !== null) log.debug({ err }, 'ipc send failed');
    then?.();
  });
}

function readConfig(): RaftNodeConfig {
  const text = process.argv[2] ?? process.env.RAFTMQ_NODE_CONFIG;
  if (text === undefined) {
    throw new RaftmqError('INVALID_ARGUMENT', 'config: pass JSON as argv[2] or RAFTMQ_NODE_CONFIG');
  }
  const config = JSON.parse(text) as RaftNodeConfig;
  for (const field of ['id', 'group', 'dataDir'] as const) {
    if (typeof config[field] !== 'string' || config[field].length === 0) {
      throw new RaftmqError('INVALID_ARGUMENT', `config.${field} must be a non-empty string`);
    }
  }
  checkInt(config.listenPort, 0, 65535, 'config.listenPort');
  return config;
}

async function main(): Promise<void> {
  const config = readConfig();
  const logger = createLogger({ name: 'raft-node', level: config.logLevel });
  const log = logger.child({ component: 'raft-node', node: config.id });
  const event = (e: RaftNodeEvent): void => send(e, log);
  const member = await RaftMember.start(config, logger, {
    onSoftState: (s) => event({ event: 'softState', atMs: wallMs(), ...s }),
    onTermCommitted: (term, index) =>
      event({ event: 'termCommitted', atMs: wallMs(), term, index }),
  });
  let exiting = false;
  const exit = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // Give the asynchronous log destination a bounded moment to drain, then go.
    setTimeout(() => process.exit(code), EXIT_FLUSH_MS_MAX);
    logger.flush(() => process.exit(code));
  };
  const shutdown = (): Promise<void> => member.stop();
  void member.stopped.then((err) => {
    if (err === undefined) return;
    log.fatal({ err }, 'raft member stopped on a failure');
    send({ event: 'fatal', atMs: wallMs(), message: err.message }, log, () => exit(1));
  });
  const stopAndExit = (why: string): void => {
    log.info({ why }, 'stopping');
    shutdown().then(
      () => exit(0),
      (err: unknown) => {
        log.fatal({ err }, 'clean stop failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stopAndExit('SIGTERM'));
  process.on('disconnect', () => stopAndExit('parent disconnected'));
  const handlers = handlersFor(member, shutdown, event);
  process.on('message', (raw: unknown) => {
    const request = raw as Partial<RaftNodeRequest> | null;
    if (typeof request !== 'object' || request === null || typeof request.reqId !== 'number') {
      // Only the parent writes to this channel; a malformed message is its bug, not ours.
      log.warn({}, 'ignored a malformed ipc message');
      return;
    }
    const { reqId, cmd } = request;
    const handler =
      typeof cmd === 'string' && Object.prototype.hasOwnProperty.call(handlers, cmd)
        ? (handlers[cmd] as (args: unknown) => Promise<unknown>)
        : undefined;
    const run = async (): Promise<unknown> => {
      if (handler === undefined) {
        throw new RaftmqError('INVALID_ARGUMENT', `unknown command ${String(cmd)}`);
      }
      return handler(request.args ?? {});
    };
    run().then(
      (result) =>
        send({ reqId, ok: true, result }, log, () => {
          if (cmd === 'stop') exit(0);
        }),
      (err: unknown) => {
        const code = isRaftmqError(err) ? err.code : 'UNEXPECTED';
        const message = err instanceof Error ? err.message : String(err);
        log.debug({ err, cmd }, 'command failed');
        send({ reqId, ok: false, error: { code, message } }, log);
      },
    );
  });
  event({ event: 'started', atMs: wallMs(), pid: process.pid, port: member.port });
}

if (require.main === module) {
  main().catch((err: unknown) => {
    // Nothing runs yet that could be left half-done: report and exit non-zero.
    process.stderr.write(`raft-node failed to start: ${String(err)}\n`);
    if (err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  });
}
