/**
 * The data directory's identity (src/broker/node-identity.ts): recorded at the first start,
 * checked at every later one. A node started on another member's data, in another group or
 * with other voters is refused before it opens anything else; a copy of a peer's directory is
 * taken over only when the configuration names that peer.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkNodeIdentity, type IdentityConfig } from '../../src/broker/node-identity';
import { isRaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import { MemMetaStore } from '../../src/store/mem-meta-store';
import { startSingleNode } from './single-node';

const PEERS = { n1: {}, n2: {}, n3: {} };

function member(overrides: Partial<IdentityConfig> = {}): IdentityConfig {
  return { group: 'g1', nodeId: 'n1', peers: PEERS, adoptDataFrom: null, ...overrides };
}

function refused(reason: RegExp): (err: unknown) => boolean {
  return (err) =>
    isRaftmqError(err, 'INVALID_OPTION') &&
    err.details.option === 'dataDir' &&
    reason.test(err.message);
}

describe('data directory identity', () => {
  const log = silentLogger();

  it('records the identity at the first start and matches it later', async () => {
    const meta = new MemMetaStore();
    assert.equal(await checkNodeIdentity(meta, member(), log), 'recorded');
    assert.equal(await checkNodeIdentity(meta, member(), log), 'matched');
  });

  it('refuses another node, another group and other voters, naming both sides', async () => {
    const meta = new MemMetaStore();
    await checkNodeIdentity(meta, member(), log);
    await assert.rejects(
      checkNodeIdentity(meta, member({ nodeId: 'n2' }), log),
      refused(/written by node n1 of group g1 .*this is node n2 of group g1.*another member/),
    );
    await assert.rejects(
      checkNodeIdentity(meta, member({ group: 'g2' }), log),
      refused(/written by node n1 of group g1.*this is node n1 of group g2/),
    );
    await assert.rejects(
      checkNodeIdentity(meta, member({ peers: { n1: {} } }), log),
      refused(/voters n1, n2, n3.*\(voters n1\).*members cannot be changed/),
    );
    await assert.rejects(
      checkNodeIdentity(meta, member({ peers: { ...PEERS, n4: {} } }), log),
      refused(/members cannot be changed/),
    );
    assert.equal(await checkNodeIdentity(meta, member(), log), 'matched', 'nothing was rewritten');
  });

  it('takes over a copy of the peer named in adoptDataFrom, and only that peer', async () => {
    const meta = new MemMetaStore();
    await checkNodeIdentity(meta, member({ nodeId: 'n2' }), log);
    await assert.rejects(
      checkNodeIdentity(meta, member({ adoptDataFrom: 'n3' }), log),
      refused(/another member/),
    );
    await assert.rejects(
      checkNodeIdentity(meta, member({ group: 'g2', adoptDataFrom: 'n2' }), log),
      refused(/group g1/),
    );
    assert.equal(await checkNodeIdentity(meta, member({ adoptDataFrom: 'n2' }), log), 'adopted');
    assert.equal(await checkNodeIdentity(meta, member({ adoptDataFrom: 'n2' }), log), 'matched');
    assert.equal(await checkNodeIdentity(meta, member(), log), 'matched');
  });

  it('tags data from before identities were kept as the configured node', async () => {
    const meta = new MemMetaStore();
    await meta.batch([{ type: 'put', key: 't\0SomeTopic', value: Buffer.from('{}') }], {
      sync: true,
    });
    assert.equal(await checkNodeIdentity(meta, member(), log), 'tagged existing data');
    await assert.rejects(checkNodeIdentity(meta, member({ nodeId: 'n2' }), log), refused(/n1/));
  });

  it('refuses to start a broker on a data directory another group wrote', async function () {
    this.timeout(60_000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'raftmq-identity-'));
    try {
      const first = await startSingleNode(dir, { group: 'groupA' });
      await first.stop();
      await assert.rejects(startSingleNode(dir, { group: 'groupB' }), refused(/group groupA/));
      // Refused before anything was opened for good: the right group still starts on it.
      const again = await startSingleNode(dir, { group: 'groupA' });
      await again.stop();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
