// resolveRaftConfig: defaults fill in what is not given, the result is frozen, and each bad
// value is refused with an INVALID_OPTION error that names the offending field.
import { strict as assert } from 'node:assert';
import { isRaftmqError } from '../../src/common/errors';
import { createPrng } from '../../src/common/prng';
import { asNodeId } from '../../src/common/types';
import {
  RAFT_TUNABLE_DEFAULTS, resolveRaftConfig, type RaftConfigInput,
} from '../../src/raft/config';

const base: RaftConfigInput = {
  id: asNodeId('n1'), peers: ['n1', 'n2', 'n3'].map(asNodeId), prng: createPrng(1),
};

function refusal(input: unknown): string {
  try {
    resolveRaftConfig(input as RaftConfigInput);
  } catch (err) {
    assert.ok(isRaftmqError(err, 'INVALID_OPTION'), String(err));
    return String(err.details.option);
  }
  return assert.fail('accepted');
}

describe('raft config', () => {
  it('fills in frozen defaults', () => {
    const config = resolveRaftConfig(base);
    assert.equal(config.electionTimeoutTicks, RAFT_TUNABLE_DEFAULTS.electionTimeoutTicks);
    assert.equal(config.preVote, true);
    assert.equal(config.checkQuorum, true);
    assert.equal(config.preferredLeaderId, null);
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.peers));
    assert.ok(Object.isFrozen(RAFT_TUNABLE_DEFAULTS));
  });

  it('keeps an explicit zero (?? not ||)', () => {
    assert.equal(resolveRaftConfig({ ...base, entryCacheBytesMax: 0 }).entryCacheBytesMax, 0);
  });

  it('names the field of each bad value', () => {
    assert.equal(refusal({ ...base, id: '' }), 'raft.id');
    assert.equal(refusal({ ...base, peers: [] }), 'raft.peers');
    assert.equal(refusal({ ...base, peers: ['n2', 'n3'] }), 'raft.peers');
    assert.equal(refusal({ ...base, peers: ['n1', 'n1'] }), 'raft.peers');
    assert.equal(refusal({ ...base, prng: {} }), 'raft.prng');
    assert.equal(refusal({ ...base, electionTimeoutTicks: 1 }), 'raft.electionTimeoutTicks');
    assert.equal(refusal({ ...base, electionTimeoutTicks: 2.5 }), 'raft.electionTimeoutTicks');
    assert.equal(refusal({ ...base, heartbeatIntervalTicks: 10 }), 'raft.heartbeatIntervalTicks');
    assert.equal(refusal({ ...base, inflightCountMax: 0 }), 'raft.inflightCountMax');
    assert.equal(refusal({ ...base, batchBytesMax: -1 }), 'raft.batchBytesMax');
    assert.equal(refusal({ ...base, preVote: 'yes' }), 'raft.preVote');
    assert.equal(refusal({ ...base, preferredLeaderId: 'n9' }), 'raft.preferredLeaderId');
    assert.equal(refusal({ ...base, electionTimeout: 10 }), 'raft.electionTimeout');
  });
});
