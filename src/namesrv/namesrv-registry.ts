/**
 * The NameServer's state: the pure {@link RouteTable} plus what nodes report besides their
 * route (Raft progress, topic auto-creation), kept beside the table in step with it: an
 * entry is written only when the table accepts the registration (not for `stale-term`) and
 * removed whenever the table drops the node, so it never outgrows the table's bounds.
 *
 * Auto-creation: RocketMQ brokers with `autoCreateTopicEnable` create a topic on its first
 * send. A route for an unknown topic is therefore answered, when some group registered with
 * `autoCreateTopics`, over those groups, each with its `defaultQueueCount` queues accepting
 * the types brokers serve; the first send creates the topic on the group's leader, whose next
 * registration makes the route real.
 */
import type { Clock } from '../common/clock';
import {
  type DroppedNode,
  type GroupRoute,
  type GroupView,
  type NodeRef,
  type RegisterResult,
  RouteTable,
  type RouteTableOptions,
  type TopicRoute,
} from './route-table';
import type { NodeRegistration, RegistrationExtras } from './namesrv-wire';

/**
 * The message types an auto-created topic accepts: what a raftmq broker creates, the types it
 * serves. Not DELAY or TRANSACTION, which brokers refuse at send for now: a route must not
 * advertise a type whose sends fail (src/broker/served-message-types.ts).
 */
export const AUTO_CREATE_MESSAGE_TYPES: readonly string[] = Object.freeze(['NORMAL', 'FIFO']);

/** A RouteTable with each node's extras; times come from the injected clock. */
export class RouteRegistry {
  readonly table: RouteTable;
  /** group -> nodeId -> extras; holds only nodes the table holds. */
  private readonly extras = new Map<string, Map<string, RegistrationExtras>>();

  constructor(
    options: Partial<RouteTableOptions> | undefined,
    private readonly clock: Clock,
  ) {
    this.table = new RouteTable(options);
  }

  /** Registers `reg` (see RouteTable.register); throws INVALID_ARGUMENT or BUSY. */
  register(reg: NodeRegistration): RegisterResult {
    const result = this.table.register(reg, this.clock.monotonicMs());
    if (result.outcome !== 'stale-term') {
      const extras: RegistrationExtras = {
        ...(reg.stats === undefined ? {} : { stats: reg.stats }),
        ...(reg.autoCreateTopics === true
          ? { autoCreateTopics: true, defaultQueueCount: reg.defaultQueueCount }
          : {}),
      };
      let nodes = this.extras.get(reg.group);
      if (nodes === undefined) {
        nodes = new Map();
        this.extras.set(reg.group, nodes);
      }
      nodes.set(reg.nodeId, extras);
    }
    return result;
  }

  /** Removes a node; undefined when unknown. */
  unregister(group: string, nodeId: string): DroppedNode | undefined {
    const dropped = this.table.unregister(group, nodeId);
    if (dropped !== undefined) this.forget(group, nodeId);
    return dropped;
  }

  /** Drops every node silent for longer than `brokerExpiryMs`. */
  expire(): DroppedNode[] {
    const dropped = this.table.expire(this.clock.monotonicMs());
    for (const node of dropped) this.forget(node.group, node.nodeId);
    return dropped;
  }

  /** The route of `topic` as registered; undefined when no group hosts it. */
  route(topic: string): TopicRoute | undefined {
    return this.table.route(topic);
  }

  /**
   * The route of a topic no group hosts, over the groups that auto-create topics; undefined
   * when there are none. Call only after {@link route} found nothing (it validates the name).
   */
  autoCreateRoute(topic: string): TopicRoute | undefined {
    const groups: GroupRoute[] = [];
    for (const view of this.table.clusterView()) {
      const queueCount = this.autoCreateQueueCount(view);
      if (queueCount === undefined) continue;
      let leader: NodeRef | undefined;
      const followers: NodeRef[] = [];
      for (const node of view.nodes) {
        const ref = { nodeId: node.nodeId, endpoint: node.endpoint, term: node.term };
        if (node.isLeader) leader = ref;
        else followers.push(ref);
      }
      const queues = Array.from({ length: queueCount }, (_, queueId) => ({
        queueId,
        perm: 'READ_WRITE' as const,
        messageTypes: AUTO_CREATE_MESSAGE_TYPES,
      }));
      groups.push({
        cluster: view.cluster,
        group: view.group,
        leader,
        writable: leader !== undefined,
        leaderless: leader === undefined,
        followers,
        queues,
      });
    }
    return groups.length === 0 ? undefined : { topic, groups };
  }

  /** Every group with its nodes (see RouteTable.clusterView). */
  clusterView(): GroupView[] {
    return this.table.clusterView();
  }

  /** What `nodeId` of `group` last reported besides its route. */
  extrasOf(group: string, nodeId: string): RegistrationExtras | undefined {
    return this.extras.get(group)?.get(nodeId);
  }

  /**
   * The group's auto-creation queue count: its leader's setting (the leader holds the group's
   * current configuration), or any node's while the group is leaderless.
   */
  private autoCreateQueueCount(view: GroupView): number | undefined {
    const leader = view.nodes.find((n) => n.isLeader);
    for (const node of leader === undefined ? view.nodes : [leader]) {
      const extras = this.extrasOf(view.group, node.nodeId);
      if (extras?.autoCreateTopics === true && extras.defaultQueueCount !== undefined) {
        return extras.defaultQueueCount;
      }
    }
    return undefined;
  }

  private forget(group: string, nodeId: string): void {
    const nodes = this.extras.get(group);
    nodes?.delete(nodeId);
    if (nodes?.size === 0) this.extras.delete(group);
  }
}
