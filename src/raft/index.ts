/**
 * The Raft core's public surface: the node, its configuration and the data it exchanges with
 * its driver.
 */
export { RaftNode, type RaftStatus } from './raft-node';
export {
  RAFT_TUNABLE_DEFAULTS, resolveRaftConfig, type RaftConfig, type RaftConfigInput,
  type RaftTunables,
} from './config';
export * from './types';
