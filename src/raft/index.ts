/**
 * The Raft core's public surface: the node, its configuration and the data it exchanges with
 * its driver.
 */
import * as config from './config';
import * as node from './raft-node';

export type { RaftStatus } from './raft-node';
export type { RaftConfig, RaftConfigInput, RaftTunables } from './config';
export * from './types';

// Constants, not `export { ... } from`: see test/common/module-shape.test.ts.
export const RaftNode = node.RaftNode;
export type RaftNode = node.RaftNode;
export const RAFT_TUNABLE_DEFAULTS = config.RAFT_TUNABLE_DEFAULTS;
export const resolveRaftConfig = config.resolveRaftConfig;
