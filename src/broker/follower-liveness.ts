/**
 * Which followers the leader has heard from lately, for routes. A route lists a group's
 * followers beside its leader (a client sends through a follower when the leader it knew has
 * died; the follower forwards): a follower that is down must leave the routes quickly, or
 * clients keep sending to it (the official clients send a FIFO message group to one queue, and
 * one hashed onto a dead follower fails every attempt) and their shutdown fails notifying it.
 *
 * The Raft core says, per follower, whether it was heard from since the last CheckQuorum round
 * (`recentActive`, cleared every election timeout). Sampled often, that gives each follower's
 * last-heard time; a follower is live while it was heard within `windowMs` (two election
 * timeouts: a round's clearing never drops a live one). A node that starts leading counts every
 * follower live from that moment, so a new leader lists them all until the window shows who
 * answers. Not leading: nothing is reported.
 */
import type { FollowerProgress } from '../raft/raft-node';

export class FollowerLiveness {
  private readonly lastHeardMs = new Map<string, number>();
  private leadingTerm: number | undefined;
  private live: readonly string[] | undefined;

  constructor(private readonly windowMs: number) {}

  /**
   * The sorted ids of the live followers while this node is the ready leader; undefined
   * otherwise (as of the last sample).
   */
  get liveFollowers(): readonly string[] | undefined {
    return this.live;
  }

  /**
   * Takes a sample of the driver's view at `nowMs` (`progress` is the leader's per-follower
   * state; `term` undefined when this node is not the ready leader). True when the live set
   * changed.
   */
  sample(
    term: number | undefined,
    progress: ReadonlyMap<string, FollowerProgress>,
    nowMs: number,
  ): boolean {
    let live: readonly string[] | undefined;
    if (term === undefined) {
      this.leadingTerm = undefined;
      this.lastHeardMs.clear();
    } else {
      if (this.leadingTerm !== term) {
        this.leadingTerm = term;
        this.lastHeardMs.clear();
        for (const id of progress.keys()) this.lastHeardMs.set(id, nowMs);
      }
      const ids: string[] = [];
      for (const [id, p] of progress) {
        if (p.recentActive) this.lastHeardMs.set(id, nowMs);
        if (nowMs - (this.lastHeardMs.get(id) ?? nowMs) <= this.windowMs) ids.push(id);
      }
      live = ids.sort();
    }
    const changed = !sameIds(live, this.live);
    this.live = live;
    return changed;
  }
}

function sameIds(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((id, i) => id === b[i]);
}
