/*
 * A three-node broker group in this process, on loopback, with real stores under one
 * directory, for tests that need followers: `start()` starts every node (or one again by id),
 * `leader()` waits for the ready leader, `stop()` stops them all. Also `waitFor`, the tests'
 * poll for a condition with a bound.
 */
import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import {
  resolveBrokerNodeConfig,
  type BrokerNodeConfig,
} from '../../src/broker/broker-node-config';
import { BrokerNode } from '../../src/broker/broker-node';
import { freePorts } from '../../src/cli/raft-node-client';
import { silentLogger } from '../../src/common/logger';

export const NODE_IDS = ['n1', 'n2', 'n3'] as const;
const WAIT_MS = 15_000;

/** Polls `done` every 10 ms; fails the test naming `what` after `ms`. */
export async function waitFor(what: string, done: () => boolean, ms = WAIT_MS): Promise<void> {
  const deadlineMs = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadlineMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export class InProcessGroup {
  readonly running = new Map<string, BrokerNode>();

  private constructor(
    private readonly dir: string,
    private readonly peers: Record<string, { raft: string; client: string }>,
    private readonly config: Partial<BrokerNodeConfig>,
  ) {}

  /** Group `g1` of three nodes with data under `dir`; `config` overrides any field. */
  static async start(dir: string, config: Partial<BrokerNodeConfig> = {}): Promise<InProcessGroup> {
    const ports = await freePorts(NODE_IDS.length * 2);
    const peers = Object.fromEntries(
      NODE_IDS.map((id, i) => [
        id,
        { raft: `127.0.0.1:${ports[2 * i]}`, client: `127.0.0.1:${ports[2 * i + 1]}` },
      ]),
    );
    const group = new InProcessGroup(dir, peers, config);
    await Promise.all(NODE_IDS.map((id) => group.startNode(id)));
    return group;
  }

  /** Starts node `id` (again, on its data). */
  async startNode(id: string): Promise<BrokerNode> {
    const config = resolveBrokerNodeConfig({
      group: 'g1',
      nodeId: id,
      peers: this.peers,
      dataDir: path.join(this.dir, id),
      ...this.config,
    });
    const node = await BrokerNode.start(config, silentLogger());
    this.running.set(id, node);
    return node;
  }

  /** The ready leader, once there is one. */
  async leader(): Promise<BrokerNode> {
    let found: BrokerNode | undefined;
    await waitFor('a ready leader', () => {
      found = [...this.running.values()].find((n) => n.broker.roleView().leaderReady);
      return found !== undefined;
    });
    return found as BrokerNode;
  }

  /** The running nodes but `node`. */
  others(node: BrokerNode): BrokerNode[] {
    return [...this.running.values()].filter((n) => n !== node);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.running.values()].map((n) => n.stop()));
    this.running.clear();
  }
}
