/*
 * BrokerRegistrar against NameServers on 127.0.0.1: a healthy one, a stalled one (accepts
 * calls, never answers) and one not started yet. Checked: a stalled NameServer delays no
 * registration at the others (rounds that waited for every NameServer held a new leader's
 * claim back from the healthy one until the stalled call's deadline); a failed registration
 * is tried again after a short backoff rather than at the next interval (an hour here); the
 * retry options are validated; a stop cancels the Register call in flight and bounds its
 * Unregister call to a second (it waited 3 s for each at a NameServer that never answers).
 * Waits poll a condition with a deadline far below the delays the old behaviour had (the call
 * deadline, the interval); every server and registrar is stopped.
 */
import { strict as assert } from 'node:assert';
import { freePorts } from '../../src/cli/raft-node-client';
import { isRaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import {
  BrokerRegistrar,
  type BrokerRegistrarTuning,
  type NodeRegistration,
  resolveBrokerRegistrarTuning,
} from '../../src/namesrv/namesrv-client';
import type { NameServer } from '../../src/namesrv/namesrv-server';
import {
  HOST,
  registration,
  startHangingNameServer,
  startNameServer,
  waitUntil,
} from './namesrv-harness';

/** Far longer than any wait below: what happens, happens without it. */
const HOUR_MS = 3_600_000;

describe('BrokerRegistrar', () => {
  const cleanups: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    // In reverse: registrars before the servers they talk to.
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function nameServer(port = 0): Promise<NameServer> {
    const server = await startNameServer({ port });
    cleanups.push(() => server.stop());
    return server;
  }

  function registrar(
    ports: number[],
    snapshot: () => NodeRegistration,
    tuning: Partial<BrokerRegistrarTuning>,
  ): BrokerRegistrar {
    const r = new BrokerRegistrar({
      addresses: ports.map((port) => `${HOST}:${port}`),
      snapshot,
      logger: silentLogger(),
      intervalMs: HOUR_MS,
      ...tuning,
    });
    cleanups.push(() => r.stop());
    return r;
  }

  it('reaches a healthy NameServer at once while another one is stalled', async () => {
    const healthy = await nameServer();
    const stalled = await startHangingNameServer();
    let reg = registration({ nodeId: 'n2', role: 'follower', term: 6 });
    const r = registrar([stalled.port, healthy.port], () => reg, { callTimeoutMs: 60_000 });
    // Stopped before the registrar (cleanups run in reverse), which then need not wait out the
    // stalled call.
    cleanups.push(() => stalled.stop());
    const leader = () => healthy.registry.clusterView()[0]?.leaderNodeId;

    r.start();
    await waitUntil(() => healthy.registry.clusterView().length === 1, 'first registration', 5_000);
    assert.equal(leader(), undefined);
    // n2 becomes a ready leader while the stalled call of the first registration is in flight.
    reg = { ...reg, role: 'leader' };
    r.registerNow();
    await waitUntil(() => leader() === 'n2', 'the claim at the healthy NameServer', 5_000);
    const toStalled = r.nameServers()[0];
    const outcomes = [toStalled?.successCount, toStalled?.failureCount];
    assert.deepEqual(outcomes, [0, 0], 'the stalled call is still in flight');
  });

  it('tries a failed registration again soon, not at the next interval', async () => {
    const [port] = (await freePorts(1)) as [number];
    const r = registrar([port], () => registration(), { retryInitialMs: 20, retryMaxMs: 200 });
    r.start();
    // Nothing listens yet: the registration fails, and is tried again and again.
    await waitUntil(() => (r.nameServers()[0]?.failureCount ?? 0) >= 3, 'three failures', 5_000);
    const server = await nameServer(port);
    await waitUntil(
      () => server.registry.clusterView().length === 1,
      'registered once the NameServer is up',
      10_000,
    );
    await waitUntil(() => r.nameServers()[0]?.successCount === 1, 'the success recorded');
    assert.equal(r.nameServers()[0]?.failureStreakCount, 0);
    assert.equal(r.rounds, 1);
  });

  it('stops within about a second while a NameServer takes calls and never answers', async () => {
    const stalled = await startHangingNameServer();
    cleanups.push(() => stalled.stop());
    const r = registrar([stalled.port], () => registration(), { callTimeoutMs: 3_000 });
    r.start();
    await waitUntil(() => stalled.callCount() === 1, 'the Register call in flight', 5_000);
    const startedMs = Date.now();
    await r.stop();
    const stopMs = Date.now() - startedMs;
    // Was 6 s: the Register call's 3 s deadline, then Unregister's 3 s.
    assert.ok(stopMs < 2_000, `stop took ${stopMs} ms`);
    await waitUntil(() => stalled.callCount() === 2, 'the Unregister call tried', 1_000);
    assert.deepEqual([r.nameServers()[0]?.successCount, r.nameServers()[0]?.failureCount], [0, 1]);
  });

  it('validates the retry backoff', () => {
    assert.equal(resolveBrokerRegistrarTuning({}).retryMaxMs, 8_000);
    assert.throws(
      () => resolveBrokerRegistrarTuning({ retryInitialMs: 2_000, retryMaxMs: 1_000 }),
      (e) => isRaftmqError(e, 'INVALID_OPTION') && /retryInitialMs/.test(e.message),
    );
  });
});
