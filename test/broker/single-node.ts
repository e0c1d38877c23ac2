/*
 * A one-node broker group on loopback, for tests of the broker and its services: started on the
 * given ports (two free ones by default) and data directory, and returned once it leads and is
 * ready for writes (within 10 s, else it is stopped and the call throws). The caller stops it.
 * Also the message those tests send.
 */
import {
  resolveBrokerNodeConfig,
  type BrokerNodeConfig,
} from '../../src/broker/broker-node-config';
import { BrokerNode } from '../../src/broker/broker-node';
import type { ProduceMessage } from '../../src/broker/broker-types';
import { freePorts } from '../../src/cli/raft-node-client';
import { silentLogger } from '../../src/common/logger';

const LEADER_WAIT_MS = 10_000;

/** Starts group `g1` of the single node `n1`; `config` overrides any other field. */
export async function startSingleNode(
  dir: string,
  config: Partial<BrokerNodeConfig> = {},
  ports?: readonly number[],
): Promise<BrokerNode> {
  const [raft, client] = (ports ?? (await freePorts(2))) as [number, number];
  const resolved = resolveBrokerNodeConfig({
    group: 'g1',
    nodeId: 'n1',
    peers: { n1: { raft: `127.0.0.1:${raft}`, client: `127.0.0.1:${client}` } },
    dataDir: dir,
    ...config,
  });
  const node = await BrokerNode.start(resolved, silentLogger());
  const deadlineMs = Date.now() + LEADER_WAIT_MS;
  while (!node.broker.roleView().leaderReady) {
    if (Date.now() > deadlineMs) {
      await node.stop();
      throw new Error(`no leader within ${LEADER_WAIT_MS} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return node;
}

/**
 * A message to send with `Broker.send`: `body` as its body and in its id (`ID-<body>`), no tag,
 * keys or properties, NORMAL (FIFO when `extra` names a message group); `extra` overrides.
 */
export function produceMessage(
  topic: string,
  body: string,
  extra: Partial<ProduceMessage> = {},
): ProduceMessage {
  return {
    topic,
    body: Buffer.from(body),
    bodyEncoding: 'IDENTITY',
    keys: [],
    userProperties: new Map(),
    messageId: `ID-${body}`,
    bornTimestampMs: Date.now(),
    bornHost: '127.0.0.1:1',
    flags: 0,
    reconsumeCount: 0,
    messageType: extra.messageGroup === undefined ? 'NORMAL' : 'FIFO',
    transactionState: 'NONE',
    ...extra,
  };
}
