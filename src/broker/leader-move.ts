/**
 * What the two forwarders to the leader (a follower's client RPCs, messaging-forward.ts, and its
 * admin writes, admin-service.ts) share when a forward fails: telling a call grpc-js never sent
 * from one that may have reached the leader, and waiting for this node's view to move on from
 * the leader it forwarded to.
 */
import * as grpc from '@grpc/grpc-js';
import type { RoleView } from './broker-types';

/**
 * A forward that certainly was not sent (no connection) to the leader this node still names is
 * tried again after this long, or at once when another leader is named: the leader may well be
 * alive, with this node's channel to it waiting out a reconnect backoff (it was down before).
 */
export const NOT_SENT_RETRY_MS = 100;

/** True for a call grpc-js failed without sending it: it never got a connection. */
export function notSentByGrpc(err: unknown): boolean {
  const e = err as { code?: unknown; details?: unknown } | null | undefined;
  return (
    e?.code === grpc.status.UNAVAILABLE &&
    typeof e.details === 'string' &&
    e.details.startsWith('No connection established')
  );
}

/** Where a forwarder learns who leads. */
export interface LeaderViews {
  roleView(): RoleView;
  /** Calls `listener` on every role or leader change; returns its remover. */
  onRoleChange?(listener: () => void): () => void;
}

/**
 * Resolves true once `views` has moved on from the leader at `endpoint` of term `term`: it names
 * another endpoint, or none (an election is on; what runs next waits for its outcome), or a
 * newer term (the old leader restarted and won again at the same address). Resolves false if
 * that did not happen within `waitMs`, when `signal` aborts, or when `views` cannot report role
 * changes.
 */
export function leaderMovedFrom(
  views: LeaderViews,
  endpoint: string | undefined,
  term: number,
  waitMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const moved = (): boolean => {
    const view = views.roleView();
    return view.leaderEndpoint !== endpoint || view.term > term;
  };
  if (moved()) return Promise.resolve(true);
  if (views.onRoleChange === undefined || waitMs <= 0 || signal?.aborted === true) {
    return Promise.resolve(false);
  }
  const onRoleChange = views.onRoleChange.bind(views);
  return new Promise((resolve) => {
    let settled = false;
    const subscription: { remove?: () => void } = {};
    const done = (result: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      subscription.remove?.();
      signal?.removeEventListener('abort', onAbort);
      resolve(result);
    };
    const onAbort = (): void => done(false);
    const timer = setTimeout(() => done(false), waitMs);
    timer.unref();
    signal?.addEventListener('abort', onAbort);
    subscription.remove = onRoleChange(() => {
      if (moved()) done(true);
    });
    // A listener that fired while being registered settled before `remove` existed.
    if (settled) subscription.remove();
  });
}
