/**
 * Forwarding writes from a follower to its group's leader (contract pitfall 13). The Node
 * producer isolates an endpoint for good after one failed send, so a node that is not the
 * leader does not refuse a write the client sent it from a stale route: it passes the request
 * on to the leader's client endpoint, within the caller's deadline, with the caller's `x-mq-*`
 * headers (and `authorization`) plus `x-raftmq-forwarded: 1`, and relays the leader's answer.
 * During an election it first waits for a leader. When the leader it knows cannot be reached
 * (it may have just died, before this node noticed), it waits within the deadline for the group
 * to name another leader and tries again (contract pitfall 13: a leader change must not become
 * a failed send). A request that already carries the mark is never forwarded again: it gets
 * NOT_LEADER (HA_NOT_AVAILABLE) naming the leader, so two nodes with stale views cannot bounce
 * a request between them.
 *
 * One cached channel per leader endpoint (at most `forwardChannelsMax`, least recently used
 * closed first); all closed by `close()`.
 */
import * as grpc from '@grpc/grpc-js';
import { isRaftmqError, RaftmqError } from '../common/errors';
import type { Logger } from '../common/logger';
import { FORWARDED_HEADER, isForwarded, type ServiceContext } from './messaging-call';
import { leaderMovedFrom, NOT_SENT_RETRY_MS, notSentByGrpc } from './leader-move';
import { FORWARD_CHANNEL_OPTIONS } from './messaging-options';

/** The RPCs a follower forwards (the writes it cannot do itself). */
export type ForwardedRpc =
  | 'SendMessage'
  | 'UpdateOffset'
  | 'GetOffset'
  | 'QueryRoute'
  | 'ReceiveMessage'
  | 'AckMessage'
  | 'ChangeInvisibleDuration'
  | 'ForwardMessageToDeadLetterQueue';

/** Frames of one forwarded server stream, at most (a receive answers with its batch). */
const STREAM_FRAMES_MAX = 4096;

/** Local attempts of one request: the first, and one more if this node became the leader. */
const LOCAL_ATTEMPTS_MAX = 2;
/** Forwards of one request: to the leader, and to the next ones if it was unreachable. */
const FORWARD_ATTEMPTS_MAX = 3;
/** Such retries of one request, at most (the deadline bounds them too). */
const NOT_SENT_RETRIES_MAX = 30;
/**
 * Waits of one request for a leadership hand-off from this node (a refusal while it runs), at
 * most, each at most TRANSFER_WAIT_MS: a transfer ends within an election timeout, by a new
 * leader or by giving up.
 */
const TRANSFER_WAITS_MAX = 3;
const TRANSFER_WAIT_MS = 1_000;

function forwardedMetadata(incoming: grpc.Metadata): grpc.Metadata {
  const out = new grpc.Metadata();
  for (const key of Object.keys(incoming.getMap())) {
    if (!key.startsWith('x-mq-') && key !== 'authorization') continue;
    for (const value of incoming.get(key)) out.add(key, value);
  }
  out.set(FORWARDED_HEADER, '1');
  return out;
}

/** Client channels to leaders and the forwarded calls over them. */
export class Forwarder {
  private readonly channels = new Map<string, grpc.Client>();
  private closed = false;

  constructor(
    private readonly definition: grpc.ServiceDefinition,
    private readonly channelsMax: number,
    private readonly log: Logger,
  ) {}

  /** Number of cached channels. */
  get channelCount(): number {
    return this.channels.size;
  }

  /**
   * Sends `request` of `rpc` to `endpoint` and resolves to the decoded response. Throws
   * TIMEOUT when no answer came before `deadlineMs`, NOT_LEADER when the leader is
   * unreachable, INTERNAL on any other gRPC failure.
   */
  call(
    endpoint: string,
    rpc: ForwardedRpc,
    request: unknown,
    incoming: grpc.Metadata,
    deadlineMs: number,
  ): Promise<object> {
    const method = this.definition[rpc];
    if (method === undefined) throw new RaftmqError('INTERNAL', `no method ${rpc} in the service`);
    const client = this.channel(endpoint);
    return new Promise<object>((resolve, reject) => {
      client.makeUnaryRequest<unknown, object>(
        method.path,
        method.requestSerialize,
        method.responseDeserialize as (bytes: Buffer) => object,
        request,
        forwardedMetadata(incoming),
        { deadline: deadlineMs },
        (err, response) => {
          if (err === null && response !== undefined) resolve(response);
          else reject(forwardFailure(rpc, endpoint, err));
        },
      );
    });
  }

  /**
   * Forwards a server-streaming call to `endpoint` and collects its frames (at most
   * STREAM_FRAMES_MAX); fails as {@link call} does.
   */
  callStream(
    endpoint: string,
    rpc: ForwardedRpc,
    request: unknown,
    incoming: grpc.Metadata,
    deadlineMs: number,
  ): Promise<object[]> {
    const method = this.definition[rpc];
    if (method === undefined) throw new RaftmqError('INTERNAL', `no method ${rpc} in the service`);
    const client = this.channel(endpoint);
    return new Promise<object[]>((resolve, reject) => {
      const frames: object[] = [];
      const stream = client.makeServerStreamRequest<unknown, object>(
        method.path,
        method.requestSerialize,
        method.responseDeserialize as (bytes: Buffer) => object,
        request,
        forwardedMetadata(incoming),
        { deadline: deadlineMs },
      );
      stream.on('data', (frame: object) => {
        if (frames.length < STREAM_FRAMES_MAX) frames.push(frame);
      });
      stream.on('error', (err: grpc.ServiceError) => reject(forwardFailure(rpc, endpoint, err)));
      stream.on('status', (status: grpc.StatusObject) => {
        if (status.code === grpc.status.OK) resolve(frames);
      });
    });
  }

  /** Closes every channel; later calls fail. */
  close(): void {
    this.closed = true;
    for (const client of this.channels.values()) client.close();
    this.channels.clear();
  }

  private channel(endpoint: string): grpc.Client {
    if (this.closed) throw new RaftmqError('NOT_LEADER', 'the broker is shutting down');
    let client = this.channels.get(endpoint);
    if (client !== undefined) {
      // Most recently used last, so the first entry is the one to evict.
      this.channels.delete(endpoint);
      this.channels.set(endpoint, client);
      return client;
    }
    if (this.channels.size >= this.channelsMax) {
      const [oldest, oldClient] = this.channels.entries().next().value as [string, grpc.Client];
      this.channels.delete(oldest);
      oldClient.close();
    }
    client = new grpc.Client(endpoint, grpc.credentials.createInsecure(), {
      ...FORWARD_CHANNEL_OPTIONS,
    });
    this.channels.set(endpoint, client);
    this.log.info({ endpoint }, 'opened a forwarding channel to the leader');
    return client;
  }
}

function forwardFailure(
  rpc: ForwardedRpc,
  endpoint: string,
  err: grpc.ServiceError | null,
): RaftmqError {
  const notSent = notSentByGrpc(err);
  const details = { leaderEndpoint: endpoint, grpcCode: err?.code, notSent };
  const cause = err ?? undefined;
  switch (err?.code) {
    case grpc.status.DEADLINE_EXCEEDED:
      return new RaftmqError(
        'TIMEOUT',
        `${rpc} forwarded to leader ${endpoint} got no answer before the deadline; it may or ` +
          'may not have taken effect',
        { details, cause },
      );
    case grpc.status.UNAVAILABLE:
    case grpc.status.CANCELLED:
      return new RaftmqError('NOT_LEADER', `leader ${endpoint} is unreachable: ${err.details}`, {
        details,
        cause,
      });
    case grpc.status.RESOURCE_EXHAUSTED:
      return new RaftmqError('BUSY', `leader ${endpoint} refused the request: ${err.details}`, {
        details,
        cause,
      });
    default:
      return new RaftmqError('INTERNAL', `${rpc} forwarded to leader ${endpoint} failed`, {
        details,
        cause,
      });
  }
}

/**
 * Where a request refused with NOT_LEADER should go: the leader's endpoint, `self` when this
 * node became a ready leader meanwhile, or undefined when no leader is known by the deadline.
 */
async function forwardTarget(
  ctx: ServiceContext,
  err: RaftmqError,
  deadlineMs: number,
): Promise<string | undefined> {
  const self = ctx.backend.clientEndpoint;
  const view = ctx.backend.roleView();
  const named = err.details.leaderEndpoint;
  const known =
    typeof named === 'string'
      ? named
      : view.leaderId !== null && view.leaderId !== view.nodeId
        ? view.leaderEndpoint
        : undefined;
  if (known !== undefined && known !== self) return known;
  const waited = await ctx.backend.waitForLeader(deadlineMs - ctx.options.forwardReserveMs);
  if (waited === undefined) return undefined;
  if (waited.leaderId === waited.nodeId) return 'self';
  return waited.leaderEndpoint !== undefined && waited.leaderEndpoint !== self
    ? waited.leaderEndpoint
    : undefined;
}

/** NOT_LEADER for a request this node may not forward (again), naming the leader if known. */
function notForwarded(ctx: ServiceContext, err: RaftmqError, why: string): RaftmqError {
  const view = ctx.backend.roleView();
  const leader =
    view.leaderId === null ? 'unknown' : `${view.leaderId} (${view.leaderEndpoint ?? '?'})`;
  return new RaftmqError(
    'NOT_LEADER',
    `node ${ctx.backend.nodeId} of group ${ctx.backend.groupName} is not the leader and ${why}; ` +
      `leader: ${leader}`,
    {
      details: { ...err.details, leaderId: view.leaderId, leaderEndpoint: view.leaderEndpoint },
      cause: err,
    },
  );
}

/**
 * Settles a forwarded request whose leader died before answering, once a newer term has
 * applied here: the answer, `'resend'` when it certainly did not take effect, or undefined when
 * that cannot be told (see `MessagingBackend.findStoredSend`).
 */
export type InDoubt<T> = (
  sinceTerm: number,
  deadlineMs: number,
) => Promise<T | 'resend' | undefined>;

/**
 * Settles a call proposed here whose leadership was lost before it committed (NOT_LEADER with
 * `maybeCommitted` and the proposal's term): once a newer term has applied here, the answer
 * from the store, or `'resend'` when it certainly was not stored. When that cannot be told in
 * time, TIMEOUT: it may or may not have taken effect.
 */
async function settleLocal<T>(
  ctx: ServiceContext,
  err: RaftmqError,
  deadlineMs: number,
  inDoubt: InDoubt<T> | undefined,
): Promise<T | 'resend'> {
  const term = err.details.term;
  const settled =
    inDoubt === undefined || typeof term !== 'number'
      ? undefined
      : await inDoubt(term, deadlineMs - ctx.options.forwardReserveMs).catch((e: unknown) => {
          ctx.log.warn({ err: e }, 'could not settle a send this node may have stored');
          return undefined;
        });
  if (settled !== undefined) return settled;
  throw new RaftmqError(
    'TIMEOUT',
    `node ${ctx.backend.nodeId} lost its leadership before the request committed, and whether ` +
      'the next leader kept it was not known before the deadline; it may or may not have ' +
      'taken effect',
    { details: { ...err.details }, cause: err },
  );
}

/**
 * Resolves true once a leadership hand-off from this node is over: the group names another
 * leader (or a newer term), or a transfer that did not happen has had its time. False when the
 * call's deadline (less the forward reserve) comes first or the service closes.
 */
async function handOffOver(ctx: ServiceContext, deadlineMs: number): Promise<boolean> {
  const view = ctx.backend.roleView();
  const waitMs = Math.min(
    deadlineMs - ctx.options.forwardReserveMs - ctx.clock.nowMs(),
    TRANSFER_WAIT_MS,
  );
  if (waitMs <= 0) return false;
  await leaderMovedFrom(ctx.backend, view.leaderEndpoint, view.term, waitMs, ctx.closing);
  return !ctx.closing.aborted && ctx.clock.nowMs() < deadlineMs - ctx.options.forwardReserveMs;
}

/**
 * Runs `local`; when it throws NOT_LEADER, forwards the call's request to the leader (or runs
 * `local` once more if this node has become the leader) and resolves to the leader's response.
 * A forward to an unreachable leader is tried again once the group names another one. A local
 * refusal during a leadership hand-off waits for it; a send this node proposed and then lost
 * the leadership over is settled from the store before anything runs again (`inDoubt`).
 */
async function runOrForwardWith<T>(
  ctx: ServiceContext,
  call: { readonly request: unknown; readonly metadata: grpc.Metadata },
  rpc: ForwardedRpc,
  deadlineMs: number,
  local: () => Promise<T>,
  remote: (target: string, deadlineMs: number) => Promise<T>,
  inDoubt?: InDoubt<T>,
): Promise<T> {
  let localAttempts = 0;
  let forwards = 0;
  let notSentRetries = 0;
  let transferWaits = 0;
  for (;;) {
    let err: RaftmqError;
    try {
      localAttempts++;
      return await local();
    } catch (localErr) {
      if (
        isRaftmqError(localErr, 'BUSY') &&
        localErr.details.transferring === true &&
        transferWaits < TRANSFER_WAITS_MAX
      ) {
        // Refused, not proposed: this leader is handing over. Wait for the hand-off (or its end)
        // and run it again, here or on the new leader, instead of failing the call.
        transferWaits++;
        localAttempts--;
        if (!(await handOffOver(ctx, deadlineMs))) throw localErr;
        continue;
      }
      if (!isRaftmqError(localErr, 'NOT_LEADER')) throw localErr;
      err = localErr;
    }
    if (err.details.maybeCommitted === true && rpc === 'SendMessage') {
      // Proposed here, then leadership was lost before it committed: the entry may still
      // commit under the next leader. Running it again (here or there) blindly could store it
      // twice behind one acknowledgement; as with a forward in doubt, the store tells.
      const settled = await settleLocal(ctx, err, deadlineMs, inDoubt);
      if (settled !== 'resend') return settled;
    }
    const target = await forwardTarget(ctx, err, deadlineMs);
    // This node is (now) the ready leader: run it here, also when it was forwarded here by a
    // node that knew of the election first (once more after each leader found unreachable).
    if (target === 'self' && localAttempts < LOCAL_ATTEMPTS_MAX + forwards) continue;
    if (isForwarded(call.metadata)) {
      throw notForwarded(ctx, err, 'the request was already forwarded once');
    }
    if (target === 'self') {
      throw notForwarded(ctx, err, 'became the leader but refused it again');
    }
    if (target === undefined) {
      throw notForwarded(ctx, err, 'no leader became known before the deadline');
    }
    ctx.log.debug({ rpc, leaderEndpoint: target }, 'forwarding to the leader');
    forwards++;
    const forwardDeadlineMs = deadlineMs - ctx.options.forwardReserveMs;
    const forwardTerm = ctx.backend.roleView().term;
    try {
      return await remote(target, forwardDeadlineMs);
    } catch (forwardErr) {
      // Unreachable: the request may or may not have reached it, as with any lost answer. The
      // other forwarded RPCs are idempotent and go to the next leader again. A send that may
      // have reached it is not sent again blindly (the old leader may have stored it, and a
      // second copy would follow one acknowledgement): once a newer term has applied here,
      // `inDoubt` tells from the store whether it was stored (answered from there) or not
      // (sent again); without `inDoubt`, or when it cannot tell, the send fails.
      if (
        !isRaftmqError(forwardErr, 'NOT_LEADER') ||
        forwardErr.details.leaderEndpoint !== target
      ) {
        throw forwardErr;
      }
      if (forwardErr.details.notSent === true && notSentRetries < NOT_SENT_RETRIES_MAX) {
        // Nothing reached it, so nothing is in doubt; it does not count toward the bound.
        notSentRetries++;
        const waitMs = Math.min(forwardDeadlineMs - ctx.clock.nowMs(), NOT_SENT_RETRY_MS);
        await leaderMovedFrom(ctx.backend, target, forwardTerm, waitMs, ctx.closing);
        if (ctx.clock.nowMs() >= forwardDeadlineMs || ctx.closing.aborted) throw forwardErr;
        ctx.log.debug({ rpc, leaderEndpoint: target }, 'leader not connected; trying again');
        continue;
      }
      if (forwards - notSentRetries >= FORWARD_ATTEMPTS_MAX) throw forwardErr;
      const mayHaveTakenEffect = rpc === 'SendMessage' && forwardErr.details.notSent !== true;
      if (mayHaveTakenEffect && inDoubt === undefined) throw forwardErr;
      const moved = await leaderMovedFrom(
        ctx.backend,
        target,
        forwardTerm,
        forwardDeadlineMs - ctx.clock.nowMs(),
        ctx.closing,
      );
      if (!moved) throw forwardErr;
      if (mayHaveTakenEffect && inDoubt !== undefined) {
        const settled = await inDoubt(forwardTerm, forwardDeadlineMs).catch((err: unknown) => {
          ctx.log.warn({ err, rpc }, 'could not settle a request the old leader may have taken');
          return undefined;
        });
        if (settled === undefined) throw forwardErr;
        if (settled !== 'resend') {
          ctx.log.debug({ rpc, leaderEndpoint: target }, 'the old leader had stored it; answered');
          return settled;
        }
      }
      ctx.log.debug({ rpc, leaderEndpoint: target }, 'leader unreachable; trying the new one');
    }
  }
}

/**
 * Runs `local`; when it throws NOT_LEADER, forwards the call's request to the leader (or runs
 * `local` once more if this node has become the leader) and resolves to the leader's response.
 * A forward to an unreachable leader is tried again once the group names another one.
 */
export function runOrForward(
  ctx: ServiceContext,
  call: { readonly request: unknown; readonly metadata: grpc.Metadata },
  rpc: ForwardedRpc,
  deadlineMs: number,
  local: () => Promise<object>,
  inDoubt?: InDoubt<object>,
): Promise<object> {
  return runOrForwardWith(
    ctx,
    call,
    rpc,
    deadlineMs,
    local,
    (target, forwardDeadlineMs) =>
      ctx.forwarder.call(target, rpc, call.request, call.metadata, forwardDeadlineMs),
    inDoubt,
  );
}

/** {@link runOrForward} for a server-streaming RPC: resolves to every frame of the answer. */
export function runOrForwardStream(
  ctx: ServiceContext,
  call: { readonly request: unknown; readonly metadata: grpc.Metadata },
  rpc: ForwardedRpc,
  deadlineMs: number,
  local: () => Promise<object[]>,
): Promise<object[]> {
  return runOrForwardWith(ctx, call, rpc, deadlineMs, local, (target, forwardDeadlineMs) =>
    ctx.forwarder.callStream(target, rpc, call.request, call.metadata, forwardDeadlineMs),
  );
}
