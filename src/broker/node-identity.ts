/**
 * Which member of which group a data directory belongs to. A node's data is its Raft log and
 * vote: started as another node, or in another group, it would take part in that group's
 * elections with a history the group never wrote. Raft cannot see the difference when the two
 * histories agree on a term at an index (any two groups' first entries do), and a node started
 * on another group's copy was elected leader and replaced acknowledged entries of its new
 * group with the old group's (a review, 2026-12-04). Nor can Raft see a node started with a
 * different voter set: alone in its own `peers`, a node elected itself and acknowledged writes
 * while the real group, in the same term, acknowledged others.
 *
 * So the first start writes the identity (group, node id, the sorted voter ids) to the
 * metadata, synced, and every later start compares it with the configuration and refuses a
 * mismatch (INVALID_OPTION, naming both). A directory that holds data from before identities
 * were kept is tagged with the configuration as it is, unchecked, and logged. A node rebuilt
 * from a copy of a peer's directory (operations.md, "Data directory") names that peer in
 * `adoptDataFrom` for its next start: the copy is tagged with this node's id (same group and
 * voters), once.
 */
import { RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { getMeta, jsonCodec, MetaKeys, putOp, type MetaStore } from '../store/meta';

/** What a data directory records about the member that wrote it. */
export interface NodeIdentity {
  readonly group: string;
  readonly nodeId: string;
  /** Every voter of the group, sorted. */
  readonly voters: readonly string[];
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

const nodeIdentityCodec = jsonCodec<NodeIdentity>((v) => {
  const o = v as Partial<Record<keyof NodeIdentity, unknown>> | null;
  if (
    o === null ||
    typeof o !== 'object' ||
    typeof o.group !== 'string' ||
    typeof o.nodeId !== 'string' ||
    !isStringList(o.voters)
  ) {
    throw new TypeError('not a node identity');
  }
  return { group: o.group, nodeId: o.nodeId, voters: o.voters };
});

/** The part of a node's configuration its identity is checked against. */
export interface IdentityConfig {
  readonly group: string;
  readonly nodeId: string;
  readonly peers: Readonly<Record<string, unknown>>;
  readonly adoptDataFrom: string | null;
}

function describe(id: NodeIdentity): string {
  return `node ${id.nodeId} of group ${id.group} (voters ${id.voters.join(', ')})`;
}

/**
 * Checks (or records, on a first start) which member `meta`'s data directory belongs to; see
 * the file comment. Throws INVALID_OPTION on a mismatch. Resolves to what was found.
 */
export async function checkNodeIdentity(
  meta: MetaStore,
  config: IdentityConfig,
  log: Logger,
): Promise<'recorded' | 'matched' | 'adopted' | 'tagged existing data'> {
  const key = MetaKeys.nodeIdentity;
  const configured: NodeIdentity = {
    group: config.group,
    nodeId: config.nodeId,
    voters: Object.keys(config.peers).sort(),
  };
  const write = (): Promise<void> =>
    meta.batch([putOp(key, nodeIdentityCodec, configured)], { sync: true });
  const stored = await getMeta(meta, key, nodeIdentityCodec);
  if (stored === undefined) {
    const anyData = (await meta.scan('', { limit: 1 })).length > 0;
    await write();
    if (!anyData) return 'recorded';
    log.warn(
      { identity: configured },
      'data directory from before identities were kept: tagged as this node, unchecked',
    );
    return 'tagged existing data';
  }
  const sameGroup =
    stored.group === configured.group &&
    stored.voters.length === configured.voters.length &&
    stored.voters.every((v, i) => v === configured.voters[i]);
  if (sameGroup && stored.nodeId === configured.nodeId) return 'matched';
  if (sameGroup && config.adoptDataFrom !== null && stored.nodeId === config.adoptDataFrom) {
    await write();
    log.warn(
      { from: stored.nodeId, identity: configured },
      'took over a copy of a peer data directory (adoptDataFrom); remove the option now',
    );
    return 'adopted';
  }
  const why =
    stored.group !== configured.group || stored.nodeId !== configured.nodeId
      ? "it belongs to another member; never start a node on another node's data (a node " +
        "rebuilt from a copy of a peer's directory names that peer in adoptDataFrom)"
      : "the group's members cannot be changed by editing peers";
  throw new RaftmqError(
    'INVALID_OPTION',
    `the data directory was written by ${describe(stored)}, but this is ${describe(configured)}: ${why}`,
    { details: { option: 'dataDir', key } },
  );
}
