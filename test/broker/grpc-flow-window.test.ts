/**
 * widenFlowWindows on the grpc-js in use: a connection to the server is granted the wider
 * stream window (SETTINGS) and connection window (WINDOW_UPDATE), seen from a plain HTTP/2
 * client, for connections made after the call and for one made before it. If a grpc-js upgrade
 * moves the private fields it relies on, these fail instead of the broker silently falling back
 * to 64 KiB windows.
 */
import { strict as assert } from 'node:assert';
import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { FLOW_WINDOW_BYTES, bindServer, widenFlowWindows } from '../../src/broker/grpc-util';
import { silentLogger } from '../../src/common/logger';

const DEFAULT_WINDOW = 65_535;

function connect(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

/** Waits until the server granted `bytes` per stream and at least twice that per connection. */
async function waitForWindows(session: http2.ClientHttp2Session, bytes: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const stream = session.remoteSettings.initialWindowSize ?? DEFAULT_WINDOW;
    const connection = session.state.remoteWindowSize ?? DEFAULT_WINDOW;
    if (stream === bytes && connection >= 2 * bytes) return;
    assert.ok(
      Date.now() < deadline,
      `windows stayed at stream ${stream}, connection ${connection}`,
    );
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('widenFlowWindows', () => {
  let server: grpc.Server | undefined;
  const sessions: http2.ClientHttp2Session[] = [];

  afterEach(() => {
    for (const s of sessions.splice(0)) s.destroy();
    server?.forceShutdown();
    server = undefined;
  });

  it('grants the wider windows to connections made after and before the call', async () => {
    server = new grpc.Server();
    const port = await bindServer(server, '127.0.0.1:0');
    const early = await connect(port);
    sessions.push(early);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(early.remoteSettings.initialWindowSize ?? DEFAULT_WINDOW, DEFAULT_WINDOW);

    assert.equal(widenFlowWindows(server, silentLogger()), true);
    const late = await connect(port);
    sessions.push(late);
    await waitForWindows(late, FLOW_WINDOW_BYTES);
    await waitForWindows(early, FLOW_WINDOW_BYTES);
  });

  it('takes the window size as an argument', async () => {
    server = new grpc.Server();
    const port = await bindServer(server, '127.0.0.1:0');
    assert.equal(widenFlowWindows(server, silentLogger(), 1024 * 1024), true);
    const session = await connect(port);
    sessions.push(session);
    await waitForWindows(session, 1024 * 1024);
  });

  it('widens once when called twice', async () => {
    server = new grpc.Server();
    const port = await bindServer(server, '127.0.0.1:0');
    assert.equal(widenFlowWindows(server, silentLogger(), 1024 * 1024), true);
    assert.equal(widenFlowWindows(server, silentLogger(), 2 * 1024 * 1024), true);
    const session = await connect(port);
    sessions.push(session);
    await waitForWindows(session, 1024 * 1024);
  });

  it('reports false for a server that is not bound (nothing to widen)', () => {
    server = new grpc.Server();
    assert.equal(widenFlowWindows(server, silentLogger()), false);
  });
});
