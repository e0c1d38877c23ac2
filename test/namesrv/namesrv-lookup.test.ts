/*
 * NameServerLookup, which a broker used as access point asks for other groups' routes, against
 * real NameServers on 127.0.0.1 whose tables the test fills directly. It took the first
 * NameServer that knew the topic, so a NameServer that missed a failover served the dead
 * leader, and one restarted a moment ago served a route without the groups it had not heard
 * from yet. Now every NameServer is asked and the answers are merged group by group (the
 * newest term wins); a stalled NameServer delays a lookup by `answerGraceMs`, not by the call
 * deadline. Every server and lookup is stopped by its test.
 */
import { strict as assert } from 'node:assert';
import { isRaftmqError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/logger';
import { NameServerLookup, type NameServerLookupOptions } from '../../src/namesrv/namesrv-lookup';
import type { NameServer } from '../../src/namesrv/namesrv-server';
import type { TopicRoute } from '../../src/namesrv/route-types';
import { HOST, registration, startHangingNameServer, startNameServer } from './namesrv-harness';

/** Each group of `route` as `group: leader@term`. */
function show(route: TopicRoute | undefined): string[] {
  return (route?.groups ?? []).map((g) => `${g.group}: ${g.leader?.nodeId}@${g.leader?.term}`);
}

describe('NameServerLookup', () => {
  const servers: NameServer[] = [];
  const stops: (() => void)[] = [];
  let lookup: NameServerLookup | undefined;

  afterEach(async () => {
    lookup?.close();
    lookup = undefined;
    for (const stop of stops.splice(0)) stop();
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  async function twoNameServers(): Promise<[NameServer, NameServer]> {
    const a = await startNameServer();
    const b = await startNameServer();
    servers.push(a, b);
    return [a, b];
  }

  function lookupOf(ports: number[], options: Partial<NameServerLookupOptions> = {}) {
    const addresses = ports.map((port) => `${HOST}:${port}`);
    lookup = new NameServerLookup(addresses, silentLogger(), { cacheTtlMs: 0, ...options });
    return lookup;
  }

  it('serves the newest leader of a group whichever NameServer answers first', async () => {
    const [a, b] = await twoNameServers();
    const n2 = { nodeId: 'n2', endpoint: '127.0.0.1:8082' };
    // A missed the failover: its n1 still leads in term 5. B has n2 leading in term 6.
    a.registry.register(registration({ nodeId: 'n1', term: 5 }));
    a.registry.register(registration({ ...n2, role: 'follower', term: 5 }));
    b.registry.register(registration({ nodeId: 'n1', term: 5 }));
    b.registry.register(registration({ ...n2, term: 6 }));
    for (const ports of [
      [a.port, b.port],
      [b.port, a.port],
    ]) {
      const l = lookupOf(ports);
      for (let i = 0; i < 5; i++) assert.deepEqual(show(await l.route('orders')), ['g1: n2@6']);
      l.close();
    }
  });

  it('serves every group any NameServer knows', async () => {
    const [a, b] = await twoNameServers();
    // A was restarted a moment ago: only g1 has registered with it again.
    a.registry.register(registration({ group: 'g1' }));
    b.registry.register(registration({ group: 'g1' }));
    b.registry.register(registration({ group: 'g2', endpoint: '127.0.0.1:9081', term: 3 }));
    const l = lookupOf([a.port, b.port]);
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(show(await l.route('orders')), ['g1: n1@2', 'g2: n1@3']);
    }
    assert.equal(await l.route('payments'), undefined);
    assert.equal(l.calls, 12);
  });

  it('waits for a stalled NameServer only answerGraceMs past the first answer', async () => {
    const [a] = await twoNameServers();
    a.registry.register(registration());
    const stalled = await startHangingNameServer();
    stops.push(stalled.stop);
    const l = lookupOf([stalled.port, a.port], { callTimeoutMs: 30_000, answerGraceMs: 50 });
    const startMs = Date.now();
    assert.deepEqual(show(await l.route('orders')), ['g1: n1@2']);
    // Bounded well below the 30 s deadline the stalled call would otherwise be waited for.
    const elapsedMs = Date.now() - startMs;
    assert.ok(elapsedMs < 5_000, `lookup took ${elapsedMs} ms`);
  });

  it('fails only when no NameServer answers at all', async () => {
    const stalled = await startHangingNameServer();
    stops.push(stalled.stop);
    const l = lookupOf([stalled.port], { callTimeoutMs: 100 });
    await assert.rejects(l.route('orders'), (err) => isRaftmqError(err, 'TIMEOUT'));
  });
});
