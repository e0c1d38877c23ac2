#!/usr/bin/env node
/**
 * `raftmq`: the admin tool of a broker group, a client of its admin protocol
 * (`proto/admin.proto`, through `AdminClient`).
 *
 *   npm run raftmq -- status [--json]
 *   npm run raftmq -- topic create Orders --queues 8 --endpoint 127.0.0.1:8081
 *
 * The commands and their flags are declared in admin-cli-commands.ts, the command line is read
 * by admin-cli-parse.ts and answers are printed as tables by admin-cli-format.ts.
 * Any node of the group will do as `--endpoint` (followers forward writes to the leader);
 * without it, the first broker of a LocalCluster directory in `./data` (what `npm start`
 * writes) is used.
 *
 * Output: the answer on stdout (a table or a line; `--json` for the answer as JSON). Exit codes:
 * 0 done; 1 the broker refused (one line `error CODE: message` on stderr, CODE from
 * docs/errors.md) or could not be reached; 2 bad usage (the reason, then the usage, on stderr).
 */
import * as path from 'node:path';
import { GrpcStatus, isRaftmqError, RaftmqError } from '../common/errors';
import { AdminClient } from '../broker/admin-client';
import { formatEndpoint, parseEndpoint } from '../broker/broker-node-config';
import {
  callFailure,
  describeGroup,
  describeTopic,
  formatClusterStatus,
  formatGroups,
  formatProgress,
  formatTopics,
} from './admin-cli-format';
import type { AdminCommand } from './admin-cli-commands';
import { commandUsage, parseAdminCommandLine } from './admin-cli-parse';
import { LocalCluster } from './local-cluster';

/** The local cluster directory looked for under the current directory (`npm start`'s). */
export const LOCAL_DATA_DIR = 'data';

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

/** Where the tool writes, and the directory it runs in. */
export interface AdminCliIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly cwd: string;
}

/** An answer: what `--json` prints, and the text printed otherwise. */
interface Answer {
  readonly json: unknown;
  readonly text: string;
}

/** Runs one command line; resolves with the exit code. Only programmer errors reject. */
export async function runAdminCli(argv: readonly string[], io: AdminCliIo): Promise<number> {
  const line = parseAdminCommandLine(argv);
  if (line.kind === 'help') {
    io.out(line.text);
    return EXIT_OK;
  }
  if (line.kind === 'usage-error') {
    io.err(`raftmq: ${line.message}\n\n${line.usage}`);
    return EXIT_USAGE;
  }
  const command = line.command;
  let endpoint: string;
  try {
    endpoint = resolveEndpoint(command.endpoint, io.cwd);
  } catch (err) {
    if (!isRaftmqError(err, 'INVALID_OPTION')) throw err;
    io.err(`raftmq: ${err.message}\n\n${commandUsage(command.name)}`);
    return EXIT_USAGE;
  }
  let client: AdminClient | undefined;
  try {
    client = await AdminClient.connect(endpoint, { timeoutMs: command.timeoutMs });
    const answer = await execute(client, command);
    io.out(`${command.json ? JSON.stringify(answer.json, null, 2) : answer.text}\n`);
    return EXIT_OK;
  } catch (err) {
    if (!isRaftmqError(err)) throw err;
    const where = { endpoint, fromLocalCluster: command.endpoint === undefined };
    io.err(`${describeFailure(err, where, command.timeoutMs, isWrite(command))}\n`);
    return EXIT_FAILED;
  } finally {
    client?.close();
  }
}

/**
 * `--endpoint`, checked, or the client endpoint of the first broker of the local cluster in
 * `<cwd>/data`. Throws INVALID_OPTION naming `--endpoint` when neither is there.
 */
export function resolveEndpoint(given: string | undefined, cwd: string): string {
  if (given !== undefined) return formatEndpoint(parseEndpoint(given, '--endpoint'));
  const dir = path.resolve(cwd, LOCAL_DATA_DIR);
  let layout;
  try {
    layout = LocalCluster.describe(dir);
  } catch (err) {
    throw new RaftmqError(
      'INVALID_OPTION',
      `--endpoint: is required (${dir} cannot be read as a local cluster: ${String(err)})`,
      { cause: err },
    );
  }
  const first = layout === undefined ? undefined : Object.values(layout.peers)[0];
  if (first === undefined) {
    throw new RaftmqError(
      'INVALID_OPTION',
      `--endpoint: is required (there is no local cluster in ${dir})`,
    );
  }
  return first.client;
}

async function execute(client: AdminClient, command: AdminCommand): Promise<Answer> {
  switch (command.name) {
    case 'status': {
      const status = await client.clusterStatus();
      return { json: status, text: formatClusterStatus(status, client.endpoint) };
    }
    case 'topic create': {
      const topic = await client.createTopic(command.topic);
      return { json: topic, text: `created topic ${describeTopic(topic)}` };
    }
    case 'topic update': {
      const topic = await client.updateTopic(command.topic);
      return { json: topic, text: `updated topic ${describeTopic(topic)}` };
    }
    case 'topic delete':
      await client.deleteTopic(command.topicName);
      return deleted('topic', command.topicName);
    case 'topic list': {
      const topics = await client.listTopics();
      return { json: topics, text: formatTopics(topics) };
    }
    case 'group create': {
      const group = await client.createGroup(command.group);
      return { json: group, text: `created consumer group ${describeGroup(group)}` };
    }
    case 'group update': {
      const group = await client.updateGroup(command.group);
      return { json: group, text: `updated consumer group ${describeGroup(group)}` };
    }
    case 'group delete':
      await client.deleteGroup(command.groupName);
      return deleted('group', command.groupName);
    case 'group list': {
      const groups = await client.listGroups();
      return { json: groups, text: formatGroups(groups) };
    }
    case 'group progress': {
      const queues = await client.consumerProgress(command.groupName);
      return { json: queues, text: formatProgress(queues) };
    }
    case 'leader transfer': {
      const leaderId = await client.transferLeadership(command.nodeId);
      return { json: { leaderId }, text: `leader is now ${leaderId}` };
    }
  }
}

/** True for the commands that change the group (they go through the Raft log). */
function isWrite(command: AdminCommand): boolean {
  return !['status', 'topic list', 'group list', 'group progress'].includes(command.name);
}

function deleted(kind: 'topic' | 'group', name: string): Answer {
  const what = kind === 'topic' ? 'topic' : 'consumer group';
  return { json: { [kind]: name, deleted: true }, text: `deleted ${what} ${name}` };
}

/**
 * One line for a failed call. A refusal by the broker is `error CODE: message`. A call that
 * failed on the way (AdminClient puts the gRPC code in `details.grpcCode`) says what that means
 * for the operator: nothing listening, no answer in time, or not a broker's client endpoint.
 */
export function describeFailure(
  err: RaftmqError,
  where: { readonly endpoint: string; readonly fromLocalCluster: boolean },
  timeoutMs: number,
  write: boolean,
): string {
  const endpoint = where.endpoint;
  const grpcCode = err.details.grpcCode;
  const reason = callFailure(err.message);
  switch (grpcCode) {
    case undefined: {
      const leader = err.details.leaderEndpoint;
      const hint =
        err.code === 'NOT_LEADER' && typeof leader === 'string' && !err.message.includes(leader)
          ? ` (leader at ${leader})`
          : '';
      return `error ${err.code}: ${oneLine(err.message)}${hint}`;
    }
    case GrpcStatus.UNAVAILABLE:
      return (
        `error ${err.code}: cannot reach a broker at ${endpoint} (${reason}); ` +
        (where.fromLocalCluster
          ? `it is the first broker of ./${LOCAL_DATA_DIR}: is that cluster running (npm start)?`
          : 'is a broker node running there? --endpoint takes its client endpoint')
      );
    case GrpcStatus.DEADLINE_EXCEEDED:
      return (
        `error ${err.code}: no answer from ${endpoint} within ${timeoutMs} ms (--timeout-ms)` +
        (write ? '; the change may or may not have taken effect' : '')
      );
    case GrpcStatus.UNIMPLEMENTED:
      return (
        `error ${err.code}: ${endpoint} does not serve the raftmq admin protocol; ` +
        '--endpoint takes a broker node client endpoint (not a NameServer or Raft port)'
      );
    default:
      return `error ${err.code}: ${reason}`;
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

if (require.main === module) {
  const io: AdminCliIo = {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    cwd: process.cwd(),
  };
  runAdminCli(process.argv.slice(2), io).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // A programmer error: print all of it and fail.
      process.stderr.write(
        `raftmq: internal error: ${err instanceof Error ? err.stack : String(err)}\n`,
      );
      process.exitCode = EXIT_FAILED;
    },
  );
}
