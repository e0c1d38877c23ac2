/**
 * How the `raftmq` admin tool prints answers for people: aligned tables with a header row and
 * one-line confirmations. (`--json` prints the answers themselves; see raftmq.ts.)
 */
import type { ClusterStatus } from '../broker/admin-client';
import type { GroupConfig, NodeStatus, TopicConfig } from '../broker/broker-types';
import type { ConsumerProgress } from '../broker/pop-service';

/** Space between two columns. */
const COLUMN_GAP = '  ';

/** `rows` under `header`, each column as wide as its widest cell; trailing spaces trimmed. */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const all = [header, ...rows];
  const widths = header.map((_h, col) => Math.max(...all.map((row) => (row[col] ?? '').length)));
  return all
    .map((row) =>
      row
        .map((cell, col) => cell.padEnd(widths[col] ?? 0))
        .join(COLUMN_GAP)
        .trimEnd(),
    )
    .join('\n');
}

/** "mean/longest" of `count` rounds in ms, to the same digits ("-" before the first). */
function meanMaxCell(count: number, totalMs: number, maxMs: number): string {
  if (count === 0) return '-';
  const mean = totalMs / count;
  const digits = mean < 10 ? 2 : 1;
  return `${mean.toFixed(digits)}/${maxMs.toFixed(digits)}`;
}

/** Slow rounds, and "/" the slow ones of those the disk's calls took when they were timed. */
function slowCell(s: NodeStatus): string {
  return s.timedSyncs === 0 ? String(s.slowSyncs) : `${s.slowSyncs}/${s.slowSyncCalls}`;
}

/**
 * A group's status: a summary line, one row per configured node (FSYNC-MS: the mean and longest
 * CommitLog sync round since the node started; DISK-MS: the same of the rounds' fdatasync calls
 * alone, where the node times them; SLOW: rounds of 10 ms or longer, and "/" how many of them
 * the calls alone took that long: the rest waited for a CPU), then one line per node that could
 * not be reached or stopped on a fatal error.
 */
export function formatClusterStatus(status: ClusterStatus, endpoint: string): string {
  const leader =
    status.leaderId === null ? 'no leader' : `leader ${status.leaderId} in term ${status.term}`;
  const head = `group ${status.group}: ${leader} (answered by ${status.answeredBy} at ${endpoint})`;
  const header = [
    'NODE',
    'ROLE',
    'TERM',
    'LEADER',
    'LAST',
    'COMMIT',
    'APPLIED',
    'TOPICS',
    'FSYNC-MS',
    'DISK-MS',
    'SLOW',
  ];
  const rows = status.members.map((m) => {
    const s = m.status;
    const cells =
      s === null
        ? ['unreachable', '-', '-', '-', '-', '-', '-', '-', '-', '-']
        : [
            s.role,
            String(s.term),
            s.leaderId ?? '-',
            String(s.lastIndex),
            String(s.commitIndex),
            String(s.appliedIndex),
            String(s.topicCount),
            meanMaxCell(s.syncCount, s.syncMsTotal, s.syncMsMax),
            meanMaxCell(s.timedSyncs, s.syncCallMsTotal, s.syncCallMsMax),
            slowCell(s),
          ];
    return [m.nodeId, ...cells, m.clientEndpoint, m.raftEndpoint];
  });
  const notes = status.members.flatMap((m) => {
    if (m.status === null)
      return [`${m.nodeId}: unreachable: ${callFailure(m.error ?? 'no answer')}`];
    return m.status.fatal === null
      ? []
      : [`${m.nodeId}: stopped on a fatal error: ${m.status.fatal}`];
  });
  const table = formatTable([...header, 'CLIENT', 'RAFT'], rows);
  return [head, '', table, ...(notes.length === 0 ? [] : ['', ...notes])].join('\n');
}

/** One topic on one line. */
export function describeTopic(t: TopicConfig): string {
  const queues = `${t.queueCount} queue${t.queueCount === 1 ? '' : 's'}`;
  return `${t.name}: ${queues}, ${t.perm}, types ${t.messageTypes.join(',')}`;
}

/** One consumer group on one line. */
export function describeGroup(g: GroupConfig): string {
  return `${g.name}: max delivery attempts ${g.maxDeliveryAttempts}, fifo ${g.fifo}`;
}

export function formatTopics(topics: readonly TopicConfig[]): string {
  if (topics.length === 0) return 'no topics';
  return formatTable(
    ['NAME', 'QUEUES', 'PERM', 'TYPES'],
    topics.map((t) => [t.name, String(t.queueCount), t.perm, t.messageTypes.join(',')]),
  );
}

export function formatGroups(groups: readonly GroupConfig[]): string {
  if (groups.length === 0) return 'no consumer groups';
  return formatTable(
    ['NAME', 'MAX-DELIVERY-ATTEMPTS', 'FIFO'],
    groups.map((g) => [g.name, String(g.maxDeliveryAttempts), String(g.fifo)]),
  );
}

export function formatProgress(queues: readonly ConsumerProgress[]): string {
  if (queues.length === 0) return 'no consumer group has received from this broker group';
  return formatTable(
    ['GROUP', 'TOPIC', 'QUEUE', 'BROKER-OFFSET', 'ACKED', 'CURSOR', 'IN-FLIGHT', 'LAG'],
    queues.map((q) => [
      q.group,
      q.topic,
      String(q.queueId),
      String(q.brokerOffset),
      String(q.ackedFrontier),
      String(q.cursor),
      String(q.inflightCount),
      String(q.lag),
    ]),
  );
}

/**
 * The reason in the message of a failed call, without the AdminClient's prefix
 * (`NodeStatus at host:port failed: `), grpc-js's noise and line breaks.
 */
export function callFailure(message: string): string {
  return message
    .replace(/^\w+ at \S+ failed: /, '')
    .replace(/\s*Resolution note:.*$/s, '')
    .replace(/Error: /g, '')
    .replace(/\s*\n\s*/g, ' ')
    .replace(/\.$/, '')
    .trim();
}
